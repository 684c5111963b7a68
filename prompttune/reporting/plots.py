"""report.png: a panel per dataset and model, test metric against K with 95% bands, and per-seed points."""

import math
from pathlib import Path

from prompttune.files import write_atomically
from prompttune.reporting.comparing import Comparison
from prompttune.reporting.reading import METRIC_NAMES, SHOTS_UNITS
from prompttune.reporting.sizes import backbone_sizes, size_panels
from prompttune.reporting.summary import GroupSummary, number_first, panels_by


def plot_report(summaries: list[GroupSummary], comparisons: list[Comparison], path: Path) -> None:
    """Per dataset-model-shots, each seed's test score as a point beside the mean and its 95% t-interval,
    with the chance level; plus the score against K per method where a dataset-model has several K."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lead = {(c.dataset, c.model): c.metric for c in comparisons}
    model_panels = panels_by(summaries, lambda s: (s.dataset, s.model))
    line_panels = {
        key: group for key, group in model_panels.items() if len({s.shots for s in group if on_shots_axis(s)}) > 1
    }
    size_lines = size_panels(summaries)
    count = len(comparisons) + len(line_panels) + len(size_lines)
    columns = min(3, count)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(4.8 * columns, 3.9 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    for ax, comparison in zip(axes, comparisons, strict=False):  # more axes than panels
        draw_seed_points(ax, comparison)
    for ax, (key, members) in zip(axes[len(comparisons) :], line_panels.items(), strict=False):
        draw_shot_lines(ax, members, f"test_{lead[key]}", "{} / {}".format(*key))
    size_axes = axes[len(comparisons) + len(line_panels) :]
    for ax, ((dataset, shots), members) in zip(size_axes, size_lines.items(), strict=False):
        metric = next(c.metric for c in comparisons if (c.dataset, c.shots) == (dataset, shots))
        draw_size_lines(ax, members, f"test_{metric}", f"{dataset} / K={shots}")
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
    """The metric against K on a log axis: a line per method through the means, a band at the 95% interval
    over seeds; zero-shot evaluations (nothing trained, so no K) as dashed levels."""
    trained = [s for s in members if on_shots_axis(s)]
    for (method,), lines in panels_by(trained, lambda s: (s.method,)).items():
        lines = sorted(lines, key=lambda s: number_first(s.shots))
        draw_band_line(ax, [s.shots for s in lines], [s.stats[stat_key] for s in lines], method)
    for level in (s for s in members if s.zero_shot):
        ax.axhline(percent(level.stats[stat_key].mean), linestyle="--", linewidth=1, color="tab:gray")
        ax.annotate(
            level.method,
            (0.01, percent(level.stats[stat_key].mean)),
            xycoords=("axes fraction", "data"),
            fontsize=7,
            color="tab:gray",
            va="bottom",
        )
    shots = sorted({s.shots for s in trained})
    ax.set_xscale("log", base=2)
    ax.set_xticks(shots, [str(k) for k in shots])
    finish_axis(ax, shots_axis_label(stat_key), stat_key, f"{title}: vs K (bands: 95% CI over seeds)")


def shots_axis_label(stat_key: str) -> str:
    return SHOTS_UNITS.get(stat_key.removeprefix("test_"), "labelled examples per class") + " (K)"


def draw_size_lines(ax, members: list[GroupSummary], stat_key: str, title: str) -> None:
    """The metric against the backbone's parameter count (log axis), a line per method, a band at its 95%
    interval over seeds."""
    sizes = backbone_sizes(members)
    for (method,), runs in panels_by(members, lambda s: (s.method,)).items():
        runs = sorted(runs, key=lambda s: sizes[s.model])
        draw_band_line(ax, [sizes[s.model] for s in runs], [s.stats[stat_key] for s in runs], method)
    ticks = sorted(sizes.items(), key=lambda item: item[1])
    ax.set_xscale("log")
    ax.set_xticks([n for _, n in ticks], [f"{model}\n{n / 1e6:.0f}M" for model, n in ticks], fontsize=7)
    finish_axis(ax, "backbone parameters (log)", stat_key, f"{title}: vs model size (bands: 95% CI)")


def draw_band_line(ax, x: list, stats: list, label: str) -> None:
    """A line through the means and a band at the 95% interval (the mean where there is no interval)."""
    (line,) = ax.plot(x, [percent(st.mean) for st in stats], marker="o", label=label)
    low = [percent(st.ci[0] if st.ci else st.mean) for st in stats]
    high = [percent(st.ci[1] if st.ci else st.mean) for st in stats]
    ax.fill_between(x, low, high, color=line.get_color(), alpha=0.15, linewidth=0)


def finish_axis(ax, xlabel: str, stat_key: str, title: str) -> None:
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"test {METRIC_NAMES[stat_key.removeprefix('test_')]} (%)")
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0, 100)
    ax.legend(fontsize=6, loc="lower center", ncol=2)  # scores sit mostly above chance, the bottom is free


def percent(value: float | None) -> float:
    return 0.0 if value is None else 100 * value


# ---------------------------------------------------------------- writing


def on_shots_axis(summary: GroupSummary) -> bool:
    """A trained group with a number of shots (not a zero-shot level; not shots=all, a tagging dataset's pool)."""
    return not summary.zero_shot and isinstance(summary.shots, int | float) and not isinstance(summary.shots, bool)
