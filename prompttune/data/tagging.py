"""Sequence labelling (`dataset.task: token_classification`): tag schemes, reading a sentence's tags, and the
few-shot protocol over sentences.

A tagging dataset's `labels` are its entity types; its tags are `O` followed by every prefix of the scheme with
every type (`tag_names`), so `O` is always tag 0 and a head's tag set and seqeval's spans come from one list.

Schemes: `bio` (IOB2: B- starts an entity, I- continues it), `bmes` (B-egin, M-iddle, E-nd, S-ingle: MSRA's),
`iobes` (the same with I- for M-). A tag whose prefix is not the scheme's, or whose type is not in `labels`, is
an error. A sequence that breaks only the scheme's continuation rules is repaired, with a warning that counts
the repairs: an I-X that follows no B-X or I-X is IOB1's way to start an entity (legal in CoNLL-2003) and
becomes B-X (IOB1 is read as IOB2); in BMES, an M-X or E-X that continues nothing starts the entity (B-X, S-X)
and a B-X or M-X that nothing continues ends it (S-X, E-X) -- MSRA's files were cut into 100-character pieces,
some inside an entity.

The protocol: `shots=N` draws N training sentences and N more for dev by seed (every sentence has many tags, so
N counts sentences, not examples per class); `shots=all` trains on the whole training pool but a seed-drawn dev
set of DEV_SHARE of it (at most DEV_MAX sentences). The test pool is fixed; `test_size` subsamples it with a
fixed seed.
"""

import logging
import random
from collections.abc import Callable, Sequence

from prompttune.data.facts import facts_of, is_fact_probing, objects_of
from prompttune.data.records import Example
from prompttune.errors import UserError

log = logging.getLogger(__name__)

TOKEN_CLASSIFICATION = "token_classification"
ALL_SHOTS = "all"  # shots=all: the whole training pool (token classification)
OUTSIDE = "O"
SCHEME_PREFIXES = {"bio": ("B", "I"), "bmes": ("B", "M", "E", "S"), "iobes": ("B", "I", "E", "S")}
DEV_SHARE = 0.1  # shots=all: the share of the training pool drawn (by seed) for dev
DEV_MAX = 1000  # ... and at most this many sentences: dev is scored at every evaluation
TEST_SUBSAMPLE_SEED = 0  # the test subsample does not move with the run seed


def is_tagging(dataset_cfg) -> bool:
    return str(dataset_cfg.get("task") or "classification") == TOKEN_CLASSIFICATION


def tag_names(types: Sequence[str], scheme: str) -> list[str]:
    """O, then every prefix of the scheme with every entity type: B-PER, I-PER, B-LOC, I-LOC, ..."""
    return [OUTSIDE] + [f"{prefix}-{kind}" for kind in types for prefix in SCHEME_PREFIXES[scheme]]


def label_names(dataset_cfg) -> list[str]:
    """What examples' labels index: the tags of a tagging dataset, the relation's objects of a fact-probing one
    (data/facts.py), else its labels."""
    if is_tagging(dataset_cfg):
        return tag_names(list(dataset_cfg.labels), str(dataset_cfg.tag_scheme))
    if is_fact_probing(dataset_cfg):
        return objects_of(facts_of(dataset_cfg))
    return list(dataset_cfg.labels)


class TagReader:
    """Turns a sentence's raw tags into indices of `tag_names(types, scheme)`, repairing what only breaks the
    continuation rules and counting the repairs (see the module's docstring)."""

    def __init__(self, types: Sequence[str], scheme: str, fix_hint: str):
        self.scheme = scheme
        self.prefixes = SCHEME_PREFIXES[scheme]
        self.inside = self.prefixes[1]  # I or M
        self.types = list(types)
        names = tag_names(types, scheme)
        self.index = {name: i for i, name in enumerate(names)}
        self.allowed = {
            (a, b) for a, first in enumerate(names) for b, second in enumerate(names) if self._may_follow(first, second)
        }
        self.fix_hint = fix_hint  # how to fix a tag outside the label set (the setting to change)
        self.repaired = 0
        self.first_repair: str | None = None

    def __call__(self, tags: Sequence[str], where: Callable[[int], str]) -> tuple[int, ...]:
        """The sentence's tag indices; `where(i)` names the place of its i-th tag (file and line)."""
        if any(tag not in self.index for tag in tags):
            i = next(i for i, tag in enumerate(tags) if tag not in self.index)
            self._fail(tags[i], where(i))
        indices = [self.index[tag] for tag in tags]
        if all(pair in self.allowed for pair in zip([0, *indices], [*indices, 0], strict=True)):
            return tuple(indices)
        fixed = self._repaired(list(tags))
        changed = [i for i, (old, new) in enumerate(zip(tags, fixed, strict=True)) if old != new]
        self.repaired += len(changed)
        self.first_repair = self.first_repair or where(changed[0])
        return tuple(self.index[tag] for tag in fixed)

    def _may_follow(self, first: str, second: str) -> bool:
        """Whether tag `second` may follow tag `first` (O stands for a sentence's edges too)."""
        (p1, k1), (p2, k2) = _split(first), _split(second)
        continues = p2 in (self.inside, "E")
        if p1 in ("B", self.inside) and self.scheme != "bio":
            return continues and k1 == k2
        return not continues or (p1 in ("B", self.inside) and k1 == k2)

    def _fail(self, tag: str, where: str) -> None:
        prefix, dash, kind = tag.partition("-")
        if not dash or prefix not in self.prefixes:
            allowed = ", ".join(f"{p}-TYPE" for p in self.prefixes)
            raise UserError(
                f"{where}: tag {tag!r} is not {self.scheme.upper()} (O or {allowed}): fix the file or set "
                "dataset.tag_scheme to its scheme (bio, bmes, iobes)"
            )
        raise UserError(
            f"{where}: tag {tag!r} has the type {kind!r}, which is not among dataset.labels {self.types}: "
            f"{self.fix_hint}"
        )

    def _repaired(self, tags: list[str]) -> list[str]:
        parts = [_split(tag) for tag in tags]
        opens = ("B", self.inside)
        for i, (prefix, kind) in enumerate(parts):  # a continuation that continues nothing starts an entity
            before = parts[i - 1] if i else (OUTSIDE, None)
            if prefix in (self.inside, "E") and not (before[0] in opens and before[1] == kind):
                parts[i] = ("B" if prefix == self.inside else "S", kind)
        if self.scheme != "bio":  # an entity that nothing continues ends where it is
            for i, (prefix, kind) in enumerate(parts):
                after = parts[i + 1] if i + 1 < len(parts) else (OUTSIDE, None)
                if prefix in opens and not (after[0] in (self.inside, "E") and after[1] == kind):
                    parts[i] = ("S" if prefix == "B" else "E", kind)
        return [OUTSIDE if prefix == OUTSIDE else f"{prefix}-{kind}" for prefix, kind in parts]

    def warn_repairs(self, source: str) -> None:
        """Log the repairs made since the last call, then count afresh."""
        warn_repairs(source, self.scheme, self.repaired, self.first_repair)
        self.repaired, self.first_repair = 0, None


def warn_repairs(source: str, scheme: str, repaired: int, first: str | None) -> None:
    if repaired:
        what = "I-X tags with no B-X before them (IOB1) read as B-X" if scheme == "bio" else "tags repaired"
        log.warning("%s: %d %s, the first at %s (see docs/datasets.md)", source, repaired, what, first)


def _split(tag: str) -> tuple[str, str | None]:
    prefix, _, kind = tag.partition("-")
    return (OUTSIDE, None) if tag == OUTSIDE else (prefix, kind)


def tagged_example(guid: str, tokens: Sequence[str], tags: Sequence[int]) -> Example:
    """A sentence as an Example: its tokens and tag indices; text_a is the tokens joined by spaces (what the
    removal of test sentences from the training pool compares), label -1 (a sentence has no one label)."""
    return Example(guid, " ".join(tokens), -1, tokens=tuple(tokens), tags=tuple(tags))


def sample_sentences(
    pool: list[Example], shots: int | str, seed: int, dataset_name: str
) -> tuple[list[Example], list[Example]]:
    """`shots` training sentences and as many for dev, disjoint, drawn by seed; shots=all: the pool but a
    seed-drawn dev set (DEV_SHARE of it, at most DEV_MAX sentences)."""
    rng = random.Random(seed)
    order = rng.sample(range(len(pool)), len(pool))
    if shots == ALL_SHOTS:
        n_dev = min(DEV_MAX, max(1, round(DEV_SHARE * len(pool))))
        if len(pool) < 2:
            raise UserError(f"shots=all needs 2 or more sentences in the {dataset_name} training pool")
        dev, train = order[:n_dev], order[n_dev:]
    else:
        if 2 * shots > len(pool):
            raise UserError(
                f"shots={shots} needs {2 * shots} sentences (shots each for train and dev) but the {dataset_name} "
                f"training pool has {len(pool)} (less any sentence of the test pool); lower shots to at most "
                f"{len(pool) // 2}, or use shots=all"
            )
        train, dev = order[:shots], order[shots : 2 * shots]
    return [pool[i] for i in train], [pool[i] for i in dev]


def subsample_sentences(test: list[Example], test_size: int | None) -> list[Example]:
    """`test_size` sentences of the test pool in their original order, the same for every run seed."""
    if test_size is None or test_size >= len(test):
        return list(test)
    chosen = sorted(random.Random(TEST_SUBSAMPLE_SEED).sample(range(len(test)), test_size))
    return [test[i] for i in chosen]
