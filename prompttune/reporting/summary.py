"""Grouping runs by dataset, model, K and method, and their statistics over seeds (mean, std, 95% interval)."""

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from prompttune.reporting.reading import SUMMARIZED, Run, is_number, method_label, metric_value, run_settings
from prompttune.reporting.significance import t_interval
from prompttune.runs.record import GROUP_KEYS


@dataclass(frozen=True)
class Stat:
    mean: float | None
    std: float | None  # sample std (ddof=1); None with fewer than two values
    ci: tuple[float, float] | None = None  # 95% Student-t interval of the mean over seeds


@dataclass(frozen=True)
class GroupSummary:
    dataset: str
    model: str
    shots: int
    method: str
    seeds: list[int]
    stats: dict[str, Stat]  # keyed "test_accuracy", "test_macro_f1", "dev_accuracy"
    trainable_params: int | None
    trainable_ratio: float | None
    train_seconds: float | None
    run_dirs: list[str]
    selected: dict[int, list[str]] | None = None  # --select dev: each seed's chosen settings
    scores: dict[str, dict] = field(default_factory=dict)  # stat key -> {seed: value}, for paired tests
    test_label_counts: list[int] | None = None  # from the runs' test confusion matrix
    zero_shot: bool = False  # `prompttune eval` without run=: no training, so no seed dependence
    total_params: int | None = None  # the method's whole model (backbone and its own modules)

    @property
    def key(self) -> tuple[str, str, int, str]:
        return (self.dataset, self.model, self.shots, self.method)


def summarize(runs: list[Run]) -> list[GroupSummary]:
    """One summary per (dataset, model, shots, method and the settings its runs differ in), over the
    completed runs only."""
    by_method: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        if run.problem is None:
            dataset, model, shots, _ = (run.metrics[key] for key in GROUP_KEYS)
            by_method[(dataset, model, shots, method_label(run.metrics))].append(run)
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for (dataset, model, shots, method), members in by_method.items():
        common = set.intersection(*(run_settings(run) for run in members))
        for run in members:
            variant = " ".join(sorted(run_settings(run) - common))
            groups[(dataset, model, shots, f"{method} {variant}".strip())].append(run)
    summaries = [summarize_group(key, members) for key, members in groups.items()]
    return sorted(summaries, key=summary_order)


def summary_order(summary: "GroupSummary") -> tuple:
    return (str(summary.dataset), str(summary.model), number_first(summary.shots), str(summary.method))


def number_first(value: Any) -> tuple[int, float | str]:
    """Sort key: numbers in numeric order, then anything else as text."""
    return (0, value) if is_number(value) else (1, str(value))


def summarize_group(key: tuple, runs: list[Run]) -> GroupSummary:
    dataset, model, shots, method = key
    zero_shot = all(run.metrics.get("command") == "eval" and not run.metrics.get("source_run") for run in runs)
    trained = [] if zero_shot else runs  # a zero-shot evaluation trains nothing: no trainable share to show
    return GroupSummary(
        dataset=dataset,
        model=model,
        shots=shots,
        method=method,
        seeds=sorted((run.metrics["seed"] for run in runs), key=number_first),
        stats={f"{split}_{name}": stat_of(runs, split, name) for split, name in SUMMARIZED},
        scores={f"{split}_{name}": scores_by_seed(runs, split, name) for split, name in SUMMARIZED},
        test_label_counts=test_label_counts(runs),
        zero_shot=zero_shot,
        trainable_params=rounded(mean_or_none([param_count(run, "trainable") for run in trained])),
        trainable_ratio=mean_or_none([param_count(run, "ratio") for run in trained]),
        total_params=rounded(mean_or_none([param_count(run, "total") for run in runs])),
        train_seconds=mean_or_none([run.metrics.get("train_seconds") for run in runs]),
        run_dirs=[str(run.run_dir) for run in runs],
        selected=selected_settings(runs),
    )


def selected_settings(runs: list[Run]) -> dict[int, list[str]] | None:
    if not any("selected_settings" in run.metrics for run in runs):
        return None
    return {run.metrics["seed"]: run.metrics.get("selected_settings", []) for run in runs}


def param_count(run: Run, name: str) -> Any:
    return metric_value(run.metrics, "params", name)


def stat_of(runs: list[Run], split: str, name: str) -> Stat:
    values = [value for run in runs if is_number(value := metric_value(run.metrics, split, name))]
    std = statistics.stdev(values) if len(values) > 1 else None
    return Stat(mean_or_none(values), std, t_interval(values, bounds=(0.0, 1.0)))


def scores_by_seed(runs: list[Run], split: str, name: str) -> dict:
    return {run.metrics["seed"]: v for run in runs if is_number(v := metric_value(run.metrics, split, name))}


def test_label_counts(runs: list[Run]) -> list[int] | None:
    """How many test examples each class has (the confusion matrix's row sums), when the runs record it."""
    for run in runs:
        matrix = metric_value(run.metrics, "test", "confusion_matrix")
        if isinstance(matrix, list) and matrix and all(isinstance(row, list) for row in matrix):
            return [int(sum(row)) for row in matrix]
    return None


def mean_or_none(values: list[Any]) -> float | None:
    numbers = [value for value in values if is_number(value)]
    return statistics.fmean(numbers) if numbers else None


def rounded(value: float | None) -> int | None:
    return None if value is None else round(value)


def panels_by(summaries: list[GroupSummary], key_of) -> dict[tuple, list[GroupSummary]]:
    panels: dict[tuple, list[GroupSummary]] = defaultdict(list)
    for summary in summaries:
        panels[key_of(summary)].append(summary)
    return panels
