"""The one validation mechanism of every config group.

Each group's schema is a dataclass: OmegaConf checks types, Enum choices and unknown keys when Hydra composes
the config; ranges are declared on the field (`bounded(...)`) and rules between fields live in the dataclass's
`check()`, both run by `check_values`. Every failure becomes one line naming the key, the value and what is
allowed.
"""

import dataclasses
import math
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from types import NoneType, UnionType
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationToMissingValueError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from prompttune.errors import UserError


class Invalid(Exception):
    """Raised by a schema's `check()`: a field (relative to the dataclass), its value, what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        super().__init__(key)
        self.key, self.value, self.allowed = key, value, allowed


@dataclass(frozen=True)
class Bounds:
    ge: float | None = None
    gt: float | None = None
    le: float | None = None

    def allows(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return False
        return not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
        )

    def describe(self, kind: str) -> str:
        limits = [f"{op} {v:g}" for op, v in ((">=", self.ge), (">", self.gt), ("<=", self.le)) if v is not None]
        return f"{kind} {' and '.join(limits)}".strip()


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None) -> Any:
    """A dataclass field whose value (when not null) must lie within the bounds."""
    return field(default=default, metadata={"bounds": Bounds(ge, gt, le)})


def message(key: str, value: Any, allowed: str) -> str:
    return f"{key}={_show(value)} is invalid; allowed: {allowed}"


def _show(value: Any) -> str:
    if isinstance(value, Enum):
        return value.name
    if value is None:
        return "null"
    if isinstance(value, str) and not value.isprintable():
        return repr(value)  # a line break or control character printed raw would break the one-line message
    return str(value) if isinstance(value, int | float | str) else repr(value)


def check_values(obj: Any, key: str) -> None:
    """Run the bounds and `check()` rules of a schema object and of the schema objects inside it."""
    for f in fields(obj):
        value, where = getattr(obj, f.name), f"{key}.{f.name}" if key else f.name
        if not _items_fit(value, f.type):
            raise UserError(message(where, value, f"a list of {_kind(typing.get_args(f.type)[0])}s"))
        bounds = f.metadata.get("bounds")
        if bounds is not None and value is not None and not bounds.allows(value):
            raise UserError(message(where, value, bounds.describe(_kind(f.type))))
        for i, item in enumerate(value if isinstance(value, list) else [value]):
            if is_dataclass(item):
                check_values(item, f"{where}[{i}]" if isinstance(value, list) else where)
    if hasattr(obj, "check"):
        try:
            obj.check()
        except Invalid as err:
            raise UserError(message(f"{key}.{err.key}" if key else err.key, err.value, err.allowed)) from None


def _items_fit(value: Any, declared: Any) -> bool:
    """Whether a list[int] or list[float] field holds numbers only (OmegaConf lets a list or mapping through as
    an item of such a list)."""
    if typing.get_origin(declared) is not list or not isinstance(value, list):
        return True
    item = typing.get_args(declared)[0] if typing.get_args(declared) else Any
    if item not in (int, float):
        return True
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)


def checked_node(schema: type, node: Any, key: str) -> tuple[DictConfig, Any]:
    """`node` merged onto `schema` (types, choices, unknown and missing keys) with its values checked:
    the merged DictConfig and the schema object."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise UserError(explain(err, key)) from None
    check_values(obj, key)
    return merged, obj


def explain(err: BaseException, prefix: str = "") -> str:
    """One line for OmegaConf's error (possibly wrapped by Hydra as the cause of its own)."""
    cause = err
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__
    if cause is None:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        return " ".join(lines[:2]) if lines else type(err).__name__
    full_key = getattr(cause, "full_key", None) or getattr(cause, "key", None) or "?"
    key = f"{prefix}.{full_key}" if prefix else str(full_key)
    owner = getattr(cause, "object_type", None)
    name = str(full_key).rsplit(".", 1)[-1]
    if isinstance(cause, InterpolationToMissingValueError):
        missing = str(cause).splitlines()[0].rsplit(":", 1)[-1].strip()
        return f"{missing} is required but not set; give it a value ({missing}=...), {key} refers to it"
    if isinstance(cause, MissingMandatoryValue):
        return f"{key} is required but not set; give it a value ({key}=...)"
    if isinstance(cause, ConfigAttributeError | ConfigKeyError):
        known = ", ".join(f.name for f in fields(owner)) if is_dataclass(owner) else "see --cfg job"
        return f"{key} is not a config key; allowed keys here: {known}"
    hint = _field_type(owner, name)
    allowed = describe_type(hint) if hint is not None else str(cause).splitlines()[0]
    return message(key, getattr(cause, "value", "?"), allowed)


def _field_type(owner: Any, name: str) -> Any:
    if not is_dataclass(owner) or name not in {f.name for f in dataclasses.fields(owner)}:
        return None
    return typing.get_type_hints(owner)[name]


def describe_type(hint: Any) -> str:
    """What values a field of this type takes, in words: `verbalizer, linear`, `a whole number or null`."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, UnionType) and NoneType in args:
        inner = [a for a in args if a is not NoneType]
        return f"{describe_type(inner[0]) if len(inner) == 1 else 'a value'} or null"
    if isinstance(hint, type) and issubclass(hint, Enum):
        return ", ".join(member.name for member in hint)
    words = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}
    if hint in words:
        return words[hint]
    if typing.get_origin(hint) is list:
        return "a list, e.g. [a,b]"
    if typing.get_origin(hint) is dict:
        return "a mapping, e.g. {a:1}"
    return "a config group node" if is_dataclass(hint) else "a value"


def _kind(hint: Any) -> str:
    text = describe_type(hint)
    return "a whole number" if "whole" in text else "a finite number"
