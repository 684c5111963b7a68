"""Templates: a small grammar of literal text and slots, and its encoding into token ids.

Grammar: literal text, `{text_a}`, `{text_b}`, `{mask}`, `{sep}`, `{soft}` / `{soft:N}`; `{{` and `}}` are
literal braces. Nothing is ever evaluated. Spaces before a slot travel with the slot (so byte-level BPE
vocabularies see ` great`, not `great`); a newline stays in the literal (a chat turn's `assistant\n{mask}`).
For a causal LM everything after `{mask}` is cut.
"""

import re
from dataclasses import dataclass, field

from prompttune.errors import UserError

TEXT_SLOTS = ("text_a", "text_b")
_TOKEN = re.compile(r"\{\{|\}\}|\{([a-z_]+)(?::(\d+))?\}|[^{}]+|[{}]")


@dataclass(frozen=True)
class Segment:
    kind: str  # "literal" | "text" | "mask" | "soft" | "sep"
    value: str = ""  # the literal, or the text slot's name
    count: int = 1  # soft tokens in a soft slot
    space_before: bool = False


@dataclass(frozen=True)
class Template:
    source: str
    segments: tuple[Segment, ...] = field(default_factory=tuple)

    @property
    def text_slots(self) -> set[str]:
        return {s.value for s in self.segments if s.kind == "text"}

    @property
    def has_mask(self) -> bool:
        return any(s.kind == "mask" for s in self.segments)

    @property
    def n_soft(self) -> int:
        return sum(s.count for s in self.segments if s.kind == "soft")

    @property
    def space_before_mask(self) -> bool:
        return any(s.space_before for s in self.segments if s.kind == "mask")


def parse_template(source: str) -> Template:
    raw: list[Segment] = []
    for match in _TOKEN.finditer(source):
        token = match.group(0)
        if token in ("{{", "}}"):
            raw.append(Segment("literal", token[0]))
        elif token in ("{", "}"):
            raise UserError(f"template {source!r} has an unmatched {token!r}; write {token * 2} for a literal brace")
        elif match.group(1) is not None:
            raw.append(_slot(source, match.group(1), match.group(2)))
        else:
            raw.append(Segment("literal", token))
    segments = _move_spaces_to_slots(raw)
    if sum(s.kind == "mask" for s in segments) > 1:
        raise UserError(f"template {source!r} has more than one {{mask}}; use exactly one")
    return Template(source, tuple(segments))


def _slot(source: str, name: str, count: str | None) -> Segment:
    if name == "soft":
        if count is not None and len(count) > 6:  # int() refuses over 4300 digits, and no prompt is that long
            raise UserError(f"template {source!r}: {{soft:N}} with a {len(count)}-digit N; use at most 999999 tokens")
        n = int(count) if count is not None else 1
        if n < 1:
            raise UserError(f"template {source!r}: {{soft:{count}}} needs at least one token")
        return Segment("soft", count=n)
    if count is not None:
        raise UserError(f"template {source!r}: only {{soft:N}} takes a count, not {{{name}:{count}}}")
    if name in TEXT_SLOTS:
        return Segment("text", name)
    if name in ("mask", "sep"):
        return Segment(name)
    slots = "{text_a}, {text_b}, {mask}, {sep} or {soft:N}"
    raise UserError(f"template {source!r} has an unknown slot {{{name}}}; use {slots}")


def _move_spaces_to_slots(raw: list[Segment]) -> list[Segment]:
    """Merge adjacent literals and hand each literal's trailing spaces to the slot that follows it."""
    out: list[Segment] = []
    pending_space = False
    for seg in raw:
        if seg.kind == "literal":
            text = (out.pop().value if out and out[-1].kind == "literal" else "") + seg.value
            out.append(Segment("literal", text))
            continue
        if out and out[-1].kind == "literal":
            stripped = out[-1].value.rstrip(" ")
            pending_space = stripped != out[-1].value
            out[-1] = Segment("literal", stripped)
            if not stripped:
                out.pop()
        out.append(Segment(seg.kind, seg.value, seg.count, pending_space))
        pending_space = False
    return out


def allocate_lengths(lengths: list[int], budget: int) -> list[int]:
    """Cut the longest texts first so that their total fits the budget (water-filling)."""
    if sum(lengths) <= budget:
        return list(lengths)
    allocation = [0] * len(lengths)
    remaining = max(budget, 0)
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    for rank, i in enumerate(order):
        share = remaining // (len(lengths) - rank)
        allocation[i] = min(lengths[i], share)
        remaining -= allocation[i]
    return allocation
