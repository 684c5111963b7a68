"""Property-based tests: whatever a user writes (a template, a data file, a config value), the tool either
accepts it or stops with its own one-line UserError, never another exception."""

import copy
import csv
import io
import json
from dataclasses import fields
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from prompttune.config.run import validate
from prompttune.config.schema import checked_node
from prompttune.data.config import DatasetConfig, validate_dataset_config
from prompttune.data.local import read_examples
from prompttune.errors import UserError
from prompttune.methods import METHODS, method_config
from prompttune.models.config import ModelConfig
from prompttune.paths import CONFIG_DIR
from prompttune.prompts.template import Segment, Template, parse_template
from prompttune.training.config import TrainerConfig
from tests.helpers import compose_config
from tests.test_hostile_inputs import local_cfg


def assert_one_line(err: UserError) -> None:
    assert str(err) and "\n" not in str(err) and "\r" not in str(err), repr(str(err))


# --- the template grammar -------------------------------------------------------------------------------

PIECES = ["{", "}", "{{", "}}", "{text_a}", "{text_b}", "{mask}", "{sep}", "{soft}", "{text_c}", "{Mask}"]
PIECES += ["{text_a:2}", "{soft:", ":", "}", " ", "\t", "\n", "\u3000", "It was", ".", "é", "\u00b2", "\u0663"]
template_sources = st.one_of(
    st.text(max_size=40),
    st.lists(
        st.one_of(
            st.sampled_from(PIECES),
            st.integers(0, 10**6).map(lambda n: f"{{soft:{n}}}"),
            st.integers(1, 6000).map(lambda n: "{soft:" + "9" * n + "}"),  # a count too long for int()
            st.text(max_size=6),
        ),
        max_size=12,
    ).map("".join),
)


def render(template: Template) -> str:
    """Source text from the segments alone: braces escaped, the whitespace before a slot as one space."""
    out = []
    for seg in template.segments:
        if seg.kind == "literal":
            out.append(seg.value.replace("{", "{{").replace("}", "}}"))
            continue
        name = {"text": seg.value, "soft": f"soft:{seg.count}"}.get(seg.kind, seg.kind)
        out.append(" " * seg.space_before + "{" + name + "}")
    return "".join(out)


@settings(max_examples=200)
@given(template_sources)
def test_a_template_parses_and_renders_back_or_is_a_one_line_user_error(source):
    try:
        template = parse_template(source)
    except UserError as err:
        assert_one_line(err)
        return
    assert parse_template(template.source) == template
    assert parse_template(render(template)).segments == template.segments  # the segments lose nothing
    assert all(isinstance(seg, Segment) and (seg.kind != "soft" or seg.count >= 1) for seg in template.segments)


# --- the CSV/TSV/JSONL loaders --------------------------------------------------------------------------

LABELS = ["negative", "positive", "0", "1", "2", "-1", "\u00b2", "1" * 30, "", " "]
cells = st.one_of(st.sampled_from(LABELS), st.text(max_size=12), st.sampled_from(['"', '""', "\t", ",", "\r\n", "\r"]))
ENCODINGS = ["utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@cache
def checked_local(path: Path, local: tuple) -> DictConfig:
    return validate_dataset_config(local_cfg(train=str(path), test=str(path), **dict(local)))


def load_or_one_line_error(path: Path, data: bytes, **local) -> None:
    path.write_bytes(data)
    cfg = checked_local(path, tuple(sorted(local.items())))
    try:
        examples = read_examples(cfg, path, "train")
    except UserError as err:
        assert_one_line(err)
        return
    assert examples and all(e.text_a.strip() and e.label in (0, 1) for e in examples)


@settings(max_examples=150)
@given(
    kind=st.sampled_from(["csv", "tsv"]),
    columns=st.permutations(["sentence", "label", "extra"]),
    header=st.booleans(),
    rows=st.lists(st.lists(cells, min_size=2, max_size=4), max_size=6),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC, csv.QUOTE_NONE]),
    ending=st.sampled_from(["\n", "\r\n", "\r"]),
    encoding=st.sampled_from(ENCODINGS),
    read_as=st.sampled_from(["utf-8", "latin-1"]),
    noise=st.tuples(st.integers(0, 10**6), st.binary(max_size=3)),
)
def test_a_table_loads_or_is_a_one_line_user_error(
    data_dir, kind, columns, header, rows, quoting, ending, encoding, read_as, noise
):
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t" if kind == "tsv" else ",", quoting=quoting, lineterminator=ending)
    if quoting == csv.QUOTE_NONE:
        writer = csv.writer(out, delimiter="\t" if kind == "tsv" else ",", quoting=quoting, escapechar="\\")
    writer.writerows(([columns] if header else []) + rows)
    data = out.getvalue().encode(encoding, errors="replace")
    at, junk = noise
    data = data[: at % (len(data) + 1)] + junk + data[at % (len(data) + 1) :]
    keys = {"text_a": "sentence", "label": "label"} if header else {"text_a": columns.index("sentence"), "label": 1}
    load_or_one_line_error(data_dir / f"train.{kind}", data, format=kind, header=header, encoding=read_as, **keys)


@settings(max_examples=150)
@given(kind=st.sampled_from(["csv", "tsv", "jsonl"]), data=st.binary(max_size=200), header=st.booleans())
def test_random_bytes_load_or_are_a_one_line_user_error(data_dir, kind, data, header):
    keys = {"text_a": "sentence", "label": "label"} if header else {"text_a": 0, "label": 1}
    local = {"format": "jsonl"} if kind == "jsonl" else {"format": kind, "header": header, **keys}
    load_or_one_line_error(data_dir / f"bytes.{kind}", data, **local)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.sampled_from(LABELS) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
json_records = st.dictionaries(st.sampled_from(["sentence", "label", "extra", ""]), json_values, max_size=4)


@settings(max_examples=150)
@given(
    records=st.lists(json_records | json_values, max_size=5),
    ending=st.sampled_from(["\n", "\r\n", "\r"]),
    bom=st.booleans(),
    cut=st.integers(0, 10**6),
)
def test_jsonl_loads_or_is_a_one_line_user_error(data_dir, records, ending, bom, cut):
    text = ending.join(json.dumps(record, ensure_ascii=False) for record in records)
    text = text[: cut % (len(text) + 2)]  # sometimes a record cut short
    data = (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")
    load_or_one_line_error(data_dir / "train.jsonl", data, format="jsonl")


# --- config validation ----------------------------------------------------------------------------------

config_text = st.text(max_size=10)
config_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    config_text,
    st.sampled_from(["${shots}", "${nope}", "???", "auto", "cpu", "bf16", "text", "linear", "{text_a} {mask}"]),
    st.lists(config_text | st.integers(), max_size=3),
    st.dictionaries(config_text, config_text | st.lists(config_text, max_size=2), max_size=2),
)


def leaf_paths(node, prefix=()) -> list[tuple]:
    """Every key path of a plain config container (each list item of a list of mappings too)."""
    paths = [prefix] if prefix else []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        paths += leaf_paths(value, (*prefix, key)) if isinstance(value, dict | list) else [(*prefix, key)]
    return paths


def value_at(node, path: tuple):
    for key in path:
        node = node[key]
    return node


def with_value(node, path: tuple, value):
    node = copy.deepcopy(node)
    parent = node
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return node


@cache
def group_nodes() -> dict[str, tuple[type, dict]]:
    """(schema, full plain node) of each group: the shipped YAMLs with every default filled in."""
    bases = {
        "dataset/local": (DatasetConfig, local_cfg(train="a.csv", test="b.csv")),
        "dataset/mr": (DatasetConfig, OmegaConf.load(CONFIG_DIR / "dataset" / "mr.yaml")),
        "model": (ModelConfig, OmegaConf.load(CONFIG_DIR / "model" / "tiny_bert.yaml")),
        "trainer": (TrainerConfig, OmegaConf.load(CONFIG_DIR / "trainer" / "default.yaml")),
    }
    bases |= {f"method/{name}": (method.config_class, {"name": name}) for name, method in METHODS.items()}
    nodes = {}
    for group, (schema, base) in bases.items():
        merged = checked_node(schema, base, group.split("/")[0])[0]
        nodes[group] = (schema, OmegaConf.to_container(merged, enum_to_str=True))
    return nodes


def as_node(plain: dict) -> DictConfig:
    try:
        return OmegaConf.create(plain)
    except OmegaConfBaseException:  # e.g. "${": Hydra rejects it while it composes, before any validation
        reject()


@settings(max_examples=150)
@given(data=st.data(), value=config_values)
def test_a_random_value_for_any_schema_key_validates_or_is_a_one_line_user_error(data, value):
    group = data.draw(st.sampled_from(sorted(group_nodes())))
    schema, node = group_nodes()[group]
    path = data.draw(st.sampled_from(leaf_paths(node)))
    changed = with_value(node, path, value)
    try:
        if group.startswith("method/"):
            method_config(as_node(changed))  # as validate() calls it: on the composed DictConfig
        else:
            checked_node(schema, changed, group.split("/")[0])
    except UserError as err:
        assert_one_line(err)


@cache
def composed() -> dict:
    return OmegaConf.to_container(compose_config("dataset=local", "model=tiny_bert"), enum_to_str=True)


@settings(max_examples=50)
@given(data=st.data(), value=config_values)
def test_the_full_validation_accepts_or_rejects_in_one_line(data, value):
    groups = ("dataset", "model", "trainer", "method")
    path = data.draw(st.sampled_from([p for p in leaf_paths(composed()) if p[0] in groups]))
    try:
        validate(as_node(with_value(composed(), path, value)))
    except UserError as err:
        assert_one_line(err)


# Cases the property tests once found: each is now a one-line error.
FOUND_CASES = [
    pytest.param(("method",), None, id="method_node_null"),
    pytest.param(("method",), [1], id="method_node_list"),
    pytest.param(("method",), {"name": "tfidf", "c_grid": [[]]}, id="list_item"),
    pytest.param(("trainer", "device"), "cuda\nrm", id="line_break"),
]


@pytest.mark.parametrize("path, value", FOUND_CASES)
def test_cases_found_by_the_property_tests_are_one_line_errors(path, value):
    with pytest.raises(UserError) as info:
        validate(as_node(with_value(composed(), path, value)))
    assert_one_line(info.value)


def test_every_schema_key_is_drawn_from():
    """The groups above cover every field of every schema (a new key is exercised without editing this file)."""
    nodes = group_nodes()
    for schema in (DatasetConfig, ModelConfig, TrainerConfig, *(m.config_class for m in METHODS.values())):
        covered = {path[0] for group, (s, node) in nodes.items() if s is schema for path in leaf_paths(node)}
        assert {f.name for f in fields(schema)} <= covered, schema.__name__
