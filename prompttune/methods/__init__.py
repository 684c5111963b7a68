"""Method registry: every module in this package registers its method; adding one is a file plus a YAML."""

import importlib
import pkgutil

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from prompttune.config.schema import checked_node, explain
from prompttune.data.facts import FACT_PROBING
from prompttune.data.tagging import TOKEN_CLASSIFICATION
from prompttune.errors import UserError
from prompttune.methods.core import Method, MethodConfig, Task
from prompttune.methods.probing import check_probing_config
from prompttune.methods.tagging import check_tagging_config
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


def check_task_kind(cfg: MethodConfig, kind: str, dataset: str) -> None:
    """One line when the method cannot be built for the dataset's task kind (its class's `task_kinds`), or
    keeps a setting that kind has no use for; the methods that can are listed."""
    if kind not in METHODS[cfg.name].task_kinds:
        able = [name for name, method in sorted(METHODS.items()) if kind in method.task_kinds]
        choices = ", ".join(able[:-1]) + f" or {able[-1]}" if len(able) > 1 else "".join(able)
        raise UserError(
            f"method={cfg.name} cannot run on dataset {dataset}, a {kind} dataset ({KIND_WORDS.get(kind, kind)}): "
            f"use method={choices}"
        )
    if kind == TOKEN_CLASSIFICATION:
        check_tagging_config(cfg)
    if kind == FACT_PROBING:
        check_probing_config(cfg)


KIND_WORDS = {
    TOKEN_CLASSIFICATION: "a tag for every word, which only a tag head on a language model gives",
    FACT_PROBING: "an object ranked among the LM's tokens at a pattern's mask, which only a prompted LM head gives",
}


def build_method(method_cfg: DictConfig, backbone: Backbone, task: Task, max_length: int) -> Method:
    cfg = method_config(method_cfg)
    check_task_kind(cfg, task.kind, task.name)
    return METHODS[cfg.name](cfg, backbone, task, max_length)


for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("core", "prompted", "heads", "tagging", "probing"):
        importlib.import_module(f"{__name__}.{_module.name}")
