"""The one record type every dataset loader returns."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    guid: str  # stable id within its source, e.g. "mr-00042" or "train-17"
    text_a: str
    label: int  # index into the dataset config's `labels`; -1 in the unlabeled pool (and for a tagged sentence)
    text_b: str | None = None
    # A tagged sentence (dataset.task: token_classification; data/tagging.py): its tokens and one tag each, as
    # indices into the dataset's tags; None for classification.
    tokens: tuple[str, ...] | None = None
    tags: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Corpus:
    """What a loader gives back: a training pool and a fixed test pool, labels as indices into `labels`."""

    labels: list[str]
    train: list[Example]
    test: list[Example]
