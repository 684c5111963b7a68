"""Reading run dirs: every metrics.json below the given dirs, as runs to average or to list apart."""

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prompttune.errors import one_line
from prompttune.runs.record import AVERAGED_OVER, GROUP_KEYS, METRICS_FILE, RunRecord

REQUIRED_KEYS = GROUP_KEYS + (AVERAGED_OVER,)
# test f1: entity-level micro-F1 of a tagging run (training/tagging_metrics.py; its accuracy is token accuracy);
# p_at_1, p_at_10, mrr: a fact-probing run's (training/probing_metrics.py; its accuracy is P@1 again)
SUMMARIZED = (("test", "accuracy"), ("test", "macro_f1"), ("dev", "accuracy"), ("test", "f1"), ("dev", "f1"))
SUMMARIZED += (("test", "p_at_1"), ("test", "p_at_10"), ("test", "mrr"), ("dev", "p_at_1"))
PLOTTABLE_METRICS = ("accuracy", "macro_f1", "f1", "p_at_1", "mrr")
METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "f1": "entity F1", "p_at_1": "P@1", "mrr": "MRR"}
METRIC_NAMES |= {"p_at_10": "P@10"}
# what K counts when a comparison leads with this metric (tagging draws sentences, probing facts); else examples
SHOTS_UNITS = {"f1": "training sentences", "p_at_1": "training facts", "mrr": "training facts"}
MIN_CONSOLE_WIDTH = 160  # rich wraps to 80 columns when stdout is not a terminal


@dataclass(frozen=True)
class Run:
    """One metrics.json: its run dir (as found below the given dir) and its content, or why it is unusable."""

    run_dir: Path
    metrics: dict[str, Any]
    problem: str | None = None  # not None when the run is not averaged in ("" for a run still running)

    @property
    def status(self) -> str:
        return str(self.metrics.get("status")) if self.metrics else "unreadable"


def find_metrics_files(dirs: list[Path]) -> list[Path]:
    """Every metrics.json below the given dirs, each file once, in a stable order."""
    seen: dict[Path, Path] = {}
    for directory in dirs:
        for path in sorted(directory.rglob(METRICS_FILE), key=natural_key):
            seen.setdefault(path.resolve(), path)
    return list(seen.values())


def natural_key(path: Path) -> list[tuple[int, int | str]]:
    """Sort job dirs 0, 1, 2, 10 rather than 0, 1, 10, 2."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in path.parts]


def read_run(path: Path) -> Run:
    """Parse one metrics.json; a partial or malformed file gives a Run with a problem, never an exception."""
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return Run(path.parent, {}, f"unreadable {METRICS_FILE}: {one_line(str(error))}")
    try:
        record = RunRecord.from_json(metrics)
    except ValueError as error:
        return Run(path.parent, metrics if isinstance(metrics, dict) else {}, f"unreadable {METRICS_FILE}: {error}")
    return Run(path.parent, record.to_json(), problem_with(record.to_json()))


def problem_with(metrics: dict[str, Any]) -> str | None:
    """Why a run cannot be averaged in, or None when it can."""
    if metrics.get("status") != "completed":
        error = metrics.get("error")
        return one_line(str(error)) if error else ""
    missing = [key for key in REQUIRED_KEYS if metrics.get(key) is None]
    if missing:
        return f"completed but missing {', '.join(missing)}"
    if not all(isinstance(metrics[key], str | int | float) for key in REQUIRED_KEYS):
        return f"completed but {'/'.join(REQUIRED_KEYS)} are not all plain values"
    if not is_number(metric_value(metrics, "test", "accuracy")):
        return "completed but has no numeric test.accuracy"
    return None


def variant_runs(run: Run) -> list[Run]:
    """A PET ensemble run (`method.mode=ensemble`) as one row per variant: each pattern's model, their
    ensemble and the distilled model, labelled apart; any other run as itself."""
    metrics = run.metrics
    if run.problem is not None or not isinstance(metrics.get("ensemble"), dict):
        return [run]
    patterns = [p for p in metrics.get("patterns") or [] if isinstance(p, dict)]
    variants = [(f"pattern {p.get('pattern_id')}", p) for p in patterns]
    variants += [("ensemble", metrics["ensemble"] | {"train_seconds": pattern_seconds(patterns)})]
    variants += [("distilled", (metrics.get("distilled") or {}) | {"train_seconds": metrics.get("train_seconds")})]
    return [
        replace(run, metrics=metrics | {"variant": name, **{k: block.get(k) for k in VARIANT_KEYS}})
        for name, block in variants
    ]


VARIANT_KEYS = ("dev", "test", "params", "train_seconds")


def pattern_seconds(patterns: list[dict]) -> float | None:
    seconds = [p.get("train_seconds") for p in patterns]
    return sum(seconds) if seconds and all(is_number(s) for s in seconds) else None


def select_best_dev(runs: list[Run]) -> list[Run]:
    """LM-BFF's model selection: for each dataset, model, shots, method and seed, the completed run with the
    best dev accuracy (entity F1 for a tagging run) among the settings of a grid (the first one on a tie); its
    settings then no longer split the rows, and are kept as `selected_settings`."""
    best: dict[tuple, Run] = {}
    for run in runs:
        dev = dev_selection(run.metrics)
        if run.problem is not None or not is_number(dev):
            continue
        key = (*(run.metrics[k] for k in ("dataset", "model", "shots")), method_label(run.metrics), run.metrics["seed"])
        if key not in best or dev > dev_selection(best[key].metrics):
            best[key] = run
    return [
        replace(run, metrics=run.metrics | {"settings": [], "selected_settings": sorted(run_settings(run))})
        for run in best.values()
    ]


def dev_selection(metrics: dict[str, Any]) -> Any:
    """The dev score a run was selected on: entity F1 for a tagging run (it has one), else accuracy."""
    f1 = metric_value(metrics, "dev", "f1")
    return f1 if f1 is not None else metric_value(metrics, "dev", "accuracy")


def metric_value(metrics: dict[str, Any], split: str, name: str) -> Any:
    block = metrics.get(split)
    return block.get(name) if isinstance(block, dict) else None


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def method_label(metrics: dict[str, Any]) -> str:
    """The method, marked when the numbers come from `prompttune eval` (zero-shot or a re-evaluation), so
    they are never averaged with trained runs of the same method."""
    command = metrics.get("command", "train")
    label = str(metrics["method"]) if command in ("train", None) else f"{metrics['method']} [{command}]"
    return f"{label} {metrics['variant']}" if metrics.get("variant") else label


def run_settings(run: Run) -> set[str]:
    """The run's command-line settings besides seed and the grouping keys (metrics.json `settings`)."""
    settings = run.metrics.get("settings")
    return {str(s) for s in settings} if isinstance(settings, list) else set()
