"""The report files: report.csv and report.json beside report.md and the plot, written atomically."""

import csv
import io
import json
from datetime import datetime
from pathlib import Path

from prompttune.files import write_text
from prompttune.reporting.comparing import Comparison
from prompttune.reporting.plots import plot_report
from prompttune.reporting.reading import Run
from prompttune.reporting.summary import GroupSummary
from prompttune.reporting.tables import markdown_report

CSV_HEADER = (
    "dataset",
    "model",
    "shots",
    "method",
    "zero_shot",
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
    "test_f1_mean",
    "test_f1_std",
    "test_f1_ci_low",
    "test_f1_ci_high",
    "test_p_at_1_mean",
    "test_p_at_1_std",
    "test_p_at_1_ci_low",
    "test_p_at_1_ci_high",
    "test_mrr_mean",
    "test_mrr_std",
    "test_mrr_ci_low",
    "test_mrr_ci_high",
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
            # test_f1: entity F1 of tagging runs; p_at_1, mrr: fact probing's
            for key in ("test_accuracy", "test_macro_f1", "test_f1", "test_p_at_1", "test_mrr")
            for value in (s.stats[key].mean, s.stats[key].std, *(s.stats[key].ci or (None, None)))
        ]
        stats += [s.stats["dev_accuracy"].mean, s.stats["dev_accuracy"].std]
        row = [
            s.dataset,
            s.model,
            s.shots,
            s.method,
            s.zero_shot,
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
            "zero_shot": s.zero_shot,
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
