"""Classification metrics."""

import torch
from sklearn.metrics import f1_score


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, n_labels: int) -> dict[str, float]:
    predictions = logits.argmax(-1)
    return {
        "accuracy": float((predictions == labels).float().mean()),
        "macro_f1": float(
            f1_score(labels, predictions, labels=list(range(n_labels)), average="macro", zero_division=0)
        ),
        "n": int(labels.numel()),
    }
