"""Comparing methods within a dataset, model and K: the lead metric and the paired tests over seeds."""

from dataclasses import dataclass

from prompttune.reporting.significance import PairedTest, chance_level, is_imbalanced, paired_test
from prompttune.reporting.summary import GroupSummary, panels_by


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
        tags = any(getattr(s.stats.get("test_f1"), "mean", None) is not None for s in members)  # tagging runs
        facts = any(getattr(s.stats.get("test_p_at_1"), "mean", None) is not None for s in members)  # fact probing
        lead, why = lead_metric(counts, metric, tags, facts)
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


def lead_metric(
    label_counts: list[int] | None, requested: str, tags: bool = False, facts: bool = False
) -> tuple[str, str]:
    """The metric a comparison leads with: as requested, else entity F1 on a tagging dataset, P@1 on a fact-probing
    one, else macro-F1 on an imbalanced test set."""
    if requested != "auto":
        return requested, "as requested"
    if facts:
        return "p_at_1", (
            "the runs probe facts, so each fact's object is ranked among the candidates (every token of the "
            "vocabulary, unless dataset.candidates=relation) and precision@1 is the share ranked first, as LAMA "
            "scores it"
        )
    if tags:
        return "f1", (
            "the runs tag words (sequence labelling), so entities are scored: micro-F1 over entities with strict "
            "span matching (seqeval), as CoNLL's scorer; accuracy over tokens is mostly the O tag"
        )
    if label_counts and is_imbalanced(label_counts):
        shares = ", ".join(f"{100 * c / sum(label_counts):.0f}%" for c in label_counts)
        return "macro_f1", (
            f"the test set is imbalanced (classes {shares}), so accuracy would reward predicting the majority "
            "class; macro-F1 weighs every class equally"
        )
    return "accuracy", "the test set is balanced" if label_counts else "the class counts are not recorded"
