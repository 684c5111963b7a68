"""Model size as an axis: where runs of one method differ only in the backbone, the lead metric against the
backbone's parameter count (log axis, a line per method, a band at the 95% interval over seeds), and each
method's gap to fine-tuning at every size."""

from prompttune.reporting.comparing import Comparison
from prompttune.reporting.reading import METRIC_NAMES
from prompttune.reporting.summary import GroupSummary, panels_by

FINETUNE = "finetune"


def size_panels(summaries: list[GroupSummary]) -> dict[tuple, list[GroupSummary]]:
    """(dataset, shots) -> its summaries, where at least one method ran on two or more backbones."""
    panels = panels_by([s for s in summaries if s.total_params], lambda s: (s.dataset, s.shots))
    return {
        key: members
        for key, members in panels.items()
        if any(len({s.model for s in runs}) > 1 for runs in panels_by(members, lambda s: (s.method,)).values())
    }


def backbone_sizes(members: list[GroupSummary]) -> dict[str, int]:
    """Each model's parameter count: the smallest total of its runs (the backbone alone, without a method's
    prompt encoder or head)."""
    sizes: dict[str, int] = {}
    for s in members:
        sizes[s.model] = min(sizes.get(s.model, s.total_params), s.total_params)
    return sizes


def draw_size_lines(ax, members: list[GroupSummary], stat_key: str, title: str) -> None:
    sizes = backbone_sizes(members)
    for (method,), runs in panels_by(members, lambda s: (s.method,)).items():
        runs = sorted(runs, key=lambda s: sizes[s.model])
        x = [sizes[s.model] for s in runs]
        stats = [s.stats[stat_key] for s in runs]
        (line,) = ax.plot(x, [100 * (st.mean or 0) for st in stats], marker="o", label=method)
        low = [100 * (st.ci[0] if st.ci else st.mean or 0) for st in stats]
        high = [100 * (st.ci[1] if st.ci else st.mean or 0) for st in stats]
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    ticks = sorted(sizes.items(), key=lambda item: item[1])
    ax.set_xscale("log")
    ax.set_xticks([n for _, n in ticks], [f"{model}\n{n / 1e6:.0f}M" for model, n in ticks], fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel("backbone parameters (log)")
    ax.set_ylabel(f"test {METRIC_NAMES[stat_key.removeprefix('test_')]} (%)")
    ax.set_title(f"{title}: vs model size (bands: 95% CI)", fontsize=10)
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)


def gap_rows(members: list[GroupSummary], comparisons: list[Comparison]) -> list[list[str]]:
    """Per model (smallest first) and method: the lead metric and its gap to fine-tuning on the same backbone,
    with the paired test's p-value over the seeds both have."""
    sizes = backbone_sizes(members)
    rows = []
    for c in sorted(comparisons, key=lambda c: sizes.get(c.model, 0)):
        if c.model not in sizes or (c.dataset, c.shots) != (members[0].dataset, members[0].shots):
            continue
        key = f"test_{c.metric}"
        finetune = next((s for s in c.ranked if s.method == FINETUNE), None)
        for s in c.ranked:
            mean = s.stats[key].mean
            gap, p = "-", "-"
            if finetune is not None and s is not finetune and mean is not None and finetune.stats[key].mean:
                gap = f"{100 * (mean - finetune.stats[key].mean):+.1f}"
                test = c.test(s.method, FINETUNE) or c.test(FINETUNE, s.method)
                p = "-" if test is None or test.p_value is None else f"{test.p_value:.3g}"
            shown = "-" if mean is None else f"{100 * mean:.1f}"
            rows.append([c.model, f"{sizes[c.model] / 1e6:.0f}M", s.method, shown, gap, p])
    return rows


def size_markdown(summaries: list[GroupSummary], comparisons: list[Comparison], table) -> str:
    """The gap-to-fine-tuning table of every size panel, written with `table(header, rows)`."""
    text = ""
    for (dataset, shots), members in size_panels(summaries).items():
        metric = next((c.metric for c in comparisons if c.dataset == dataset and c.shots == shots), "accuracy")
        text += f"\n## Model size: {dataset} · K={shots}\n\n"
        text += (
            f"Test {METRIC_NAMES[metric]} (%) per backbone, mean over seeds, and the gap to fine-tuning on the same "
            "backbone in points, with the paired test's p-value.\n\n"
        )
        header = ("model", "parameters", "method", f"{METRIC_NAMES[metric]} %", "gap to finetune", "p")
        text += table(header, gap_rows(members, comparisons))
    return text
