"""One record per run: the metrics.json that the experiment writes and the job wrapper and the report read."""

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from prompttune.errors import UserError, one_line
from prompttune.files import write_json

METRICS_FILE = "metrics.json"
STATUSES = ("running", "completed", "failed", "interrupted")
GROUP_KEYS = ("dataset", "model", "shots", "method")  # a report row; runs in a row are averaged over seeds
AVERAGED_OVER = "seed"
# Top-level keys that say which run this is rather than how it runs: never a run's "setting".
RUN_KEYS = frozenset({*GROUP_KEYS, AVERAGED_OVER, "run", "resume"})
# Fields that differ between two runs of one config and seed (time, memory, where, how often resumed).
VOLATILE_FIELDS = frozenset(
    {
        "run_dir",
        "started_at",
        "finished_at",
        "train_seconds",
        "fit_seconds",
        "seconds_per_step",
        "train_examples_per_second",
        "eval_seconds",
        "eval_examples_per_second",
        "peak_memory_mb",
        "resumed_at_steps",
        "throughput",  # FLOP/s: timing
    }
)
# Config keys that do not change a run's results: a run may be resumed with other values of them.
NOT_FINGERPRINTED = ("resume", "trainer.save_every", "trainer.threads")
# Keys added after run dirs were first fingerprinted, with the value that reproduces the runs written before them:
# left out of the fingerprint at that value, so that those runs still resume and a sweep still skips them.
ADDED_AT = {
    "trainer.min_epochs": None,
    "trainer.evals": None,
    "dataset.task": "classification",
    "dataset.tag_scheme": "bio",
    "dataset.candidates": "vocabulary",
    "method.chat": False,
    "method.instruction": None,
    "model.parts": None,
    "model.lr_scale": 1.0,
}


@dataclass
class RunRecord:
    status: str
    command: str = "train"
    method: str | None = None
    dataset: str | None = None
    model: str | None = None
    shots: int | None = None
    seed: int | None = None
    run_dir: str | None = None
    started_at: str | None = None
    config_sha: str | None = None
    settings: list[str] = field(default_factory=list)
    error: str | None = None
    source_run: str | None = None  # eval run=...: the training run evaluated
    dev: dict | None = None
    test: dict | None = None
    params: dict | None = None
    steps: int | None = None
    best_step: int | None = None
    train_seconds: float | None = None
    seconds_per_step: float | None = None
    train_examples_per_second: float | None = None
    eval_seconds: float | None = None
    eval_examples_per_second: float | None = None
    peak_memory_mb: float | None = None
    checkpoint_bytes: int | None = None
    fit_seconds: float | None = None  # fit_examples: a method's fit without the gradient loop (tfidf's training)
    history: list[dict] | None = None
    resumed_at_steps: list[int] = field(default_factory=list)
    finished_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # fields other modules add, kept as they are

    def to_json(self) -> dict[str, Any]:
        record = {k: v for k, v in asdict(self).items() if k != "extra" and (v is not None or k == "error")}
        return record | self.extra

    @classmethod
    def from_json(cls, payload: Any) -> "RunRecord":
        """Raises ValueError naming what is wrong with the payload."""
        if not isinstance(payload, dict):
            raise ValueError("not a JSON object")
        known = {f.name for f in fields(cls)} - {"extra"}
        if payload.get("status") not in STATUSES:
            raise ValueError(f"status {payload.get('status')!r} is not one of {', '.join(STATUSES)}")
        extra = {k: v for k, v in payload.items() if k not in known}
        return cls(**{k: v for k, v in payload.items() if k in known}, extra=extra)

    @classmethod
    def read(cls, run_dir: Path) -> "RunRecord | None":
        """The run's record; None when it has none; a UserError naming the file when it is damaged."""
        path = Path(run_dir) / METRICS_FILE
        if not path.exists():
            return None
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise UserError(f"{path} is damaged ({one_line(err)}); delete it to run this job afresh") from None

    def write(self, run_dir: Path) -> None:
        write_json(Path(run_dir) / METRICS_FILE, self.to_json())

    def comparable(self) -> dict[str, Any]:
        """The record without the fields that differ between two runs of one config and seed."""
        return {k: v for k, v in self.to_json().items() if k not in VOLATILE_FIELDS}


def settings_of(overrides: list[str]) -> list[str]:
    """The command-line settings besides those that say which run this is: runs of one method that differ
    in them (e.g. method.pattern_id) are reported apart."""
    ignored = RUN_KEYS.union(NOT_FINGERPRINTED)
    kept = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] not in ignored]
    return sorted(o for o in kept if not o.startswith("hydra"))


def config_sha(cfg: DictConfig) -> str:
    """A fingerprint of the resolved config, without the keys that do not change results."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for dotted in NOT_FINGERPRINTED:
        _drop(resolved, dotted)
    for dotted, neutral in ADDED_AT.items():
        _drop(resolved, dotted, only_if=neutral)
    if not (resolved.get("method") or {}).get("chat"):  # the instruction is read by chat prompts only
        _drop(resolved, "dataset.instruction")
    text = json.dumps(resolved, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


_ANY = object()


def _drop(resolved: dict, dotted: str, only_if: object = _ANY) -> None:
    *parents, key = dotted.split(".")
    node = resolved
    for parent in parents:
        node = node.get(parent, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict) and key in node and (only_if is _ANY or node[key] == only_if):
        del node[key]
