"""Model size as an axis: where runs of one method differ only in the backbone, which panels to draw (the lead
metric against the backbone's parameter count: `plots.draw_size_lines`) and each method's gap to fine-tuning at
every size."""

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
