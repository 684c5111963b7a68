"""The schema of the `trainer` group: optimisation budget, evaluation cadence, precision and device."""

import re
from dataclasses import dataclass
from enum import StrEnum

from prompttune.config.schema import Invalid, bounded


class Precision(StrEnum):
    fp32 = "fp32"
    bf16 = "bf16"  # backbone held in bf16, fp32 master weights, autocast
    auto = "auto"  # bf16 where the hardware has it


class Optimizer(StrEnum):
    adamw = "adamw"
    adafactor = "adafactor"  # torch.optim.Adafactor: lr is its relative step-size cap


@dataclass
class TrainerConfig:
    max_steps: int | None = bounded(40, ge=1)  # optimizer steps; null: use epochs
    epochs: int = bounded(10, ge=1)  # used when max_steps is null
    # At least this many epochs even when max_steps is set: a budget that grows with the split (a step count
    # tuned at K=16 is under one epoch at K=256); null: max_steps alone
    min_epochs: int | None = bounded(None, ge=1)
    batch_size: int = bounded(8, ge=1)
    eval_batch_size: int = bounded(32, ge=1)
    optimizer: Optimizer = Optimizer.adamw
    lr: float = bounded(2.0e-5, ge=0)  # backbone and head (methods may set method.lr)
    prompt_lr: float = bounded(1.0e-3, ge=0)  # soft-prompt parameters (methods may set method.prompt_lr)
    weight_decay: float = bounded(0.01, ge=0)
    warmup_ratio: float = bounded(0.1, ge=0, le=1)
    max_grad_norm: float | None = bounded(1.0, ge=0)  # null or 0: no clipping
    eval_every: int | None = bounded(10, ge=1)  # evaluate on dev every N steps, keep the best; null: at the end
    evals: int | None = bounded(None, ge=1)  # instead of eval_every: this many dev evaluations, evenly spaced
    log_every: int = bounded(5, ge=1)
    save_every: int | None = bounded(None, ge=1)  # a resumable state every N steps in state/; null: on signals only
    precision: Precision = Precision.fp32
    compile: bool = False  # torch.compile the transformer body (README: Speed, where it was measured)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = bounded(None, ge=1)  # torch threads; null: torch's default or the launcher's share

    def check(self) -> None:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise Invalid("device", self.device, "auto, cpu, cuda, cuda:N")
