"""What every Hydra job does around an experiment: threads, signals, skipping a job that already completed,
failure records, the summary."""

import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table
from transformers.utils import logging as hf_logging

from prompttune.errors import UserError
from prompttune.files import write_json
from prompttune.runs.checkpoint import now
from prompttune.runs.launching import torch_threads_for_job
from prompttune.runs.record import METRICS_FILE, RunRecord, config_sha
from prompttune.runs.rundirs import OtherRunsDir, owned
from prompttune.training import interrupts
from prompttune.training.loop import TrainingDiverged

log = logging.getLogger(__name__)
EXPECTED_FAILURES = (UserError, TrainingDiverged)


def run_job(cfg: DictConfig, experiment: Callable[[DictConfig, Path], RunRecord]) -> float | None:
    quiet_libraries()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    threads = cfg.trainer.threads or torch_threads_for_job()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        with owned(run_dir), interrupts.handled():
            record = completed_before(cfg, run_dir) or experiment(cfg, run_dir)
    except OtherRunsDir as err:  # the dir's files are another run's: leave them alone
        if multirun:
            log.error("job skipped: %s", err)
            return None
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except interrupts.Interrupted as err:
        mark(run_dir, "interrupted", str(err))
        print(f"error: {err}; {how_to_resume(hydra_cfg, run_dir)}", file=sys.stderr)
        sys.exit(err.exit_code)  # a sweep stops too: the signal was meant for all of it
    except EXPECTED_FAILURES as err:
        mark(run_dir, "failed", str(err))
        if multirun:  # one bad job must not stop the sweep
            log.error("job failed: %s", err)
            return None
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:
        mark(run_dir, "failed", f"{type(err).__name__}: {err}")
        if multirun:
            log.error("job failed:\n%s", traceback.format_exc())
            return None
        raise
    print_summary(record.to_json(), run_dir)
    return record.test["accuracy"]


def how_to_resume(hydra_cfg, run_dir: Path) -> str:
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return f"run the same command with hydra.sweep.dir={hydra_cfg.sweep.dir} to finish the sweep"
    if hydra_cfg.job.name == "train":
        return f"resume with `prompttune train resume={run_dir}`"
    return "run it again"


def completed_before(cfg: DictConfig, run_dir: Path) -> RunRecord | None:
    """The record of this very job when it already completed in this dir (a sweep run again): skip it."""
    previous = RunRecord.read(run_dir)
    if previous is None or previous.status != "completed":
        return None
    if previous.config_sha != config_sha(cfg):
        raise OtherRunsDir(f"{run_dir} holds a completed run of another config; give this run a dir of its own")
    log.info("%s: already completed, skipped", run_dir)
    return previous


def quiet_libraries() -> None:
    """No download progress bars or library chatter in job logs (each launcher job is a fresh process)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # offline, each failed request warns


def mark(run_dir: Path, status: str, reason: str) -> None:
    """Set the run's status in its metrics.json, even when that file is missing or damaged."""
    path = run_dir / METRICS_FILE
    try:
        metrics = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        metrics = {}
    metrics = metrics if isinstance(metrics, dict) else {}
    metrics.update(status=status, error=reason.splitlines()[0] if reason else "unknown", finished_at=now())
    try:
        write_json(path, metrics)
    except UserError as err:  # a full disk or read-only dir: the job's own error says it already
        log.error("%s", err)


def print_summary(metrics: dict, run_dir: Path) -> None:
    """The job's metrics as a table. run_dir is where the job ran: a skipped job's record may name the dir it was
    first written in, before its sweep was copied elsewhere."""
    table = Table(
        title=f"{metrics['command']}: {metrics['method']} on {metrics['dataset']} ({metrics['model']}, "
        f"K={metrics['shots']}, seed={metrics['seed']})"
    )
    names = ("f1", "accuracy", "macro_f1")  # f1: tagging
    if "p_at_1" in (metrics.get("test") or {}):  # fact probing (its accuracy is P@1 again)
        names = ("p_at_1", "p_at_10", "mrr")
    shown = [name for name in names if name in (metrics.get("test") or {})]
    for column in ("split", *shown, "n"):
        table.add_column(column)
    for split in ("dev", "test"):
        if metrics.get(split):
            m = metrics[split]
            table.add_row(split, *(f"{m[name]:.4f}" for name in shown), str(m["n"]))
    console = Console()
    console.print(table)
    params = metrics["params"]
    details = [f"trainable params {params['trainable']:,} of {params['total']:,} ({params['ratio']:.4%})"]
    if metrics.get("seconds_per_step") is not None:
        details.append(
            f"{metrics['seconds_per_step']:.3f} s/step, {metrics['train_examples_per_second']:.1f} train ex/s"
        )
    details.append(
        f"{metrics['eval_examples_per_second']:.1f} eval ex/s, peak memory {metrics['peak_memory_mb']:.0f} MB"
    )
    console.print("; ".join(details))
    console.print(f"run dir: {run_dir}", soft_wrap=True)  # a path broken over lines cannot be copied
