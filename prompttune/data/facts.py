"""Fact probing (`dataset.task: fact_probing`), LAMA-style (Petroni et al. 2019), P-Tuning v1's first experiment:
(subject, object) facts of one relation; a pattern puts the subject in a sentence whose next token (or mask) is the
object, and the model is scored on ranking the object first among every token of its vocabulary (precision@1).

The facts come offline from gensim's analogy questions (`gensim/test/test_data/questions-words.txt`, located with
importlib and never imported): each line holds two pairs of one section ("Athens Greece Baghdad Iraq"), read here
as unique (subject, object) facts per relation, in the file's order:

- `facts_capital`: capital-world and capital-common-countries (a subset of it), (country, capital): 116 facts;
- `facts_city_state`: city-in-state, (city, state): 68 facts (Glendale is in Arizona and in California: two facts);
- `facts_currency`: currency, (country, currency): 30 facts;
- `facts_nationality`: gram6-nationality-adjective, (country, adjective): 41 facts.

A dataset's labels are its relation's objects, in order of first appearance (`objects_of`); an example is a
fact: text_a the subject, label its object.

As LAMA keeps only single-token objects, a run keeps the facts whose object is one token for its model (with the
leading space the pattern puts before the mask); the method, which holds the tokenizer, says which (`keep`).
The kept facts are then split into train/dev/test once, the same for every run seed (`split_sizes`): every fact
of the relation has a fixed rank (FACT_SPLIT_SEED), and the kept facts of lowest rank form the test set, the
next the dev set, the rest the training set, so two models' test sets share every fact both keep. `shots=N`
trains on N facts of the training set drawn by seed (all of them when it holds N or fewer, or with shots=all);
dev and test never move with the seed.
"""

import importlib.util
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from prompttune.data.local import read_local_facts
from prompttune.data.records import Corpus, Example
from prompttune.errors import UserError

log = logging.getLogger(__name__)

FACT_PROBING = "fact_probing"
SOURCE = ("gensim", "test/test_data/questions-words.txt")  # (package, path inside it)
FACT_SPLIT_SEED = 0  # every fact's fixed rank: the split does not move with the run seed
TEST_SHARE, DEV_SHARE = 0.4, 0.2
MIN_TEST, MAX_TEST_SHARE = 20, 0.6  # the test set is raised to 20 facts where that leaves 40% for train and dev
MIN_FACTS = 3  # one each for train, dev and test


@dataclass(frozen=True)
class Relation:
    sections: tuple[str, ...]  # the file's sections (": capital-world") that hold it
    subject_first: bool  # each pair reads (subject, object); False: (object, subject), as (capital, country)


RELATIONS = {
    "facts_capital": Relation(("capital-common-countries", "capital-world"), subject_first=False),
    "facts_city_state": Relation(("city-in-state",), subject_first=True),
    "facts_currency": Relation(("currency",), subject_first=True),
    "facts_nationality": Relation(("gram6-nationality-adjective",), subject_first=True),
}


def is_fact_probing(dataset_cfg) -> bool:
    return str(dataset_cfg.get("task") or "classification") == FACT_PROBING


def source_file() -> Path | None:
    spec = importlib.util.find_spec(SOURCE[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / SOURCE[1]
    return path if path.is_file() else None


def require_source(dataset_name: str) -> None:
    if source_file() is None:
        raise UserError(f"dataset {dataset_name} needs gensim's {SOURCE[1]} (package gensim): run `make install`")


Facts = tuple[tuple[str, str], ...]  # unique (subject, object) pairs, in the order first given


@cache
def read_facts(relation: str) -> Facts:
    """The relation's unique (subject, object) facts, in the order the file first gives them."""
    rule, path = RELATIONS[relation], source_file()
    if path is None:
        raise UserError(f"relation {relation} needs gensim's {SOURCE[1]} (package gensim): run `make install`")
    facts: dict[tuple[str, str], None] = {}
    section = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(":"):
            section = line[1:].strip()
            continue
        words = line.split()
        if section not in rule.sections or len(words) != 4:
            continue
        for first, second in (words[:2], words[2:]):
            facts[(first, second) if rule.subject_first else (second, first)] = None
    return tuple(facts)


def facts_of(dataset_cfg) -> Facts:
    """The dataset's facts: a gensim relation's (source package), or the rows of the user's file (source local,
    dataset.local.train: text_a the subject, label the object)."""
    if str(dataset_cfg.source) == "local":
        return read_local_facts(dataset_cfg)
    return read_facts(str(dataset_cfg.package.loader))


def relation_name(dataset_cfg) -> str:
    """What a run records as its relation: the gensim relation, or the user's file."""
    return str(dataset_cfg.local.train if str(dataset_cfg.source) == "local" else dataset_cfg.package.loader)


def objects_of(facts: Facts) -> list[str]:
    """The facts' objects in order of first appearance: what a fact's label indexes."""
    return list(dict.fromkeys(obj for _, obj in facts))


def fact_examples(dataset_name: str, facts: Facts) -> list[Example]:
    objects = {obj: i for i, obj in enumerate(objects_of(facts))}
    return [Example(f"{dataset_name}-{i:03d}", subj, objects[obj]) for i, (subj, obj) in enumerate(facts)]


def read_corpus(relation: str, dataset_name: str, labels: list[str]) -> Corpus:
    """The whole relation as the pool and no test pool: the split is made per model (`split_facts`)."""
    facts = read_facts(relation)
    return Corpus(objects_of(facts), fact_examples(dataset_name, facts), [])


def split_sizes(n: int) -> tuple[int, int, int]:
    """(train, dev, test) for n facts: test 40% (at least 20 where that stays within 60%), dev 20%, train the rest."""
    test = max(round(TEST_SHARE * n), min(MIN_TEST, math.floor(MAX_TEST_SHARE * n)))
    dev = max(1, round(DEV_SHARE * n))
    return n - test - dev, dev, test


def require_enough(kept: int, total: int, dataset_name: str, model_name: str) -> None:
    """One line when too few facts have a one-token object for the model (the CLI checks it on the tokenizer
    alone, before a run dir is written)."""
    if kept < MIN_FACTS:
        raise UserError(
            f"dataset {dataset_name}: {kept} of its {total} facts have an object that is one token for model "
            f"{model_name} (with its leading space); fact probing needs {MIN_FACTS} (one each for train, dev and "
            "test): choose another relation or model"
        )


def split_facts(
    examples: list[Example],
    keep: Callable[[Example], bool],
    shots: int | str,
    seed: int,
    names: tuple[str, str],
    test_size: int | None = None,
) -> tuple[list[Example], list[Example], list[Example], dict]:
    """The kept facts' fixed split, the training facts drawn by `shots`, and the counts a run records; `names`:
    the dataset's and the model's."""
    kept = [e for e in examples if keep(e)]
    require_enough(len(kept), len(examples), *names)
    ranks = random.Random(FACT_SPLIT_SEED).sample(range(len(examples)), len(examples))
    rank = {e.guid: r for e, r in zip(examples, ranks, strict=True)}
    ordered = sorted(kept, key=lambda e: rank[e.guid])
    n_train, n_dev, n_test = split_sizes(len(kept))
    test, dev, pool = ordered[:n_test], ordered[n_test : n_test + n_dev], ordered[n_test + n_dev :]
    train = pool if shots == "all" or shots >= len(pool) else random.Random(seed).sample(pool, shots)
    test = test[:test_size] if test_size else test
    counts = {"facts": len(examples), "single_token": len(kept), "train_pool": len(pool)}
    counts |= {"train": len(train), "dev": len(dev), "test": len(test)}
    log.info(
        "dataset %s, model %s: %d of %d facts have a one-token object; %d train (of %d), %d dev, %d test",
        *names,
        len(kept),
        len(examples),
        len(train),
        len(pool),
        len(dev),
        len(test),
    )
    return train, dev, test, counts
