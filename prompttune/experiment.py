"""One experiment: build the model and method from the config, train or evaluate, fill the run directory."""

import logging
import math
import re
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from prompttune.data import Splits, load_splits, validate_dataset_config
from prompttune.data.records import Example
from prompttune.errors import UserError
from prompttune.files import write_json
from prompttune.methods import build_method, method_config
from prompttune.methods.base import Method, Task
from prompttune.models.loading import load_backbone
from prompttune.runs import load_run, load_split_examples, now, save_checkpoint
from prompttune.training.loop import evaluate, train

log = logging.getLogger(__name__)


@dataclass
class Setup:
    method: Method
    device: torch.device


def validate(cfg: DictConfig) -> None:
    """Fail before any heavy work, with one line, on a config that cannot run."""
    method_config(cfg.method)
    validate_dataset_config(cfg.dataset)
    if int(cfg.shots) < 1:
        raise UserError(f"shots={cfg.shots} must be at least 1")
    validate_trainer(cfg.trainer)


# trainer key -> (smallest allowed value, whether null is allowed)
_TRAINER_BOUNDS = {
    "batch_size": (1, False),
    "eval_batch_size": (1, False),
    "max_steps": (1, True),
    "epochs": (1, False),
    "eval_every": (1, True),
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
    if trainer.precision not in ("fp32", "bf16"):
        raise UserError(f"trainer.precision={trainer.precision!r} is unknown; use fp32 or bf16")
    if trainer.device not in ("auto", "cpu", "cuda") and not str(trainer.device).startswith("cuda:"):
        raise UserError(f"trainer.device={trainer.device!r} is unknown; use auto, cpu or cuda")


def task_of(dataset_cfg: DictConfig, splits_have_text_b: bool) -> Task:
    patterns = OmegaConf.to_container(dataset_cfg.patterns, resolve=True)
    return Task(dataset_cfg.name, list(dataset_cfg.labels), patterns, splits_have_text_b)


def build(cfg: DictConfig, has_text_b: bool) -> Setup:
    device = pick_device(cfg.trainer.device)
    torch.manual_seed(int(cfg.seed))
    backbone = load_backbone(cfg.model)
    method = build_method(cfg.method, backbone, task_of(cfg.dataset, has_text_b), int(cfg.model.max_length))
    return Setup(method.to(device), device)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("trainer.device=cuda but no GPU is visible; use trainer.device=cpu or auto")
    return torch.device(name)


_REPORT_KEYS = {"seed", "method", "dataset", "model", "shots", "run"}  # reports group or average by these


def settings_of(overrides: list[str]) -> list[str]:
    """The command-line settings besides those reports group and average by: runs of one method that differ
    in them (e.g. method.pattern_id) are reported apart."""
    kept = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] not in _REPORT_KEYS]
    return sorted(o for o in kept if not o.startswith("hydra"))


def job_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def describe(cfg: DictConfig, command: str, run_dir: Path) -> dict:
    return {
        "status": "running",
        "error": None,
        "command": command,
        "method": cfg.method.name,
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "shots": int(cfg.shots),
        "seed": int(cfg.seed),
        "settings": settings_of(job_overrides()),
        "run_dir": str(run_dir),
        "started_at": now(),
    }


def begin(cfg: DictConfig, command: str, run_dir: Path, **extra) -> dict:
    """Mark the run as running in its metrics.json, and start measuring its peak memory."""
    reset_peak_memory()
    metrics = describe(cfg, command, run_dir) | extra
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def reset_peak_memory() -> None:
    """Start this job's peak memory afresh: sequential sweep jobs share one process."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:  # Linux: "5" resets the peak resident set size (VmHWM) of this process
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated, or the process's peak resident memory on CPU, since reset_peak_memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    status = Path("/proc/self/status")
    if status.exists():
        peak = re.search(r"^VmHWM:\s+(\d+) kB", status.read_text(), re.MULTILINE)
        if peak:
            return int(peak.group(1)) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def timed_test(setup: Setup, test: list[Example], trainer_cfg: DictConfig) -> tuple[dict, float]:
    started = time.perf_counter()
    metrics = evaluate(setup.method, setup.method.encode(test), trainer_cfg, setup.device)
    return metrics, time.perf_counter() - started


def start(cfg: DictConfig, command: str, run_dir: Path) -> tuple[dict, Splits, Setup]:
    """Mark the run as running, draw and save the split, build the method."""
    metrics = begin(cfg, command, run_dir)
    validate(cfg)
    splits = load_splits(cfg.dataset, int(cfg.shots), int(cfg.seed))
    write_json(run_dir / "splits.json", splits.to_json())
    return metrics, splits, build(cfg, has_text_b(splits.train + splits.dev + splits.test))


def run_train(cfg: DictConfig, run_dir: Path) -> dict:
    metrics, splits, setup = start(cfg, "train", run_dir)
    log.info(
        "%s on %s with %s: %d train, %d dev, %d test",
        cfg.method.name,
        cfg.dataset.name,
        cfg.model.name,
        len(splits.train),
        len(splits.dev),
        len(splits.test),
    )
    result = train(
        setup.method,
        setup.method.encode(splits.train),
        setup.method.encode(splits.dev),
        cfg.trainer,
        setup.device,
        int(cfg.seed),
    )
    test, eval_seconds = timed_test(setup, splits.test, cfg.trainer)
    size = save_checkpoint(run_dir, setup.method.trainable_state(), cfg)
    metrics.update(
        status="completed",
        dev=result.best_dev,
        test=test,
        params=setup.method.parameter_counts(),
        steps=result.steps,
        best_step=result.best_step,
        train_seconds=result.train_seconds,
        seconds_per_step=result.seconds_per_step,
        train_examples_per_second=result.examples_per_second,
        eval_seconds=eval_seconds,
        eval_examples_per_second=len(splits.test) / eval_seconds,
        peak_memory_mb=peak_memory_mb(setup.device),
        checkpoint_bytes=size,
        history=result.history,
        finished_at=now(),
    )
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def has_text_b(examples: list[Example]) -> bool:
    return any(e.text_b is not None for e in examples)


def run_eval(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> dict:
    if cfg.run is not None:
        return _eval_trained(cfg, run_dir, overrides)
    metrics, splits, setup = start(cfg, "eval", run_dir)
    return _finish_eval(metrics, setup, cfg, splits.dev, splits.test, run_dir)


EVAL_OVERRIDABLE = ("trainer.", "method.calibration", "run")


def _eval_trained(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> dict:
    source_dir, trained_cfg, state = load_run(cfg.run)
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if not key.startswith(EVAL_OVERRIDABLE):
            raise UserError(f"eval run=... takes {key} from the run; only trainer.* and method.calibration may change")
    merged = OmegaConf.merge(trained_cfg, OmegaConf.from_dotlist([o for o in overrides if not o.startswith("run=")]))
    metrics = begin(merged, "eval", run_dir, source_run=str(source_dir))
    dev, test = load_split_examples(source_dir, "dev"), load_split_examples(source_dir, "test")
    setup = build(merged, has_text_b(dev + test))
    setup.method.load_trainable_state(state)
    return _finish_eval(metrics, setup, merged, dev, test, run_dir)


def _finish_eval(metrics: dict, setup: Setup, cfg: DictConfig, dev, test, run_dir: Path) -> dict:
    dev_metrics = evaluate(setup.method, setup.method.encode(dev), cfg.trainer, setup.device) if dev else None
    test_metrics, seconds = timed_test(setup, test, cfg.trainer)
    metrics.update(
        status="completed",
        dev=dev_metrics,
        test=test_metrics,
        params=setup.method.parameter_counts(),
        eval_seconds=seconds,
        eval_examples_per_second=len(test) / seconds,
        peak_memory_mb=peak_memory_mb(setup.device),
        finished_at=now(),
    )
    write_json(run_dir / "metrics.json", metrics)
    return metrics
