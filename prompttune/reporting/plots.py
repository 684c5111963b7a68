"""report.png: a panel per dataset and model, test metric against K with 95% bands, and per-seed points."""

import math
from pathlib import Path

from prompttune.files import write_atomically
from prompttune.reporting.comparing import Comparison
from prompttune.reporting.reading import METRIC_NAMES
from prompttune.reporting.summary import GroupSummary, number_first, panels_by


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
