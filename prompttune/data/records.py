"""The one record type every dataset loader returns."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    guid: str  # stable id within its source, e.g. "mr-00042" or "train-17"
    text_a: str
    label: int  # index into the dataset config's `labels`; -1 in the unlabeled pool
    text_b: str | None = None


@dataclass(frozen=True)
class Corpus:
    """What a loader gives back: a training pool and a fixed test pool, labels as indices into `labels`."""

    labels: list[str]
    train: list[Example]
    test: list[Example]
