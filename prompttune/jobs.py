"""What every Hydra job does around an experiment: threads, failure records, the summary."""

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
from prompttune.launching import torch_threads_for_job
from prompttune.runs import now
from prompttune.training.loop import TrainingDiverged

log = logging.getLogger(__name__)
EXPECTED_FAILURES = (UserError, TrainingDiverged)


def run_job(cfg: DictConfig, experiment: Callable[[DictConfig, Path], dict]) -> float | None:
    quiet_libraries()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    threads = cfg.trainer.threads or torch_threads_for_job()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        metrics = experiment(cfg, run_dir)
    except EXPECTED_FAILURES as err:
        mark_failed(run_dir, str(err))
        if multirun:  # one bad job must not stop the sweep
            log.error("job failed: %s", err)
            return None
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:
        mark_failed(run_dir, f"{type(err).__name__}: {err}")
        if multirun:
            log.error("job failed:\n%s", traceback.format_exc())
            return None
        raise
    print_summary(metrics)
    return metrics["test"]["accuracy"]


def quiet_libraries() -> None:
    """No download progress bars or library chatter in job logs (each launcher job is a fresh process)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # offline, each failed request warns


def mark_failed(run_dir: Path, reason: str) -> None:
    path = run_dir / "metrics.json"
    try:
        metrics = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        metrics = {}
    metrics.update(status="failed", error=reason.splitlines()[0] if reason else "unknown", finished_at=now())
    write_json(path, metrics)


def print_summary(metrics: dict) -> None:
    table = Table(
        title=f"{metrics['command']}: {metrics['method']} on {metrics['dataset']} ({metrics['model']}, "
        f"K={metrics['shots']}, seed={metrics['seed']})"
    )
    for column in ("split", "accuracy", "macro_f1", "n"):
        table.add_column(column)
    for split in ("dev", "test"):
        if metrics.get(split):
            m = metrics[split]
            table.add_row(split, f"{m['accuracy']:.4f}", f"{m['macro_f1']:.4f}", str(m["n"]))
    console = Console()
    console.print(table)
    params = metrics["params"]
    details = [f"trainable params {params['trainable']:,} of {params['total']:,} ({params['ratio']:.4%})"]
    if "seconds_per_step" in metrics:
        details.append(
            f"{metrics['seconds_per_step']:.3f} s/step, {metrics['train_examples_per_second']:.1f} train ex/s"
        )
    details.append(
        f"{metrics['eval_examples_per_second']:.1f} eval ex/s, peak memory {metrics['peak_memory_mb']:.0f} MB"
    )
    console.print("; ".join(details))
    console.print(f"run dir: {metrics['run_dir']}")
