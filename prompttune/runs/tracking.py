"""Run tracking, the `logger` config group: TensorBoard event files in the run dir (default), MLflow, or none.

A tracker has three calls (the Logger protocol). The training loop never sees it: it calls a LoopCallback,
and TrackingCallback turns those calls into metrics.
"""

import fcntl
import hashlib
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from omegaconf import DictConfig, OmegaConf

from prompttune.config.logger import checked_logger

log = logging.getLogger(__name__)


class Logger(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_hparams(self, params: dict[str, Any], metrics: dict[str, float], step: int = 0) -> None:
        """The run's config with its final metrics (logged at `step`, the last training step)."""

    def close(self, status: str) -> None:
        """status: completed or failed."""


class NoLogger:
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_hparams(self, params: dict[str, Any], metrics: dict[str, float], step: int = 0) -> None:
        pass

    def close(self, status: str) -> None:
        pass


class TensorBoardLogger:
    """Event files in the run dir itself, so `tensorboard --logdir outputs` lists each run by its dir."""

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)

    def log_hparams(self, params: dict[str, Any], metrics: dict[str, float], step: int = 0) -> None:
        """The HPARAMS tab: the same event file as the scalars (torch's add_hparams would open a new run dir)."""
        from torch.utils.tensorboard.summary import hparams

        plain = {k: v if isinstance(v, bool | int | float | str) else str(v) for k, v in params.items()}
        for summary in hparams(plain, metrics):
            self.writer.file_writer.add_summary(summary)
        self.log_metrics(metrics, step)

    def close(self, status: str) -> None:
        self.writer.close()


class MLflowLogger:
    """One MLflow run per job: the resolved config as params, metrics by step, the run dir's files as artifacts.
    The store is the one MLflow itself would use, so `mlflow ui` and `mlflow.search_runs()` find the runs with no
    flags: MLFLOW_TRACKING_URI when set, else MLflow's default (sqlite:///mlflow.db in the directory the command
    runs in, artifacts where MLflow puts them); `logger.tracking_uri` overrides both."""

    def __init__(self, cfg: DictConfig, run_dir: Path, run_name: str):
        import mlflow
        from mlflow.tracking import MlflowClient

        for chatty in ("mlflow", "alembic"):  # table creation and migrations log at INFO
            logging.getLogger(chatty).setLevel(logging.WARNING)
        self.run_dir, self.log_checkpoint = run_dir, bool(cfg.log_checkpoint)
        uri = cfg.tracking_uri or mlflow.get_tracking_uri()
        # Parallel jobs would race to create the tables and the experiment: one at a time.
        with open(_lock_path(uri), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.client = MlflowClient(tracking_uri=uri)
            experiment = self.client.get_experiment_by_name(cfg.experiment_name)
            if experiment is None:
                experiment_id = self.client.create_experiment(cfg.experiment_name)
            else:
                experiment_id = experiment.experiment_id
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        batch = [Metric(name, float(value), 0, step) for name, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_hparams(self, params: dict[str, Any], metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])
        self.log_metrics(metrics, step)

    def close(self, status: str) -> None:
        for path in sorted(self.run_dir.rglob("*")):
            relative = path.relative_to(self.run_dir)
            if path.is_file() and self._is_artifact(relative):
                folder = str(relative.parent) if relative.parent != Path(".") else None
                self.client.log_artifact(self.run_id, str(path), folder)
        self.client.set_terminated(self.run_id, "FINISHED" if status == "completed" else "FAILED")

    def _is_artifact(self, relative: Path) -> bool:
        """The run dir's files, less its resume state, its lock and (unless asked) its checkpoint."""
        if relative.parts[0] == "checkpoint":
            return self.log_checkpoint
        return relative.parts[0] != "state" and relative.name != ".lock"


def _lock_path(uri: str) -> Path:
    """One lock per store (a local SQLite file by its absolute path), in the temp dir, not among the user's files."""
    if uri.startswith("sqlite:///"):
        uri = str(Path(uri.removeprefix("sqlite:///")).expanduser().resolve())
    return Path(tempfile.gettempdir()) / f"prompttune-mlflow-{hashlib.sha256(uri.encode()).hexdigest()[:16]}.lock"


def build_logger(cfg: DictConfig | None, run_dir: Path, run_name: str) -> Logger:
    cfg = checked_logger(cfg)
    if cfg is None or cfg.name == "none":
        return NoLogger()
    if cfg.name == "tensorboard":
        return TensorBoardLogger(run_dir)
    return MLflowLogger(cfg, run_dir, run_name)


@contextmanager
def tracking(logger_cfg: DictConfig | None, run_dir: Path, run_name: str) -> Iterator[Logger]:
    """A logger that is closed as failed when the job raises."""
    logger = build_logger(logger_cfg, run_dir, run_name)
    try:
        yield logger
    except BaseException:
        logger.close("failed")
        raise
    logger.close("completed")


def flat_params(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as dotted keys (method.lr, trainer.batch_size, ...), without the logger's own."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = "null" if node is None else node

    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("logger", None)
    walk(container, "")
    return flat


def final_metrics(metrics: dict) -> dict[str, float]:
    """What a run ends with, for the hparams view: test and best dev scores, calibration, cost."""
    final = {}
    for split, prefix in (("test", "test"), ("dev", "best_dev")):  # dev/* are the loop's, step by step
        for name, value in (metrics.get(split) or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool) and name != "n":
                final[f"{prefix}/{name}"] = float(value)
            elif name.endswith("_ci") and isinstance(value, list) and len(value) == 2:
                final[f"{prefix}/{name}_low"], final[f"{prefix}/{name}_high"] = map(float, value)
    for name in ("train_seconds", "eval_seconds", "peak_memory_mb"):
        if isinstance(metrics.get(name), int | float):
            final[f"cost/{name}"] = float(metrics[name])
    return final


class TrackingCallback:
    """The training loop's callback: training loss and learning rates, and dev metrics at each evaluation."""

    def __init__(self, logger: Logger):
        self.logger = logger

    def on_step(self, step: int, loss: float, learning_rates: dict[str, float]) -> None:
        rates = {f"train/lr_{group}": lr for group, lr in learning_rates.items()}
        self.logger.log_metrics({"train/loss": loss} | rates, step)

    def on_evaluation(self, step: int, dev: dict[str, float]) -> None:
        self.logger.log_metrics({f"dev/{k}": v for k, v in dev.items() if k != "n"}, step)
