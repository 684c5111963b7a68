"""Formatting: numbers, the summary and pairwise tables (rich and markdown), and report.md."""

from rich.markup import escape
from rich.table import Table

from prompttune.reporting.comparing import Comparison
from prompttune.reporting.reading import METRIC_NAMES, SHOTS_UNITS, Run
from prompttune.reporting.significance import PairedTest
from prompttune.reporting.sizes import size_markdown
from prompttune.reporting.summary import GroupSummary, Stat, number_first


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


ENTITY_F1_HEADER = ("entity F1 %", "entity F1 95% CI")  # tagging runs (training/tagging_metrics.py)


def has_entity_f1(summaries: list[GroupSummary]) -> bool:
    return any(getattr(s.stats.get("test_f1"), "mean", None) is not None for s in summaries)


FACT_HEADER = ("P@1 %", "P@1 95% CI", "MRR %")  # fact-probing runs (training/probing_metrics.py)


def has_facts(summaries: list[GroupSummary]) -> bool:
    return any(getattr(s.stats.get("test_p_at_1"), "mean", None) is not None for s in summaries)


def summary_header(summaries: list[GroupSummary]) -> tuple[str, ...]:
    """SUMMARY_HEADER, with entity F1 (P@1 and MRR) after the method and seeds when tagging (fact-probing) runs
    are among the summaries."""
    extra = (*(ENTITY_F1_HEADER if has_entity_f1(summaries) else ()), *(FACT_HEADER if has_facts(summaries) else ()))
    return (*SUMMARY_HEADER[:5], *extra, *SUMMARY_HEADER[5:])


def summary_rows(summaries: list[GroupSummary]) -> list[list[str]]:
    tagging, facts = has_entity_f1(summaries), has_facts(summaries)
    return [
        [
            str(s.dataset),
            str(s.model),
            str(s.shots),
            str(s.method),
            str(len(s.seeds)),
            *((format_stat(s.stats["test_f1"]), format_ci(s.stats["test_f1"])) if tagging else ()),
            *((format_stat(s.stats["test_p_at_1"]), format_ci(s.stats["test_p_at_1"])) if facts else ()),
            *((format_stat(s.stats["test_mrr"]),) if facts else ()),
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
    text += size_markdown(summaries, comparisons, markdown_table)
    if any(s.selected for s in summaries):
        text += "\n## Settings selected by best dev accuracy, per seed\n\n"
        text += markdown_table(SELECTED_HEADER, selected_rows(summaries))
    if incomplete:
        text += "\n## Runs not included\n\n" + markdown_table(INCOMPLETE_HEADER, incomplete_rows(incomplete))
    return text


def results_paragraphs(c: Comparison, number: int) -> str:
    name, other = METRIC_NAMES[c.metric], "accuracy" if c.metric in ("macro_f1", "f1") else "macro_f1"
    # a tagging dataset's K counts sentences, and its accuracy is over tokens; a fact-probing one's, training facts
    per_k = SHOTS_UNITS.get(c.metric, "examples per class for training") + " and as many for development"
    if c.metric in ("p_at_1", "mrr"):
        other, per_k = (
            "mrr" if c.metric == "p_at_1" else "p_at_1",
            SHOTS_UNITS[c.metric] + " at most and fixed dev facts",
        )
    seeds = sorted({seed for s in c.ranked for seed in s.seeds}, key=number_first)
    counts = c.best.test_label_counts
    n_test = f"the same {sum(counts):,} test examples" if counts else "one fixed test set"
    text = f"## {c.dataset} · {c.model} · K={c.shots}\n\n"
    text += (
        f"We compare {len(c.ranked)} methods on {c.dataset} with {c.model}, K={c.shots} {per_k}, "
        f"over {len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({', '.join(map(str, seeds))}); every "
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
    beaten, tied, untested = [], [], []
    for other in c.ranked[1:]:
        result = c.test(best.method, other.method)
        label = f"{other.method} ({format_difference(result)})"
        if result is None or result.p_value is None:
            untested.append(label)
        else:
            (beaten if result.significant else tied).append(label)
    if beaten:
        sentence += f" Its lead is significant at 0.05 over {', '.join(beaten)}."
    if tied:
        sentence += f" Its lead is not significant over {', '.join(tied)}: those gaps may be seed noise."
    if untested:
        # one common seed (or the same score on every seed) leaves the paired test undefined
        sentence += f" Its lead over {', '.join(untested)} cannot be tested: run more seeds."
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
