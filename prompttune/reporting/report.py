"""`prompttune report` end to end: read, summarise, compare, print, write. Only completed runs are averaged;
running, failed and unreadable runs are listed apart, so a report can be taken while a sweep is still running."""

import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from prompttune.errors import UserError
from prompttune.reporting.comparing import Comparison, compare
from prompttune.reporting.reading import (
    METRIC_NAMES,
    MIN_CONSOLE_WIDTH,
    Run,
    find_metrics_files,
    read_run,
    select_best_dev,
    variant_runs,
)
from prompttune.reporting.summary import (
    GroupSummary,
    summarize,
)
from prompttune.reporting.tables import (
    INCOMPLETE_HEADER,
    SELECTED_HEADER,
    best_method_sentence,
    incomplete_rows,
    pairwise_table,
    rich_table,
    selected_rows,
    summary_header,
    summary_rows,
    test_note,
)
from prompttune.reporting.writers import write_reports
from prompttune.runs.record import METRICS_FILE


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
        console.print(rich_table(title, summary_header(summaries), summary_rows(summaries)))
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
