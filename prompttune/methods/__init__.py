"""Method registry: every module in this package registers its method; adding one is a file plus a YAML."""

import importlib
import pkgutil

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from prompttune.errors import UserError
from prompttune.methods.base import Method, MethodConfig, Task
from prompttune.models.backbone import Backbone

METHODS: dict[str, type[Method]] = {}


def register(name: str):
    def add(cls: type[Method]) -> type[Method]:
        METHODS[name] = cls
        return cls

    return add


def method_config(method_cfg: DictConfig) -> MethodConfig:
    """Validate the `method` group against the method's dataclass: unknown keys and bad types are errors."""
    name = method_cfg.get("name")
    if name not in METHODS:
        raise UserError(f"method {name!r} is unknown; use one of {sorted(METHODS)}")
    schema = OmegaConf.structured(METHODS[name].config_class)
    try:
        merged = OmegaConf.merge(schema, method_cfg)
    except OmegaConfBaseException as err:
        raise UserError(f"method {name}: {str(err).splitlines()[0]}") from None
    return OmegaConf.to_object(merged)


def build_method(method_cfg: DictConfig, backbone: Backbone, task: Task, max_length: int) -> Method:
    cfg = method_config(method_cfg)
    return METHODS[cfg.name](cfg, backbone, task, max_length)


for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "heads"):
        importlib.import_module(f"{__name__}.{_module.name}")
