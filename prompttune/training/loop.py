"""The training loop shared by every method: AdamW or Adafactor, warmup then linear decay, clipping, best-on-dev,
resumable."""

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Protocol

import torch
from omegaconf import DictConfig
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import get_linear_schedule_with_warmup

from prompttune.errors import UserError
from prompttune.methods.core import Method
from prompttune.prompts.encoding import EncodedExample, collate
from prompttune.training import interrupts
from prompttune.training.metrics import gold_labels, task_metrics
from prompttune.training.precision import MasterCopies, adamw, autocast
from prompttune.training.state import Snapshots, Trainables, TrainProgress

log = logging.getLogger(__name__)


class TrainingDiverged(Exception):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    steps: int
    best_step: int
    best_dev: dict[str, float]
    train_seconds: float
    seconds_per_step: float
    examples_per_second: float
    history: list[dict] = field(default_factory=list)

    @classmethod
    def untrained(cls, dev: dict[str, float], fit_seconds: float) -> "TrainResult":
        """A method that does not train: 0 steps, its dev metrics as they stand, its fitting time."""
        return cls(0, 0, dev, fit_seconds, 0.0, 0.0, [])


def make_optimizer(name: str, groups: list[dict], device: torch.device) -> torch.optim.Optimizer:
    """AdamW (fused), or Adafactor (Shazeer and Stern 2018; Lester et al. train prompts with it), per-group lr."""
    if name == "adafactor":
        return torch.optim.Adafactor(groups)
    return adamw(groups, device)


def batches(encoded: list[EncodedExample], size: int, pad_id: int, order: list[int] | None = None):
    order = order if order is not None else list(range(len(encoded)))
    for start in range(0, len(order), size):
        yield collate([encoded[i] for i in order[start : start + size]], pad_id)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


@torch.inference_mode()
def predict(method: Method, encoded: list[EncodedExample], cfg: DictConfig, device: torch.device) -> torch.Tensor:
    """Class logits for every example, in order. Batches are formed by length, so padding stays small."""
    was_training = method.training
    method.eval()
    pad_id = method.pad_token_id
    by_length = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    outputs = []
    with autocast(device, cfg.precision):
        for batch in batches(encoded, cfg.eval_batch_size, pad_id, by_length):
            outputs.append(method(to_device(batch, device)).float().cpu())
    method.train(was_training)
    logits = concatenated(outputs)
    return logits[torch.argsort(torch.tensor(by_length))]


def concatenated(outputs: list[torch.Tensor]) -> torch.Tensor:
    """The batches' scores as one tensor; per-word scores [B, W, C] padded with 0 to the most words of any batch
    (a tagging head's padding: its argmax is tag 0, O)."""
    if outputs and outputs[0].dim() == 3:
        width = max(out.shape[1] for out in outputs)
        outputs = [torch.nn.functional.pad(out, (0, 0, 0, width - out.shape[1])) for out in outputs]
    return torch.cat(outputs)


def evaluate(
    method: Method, encoded: list[EncodedExample], cfg: DictConfig, device: torch.device, calibrate: bool = True
) -> dict[str, float]:
    logits = class_logits(method, encoded, cfg, device, calibrate)
    return task_metrics(method.task.kind).dev(logits, gold_labels(encoded), method.task.labels)


def class_logits(
    method: Method, encoded: list[EncodedExample], cfg: DictConfig, device: torch.device, calibrate: bool = True
) -> torch.Tensor:
    """Class logits, contextually calibrated when the method asks for it and `calibrate` allows."""
    logits = predict(method, encoded, cfg, device)
    if calibrate and method.cfg.calibration == "contextual":
        logits = contextual_calibration(method, logits, cfg, device)
    return logits


def contextual_calibration(method: Method, logits: torch.Tensor, cfg: DictConfig, device: torch.device):
    """Zhao et al. 2021: divide the class probabilities by the mean probabilities of the content-free inputs
    ("N/A", "", the mask token): W = diag(p_cf)^-1, b = 0, in log space."""
    content_free = predict(method, method.encode(method.content_free_examples()), cfg, device)
    mean_probs = content_free.softmax(-1).mean(0)
    return logits.log_softmax(-1) - mean_probs.log()


class LoopCallback(Protocol):
    """What the loop reports as it goes (prompttune.tracking.TrackingCallback turns it into logged metrics)."""

    def on_step(self, step: int, loss: float, learning_rates: dict[str, float]) -> None: ...

    def on_evaluation(self, step: int, dev: dict[str, float]) -> None: ...


class NoCallback:
    def on_step(self, step: int, loss: float, learning_rates: dict[str, float]) -> None:
        pass

    def on_evaluation(self, step: int, dev: dict[str, float]) -> None:
        pass


def total_steps(cfg: DictConfig, n_train: int) -> int:
    """max_steps, or epochs when it is null; never fewer than min_epochs."""
    per_epoch = math.ceil(n_train / cfg.batch_size)
    steps = int(cfg.epochs) * per_epoch if cfg.max_steps is None else int(cfg.max_steps)
    return max(steps, int(cfg.get("min_epochs") or 0) * per_epoch)


def dev_interval(cfg: DictConfig, steps: int) -> int:
    """Steps between dev evaluations: `evals` spread evenly over the run, else eval_every (null: at the end)."""
    if cfg.get("evals"):
        return max(1, math.ceil(steps / int(cfg.evals)))
    return cfg.eval_every or steps


def train(
    method: Method,
    train_set: list[EncodedExample],
    dev_set: list[EncodedExample],
    cfg: DictConfig,
    device: torch.device,
    seed: int,
    snapshots: Snapshots | None = None,
    callback: LoopCallback | None = None,
) -> TrainResult:
    """Train, keeping the best-on-dev parameters; with `snapshots`, resume from the newest one and save one
    every trainer.save_every steps and on SIGINT/SIGTERM."""
    steps = total_steps(cfg, len(train_set))
    callback = callback or NoCallback()
    groups = method.param_groups(cfg.lr, cfg.prompt_lr, cfg.weight_decay)
    if not groups:
        raise UserError(f"method={method.cfg.name} has no trainable parameters with this config")
    masters = MasterCopies(groups)
    optimizer = make_optimizer(cfg.optimizer, masters.groups, device)
    schedule = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * steps), steps)
    live = Trainables(method, optimizer, schedule, torch.Generator().manual_seed(seed), masters)
    run = (snapshots.restore(live) if snapshots else None) or TrainProgress()
    pad_id = method.pad_token_id
    eval_every = dev_interval(cfg, steps)
    method.train()
    with _progress() as progress, interrupts.deferred():
        task = progress.add_task("train", total=steps, completed=run.step, loss=float("nan"))
        while run.step < steps:
            if run.order is None:
                run.order, run.position = torch.randperm(len(train_set), generator=live.shuffler).tolist(), 0
            for batch in batches(train_set, cfg.batch_size, pad_id, run.order[run.position :]):
                started = time.perf_counter()
                loss = _step(method, batch, optimizer, schedule, masters, cfg, device)
                run.step_seconds += time.perf_counter() - started
                run.step += 1
                run.position += len(batch["labels"])
                progress.update(task, advance=1, loss=loss)
                if run.step % cfg.log_every == 0 or run.step == steps:
                    log.info("step %d/%d loss %.4f", run.step, steps, loss)
                    callback.on_step(run.step, loss, {g["name"]: g["lr"] for g in optimizer.param_groups})
                if run.step % eval_every == 0 or run.step == steps:
                    callback.on_evaluation(run.step, _evaluate_on_dev(method, dev_set, cfg, device, run, loss))
                if snapshots and (snapshots.due(run.step, steps) or interrupts.requested()):
                    snapshots.save(run, live)
                interrupts.check()
                if run.step == steps:
                    break
            else:
                run.order = None
    method.load_trainable_state(run.best_state)
    seconds = run.step_seconds
    return TrainResult(
        steps, run.best_step, run.best_dev, seconds, seconds / steps, steps * cfg.batch_size / seconds, run.history
    )


def _evaluate_on_dev(method, dev_set, cfg, device, run: TrainProgress, loss: float) -> dict[str, float]:
    """Dev metrics, uncalibrated unless method.calibrate_dev: calibration does not pick the checkpoint."""
    dev = evaluate(method, dev_set, cfg, device, calibrate=method.cfg.calibrate_dev)
    run.history.append({"step": run.step, "loss": loss, "dev": dev})
    key = task_metrics(method.task.kind).selection  # accuracy; entity F1 for tagging
    shown = " ".join(f"{name} {dev[name]:.4f}" for name in dict.fromkeys((key, "accuracy", "macro_f1")))
    log.info("step %d dev %s", run.step, shown)
    if run.best_dev is None or dev[key] > run.best_dev[key]:
        run.best_step, run.best_dev = run.step, dev
        run.best_state = {k: v.clone() for k, v in method.trainable_state().items()}
    return dev


def _step(method, batch, optimizer, schedule, masters: MasterCopies, cfg, device) -> float:
    batch = to_device(batch, device)
    with autocast(device, cfg.precision):
        loss = method.training_loss(batch)
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"the loss became {loss.item()} at step {schedule.last_epoch + 1}; lower trainer.lr")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    masters.gradients_to_masters()
    if cfg.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(masters.parameters(), cfg.max_grad_norm, foreach=True)
    optimizer.step()
    masters.masters_to_model()
    schedule.step()
    return loss.item()


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeRemainingColumn(),
        transient=True,
    )
