"""User files: CSV/TSV/JSONL train and test files, and LM-BFF's k-shot/<TASK>/<K>-<seed>/ directories.

Every file is read defensively: what is wrong with one stops the run with one line naming the file, the line
(or record) and the fix, never a traceback.
- Bytes are decoded with `dataset.local.encoding` (utf-8 by default, which also drops a leading BOM, as
  utf-8-sig); a byte that is not valid there names its line and the setting (e.g. latin-1) to use.
- Line endings may be \\n, \\r\\n or \\r, mixed within one file.
- A CSV/TSV field may be of any length (csv's own limit, 131,072 characters, is one pasted article): texts are
  cut to `model.max_length` when they are encoded, not here.
- A row whose cells are all empty or blank is no record. A record whose text (`text_a`, and `text_b` where
  set) is empty or only whitespace (or JSON null) is skipped, and the skipped records are counted in a warning;
  a file left with no example is an error.
"""

import codecs
import csv
import io
import json
import logging
import re
from functools import cache
from pathlib import Path
from typing import Any

from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from prompttune.data.formats import FACT_FORMATS
from prompttune.data.labels import LabelResolver
from prompttune.data.records import Corpus, Example
from prompttune.errors import UserError, one_line

log = logging.getLogger(__name__)

LMBFF_SPLITS = ("train", "dev", "test")
FIELD_SIZE_LIMIT = 2**31 - 1  # the largest csv.field_size_limit accepts on every platform (a C long)


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
    """Examples from one file, as csv/tsv/jsonl by dataset.local.format (lmbff: by the file's suffix); records
    with an empty or whitespace-only text are skipped with a warning (see the module's docstring)."""
    kind = path.suffix.lstrip(".") if cfg.local.format == "lmbff" else cfg.local.format
    resolver = LabelResolver(list(cfg.labels), cfg.local.label_map, "dataset.local.label_map")
    records, fields = _records(cfg, path, kind, ("text_a", "text_b", "label"))
    examples = [
        _example(record, fields, resolver, split, i, f"{path} record {i + 1}") for i, record in enumerate(records)
    ]
    kept = [example for example in examples if example is not None]
    skipped = len(examples) - len(kept)
    if not kept:
        blank = f" ({skipped} records with an empty text skipped)" if skipped else ""
        raise UserError(f"{path} holds no examples{blank}: fix the file or dataset.local.text_a")
    if skipped:
        log.warning("%s: skipped %d of %d records whose text is empty or only whitespace", path, skipped, len(examples))
    return kept


def _records(cfg: DictConfig, path: Path, kind: str, keys: tuple[str, ...]) -> tuple[list, dict[str, Any]]:
    """The file's records (rows or JSON objects), and where each of `keys` that is set is found in a record."""
    text = _read_text(path, cfg.local.encoding)
    if kind == "jsonl":
        return _read_jsonl(path, text), {key: cfg.local[key] for key in keys if cfg.local[key] is not None}
    header, records = _read_table(path, text, "\t" if kind == "tsv" else ",", cfg.local.header)
    fields = {key: _column_index(cfg, key, header, path) for key in keys}
    return records, {key: index for key, index in fields.items() if index is not None}


def read_local_facts(cfg: DictConfig) -> tuple[tuple[str, str], ...]:
    """A fact-probing dataset's facts from dataset.local.train (csv/tsv/jsonl): text_a the subject, label the
    object; unique (subject, object) pairs in the file's order. The split is made per model (data/facts.py), so
    there is no test file. Records with an empty subject or object are skipped with a warning."""
    if cfg.local.format not in FACT_FORMATS:
        formats = f"{', '.join(FACT_FORMATS[:-1])} or {FACT_FORMATS[-1]}"
        raise UserError(f"dataset.local.format={cfg.local.format} holds no facts: give fact probing a {formats} file")
    path = _required_file(cfg, "train")
    return _facts_in(path, path.stat().st_mtime_ns, *(cfg.local[key] for key in _FACT_KEYS))


_FACT_KEYS = ("format", "encoding", "header", "text_a", "label")


@cache
def _facts_in(path: Path, _mtime_ns: int, *settings: Any) -> tuple[tuple[str, str], ...]:
    """Read once per process (a run asks for them in its checks, its labels and its splits), and again only when
    the file changes."""
    cfg = OmegaConf.create({"local": dict(zip(_FACT_KEYS, settings, strict=True))})
    records, fields = _records(cfg, path, str(cfg.local.format), ("text_a", "label"))
    facts: dict[tuple[str, str], None] = {}
    for i, record in enumerate(records):
        where = f"{path} record {i + 1}"
        subject, obj = (_text(_field(record, fields[key], key, where), key, where) for key in ("text_a", "label"))
        if subject is not None and obj is not None:
            facts[(subject.strip(), obj.strip())] = None
    if not facts:
        raise UserError(f"{path} holds no facts (a subject and an object per record): fix the file")
    if len(facts) < len(records):
        log.warning(
            "%s: %d of %d records are repeated facts or lack a subject or object",
            path,
            len(records) - len(facts),
            len(records),
        )
    return tuple(facts)


def _example(
    record: Any, fields: dict[str, Any], resolver: LabelResolver, split: str, i: int, where: str
) -> Example | None:
    """The record as an Example; None when a text it should have is empty or only whitespace."""
    values = {key: _field(record, column, key, where) for key, column in fields.items()}
    texts = {key: _text(values[key], key, where) for key in ("text_a", "text_b") if key in values}
    if any(text is None for text in texts.values()):
        return None
    return Example(
        guid=f"{split}-{i}",
        text_a=texts["text_a"],
        label=resolver(values["label"], where),
        text_b=texts.get("text_b"),
    )


def _text(value: Any, key: str, where: str) -> str | None:
    """A text cell (or JSON value) as a string; None when empty, only whitespace or JSON null."""
    if isinstance(value, dict | list):
        raise UserError(
            f"{where}: {key} is a JSON {type(value).__name__}, not a text: fix dataset.local.{key} or the file"
        )
    text = "" if value is None else str(value)
    return text if text.strip() else None


def _field(record: Any, column: Any, key: str, where: str) -> Any:
    try:
        return record[column]
    except (KeyError, IndexError):
        have = sorted(record) if isinstance(record, dict) else f"{len(record)} columns"
        raise UserError(f"{where} has no column {column!r} ({have}): fix dataset.local.{key} or the file") from None


def _read_text(path: Path, encoding: str) -> str:
    """The whole file decoded; with utf-8, a leading byte order mark is dropped (utf-8-sig)."""
    if codecs.lookup(encoding).name == "utf-8":
        encoding = "utf-8-sig"
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read {path} ({err.strerror}): check that it is a readable file") from None
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = len((raw[: err.start] + b"x").splitlines())  # bytes split lines at \n, \r\n and \r only
        raise UserError(
            f"{path} line {line} is not valid {err.encoding} (byte 0x{raw[err.start]:02x}): set "
            "dataset.local.encoding=latin-1 (cp1252 for a Windows export) or re-encode the file as UTF-8"
        ) from None


def _read_table(path: Path, text: str, delimiter: str, header: bool) -> tuple[list[str] | None, list[list[str]]]:
    # GLUE/LM-BFF TSVs are unquoted and contain stray quote characters: read tabs literally.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    # No limit on a field's length: a text is cut to model.max_length when it is encoded, not here.
    csv.field_size_limit(FIELD_SIZE_LIMIT)
    # newline="": \n, \r\n and \r all end a line, and line breaks inside a quoted field are kept as they are.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    try:
        rows = [row for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as err:
        raise UserError(f"{path} line {reader.line_num} cannot be read ({one_line(err)}): fix the file") from None
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


def _read_jsonl(path: Path, text: str) -> list[dict]:
    records = []
    for line_number, line in enumerate(io.StringIO(text, newline=None), start=1):  # any line ending
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as err:  # also a too deeply nested value or a too long integer
            reason = err.msg if isinstance(err, json.JSONDecodeError) else one_line(err)
            raise UserError(f"{path} line {line_number} is not valid JSON ({reason}): fix the file") from None
        if not isinstance(record, dict):
            raise UserError(f"{path} line {line_number} is not a JSON object: write one object per line")
        records.append(record)
    return records
