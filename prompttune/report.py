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
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from prompttune.errors import UserError
from prompttune.files import write_atomically, write_text
from prompttune.record import AVERAGED_OVER, GROUP_KEYS, METRICS_FILE, RunRecord

REQUIRED_KEYS = GROUP_KEYS + (AVERAGED_OVER,)
SUMMARIZED = (("test", "accuracy"), ("test", "macro_f1"), ("dev", "accuracy"))
PLOTTABLE_METRICS = ("accuracy", "macro_f1")
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
    return GroupSummary(
        dataset=dataset,
        model=model,
        shots=shots,
        method=method,
        seeds=sorted((run.metrics["seed"] for run in runs), key=number_first),
        stats={f"{split}_{name}": stat_of(runs, split, name) for split, name in SUMMARIZED},
        trainable_params=rounded(mean_or_none([param_count(run, "trainable") for run in runs])),
        trainable_ratio=mean_or_none([param_count(run, "ratio") for run in runs]),
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
    return Stat(mean_or_none(values), std)


def mean_or_none(values: list[Any]) -> float | None:
    numbers = [value for value in values if is_number(value)]
    return statistics.fmean(numbers) if numbers else None


def rounded(value: float | None) -> int | None:
    return None if value is None else round(value)


# ---------------------------------------------------------------- formatting


def format_stat(stat: Stat) -> str:
    """Percentages with one decimal: `81.3 ± 2.1`; `-` for a missing value or the std of one seed."""
    if stat.mean is None:
        return "-"
    std = "-" if stat.std is None else f"{100 * stat.std:.1f}"
    return f"{100 * stat.mean:.1f} ± {std}"


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
    "test macro-F1 %",
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
            format_stat(s.stats["test_macro_f1"]),
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
        table.add_column(name, justify="right" if name.endswith(("%", " s", "seeds", "shots")) else "left")
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


def markdown_report(summaries: list[GroupSummary], incomplete: list[Run]) -> str:
    text = "# prompttune report\n\n"
    text += "Test metrics in %, mean ± sample std over seeds (completed runs only).\n\n"
    text += markdown_table(SUMMARY_HEADER, summary_rows(summaries))
    if any(s.selected for s in summaries):
        text += "\n## Settings selected by best dev accuracy, per seed\n\n"
        text += markdown_table(SELECTED_HEADER, selected_rows(summaries))
    if incomplete:
        text += "\n## Runs not included\n\n" + markdown_table(INCOMPLETE_HEADER, incomplete_rows(incomplete))
    return text


CSV_HEADER = (
    "dataset",
    "model",
    "shots",
    "method",
    "n_seeds",
    "seeds",
    "test_accuracy_mean",
    "test_accuracy_std",
    "test_macro_f1_mean",
    "test_macro_f1_std",
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
            for key in ("test_accuracy", "test_macro_f1", "dev_accuracy")
            for value in (s.stats[key].mean, s.stats[key].std)
        ]
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


def json_report(summaries: list[GroupSummary], incomplete: list[Run], metric: str) -> str:
    """Raw fractions (not percentages), so other tools can recompute anything."""
    groups = [
        {
            "dataset": s.dataset,
            "model": s.model,
            "shots": s.shots,
            "method": s.method,
            "n_seeds": len(s.seeds),
            "seeds": s.seeds,
            **{key: {"mean": stat.mean, "std": stat.std} for key, stat in s.stats.items()},
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
        "plot_metric": metric,
        "groups": groups,
        "incomplete": others,
    }
    return json.dumps(report, indent=2) + "\n"


# ---------------------------------------------------------------- plotting


def plot_report(summaries: list[GroupSummary], metric: str, path: Path) -> None:
    """Bars of test `metric` by method (one panel per dataset-model-shots), with std error bars,
    plus accuracy-vs-shots lines per method for each dataset-model that has several shot counts."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    stat_key = f"test_{metric}"
    bar_panels = panels_by(summaries, lambda s: (s.dataset, s.model, s.shots))
    model_panels = panels_by(summaries, lambda s: (s.dataset, s.model))
    line_panels = {key: group for key, group in model_panels.items() if len({s.shots for s in group}) > 1}
    count = len(bar_panels) + len(line_panels)
    columns = min(3, count)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(4.5 * columns, 3.6 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    for ax, (key, members) in zip(axes, bar_panels.items(), strict=False):  # more axes than panels
        draw_bars(ax, members, stat_key, "{} / {} / K={}".format(*key))
    for ax, (key, members) in zip(axes[len(bar_panels) :], line_panels.items(), strict=False):
        draw_shot_lines(ax, members, stat_key, "{} / {}".format(*key))
    for ax in axes[count:]:
        ax.set_visible(False)
    figure.suptitle(f"test {metric} (%), mean ± std over seeds")
    write_atomically(path, lambda handle: figure.savefig(handle, format="png", dpi=110))


def panels_by(summaries: list[GroupSummary], key_of) -> dict[tuple, list[GroupSummary]]:
    panels: dict[tuple, list[GroupSummary]] = defaultdict(list)
    for summary in summaries:
        panels[key_of(summary)].append(summary)
    return panels


def draw_bars(ax, members: list[GroupSummary], stat_key: str, title: str) -> None:
    means = [percent(s.stats[stat_key].mean) for s in members]
    stds = [percent(s.stats[stat_key].std) for s in members]
    ax.bar(range(len(members)), means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
    labels = [f"{s.method} ({mean:.1f})" for s, mean in zip(members, means, strict=True)]
    ax.set_xticks(range(len(members)), labels, rotation=30, ha="right")
    ax.set_title(title, fontsize=10)
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


def write_reports(out: Path, summaries: list[GroupSummary], incomplete: list[Run], metric: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"report.{suffix}" for suffix in ("md", "csv", "json", "png")]
    write_text(paths[0], markdown_report(summaries, incomplete))
    write_text(paths[1], csv_report(summaries))
    write_text(paths[2], json_report(summaries, incomplete, metric))
    if summaries:
        plot_report(summaries, metric, paths[3])
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
    parser.add_argument("--metric", choices=PLOTTABLE_METRICS, default="accuracy", help="test metric to plot")
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


def print_tables(summaries: list[GroupSummary], incomplete: list[Run]) -> None:
    console = Console() if sys.stdout.isatty() else Console(width=MIN_CONSOLE_WIDTH)
    if summaries:
        title = "Test metrics (%), mean ± std over seeds, completed runs"
        console.print(rich_table(title, SUMMARY_HEADER, summary_rows(summaries)))
    else:
        console.print("No completed run yet.")
    if any(s.selected for s in summaries):
        title = "Settings selected by best dev accuracy, per seed"
        console.print(rich_table(title, SELECTED_HEADER, selected_rows(summaries)))
    if incomplete:
        console.print(rich_table("Runs not included", INCOMPLETE_HEADER, incomplete_rows(incomplete)))


def report(dirs: list[Path], out: Path | None, metric: str, select: str | None = None) -> list[Path]:
    dirs = checked_dirs(dirs)
    files = find_metrics_files(dirs)
    if not files:
        raise UserError(f"no {METRICS_FILE} found below {', '.join(map(str, dirs))}")
    runs = [variant for path in files for variant in variant_runs(read_run(path))]
    summaries = summarize(select_best_dev(runs) if select == "dev" else runs)
    incomplete = [run for run in runs if run.problem is not None]
    print_tables(summaries, incomplete)
    return write_reports(out or (dirs[0] if len(dirs) == 1 else Path.cwd()), summaries, incomplete, metric)


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exit_request:  # --help, or argparse's own usage error (already printed)
        return exit_request.code if isinstance(exit_request.code, int) else 2
    try:
        written = report(args.dirs, args.out, args.metric, args.select)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {', '.join(path.name for path in written)} to {written[0].parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
