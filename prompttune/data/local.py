"""User files: CSV/TSV/JSONL train and test files, and LM-BFF's k-shot/<TASK>/<K>-<seed>/ directories."""

import csv
import json
import re
from pathlib import Path
from typing import Any

from hydra.utils import to_absolute_path
from omegaconf import DictConfig

from prompttune.data.labels import LabelResolver
from prompttune.data.records import Corpus, Example
from prompttune.errors import UserError

LMBFF_SPLITS = ("train", "dev", "test")


def load_local_corpus(cfg: DictConfig) -> Corpus:
    if cfg.local.format == "lmbff":
        raise UserError(
            "dataset.local.format is lmbff: those directories hold ready-made few-shot splits, "
            "not a training pool; load them with load_splits(shots, seed)"
        )
    train = read_examples(cfg, _required_file(cfg, "train"), "train")
    test = read_examples(cfg, _required_file(cfg, "test"), "test")
    return Corpus(labels=list(cfg.labels), train=train, test=test)


def load_lmbff_splits(cfg: DictConfig, shots: int, seed: int) -> tuple[list[Example], list[Example], list[Example]]:
    """train, dev and test read from <dir>/<shots>-<seed>/{train,dev,test}.tsv (or .csv)."""
    if cfg.local.dir is None:
        raise UserError("dataset.local.dir is not set: point it at the LM-BFF k-shot/<TASK> directory")
    base = Path(to_absolute_path(cfg.local.dir))
    run_dir = base / f"{shots}-{seed}"
    if not run_dir.is_dir():
        raise UserError(
            f"no LM-BFF split directory {run_dir} for shots={shots} seed={seed}; {base} has "
            f"{_describe_kshot_dirs(base)}: pick shots and seed from those"
        )
    train, dev, test = (read_examples(cfg, _lmbff_file(run_dir, split), split) for split in LMBFF_SPLITS)
    return train, dev, test


def _describe_kshot_dirs(base: Path) -> str:
    if not base.is_dir():
        return "nothing (it is not a directory)"
    names = [p.name for p in base.iterdir() if p.is_dir() and re.fullmatch(r"\d+-\d+", p.name)]
    names.sort(key=lambda name: tuple(int(part) for part in name.split("-")))
    return ", ".join(names) if names else "no <K>-<seed> directories"


def _lmbff_file(run_dir: Path, split: str) -> Path:
    for suffix in (".tsv", ".csv"):
        path = run_dir / f"{split}{suffix}"
        if path.is_file():
            return path
    raise UserError(f"{run_dir} has no {split}.tsv (or {split}.csv): it is not a complete LM-BFF split directory")


def _required_file(cfg: DictConfig, key: str) -> Path:
    value = cfg.local[key]
    if value is None:
        raise UserError(f"dataset.local.{key} is not set: point it at your CSV/TSV/JSONL file")
    path = Path(to_absolute_path(value))
    if not path.is_file():
        raise UserError(f"dataset.local.{key} is {value!r} but there is no file {path}: fix the path")
    return path


def read_examples(cfg: DictConfig, path: Path, split: str) -> list[Example]:
    """Examples from one file, as csv/tsv/jsonl by dataset.local.format (lmbff: by the file's suffix)."""
    kind = path.suffix.lstrip(".") if cfg.local.format == "lmbff" else cfg.local.format
    resolver = LabelResolver(list(cfg.labels), cfg.local.label_map, "dataset.local.label_map")
    if kind == "jsonl":
        records = _read_jsonl(path)
        fields = {key: cfg.local[key] for key in ("text_a", "text_b", "label") if cfg.local[key] is not None}
    else:
        header, records = _read_table(path, "\t" if kind == "tsv" else ",", cfg.local.header)
        fields = {key: _column_index(cfg, key, header, path) for key in ("text_a", "text_b", "label")}
        fields = {key: index for key, index in fields.items() if index is not None}
    return [_example(record, fields, resolver, split, i, f"{path} record {i + 1}") for i, record in enumerate(records)]


def _example(record: Any, fields: dict[str, Any], resolver: LabelResolver, split: str, i: int, where: str) -> Example:
    values = {key: _field(record, column, key, where) for key, column in fields.items()}
    text_b = values.get("text_b")
    return Example(
        guid=f"{split}-{i}",
        text_a=str(values["text_a"]),
        label=resolver(values["label"], where),
        text_b=None if text_b is None else str(text_b),
    )


def _field(record: Any, column: Any, key: str, where: str) -> Any:
    try:
        return record[column]
    except (KeyError, IndexError):
        have = sorted(record) if isinstance(record, dict) else f"{len(record)} columns"
        raise UserError(f"{where} has no column {column!r} ({have}): fix dataset.local.{key} or the file") from None


def _read_table(path: Path, delimiter: str, header: bool) -> tuple[list[str] | None, list[list[str]]]:
    # GLUE/LM-BFF TSVs are unquoted and contain stray quote characters: read tabs literally.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with path.open(encoding="utf-8", newline="") as f:
        rows = [row for row in csv.reader(f, delimiter=delimiter, quoting=quoting) if row]
    if not header:
        return None, rows
    if not rows:
        raise UserError(f"{path} is empty but dataset.local.header is true: add a header row")
    return [name.strip() for name in rows[0]], rows[1:]


def _column_index(cfg: DictConfig, key: str, header: list[str] | None, path: Path) -> int | None:
    column = cfg.local[key]
    if column is None or isinstance(column, int):
        return column
    if header is None:
        raise UserError(
            f"dataset.local.{key} is {column!r} but dataset.local.header is false: give a column index (0, 1, ...)"
        )
    if column not in header:
        raise UserError(f"dataset.local.{key} is {column!r} but {path} has the columns {header}: name one of them")
    return header.index(column)


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    with path.open(encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path} line {line_number} is not valid JSON ({err.msg}): fix the file") from None
            if not isinstance(record, dict):
                raise UserError(f"{path} line {line_number} is not a JSON object: write one object per line")
            records.append(record)
    return records
