"""Turning raw label values from files and hub datasets into indices of the config's `labels`."""

import re
from collections.abc import Mapping
from typing import Any

from prompttune.errors import UserError


def _key(value: Any) -> str:
    # YAML and JSON spell booleans lower-case; str(True) would not match a label_map key "true".
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).strip()


class LabelResolver:
    """Maps a raw label to an index: through label_map if given, else by label name, else as an index."""

    def __init__(self, labels: list[str], label_map: Mapping[Any, str] | None, map_setting: str):
        self.labels = list(labels)
        self.map_setting = map_setting
        self.label_map = None if label_map is None else {_key(raw): name for raw, name in label_map.items()}

    def __call__(self, raw: Any, where: str) -> int:
        if self.label_map is not None:
            return self._through_map(raw, where)
        key = _key(raw)
        if key in self.labels:
            return self.labels.index(key)
        # \d{1,9}: decimal digits only, which int() reads (not "²"), and never too many for it
        if re.fullmatch(r"-?\d{1,9}", key) and 0 <= int(key) < len(self.labels):
            return int(key)
        raise UserError(
            f"{where}: label {raw!r} is neither one of {self.labels} nor an index 0..{len(self.labels) - 1}: "
            f"set {self.map_setting} to map raw values to label names"
        )

    def _through_map(self, raw: Any, where: str) -> int:
        name = self.label_map.get(_key(raw))
        if name is None:
            raise UserError(
                f"{where}: label {raw!r} is not a key of {self.map_setting} ({sorted(self.label_map)}): add it"
            )
        return self.labels.index(name)
