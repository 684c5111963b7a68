"""Hostile user files (issue 25): each loads, or stops with one line naming the file, the line and the fix."""

import json
import logging
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from prompttune.data import load_corpus, load_splits, validate_dataset_config
from prompttune.data.local import read_examples
from prompttune.errors import UserError
from prompttune.prompts.template import parse_template

LOCAL_YAML = Path(__file__).resolve().parents[1] / "configs" / "dataset" / "local.yaml"
ROWS = "sentence,label\ngood film,positive\nbad film,negative\n"


def local_cfg(**local) -> DictConfig:
    """The shipped local.yaml with its `local` block replaced."""
    cfg = OmegaConf.load(LOCAL_YAML)
    cfg.local = local
    return cfg


def load(path: Path, **local):
    """The training pool read from `path` (also the test file)."""
    local.setdefault("format", path.suffix.lstrip("."))
    return load_corpus(local_cfg(train=str(path), test=str(path), **local)).train


def one_line_error(path: Path, match: str, **local) -> str:
    with pytest.raises(UserError, match=match) as info:
        load(path, **local)
    assert "\n" not in str(info.value)
    return str(info.value)


# --- a field longer than csv's default limit (131,072 characters) ---------------------------------------


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_a_field_longer_than_the_csv_limit_loads_whole(tmp_path, suffix, sep):
    article = "word " * 40_000  # 200,000 characters: one pasted article
    path = tmp_path / f"train{suffix}"
    path.write_text(f"sentence{sep}label\n{article}{sep}positive\nshort{sep}negative\n", encoding="utf-8")
    examples = load(path)
    assert [len(e.text_a) for e in examples] == [200_000, 5]


# --- bytes that are not UTF-8 ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_a_latin1_byte_names_the_file_the_line_and_the_setting(tmp_path, suffix):
    lines = {
        ".csv": ["sentence,label", "good,positive", "café,negative"],
        ".tsv": ["sentence\tlabel", "good\tpositive", "café\tnegative"],
        ".jsonl": ['{"sentence": "good", "label": 1}', "", '{"sentence": "café", "label": 0}'],
    }[suffix]
    path = tmp_path / f"train{suffix}"
    path.write_bytes("\n".join(lines).encode("latin-1"))
    message = one_line_error(path, r"line 3 is not valid utf-8 \(byte 0xe9\): set dataset\.local\.encoding=latin-1")
    assert message.startswith(str(path)) and "re-encode the file as UTF-8" in message
    assert [e.text_a for e in load(path, encoding="latin-1")] == ["good", "café"]


def test_the_line_of_a_bad_byte_counts_every_kind_of_line_ending(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b"sentence,label\r\na,positive\rb,negative\n\xffc,negative\n")
    one_line_error(path, r"train\.csv line 4 is not valid utf-8 \(byte 0xff\)")


def test_a_windows_export_loads_with_cp1252(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes("sentence,label\n\u201cquoted\u201d \u20ac5,positive\nok,negative\n".encode("cp1252"))
    assert load(path, encoding="cp1252")[0].text_a == "\u201cquoted\u201d \u20ac5"


def test_an_unknown_encoding_is_a_one_line_config_error(tmp_path):
    for name in ("utf9", "rot13", "a\x00b"):
        with pytest.raises(
            UserError, match=r"dataset\.local\.encoding=.* is invalid; allowed: a text encoding"
        ) as info:
            validate_dataset_config(local_cfg(train="x.csv", test="x.csv", encoding=name))
        assert "\n" not in str(info.value)


# --- a UTF-8 byte order mark ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_a_utf8_bom_is_dropped(tmp_path, suffix):
    text = {
        ".csv": ROWS,
        ".tsv": ROWS.replace(",", "\t"),
        ".jsonl": '{"sentence": "good film", "label": "positive"}\n{"sentence": "bad film", "label": 0}\n',
    }[suffix]
    path = tmp_path / f"train{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert [(e.text_a, e.label) for e in load(path)] == [("good film", 1), ("bad film", 0)]


# --- mixed line endings ---------------------------------------------------------------------------------


def test_mixed_line_endings_split_records_and_keep_breaks_inside_quotes(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b'sentence,label\r\na,positive\nb,negative\rc,positive\r\n"two\r\nlines",negative\r')
    assert [e.text_a for e in load(path)] == ["a", "b", "c", "two\r\nlines"]
    tsv = tmp_path / "train.tsv"
    tsv.write_bytes(b"sentence\tlabel\ra\tpositive\r\nb\tnegative\nc\tpositive")
    assert [e.text_a for e in load(tsv)] == ["a", "b", "c"]
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_bytes(b'{"sentence": "a", "label": 1}\r{"sentence": "b", "label": 0}\r\n{"sentence": "c", "label": 1}')
    assert [e.text_a for e in load(jsonl)] == ["a", "b", "c"]


def test_lmbff_splits_read_with_the_same_rules(tmp_path):
    split_dir = tmp_path / "SST-2" / "2-13"
    split_dir.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        text = "sentence\tlabel\r\nbon caf\xe9\t1\rmauvais\t0\n"
        (split_dir / f"{split}.tsv").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    splits = load_splits(local_cfg(format="lmbff", dir=str(tmp_path / "SST-2")), shots=2, seed=13)
    assert [e.text_a for e in splits.train] == ["bon café", "mauvais"]


# --- empty and whitespace-only texts: skipped, and counted in a warning -----------------------------------


def test_empty_and_whitespace_texts_are_skipped_with_a_count(tmp_path, caplog):
    path = tmp_path / "train.csv"
    path.write_text('sentence,label\ngood,positive\n,negative\n"   ",positive\n" \t ",negative\nbad,negative\n,\n')
    with caplog.at_level(logging.WARNING, logger="prompttune.data.local"):
        examples = load(path)
    assert [(e.guid, e.text_a) for e in examples] == [("train-0", "good"), ("train-4", "bad")]
    assert "skipped 3 of 5 records whose text is empty or only whitespace" in caplog.text


def test_a_pair_with_an_empty_second_text_is_skipped(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("p\th\tlabel\np1\th1\tpositive\np2\t \tnegative\n")
    assert [(e.text_a, e.text_b) for e in load(path, text_a="p", text_b="h")] == [("p1", "h1")]


def test_jsonl_null_texts_are_skipped_and_a_list_is_an_error(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [{"sentence": "ok", "label": 1}, {"sentence": None, "label": 0}, {"sentence": " ", "label": 0}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert [e.text_a for e in load(path)] == ["ok"]
    path.write_text(json.dumps({"sentence": ["a", "b"], "label": 1}) + "\n")
    one_line_error(path, r"record 1: text_a is a JSON list, not a text: fix dataset\.local\.text_a or the file")


def test_a_file_without_a_nonblank_text_is_an_error(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("sentence,label\n ,positive\n,negative\n")
    one_line_error(path, r"holds no examples \(2 records with an empty text skipped\): fix the file")
    path.write_text("sentence,label\n")
    one_line_error(path, r"train\.csv holds no examples: fix the file")


# --- other hostile values: each a one-line error ----------------------------------------------------------


@pytest.mark.parametrize(
    "line, match",
    [
        ("[" * 100_000 + "]" * 100_000, "line 2 is not valid JSON"),  # nested too deeply for the parser
        ('{"sentence": "x", "label": ' + "1" * 5000 + "}", "line 2 is not valid JSON"),  # an int too long
        ('{"sentence": "x", "label": "\u00b2"}', r"label '²' is neither one of"),  # a digit int() does not read
        ('{"sentence": "x", "label": "' + "1" * 5000 + '"}', r"label '1111.* is neither one of"),
    ],
)
def test_hostile_json_values_are_one_line_errors(tmp_path, line, match):
    path = tmp_path / "train.jsonl"
    path.write_text('{"sentence": "ok", "label": 1}\n' + line + "\n")
    one_line_error(path, match)


def test_an_unreadable_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "train.csv"
    path.mkdir()  # passes no is_file() check: read directly
    cfg = validate_dataset_config(local_cfg(train=str(path), test=str(path)))
    with pytest.raises(UserError, match=r"cannot read .*train\.csv \(Is a directory\)"):
        read_examples(cfg, path, "train")


def test_a_soft_count_too_long_for_int_is_a_one_line_error():
    with pytest.raises(UserError, match=r"\{soft:N\} with a 5000-digit N; use at most 999999 tokens"):
        parse_template("{text_a} {soft:" + "9" * 5000 + "} {mask}")
