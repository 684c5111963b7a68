"""The top-level schema, the registration of every group's schema in Hydra's ConfigStore, and `validate`.

configs/train.yaml extends `run_schema` (so `dataset`, `model` and `trainer` are typed wherever their YAML comes
from, a user's --config-dir included), and every configs/method/*.yaml extends its method's own schema
(`schema/method/<name>`, the config dataclass of its module). Hydra then rejects a wrong type, a value outside
an Enum or an unknown key while it composes; `validate` adds the ranges and the rules between fields.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from prompttune.config.schema import Invalid, bounded, checked_node, message
from prompttune.data.config import DatasetConfig
from prompttune.data.facts import FACT_PROBING
from prompttune.data.tagging import ALL_SHOTS, TOKEN_CLASSIFICATION
from prompttune.errors import UserError
from prompttune.models.config import ModelConfig
from prompttune.training.config import TrainerConfig


@dataclass
class RunConfig:
    """`prompttune train` and `prompttune eval` (eval adds nothing: it only reads `run`)."""

    # examples per class, for train and again for dev (LM-BFF protocol); on a token_classification dataset,
    # sentences for train and again for dev, or all: the whole training pool (data/tagging.py); on a fact_probing
    # dataset, at most this many training facts of its fixed split, or all (data/facts.py). Typed Any: a whole
    # number or "all", checked in check()
    shots: Any = 16
    seed: int = bounded(13, ge=0)  # draws the split, seeds initialisation and shuffling: 13, 21, 42, 87, 100
    run: str | None = None  # eval: a training run directory to re-evaluate
    resume: str | None = None  # train: a run directory to continue
    method: Any = MISSING  # typed by the method's own schema (configs/method/*.yaml extend it)
    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: Any = None  # typed by its option's schema (configs/logger/*.yaml extend it); null: no tracking

    def check(self) -> None:
        whole = isinstance(self.shots, int) and not isinstance(self.shots, bool)
        if not (whole and self.shots >= 1) and self.shots != ALL_SHOTS:
            raise Invalid("shots", self.shots, "a whole number >= 1, or all (token_classification datasets)")
        if self.shots == ALL_SHOTS and self.dataset.task not in (TOKEN_CLASSIFICATION, FACT_PROBING):
            raise Invalid("shots", self.shots, "a whole number >= 1 (all: the whole training pool, for tagging)")


def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore; call before Hydra composes a config (idempotent)."""
    from prompttune.config.logger import LOGGER_SCHEMAS
    from prompttune.methods import METHODS

    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)
    store.store(group="schema", name="dataset", node=DatasetConfig)
    store.store(group="schema", name="model", node=ModelConfig)
    store.store(group="schema", name="trainer", node=TrainerConfig)
    for name, method in METHODS.items():
        store.store(group="schema/method", name=name, node=method.config_class)
    for name, schema in LOGGER_SCHEMAS.items():
        store.store(group="schema/logger", name=name, node=schema)


def validate(cfg: DictConfig) -> None:
    """Fail with one line, before any heavy work, on a config that cannot run: every key of every group."""
    from prompttune.config.logger import checked_logger
    from prompttune.methods import check_task_kind, method_config

    checked_node(RunConfig, cfg, "")
    method = method_config(cfg.method)  # by the registry: also a method node no schema typed (eval run=, a user's YAML)
    check_task_kind(method, str(cfg.dataset.get("task") or "classification"), str(cfg.dataset.name))  # pet on NER
    soft, max_length = method.soft_input_tokens(), int(cfg.model.max_length)
    if soft >= max_length:
        raise UserError(
            message(
                "method.n_tokens",
                cfg.method.n_tokens,
                f"fewer soft tokens than model.max_length={max_length}, which they share with the text "
                "(lower method.n_tokens or raise model.max_length)",
            )
        )
    checked_logger(cfg.get("logger"))
