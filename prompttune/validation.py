"""Config validation: fail before any heavy work, with one line, on a config that cannot run."""

import math

from omegaconf import DictConfig

from prompttune.data import validate_dataset_config
from prompttune.errors import UserError
from prompttune.methods import method_config
from prompttune.tracking import validate_logger
from prompttune.training.precision import PRECISIONS


def validate(cfg: DictConfig) -> None:
    method_config(cfg.method)
    validate_dataset_config(cfg.dataset)
    if int(cfg.shots) < 1:
        raise UserError(f"shots={cfg.shots} must be at least 1")
    validate_trainer(cfg.trainer)
    validate_logger(cfg.get("logger"))


# trainer key -> (smallest allowed value, whether null is allowed)
_TRAINER_BOUNDS = {
    "batch_size": (1, False),
    "eval_batch_size": (1, False),
    "max_steps": (1, True),
    "epochs": (1, False),
    "eval_every": (1, True),
    "save_every": (1, True),
    "log_every": (1, False),
    "threads": (1, True),
    "lr": (0, False),
    "prompt_lr": (0, False),
    "weight_decay": (0, False),
    "warmup_ratio": (0, False),
    "max_grad_norm": (0, True),
}


def validate_trainer(trainer: DictConfig) -> None:
    unknown = set(trainer) - set(_TRAINER_BOUNDS) - {"precision", "device"}
    if unknown:
        raise UserError(f"trainer.{sorted(unknown)[0]} is not a trainer key; see configs/trainer/default.yaml")
    for key, (low, nullable) in _TRAINER_BOUNDS.items():
        value = trainer.get(key)
        if value is None and nullable:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < low:
            raise UserError(f"trainer.{key}={value} is out of range; it must be a number >= {low}")
    if trainer.precision not in PRECISIONS:
        raise UserError(f"trainer.precision={trainer.precision!r} is unknown; use one of {list(PRECISIONS)}")
    if trainer.device not in ("auto", "cpu", "cuda") and not str(trainer.device).startswith("cuda:"):
        raise UserError(f"trainer.device={trainer.device!r} is unknown; use auto, cpu or cuda")
