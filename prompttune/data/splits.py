"""The LM-BFF few-shot protocol: K examples per class for train, another K for dev, a fixed test set."""

import math
import random
from collections import Counter
from dataclasses import dataclass, field

from prompttune.data.records import Example
from prompttune.errors import UserError

# The test subsample must not move with the run seed, so every seed is scored on the same examples.
TEST_SUBSAMPLE_SEED = 0


@dataclass
class Splits:
    labels: list[str]
    train: list[Example]
    dev: list[Example]
    test: list[Example]
    unlabeled: list[Example] = field(default_factory=list)  # texts only (label -1): PET's unlabeled pool
    facts: dict | None = None  # fact probing: how many facts the relation has, kept for the model, per split

    def named_splits(self) -> dict[str, list[Example]]:
        return {"train": self.train, "dev": self.dev, "test": self.test}

    def to_json(self) -> dict:
        """What a run writes to splits.json: labels, sizes, per-label counts and every example."""
        named = self.named_splits()
        saved = {
            "labels": list(self.labels),
            "counts": {name: len(examples) for name, examples in named.items()},
            "label_counts": {name: self._label_counts(examples) for name, examples in named.items()},
            **{name: [self._example_json(example) for example in examples] for name, examples in named.items()},
        }
        if self.facts:
            saved["facts"] = dict(self.facts)
        if self.unlabeled:
            saved["counts"]["unlabeled"] = len(self.unlabeled)
            saved["unlabeled"] = [{"guid": e.guid, "text_a": e.text_a, "text_b": e.text_b} for e in self.unlabeled]
        return saved

    def _label_counts(self, examples: list[Example]) -> dict[str, int]:
        if examples and examples[0].tags is not None:  # tagged sentences: how many words carry each tag
            counts = Counter(tag for example in examples for tag in example.tags)
            return {label: counts[i] for i, label in enumerate(self.labels)}
        return {label: sum(example.label == i for example in examples) for i, label in enumerate(self.labels)}

    def _example_json(self, example: Example) -> dict:
        if example.tags is not None:
            return {
                "guid": example.guid,
                "tokens": list(example.tokens),
                "tags": [self.labels[t] for t in example.tags],
            }
        return {
            "guid": example.guid,
            "label": self.labels[example.label],
            "text_a": example.text_a,
            "text_b": example.text_b,
        }


def without_test_texts(pool: list[Example], test: list[Example]) -> list[Example]:
    """The training pool minus examples whose text also occurs in the test pool (no train/test leakage)."""
    test_texts = {(example.text_a, example.text_b) for example in test}
    return [example for example in pool if (example.text_a, example.text_b) not in test_texts]


def sample_train_dev(
    pool: list[Example], labels: list[str], shots: int, seed: int, dataset_name: str
) -> tuple[list[Example], list[Example]]:
    """`shots` examples per class for train and another, disjoint `shots` per class for dev."""
    by_label = _group_by_label(pool, len(labels))
    _check_enough(by_label, labels, shots, dataset_name)
    rng = random.Random(seed)
    train, dev = [], []
    for examples in by_label:
        drawn = rng.sample(examples, 2 * shots)
        train += drawn[:shots]
        dev += drawn[shots:]
    rng.shuffle(train)
    rng.shuffle(dev)
    return train, dev


def sample_unlabeled(pool: list[Example], split: list[Example], size: int, seed: int) -> list[Example]:
    """`size` examples of the training pool outside the few-shot split, drawn by seed, their labels dropped
    (label -1): the unlabeled set PET trains its auxiliary LM loss on and soft-labels for distillation."""
    taken = {(example.text_a, example.text_b) for example in split}
    rest = [example for example in pool if (example.text_a, example.text_b) not in taken]
    drawn = random.Random(seed).sample(rest, min(size, len(rest)))
    return [Example(example.guid, example.text_a, -1, example.text_b) for example in drawn]


def subsample_test(test: list[Example], n_labels: int, test_size: int | None) -> list[Example]:
    """A stratified subsample of `test_size` examples in their original order, the same for every run seed."""
    if test_size is None or test_size >= len(test):
        return list(test)
    rng = random.Random(TEST_SUBSAMPLE_SEED)
    indices_by_label: list[list[int]] = [[] for _ in range(n_labels)]
    for index, example in enumerate(test):
        indices_by_label[example.label].append(index)
    quotas = proportional_quotas([len(indices) for indices in indices_by_label], test_size)
    chosen = sorted(
        index for indices, quota in zip(indices_by_label, quotas, strict=True) for index in rng.sample(indices, quota)
    )
    return [test[index] for index in chosen]


def proportional_quotas(sizes: list[int], total: int) -> list[int]:
    """Split `total` (< sum(sizes)) over classes in proportion to their sizes; largest remainders round up."""
    exact = [total * size / sum(sizes) for size in sizes]
    quotas = [math.floor(share) for share in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda c: exact[c] - quotas[c], reverse=True)
    for c in by_remainder[: total - sum(quotas)]:
        quotas[c] += 1
    return quotas


def _group_by_label(pool: list[Example], n_labels: int) -> list[list[Example]]:
    groups: list[list[Example]] = [[] for _ in range(n_labels)]
    for example in pool:
        groups[example.label].append(example)
    return groups


def _check_enough(by_label: list[list[Example]], labels: list[str], shots: int, dataset_name: str) -> None:
    max_shots = min(len(examples) for examples in by_label) // 2
    fix = f"lower shots to at most {max_shots}" if max_shots else "the pool needs at least 2 examples per class"
    for label, examples in zip(labels, by_label, strict=True):
        if len(examples) < 2 * shots:
            raise UserError(
                f"shots={shots} needs {2 * shots} examples of class {label!r} (shots each for train and dev) "
                f"but the {dataset_name} training pool has {len(examples)}; {fix}"
            )
