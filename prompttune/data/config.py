"""The schema of a `dataset` config node, and its validation into one-line UserErrors."""

import dataclasses
from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from prompttune.data.package import LOADERS
from prompttune.errors import UserError

SOURCES = ("package", "hub", "local")
LOCAL_FORMATS = ("csv", "tsv", "jsonl", "lmbff")


@dataclass
class PatternSchema:
    template: str = MISSING
    verbalizer: dict[str, list[str]] = MISSING


@dataclass
class PackageSchema:
    loader: str = MISSING


@dataclass
class HubSchema:
    path: str = MISSING
    name: str | None = None
    train_split: str = "train"
    test_split: str = "test"
    text_a: str = "text"
    text_b: str | None = None
    label: str = "label"
    label_map: dict[Any, str] | None = None


@dataclass
class LocalSchema:
    format: str = "csv"
    train: str | None = None
    test: str | None = None
    dir: str | None = None
    header: bool = True
    # A column name, or an integer column index for header-less CSV/TSV.
    text_a: Any = "sentence"
    text_b: Any = None
    label: Any = "label"
    label_map: dict[Any, str] | None = None


@dataclass
class DatasetSchema:
    name: str = MISSING
    source: str = MISSING
    labels: list[str] = MISSING
    test_size: int | None = None
    language: str = "en"
    package: PackageSchema | None = None
    hub: HubSchema | None = None
    local: LocalSchema | None = None
    patterns: list[PatternSchema] = MISSING


def validate_dataset_config(dataset_cfg: DictConfig) -> DictConfig:
    """Check a `dataset` node against the schema; return it merged with the schema's defaults."""
    if not isinstance(dataset_cfg, DictConfig):
        dataset_cfg = OmegaConf.create(dataset_cfg)
    _check_labels_are_strings(dataset_cfg)
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(DatasetSchema), dataset_cfg)
    except OmegaConfBaseException as err:
        raise UserError(_one_line(err)) from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise UserError(f"dataset.{missing[0]} is required but not set: add it to the dataset config")
    _check_values(cfg)
    return cfg


def _check_labels_are_strings(dataset_cfg: DictConfig) -> None:
    # YAML reads bare yes/no/true/false as booleans; the schema would silently turn them into "True"/"False".
    labels = dataset_cfg.get("labels")
    if not isinstance(labels, ListConfig):
        return
    for i, label in enumerate(labels):
        if not isinstance(label, str):
            raise UserError(f"dataset.labels[{i}] is {label!r}, not a string: quote it in the YAML, e.g. '\"no\"'")


def _one_line(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None) or "?"
    if isinstance(err, ConfigKeyError) and dataclasses.is_dataclass(err.object_type):
        known = ", ".join(f.name for f in dataclasses.fields(err.object_type))
        return f"dataset.{key} is not a dataset setting (known here: {known}): remove or rename it"
    first_line = str(err).splitlines()[0]
    return f"dataset.{key}: {first_line}; fix the dataset config"


def _check_values(cfg: DictConfig) -> None:
    if cfg.source not in SOURCES:
        raise UserError(f"dataset.source is {cfg.source!r}: use one of {', '.join(SOURCES)}")
    if cfg[cfg.source] is None:
        raise UserError(f"dataset.source is {cfg.source} but the dataset.{cfg.source} block is missing: add it")
    _check_labels(cfg)
    if cfg.test_size is not None and cfg.test_size < 1:
        raise UserError(f"dataset.test_size is {cfg.test_size}: use a positive number, or null for the whole test set")
    if cfg.source == "package":
        _check_package(cfg)
    if cfg.source == "local":
        _check_local(cfg)
    _check_label_map(cfg, cfg[cfg.source].get("label_map"))
    _check_patterns(cfg)


def _check_labels(cfg: DictConfig) -> None:
    labels = list(cfg.labels)
    if len(labels) < 2:
        raise UserError(f"dataset.labels is {labels}: a classification task needs at least two labels")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise UserError(f"dataset.labels lists {duplicates[0]!r} more than once: make the label names unique")


def _check_package(cfg: DictConfig) -> None:
    if cfg.package.loader not in LOADERS:
        raise UserError(f"dataset.package.loader is {cfg.package.loader!r}: use one of {', '.join(sorted(LOADERS))}")


def _check_local(cfg: DictConfig) -> None:
    local = cfg.local
    if local.format not in LOCAL_FORMATS:
        raise UserError(f"dataset.local.format is {local.format!r}: use one of {', '.join(LOCAL_FORMATS)}")
    for key in ("text_a", "text_b", "label"):
        column = local[key]
        if column is not None and not isinstance(column, (str, int)):
            raise UserError(f"dataset.local.{key} is {column!r}: give a column name or an integer column index")
    if local.text_a is None or local.label is None:
        raise UserError("dataset.local.text_a and dataset.local.label must name columns: set them")


def _check_label_map(cfg: DictConfig, label_map: DictConfig | None) -> None:
    if label_map is None:
        return
    for raw, name in label_map.items():
        if name not in cfg.labels:
            raise UserError(
                f"dataset.{cfg.source}.label_map maps {raw!r} to {name!r}, which is not in dataset.labels "
                f"{list(cfg.labels)}: fix one of them"
            )


def _check_patterns(cfg: DictConfig) -> None:
    if len(cfg.patterns) < 1:
        raise UserError("dataset.patterns is empty: give at least one {template, verbalizer} pattern")
    labels = list(cfg.labels)
    for i, pattern in enumerate(cfg.patterns):
        where = f"dataset.patterns[{i}]"
        if pattern.template.count("{mask}") != 1:
            raise UserError(f"{where}.template must contain {{mask}} exactly once: {pattern.template!r}")
        if "{text_a}" not in pattern.template:
            raise UserError(f"{where}.template must contain {{text_a}}: {pattern.template!r}")
        if sorted(pattern.verbalizer) != sorted(labels):
            raise UserError(
                f"{where}.verbalizer has keys {sorted(pattern.verbalizer)} but dataset.labels is {labels}: "
                "give words for exactly the labels"
            )
        for label, words in pattern.verbalizer.items():
            if not words or any(not word.strip() for word in words):
                raise UserError(f"{where}.verbalizer.{label} needs one or more non-empty words")
