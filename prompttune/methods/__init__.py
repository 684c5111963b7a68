"""Method registry: every module in this package registers its method; adding one is a file plus a YAML."""

import importlib
import pkgutil

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from prompttune.config.schema import checked_node, explain
from prompttune.errors import UserError
from prompttune.methods.core import Method, MethodConfig, Task
from prompttune.models.backbone import Backbone

METHODS: dict[str, type[Method]] = {}


def register(name: str):
    def add(cls: type[Method]) -> type[Method]:
        METHODS[name] = cls
        return cls

    return add


def method_config(method_cfg: DictConfig) -> MethodConfig:
    """The `method` node checked against its method's schema (types, choices, unknown keys, ranges)."""
    if not isinstance(method_cfg, DictConfig | dict):
        raise UserError(f"method must be a mapping with a name (method=NAME), not {method_cfg!r}")
    try:
        name = method_cfg.get("name")
    except OmegaConfBaseException as err:  # e.g. a name that interpolates a missing key
        raise UserError(explain(err, "method")) from None
    if name not in METHODS:
        raise UserError(f"method {name!r} is unknown; use one of {sorted(METHODS)}")
    return checked_node(METHODS[name].config_class, method_cfg, "method")[1]


def build_method(method_cfg: DictConfig, backbone: Backbone, task: Task, max_length: int) -> Method:
    cfg = method_config(method_cfg)
    return METHODS[cfg.name](cfg, backbone, task, max_length)


for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("core", "prompted", "heads"):
        importlib.import_module(f"{__name__}.{_module.name}")
