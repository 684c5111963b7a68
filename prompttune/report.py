"""`prompttune report`: aggregate the metrics.json of runs into tables, report files and a plot.

Only runs whose status is `completed` are averaged; running, failed and unreadable runs are listed
apart, so a report can be taken while a sweep is still running.
"""

import argparse
import csv
import io
import json
import math
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from prompttune.errors import UserError
from prompttune.files import write_atomically, write_text
from prompttune.record import AVERAGED_OVER, GROUP_KEYS, METRICS_FILE, RunRecord
from prompttune.significance import TESTS, PairedTest, chance_level, is_imbalanced, paired_test, t_interval

REQUIRED_KEYS = GROUP_KEYS + (AVERAGED_OVER,)
SUMMARIZED = (("test", "accuracy"), ("test", "macro_f1"), ("dev", "accuracy"))
PLOTTABLE_METRICS = ("accuracy", "macro_f1")
METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1"}
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

    @property
    def key(self) -> tuple[str, str, int, str]:
        return (self.dataset, self.model, self.shots, self.method)


# ---------------------------------------------------------------- reading


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
    best dev accuracy among the settings of a grid (the first one on a tie); its settings then no longer
    split the rows, and are kept as `selected_settings`."""
    best: dict[tuple, Run] = {}
    for run in runs:
        dev = metric_value(run.metrics, "dev", "accuracy")
        if run.problem is not None or not is_number(dev):
            continue
        key = (*(run.metrics[k] for k in ("dataset", "model", "shots")), method_label(run.metrics), run.metrics["seed"])
        if key not in best or dev > metric_value(best[key].metrics, "dev", "accuracy"):
            best[key] = run
    return [
        replace(run, metrics=run.metrics | {"settings": [], "selected_settings": sorted(run_settings(run))})
        for run in best.values()
    ]


def metric_value(metrics: dict[str, Any], split: str, name: str) -> Any:
    block = metrics.get(split)
    return block.get(name) if isinstance(block, dict) else None


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- aggregating


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


def run_settings(run: Run) -> set[str]:
    """The run's command-line settings besides seed and the grouping keys (metrics.json `settings`)."""
    settings = run.metrics.get("settings")
    return {str(s) for s in settings} if isinstance(settings, list) else set()


def summary_order(summary: "GroupSummary") -> tuple:
    return (str(summary.dataset), str(summary.model), number_first(summary.shots), str(summary.method))


def method_label(metrics: dict[str, Any]) -> str:
    """The method, marked when the numbers come from `prompttune eval` (zero-shot or a re-evaluation), so
    they are never averaged with trained runs of the same method."""
    command = metrics.get("command", "train")
    label = str(metrics["method"]) if command in ("train", None) else f"{metrics['method']} [{command}]"
    return f"{label} {metrics['variant']}" if metrics.get("variant") else label


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


# ---------------------------------------------------------------- comparing


@dataclass(frozen=True)
class Comparison:
    """The methods of one dataset, model and shots, ranked on the lead metric, with a paired test per pair."""

    dataset: str
    model: str
    shots: int
    metric: str  # "accuracy" or "macro_f1"
    why: str  # why this metric leads
    chance: float | None  # the lead metric of uniform random guessing; None when the class counts are unknown
    ranked: list[GroupSummary]  # best mean first
    tests: dict[tuple[str, str], PairedTest | None]  # (method, method) -> test of the first minus the second

    @property
    def best(self) -> GroupSummary:
        return self.ranked[0]

    def test(self, first: str, second: str) -> PairedTest | None:
        return self.tests.get((first, second))


def compare(summaries: list[GroupSummary], metric: str, test: str) -> list[Comparison]:
    """One Comparison per dataset, model and shots (eval rows are ranked beside trained ones)."""
    comparisons = []
    for (dataset, model, shots), members in panels_by(summaries, lambda s: (s.dataset, s.model, s.shots)).items():
        counts = next((s.test_label_counts for s in members if s.test_label_counts), None)
        lead, why = lead_metric(counts, metric)
        key = f"test_{lead}"
        ranked = sorted(members, key=lambda s: -(s.stats[key].mean if s.stats[key].mean is not None else -1))
        tests = {
            (a.method, b.method): paired_test(*paired_scores(a, b, key), test)
            for a in ranked
            for b in ranked
            if a is not b
        }
        chance = chance_level(counts, lead) if counts else None
        comparisons.append(Comparison(dataset, model, shots, lead, why, chance, ranked, tests))
    return comparisons


def paired_scores(first: GroupSummary, second: GroupSummary, key: str) -> tuple[dict, dict]:
    """Each side's {seed: score}. A single zero-shot run scores the same on every seed (nothing trains and the
    test set is fixed), so it stands against every seed of the other side: a one-sample test of their scores."""
    a, b = first.scores[key], second.scores[key]
    if first.zero_shot and len(a) == 1:
        a = dict.fromkeys(b, *a.values())
    if second.zero_shot and len(b) == 1:
        b = dict.fromkeys(a, *b.values())
    return a, b


def lead_metric(label_counts: list[int] | None, requested: str) -> tuple[str, str]:
    """The metric a comparison leads with: as requested, else macro-F1 on an imbalanced test set."""
    if requested != "auto":
        return requested, "as requested"
    if label_counts and is_imbalanced(label_counts):
        shares = ", ".join(f"{100 * c / sum(label_counts):.0f}%" for c in label_counts)
        return "macro_f1", (
            f"the test set is imbalanced (classes {shares}), so accuracy would reward predicting the majority "
            "class; macro-F1 weighs every class equally"
        )
    return "accuracy", "the test set is balanced" if label_counts else "the class counts are not recorded"


# ---------------------------------------------------------------- formatting


def format_stat(stat: Stat) -> str:
    """Percentages with one decimal: `81.3 ± 2.1`; `-` for a missing value or the std of one seed."""
    if stat.mean is None:
        return "-"
    std = "-" if stat.std is None else f"{100 * stat.std:.1f}"
    return f"{100 * stat.mean:.1f} ± {std}"


def format_ci(stat: Stat) -> str:
    return "-" if stat.ci is None else f"[{100 * stat.ci[0]:.1f}, {100 * stat.ci[1]:.1f}]"


def format_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{100 * ratio:.3g}%"


def format_seconds(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}"


SUMMARY_HEADER = (
    "dataset",
    "model",
    "shots",
    "method",
    "seeds",
    "test acc %",
    "acc 95% CI",
    "test macro-F1 %",
    "F1 95% CI",
    "trainable",
    "train s",
)
INCOMPLETE_HEADER = ("run dir", "method", "seed", "status", "error")


def summary_rows(summaries: list[GroupSummary]) -> list[list[str]]:
    return [
        [
            str(s.dataset),
            str(s.model),
            str(s.shots),
            str(s.method),
            str(len(s.seeds)),
            format_stat(s.stats["test_accuracy"]),
            format_ci(s.stats["test_accuracy"]),
            format_stat(s.stats["test_macro_f1"]),
            format_ci(s.stats["test_macro_f1"]),
            format_ratio(s.trainable_ratio),
            format_seconds(s.train_seconds),
        ]
        for s in summaries
    ]


def incomplete_rows(runs: list[Run]) -> list[list[str]]:
    return [
        [
            str(run.run_dir),
            str(run.metrics.get("method", "-")),
            str(run.metrics.get("seed", "-")),
            run.status,
            run.problem or "",
        ]
        for run in runs
    ]


def rich_table(title: str, header: tuple[str, ...], rows: list[list[str]]) -> Table:
    table = Table(title=title)
    for name in header:
        table.add_column(escape(name), justify="right" if name.endswith(("%", " s", "seeds", "shots")) else "left")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))  # "pet [eval]" or an error's "[...]" is not markup
    return table


def markdown_table(header: tuple[str, ...], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


SELECTED_HEADER = ("dataset", "model", "shots", "method", "seed", "selected settings")


def selected_rows(summaries: list[GroupSummary]) -> list[list[str]]:
    return [
        [str(s.dataset), str(s.model), str(s.shots), str(s.method), str(seed), " ".join(settings) or "(defaults)"]
        for s in summaries
        for seed, settings in (s.selected or {}).items()
    ]


def markdown_report(summaries: list[GroupSummary], incomplete: list[Run], comparisons: list[Comparison]) -> str:
    """A results section: per dataset, model and shots, the table, the best method and which gaps are real."""
    text = "# Results\n\n"
    for table_number, comparison in enumerate(comparisons, start=1):
        text += results_paragraphs(comparison, table_number)
    if any(s.selected for s in summaries):
        text += "\n## Settings selected by best dev accuracy, per seed\n\n"
        text += markdown_table(SELECTED_HEADER, selected_rows(summaries))
    if incomplete:
        text += "\n## Runs not included\n\n" + markdown_table(INCOMPLETE_HEADER, incomplete_rows(incomplete))
    return text


def results_paragraphs(c: Comparison, number: int) -> str:
    name, other = METRIC_NAMES[c.metric], "accuracy" if c.metric == "macro_f1" else "macro_f1"
    seeds = sorted({seed for s in c.ranked for seed in s.seeds}, key=number_first)
    counts = c.best.test_label_counts
    n_test = f"the same {sum(counts):,} test examples" if counts else "one fixed test set"
    text = f"## {c.dataset} · {c.model} · K={c.shots}\n\n"
    text += (
        f"We compare {len(c.ranked)} methods on {c.dataset} with {c.model}, K={c.shots} examples per class for "
        f"training and as many for development, over {len(seeds)} seeds ({', '.join(map(str, seeds))}); every "
        f"run is scored on {n_test}. We lead with {name}: {c.why}.\n\n"
    )
    text += (
        f"Table {number}a. Test {name} and {METRIC_NAMES[other]} (%): mean ± sample standard deviation over seeds "
        "and the 95% Student-t interval of the mean. `[eval]` rows are evaluated without training (zero-shot); "
        "a single zero-shot run, which no seed changes, is compared with each seed of the others.\n\n"
    )
    header = ("method", "seeds", f"{name} %", "95% CI", f"{METRIC_NAMES[other]} %", "95% CI", "trainable", "train s")
    rows = [
        [
            s.method,
            str(len(s.seeds)),
            format_stat(s.stats[f"test_{c.metric}"]),
            format_ci(s.stats[f"test_{c.metric}"]),
            format_stat(s.stats[f"test_{other}"]),
            format_ci(s.stats[f"test_{other}"]),
            format_ratio(s.trainable_ratio),
            format_seconds(s.train_seconds),
        ]
        for s in c.ranked
    ]
    text += markdown_table(header, rows) + "\n" + best_method_sentence(c) + "\n\n"
    if len(c.ranked) > 1:
        text += (
            f"Table {number}b. Difference in test {name} (row minus column, points) and its p-value, paired by "
            f"seed; * marks p < 0.05.\n\n"
        )
        text += markdown_table(*pairwise_table(c)) + "\n" + test_note(c)
    return text + "\n"


def best_method_sentence(c: Comparison) -> str:
    best = c.best
    score = format_stat(best.stats[f"test_{c.metric}"])
    sentence = f"**{best.method}** has the highest mean {METRIC_NAMES[c.metric]} ({score})."
    beaten, tied = [], []
    for other in c.ranked[1:]:
        result = c.test(best.method, other.method)
        label = f"{other.method} ({format_difference(result)})"
        (beaten if result is not None and result.significant else tied).append(label)
    if beaten:
        sentence += f" Its lead is significant at 0.05 over {', '.join(beaten)}."
    if tied:
        sentence += f" Its lead is not significant over {', '.join(tied)}: those gaps may be seed noise."
    if c.chance is not None:
        sentence += f" Chance (uniform random guessing) scores {100 * c.chance:.1f}%."
    return sentence


def format_difference(result: PairedTest | None) -> str:
    if result is None:
        return "no common seed"
    p_value = "p n/a" if result.p_value is None else f"p = {result.p_value:.3f}"
    return f"{100 * result.mean_difference:+.1f} points, {p_value}"


def pairwise_table(c: Comparison) -> tuple[tuple[str, ...], list[list[str]]]:
    methods = [s.method for s in c.ranked]
    rows = []
    for first in methods:
        cells = []
        for second in methods:
            result = None if first == second else c.test(first, second)
            cells.append("·" if first == second else pairwise_cell(result))
        rows.append([first, *cells])
    return ("", *methods), rows


def pairwise_cell(result: PairedTest | None) -> str:
    if result is None:
        return "-"
    p_value = "n/a" if result.p_value is None else f"{result.p_value:.3f}"
    return f"{100 * result.mean_difference:+.1f} (p={p_value}){'*' if result.significant else ''}"


def test_note(c: Comparison) -> str:
    names = sorted({t.test for t in c.tests.values() if t is not None})
    note = f"Test: {' and '.join(names)} over the seeds both methods ran (two-sided)."
    wilcoxon_ns = {t.n for t in c.tests.values() if t is not None and t.test.startswith("Wilcoxon")}
    if wilcoxon_ns and min(wilcoxon_ns) <= 5:
        note += (
            " With 5 seeds the exact two-sided Wilcoxon signed-rank test cannot go below p = 2/2^5 = 0.0625, so"
            " no gap can reach 0.05 with it; run more seeds, or pass `--test t` for the paired t-test."
        )
    return note + "\n"


CSV_HEADER = (
    "dataset",
    "model",
    "shots",
    "method",
    "n_seeds",
    "seeds",
    "test_accuracy_mean",
    "test_accuracy_std",
    "test_accuracy_ci_low",
    "test_accuracy_ci_high",
    "test_macro_f1_mean",
    "test_macro_f1_std",
    "test_macro_f1_ci_low",
    "test_macro_f1_ci_high",
    "dev_accuracy_mean",
    "dev_accuracy_std",
    "trainable_params",
    "trainable_ratio",
    "train_seconds_mean",
)


def csv_report(summaries: list[GroupSummary]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for s in summaries:
        stats = [
            value
            for key in ("test_accuracy", "test_macro_f1")
            for value in (s.stats[key].mean, s.stats[key].std, *(s.stats[key].ci or (None, None)))
        ]
        stats += [s.stats["dev_accuracy"].mean, s.stats["dev_accuracy"].std]
        row = [
            s.dataset,
            s.model,
            s.shots,
            s.method,
            len(s.seeds),
            " ".join(map(str, s.seeds)),
            *stats,
            s.trainable_params,
            s.trainable_ratio,
            s.train_seconds,
        ]
        writer.writerow(["" if value is None else value for value in row])
    return buffer.getvalue()


def json_report(summaries: list[GroupSummary], incomplete: list[Run], comparisons: list[Comparison]) -> str:
    """Raw fractions (not percentages), so other tools can recompute anything."""
    groups = [
        {
            "dataset": s.dataset,
            "model": s.model,
            "shots": s.shots,
            "method": s.method,
            "n_seeds": len(s.seeds),
            "seeds": s.seeds,
            **{key: {"mean": stat.mean, "std": stat.std, "ci95": stat.ci} for key, stat in s.stats.items()},
            "scores_by_seed": {key: {str(seed): v for seed, v in values.items()} for key, values in s.scores.items()},
            "test_label_counts": s.test_label_counts,
            "trainable_params": s.trainable_params,
            "trainable_ratio": s.trainable_ratio,
            "train_seconds_mean": s.train_seconds,
            "run_dirs": s.run_dirs,
            "selected_settings": s.selected,
        }
        for s in summaries
    ]
    others = [
        {
            "run_dir": str(run.run_dir),
            "method": run.metrics.get("method"),
            "seed": run.metrics.get("seed"),
            "status": run.status,
            "error": run.problem,
        }
        for run in incomplete
    ]
    report = {
        "generated_at": datetime.now().isoformat(timespec="seconds"),
        "groups": groups,
        "comparisons": [comparison_json(c) for c in comparisons],
        "incomplete": others,
    }
    return json.dumps(report, indent=2) + "\n"


def comparison_json(c: Comparison) -> dict:
    return {
        "dataset": c.dataset,
        "model": c.model,
        "shots": c.shots,
        "metric": c.metric,
        "why": c.why,
        "chance": c.chance,
        "ranking": [s.method for s in c.ranked],
        "best": c.best.method,
        "paired_tests": [
            {"first": first, "second": second, **vars(result), "significant": result.significant}
            for (first, second), result in c.tests.items()
            if result is not None
        ],
    }


# ---------------------------------------------------------------- plotting


def plot_report(summaries: list[GroupSummary], comparisons: list[Comparison], path: Path) -> None:
    """Per dataset-model-shots, each seed's test score as a point beside the mean and its 95% t-interval,
    with the chance level; plus score-vs-shots lines per method where a dataset-model has several shot counts."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lead = {(c.dataset, c.model): c.metric for c in comparisons}
    model_panels = panels_by(summaries, lambda s: (s.dataset, s.model))
    line_panels = {key: group for key, group in model_panels.items() if len({s.shots for s in group}) > 1}
    count = len(comparisons) + len(line_panels)
    columns = min(3, count)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(4.8 * columns, 3.9 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    for ax, comparison in zip(axes, comparisons, strict=False):  # more axes than panels
        draw_seed_points(ax, comparison)
    for ax, (key, members) in zip(axes[len(comparisons) :], line_panels.items(), strict=False):
        draw_shot_lines(ax, members, f"test_{lead[key]}", "{} / {}".format(*key))
    for ax in axes[count:]:
        ax.set_visible(False)
    figure.suptitle("dots: seeds; bar: mean and 95% t-interval; dashed: chance", fontsize=9)
    write_atomically(path, lambda handle: figure.savefig(handle, format="png", dpi=110))


def panels_by(summaries: list[GroupSummary], key_of) -> dict[tuple, list[GroupSummary]]:
    panels: dict[tuple, list[GroupSummary]] = defaultdict(list)
    for summary in summaries:
        panels[key_of(summary)].append(summary)
    return panels


def draw_seed_points(ax, c: Comparison) -> None:
    key = f"test_{c.metric}"
    for x, summary in enumerate(c.ranked):
        values = [100 * v for v in summary.scores[key].values()]
        offsets = [x - 0.18 + 0.12 * (i / max(1, len(values) - 1) - 0.5) for i in range(len(values))]
        ax.scatter(offsets, values, s=14, color="tab:gray", alpha=0.8, zorder=3)
        stat = summary.stats[key]
        if stat.mean is None:
            continue
        ci = stat.ci or (stat.mean, stat.mean)
        error = [[100 * (stat.mean - ci[0])], [100 * (ci[1] - stat.mean)]]
        ax.errorbar([x + 0.1], [100 * stat.mean], yerr=error, fmt="o", color="tab:blue", capsize=4, zorder=4)
    if c.chance is not None:
        ax.axhline(100 * c.chance, color="tab:red", linestyle="--", linewidth=1, label="chance")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xticks(range(len(c.ranked)), [s.method for s in c.ranked], rotation=30, ha="right")
    ax.set_ylabel(f"test {METRIC_NAMES[c.metric]} (%)")
    ax.set_title(f"{c.dataset} / {c.model} / K={c.shots}", fontsize=10)
    ax.set_ylim(0, 100)


def draw_shot_lines(ax, members: list[GroupSummary], stat_key: str, title: str) -> None:
    for (method,), lines in panels_by(members, lambda s: (s.method,)).items():
        lines = sorted(lines, key=lambda s: number_first(s.shots))
        ax.errorbar(
            [s.shots for s in lines],
            [percent(s.stats[stat_key].mean) for s in lines],
            yerr=[percent(s.stats[stat_key].std) for s in lines],
            marker="o",
            capsize=3,
            label=method,
        )
    shots = sorted({s.shots for s in members})
    ax.set_xscale("log", base=2)
    ax.set_xticks(shots, [str(k) for k in shots])
    ax.minorticks_off()
    ax.set_xlabel("shots per class (K)")
    ax.set_title(f"{title}: vs shots", fontsize=10)
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)


def percent(value: float | None) -> float:
    return 0.0 if value is None else 100 * value


# ---------------------------------------------------------------- writing


def write_reports(
    out: Path, summaries: list[GroupSummary], incomplete: list[Run], comparisons: list[Comparison]
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"report.{suffix}" for suffix in ("md", "csv", "json", "png")]
    write_text(paths[0], markdown_report(summaries, incomplete, comparisons))
    write_text(paths[1], csv_report(summaries))
    write_text(paths[2], json_report(summaries, incomplete, comparisons))
    if summaries:
        plot_report(summaries, comparisons, paths[3])
    else:
        paths[3].unlink(missing_ok=True)  # nothing completed yet: no plot rather than a stale one
        paths.pop()
    return paths


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="prompttune report",
        description="Aggregate the metrics.json files below sweep or run dirs (mean ± std over seeds).",
    )
    parser.add_argument("dirs", nargs="*", type=Path, help="sweep dir(s) or run dir(s), searched recursively")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write report.{md,csv,json,png} (default: the single given dir, else the current dir)",
    )
    parser.add_argument(
        "--metric",
        choices=("auto", *PLOTTABLE_METRICS),
        default="auto",
        help="test metric to rank, test and plot by (auto: macro-F1 where the test set is imbalanced, else accuracy)",
    )
    parser.add_argument(
        "--test",
        choices=TESTS,
        default="auto",
        help="paired test over seeds (auto: paired t-test below 5 common seeds, Wilcoxon signed-rank from 5)",
    )
    parser.add_argument(
        "--select",
        choices=("dev",),
        default=None,
        help="dev: per method and seed, keep only the setting with the best dev accuracy (a -m grid), as LM-BFF",
    )
    return parser.parse_args(argv)


def checked_dirs(dirs: list[Path]) -> list[Path]:
    if not dirs:
        raise UserError("no directory given: pass a sweep dir (e.g. outputs/multirun/DATE/TIME) or run dirs")
    for directory in dirs:
        if not directory.is_dir():
            raise UserError(f"not a directory: {directory}")
    return dirs


def print_tables(summaries: list[GroupSummary], incomplete: list[Run], comparisons: list[Comparison]) -> None:
    console = Console() if sys.stdout.isatty() else Console(width=MIN_CONSOLE_WIDTH)
    if summaries:
        title = "Test metrics (%), mean ± std over seeds and 95% t-interval, completed runs"
        console.print(rich_table(title, SUMMARY_HEADER, summary_rows(summaries)))
    else:
        console.print("No completed run yet.")
    for c in comparisons:
        console.print(escape(best_method_sentence(c).replace("**", "")))
        if len(c.ranked) > 1:
            title = f"{c.dataset} / {c.model} / K={c.shots}: test {METRIC_NAMES[c.metric]}, row minus column"
            console.print(rich_table(title, *pairwise_table(c)))
            console.print(escape(test_note(c).strip()))
    if any(s.selected for s in summaries):
        title = "Settings selected by best dev accuracy, per seed"
        console.print(rich_table(title, SELECTED_HEADER, selected_rows(summaries)))
    if incomplete:
        console.print(rich_table("Runs not included", INCOMPLETE_HEADER, incomplete_rows(incomplete)))


def report(
    dirs: list[Path], out: Path | None, metric: str = "auto", test: str = "auto", select: str | None = None
) -> list[Path]:
    dirs = checked_dirs(dirs)
    files = find_metrics_files(dirs)
    if not files:
        raise UserError(f"no {METRICS_FILE} found below {', '.join(map(str, dirs))}")
    runs = [variant for path in files for variant in variant_runs(read_run(path))]
    summaries = summarize(select_best_dev(runs) if select == "dev" else runs)
    incomplete = [run for run in runs if run.problem is not None]
    comparisons = compare(summaries, metric, test)
    print_tables(summaries, incomplete, comparisons)
    return write_reports(out or (dirs[0] if len(dirs) == 1 else Path.cwd()), summaries, incomplete, comparisons)


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exit_request:  # --help, or argparse's own usage error (already printed)
        return exit_request.code if isinstance(exit_request.code, int) else 2
    try:
        written = report(args.dirs, args.out, args.metric, args.test, args.select)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {', '.join(path.name for path in written)} to {written[0].parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
