"""Statistics across seeds: t-intervals of a mean, paired tests between two methods, chance levels.

Seeds are the unit: each seed draws its own few-shot split, so two methods run on the same seeds are compared
seed by seed (a paired test), which removes the split-to-split variance they share.
"""

import math
import statistics
from dataclasses import dataclass

from scipy import stats

ALPHA = 0.05
WILCOXON_MIN_SEEDS = 5  # below this a signed-rank test has too few orderings to ever reach p < 0.05
TESTS = ("auto", "t", "wilcoxon")


@dataclass(frozen=True)
class PairedTest:
    test: str  # "paired t-test" or "Wilcoxon signed-rank test"
    n: int  # seeds both methods ran
    mean_difference: float  # first minus second
    p_value: float | None  # None when it cannot be computed (one seed, or identical scores on every seed)

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value < ALPHA


def t_interval(
    values: list[float], confidence: float = 1 - ALPHA, bounds: tuple[float, float] | None = None
) -> tuple[float, float] | None:
    """The Student-t interval of the mean over seeds, clipped to `bounds` (a score cannot leave [0, 1]);
    None with fewer than two values."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    half = stats.t.ppf((1 + confidence) / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    low, high = mean - half, mean + half
    return (max(low, bounds[0]), min(high, bounds[1])) if bounds else (low, high)


def paired_test(first: dict, second: dict, test: str = "auto") -> PairedTest | None:
    """Compare two methods' scores ({seed: score}) on the seeds both have: a paired t-test, or with `auto`
    a Wilcoxon signed-rank test (exact, two-sided) from WILCOXON_MIN_SEEDS seeds on. None without a common seed."""
    seeds = sorted(set(first) & set(second), key=str)
    if not seeds:
        return None
    a, b = [first[s] for s in seeds], [second[s] for s in seeds]
    use_wilcoxon = test == "wilcoxon" or (test == "auto" and len(seeds) >= WILCOXON_MIN_SEEDS)
    name = "Wilcoxon signed-rank test" if use_wilcoxon else "paired t-test"
    differences = [x - y for x, y in zip(a, b, strict=True)]
    if len(seeds) < 2 or max(differences) - min(differences) < 1e-12:  # no spread: no test has a p-value
        return PairedTest(name, len(seeds), statistics.fmean(differences), None)
    if use_wilcoxon:
        p_value = stats.wilcoxon(a, b, alternative="two-sided").pvalue
    else:
        p_value = stats.ttest_rel(a, b).pvalue
    p_value = None if math.isnan(p_value) else float(p_value)
    return PairedTest(name, len(seeds), statistics.fmean(differences), p_value)


def chance_level(label_counts: list[int], metric: str) -> float:
    """The expected score of guessing uniformly at random: accuracy 1/C; macro-F1 the mean over classes of
    2 p_c (1/C) / (p_c + 1/C), for a class of prevalence p_c."""
    n_classes, total = len(label_counts), sum(label_counts)
    if metric == "accuracy":
        return 1 / n_classes
    shares = [count / total for count in label_counts]
    return statistics.fmean(2 * p / n_classes / (p + 1 / n_classes) for p in shares)


IMBALANCE_RATIO = 1.25  # largest class over smallest class beyond which accuracy rewards the majority class


def is_imbalanced(label_counts: list[int]) -> bool:
    return bool(label_counts) and min(label_counts) > 0 and max(label_counts) / min(label_counts) > IMBALANCE_RATIO
