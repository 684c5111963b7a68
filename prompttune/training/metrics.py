"""Classification metrics: the few used to pick a checkpoint, and the full test report of a run; the registry
of every task kind's metrics (TASK_METRICS)."""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from sklearn.metrics import f1_score
from torch.nn.utils.rnn import pad_sequence

from prompttune.errors import UserError
from prompttune.prompts.encoding import IGNORED, EncodedExample

CONFIDENCE = 0.95
Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0  # fixed: the same predictions always give the same interval
ECE_BINS = 15  # equal-width confidence bins, as Guo et al. 2017


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, n_labels: int) -> dict[str, float]:
    predictions = logits.argmax(-1)
    return {
        "accuracy": float((predictions == labels).float().mean()),
        "macro_f1": float(
            f1_score(labels, predictions, labels=list(range(n_labels)), average="macro", zero_division=0)
        ),
        "n": int(labels.numel()),
    }


def evaluation_metrics(logits: torch.Tensor, labels: torch.Tensor, n_labels: int) -> dict:
    """Accuracy and macro-F1 with 95% intervals (Wilson; percentile bootstrap), the confusion matrix
    (rows: true label, columns: prediction), the mean negative log-likelihood and the expected calibration
    error of the class probabilities."""
    log_probs = logits.float().log_softmax(-1)
    predictions = log_probs.argmax(-1)
    metrics = classification_metrics(logits, labels, n_labels)
    correct = int((predictions == labels).sum())
    return metrics | {
        "accuracy_ci": list(wilson_interval(correct, labels.numel())),
        "macro_f1_ci": list(bootstrap_macro_f1_interval(labels, predictions, n_labels)),
        "confusion_matrix": confusion_matrix(labels, predictions, n_labels).tolist(),
        "nll": float(torch.nn.functional.nll_loss(log_probs, labels)),
        "ece": expected_calibration_error(log_probs.exp(), labels),
    }


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson's score interval of a binomial proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, n_labels: int) -> torch.Tensor:
    counts = torch.bincount(labels * n_labels + predictions, minlength=n_labels * n_labels)
    return counts.view(n_labels, n_labels)


def macro_f1_from_confusions(confusions: torch.Tensor) -> torch.Tensor:
    """Macro-F1 of a batch of confusion matrices [..., C, C]; a class never true nor predicted scores 0
    (scikit-learn's zero_division=0)."""
    confusions = confusions.double()
    true_positives = confusions.diagonal(dim1=-2, dim2=-1)
    denominator = confusions.sum(-1) + confusions.sum(-2)
    f1 = torch.where(denominator > 0, 2 * true_positives / denominator.clamp(min=1), 0.0)
    return f1.mean(-1)


def bootstrap_macro_f1_interval(
    labels: torch.Tensor, predictions: torch.Tensor, n_labels: int, resamples: int = BOOTSTRAP_RESAMPLES
) -> tuple[float, float]:
    """Percentile bootstrap over test examples: all resamples' confusion matrices in one bincount."""
    n = labels.numel()
    generator = torch.Generator().manual_seed(BOOTSTRAP_SEED)
    draws = torch.randint(n, (resamples, n), generator=generator)
    cells = labels[draws] * n_labels + predictions[draws] + torch.arange(resamples)[:, None] * n_labels**2
    confusions = torch.bincount(cells.flatten(), minlength=resamples * n_labels**2).view(resamples, n_labels, -1)
    scores = macro_f1_from_confusions(confusions)
    tail = (1 - CONFIDENCE) / 2
    low, high = torch.quantile(scores, torch.tensor([tail, 1 - tail], dtype=scores.dtype))
    return (float(low), float(high))


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Sum over equal-width bins of the top-class confidence of |accuracy - mean confidence| x bin share."""
    confidence, predictions = probs.max(-1)
    correct = (predictions == labels).double()
    which = ((confidence.double() * bins).ceil().long() - 1).clamp(0, bins - 1)
    count = torch.bincount(which, minlength=bins).double()
    gap = torch.bincount(which, weights=correct - confidence.double(), minlength=bins).abs()
    return float(gap.sum() / count.sum())


@dataclass(frozen=True)
class TaskMetrics:
    """How a task kind is measured, from the method's scores, the gold labels (`gold_labels`) and the label
    names: `dev` at every evaluation (cheap), `test` for the run's report; the best checkpoint maximises the
    dev metric `selection`."""

    dev: Callable[[torch.Tensor, torch.Tensor, list[str]], dict]
    test: Callable[[torch.Tensor, torch.Tensor, list[str]], dict]
    selection: str


# A task kind's metrics; a new task kind adds its entry (token_classification: training/tagging_metrics.py, which
# registers itself) and a head that scores it, not a branch in every method.
TASK_METRICS = {
    "classification": TaskMetrics(
        dev=lambda logits, labels, names: classification_metrics(logits, labels, len(names)),
        test=lambda logits, labels, names: evaluation_metrics(logits, labels, len(names)),
        selection="accuracy",
    )
}


def task_metrics(kind: str) -> TaskMetrics:
    if kind not in TASK_METRICS:
        raise UserError(f"task kind {kind!r} has no metrics yet; use one of {sorted(TASK_METRICS)}")
    return TASK_METRICS[kind]


def gold_labels(encoded: list[EncodedExample]) -> torch.Tensor:
    """The labels [N]; of tagged sentences, every word's tag [N, most words], IGNORED past a sentence's words."""
    if encoded and encoded[0].tags is not None:
        tags = [torch.tensor(e.tags, dtype=torch.long) for e in encoded]
        return pad_sequence(tags, batch_first=True, padding_value=IGNORED)
    return torch.tensor([e.label for e in encoded])
