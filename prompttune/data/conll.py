"""CoNLL files (`dataset.local.format=conll`, and the offline NER corpora): one `token tag` per line, a blank
line (or one of only spaces and tabs) between sentences.

Columns are split at tabs when the line has one (a token may then hold spaces), else at runs of spaces. Read
defensively, as every local file (data/local.py): what is wrong stops the run with one line naming the file, the
line and the fix -- a line with other than 2 columns, an empty token, a tag outside the scheme or the label set,
a file without a sentence. `-DOCSTART-` lines (CoNLL-2003's document breaks) end a sentence and are skipped;
blank lines in a row are one break. Tags are read by `data/tagging.py: TagReader` (IOB1 read as IOB2).
"""

import io
from functools import lru_cache
from pathlib import Path
from typing import Any

from hydra.utils import to_absolute_path
from omegaconf import DictConfig

from prompttune.data.local import _read_text
from prompttune.data.records import Corpus, Example
from prompttune.data.tagging import TagReader, tagged_example, warn_repairs
from prompttune.errors import UserError

DOCUMENT_START = "-DOCSTART-"
ParsedFile = tuple[tuple[Example, ...], int, str | None]  # sentences, tags repaired, where the first was
COLUMNS = 2  # token, tag


def read_conll(path: Path, reader: TagReader, guid_prefix: str, encoding: str = "utf-8") -> list[Example]:
    """Every sentence of a CoNLL file, its tags as indices of the reader's tags."""
    text = _read_text(path, encoding)
    examples: list[Example] = []
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []

    def end_sentence() -> None:
        if tokens:
            where = lambda i: f"{path} line {lines[i]}"  # noqa: E731 -- only called on a problem
            examples.append(tagged_example(f"{guid_prefix}-{len(examples)}", tokens, reader(tags, where)))
            for pending in (tokens, tags, lines):
                pending.clear()

    for number, line in enumerate(io.StringIO(text, newline=None), start=1):  # \n, \r\n and \r
        line = line.rstrip("\n")
        if not line.strip():
            end_sentence()
            continue
        columns = [cell.strip() for cell in line.split("\t")] if "\t" in line else line.split()
        if columns[0] == DOCUMENT_START:
            end_sentence()
            continue
        token, tag = _token_and_tag(columns, path, number)
        tokens.append(token)
        tags.append(tag)
        lines.append(number)
    end_sentence()
    if not examples:
        raise UserError(f"{path} holds no sentence: write one `token tag` per line, a blank line between sentences")
    return examples


def _token_and_tag(columns: list[str], path: Path, number: int) -> tuple[str, str]:
    if len(columns) != COLUMNS:
        shown = " | ".join(columns)
        raise UserError(
            f"{path} line {number} has {len(columns)} columns ({shown}) but a CoNLL file here has {COLUMNS}, "
            "`token tag`: keep only the token and its tag (CoNLL-2003's 4 columns: cut -d' ' -f1,4)"
        )
    token, tag = columns
    if not token:
        raise UserError(
            f"{path} line {number} has an empty token before its tag {tag!r}, a sentence of nothing: give the "
            "token, or leave the line blank between sentences"
        )
    return token, tag


def load_conll_corpus(cfg: DictConfig) -> Corpus:
    """dataset.local.train and dataset.local.test as tagged sentences (read when the config was checked)."""
    files = {split: conll_file(cfg, split) for split in ("train", "test")}
    for split, (_, repaired, first) in files.items():
        warn_repairs(str(cfg.local[split]), str(cfg.tag_scheme), repaired, first)
    return Corpus(labels=list(cfg.labels), train=list(files["train"][0]), test=list(files["test"][0]))


def conll_file(cfg: Any, split: str) -> ParsedFile:
    """One CoNLL file of a dataset config (a node or the checked schema object), parsed once for as long as it
    is unchanged: the config check reads both files, so that a bad one stops a run before it writes anything,
    and the run then finds them parsed."""
    value = getattr(cfg.local, split)
    if value is None:
        raise UserError(f"dataset.local.{split} is not set: point it at your CoNLL file")
    path = Path(to_absolute_path(value))
    if not path.is_file():
        raise UserError(f"dataset.local.{split} is {value!r} but there is no file {path}: fix the path")
    stamp = (path.stat().st_mtime_ns, path.stat().st_size)
    return _parsed(path, stamp, tuple(cfg.labels), str(cfg.tag_scheme), str(cfg.local.encoding), split)


@lru_cache(maxsize=8)
def _parsed(path: Path, stamp: tuple[int, int], labels: tuple[str, ...], scheme: str, encoding: str, split: str):
    reader = TagReader(labels, scheme, "add the type to dataset.labels or fix the file")
    examples = read_conll(path, reader, split, encoding)
    return tuple(examples), reader.repaired, reader.first_repair
