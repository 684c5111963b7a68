"""Fact-probing metrics (`fact_probing`, LAMA's): where each fact's object ranks among the head's scores (every token
of the vocabulary, or the relation's objects), and from that rank precision@1 (with Wilson's 95% interval),
precision@10 and the mean reciprocal rank.

Inputs: scores [N, C] and the objects' indices among them [N] (methods/probing.py). A tie is ranked as argmax breaks
it (the lower index first), so P@1 is the share of facts whose top-scored token is the object. `accuracy` is
P@1 again, under the name the training log and the job summary read; `macro_f1` is the mean over the gold objects
of each object's F1 as a prediction (an object predicted where it is wrong lowers it).

Registered in TASK_METRICS on import (training/__init__.py imports this module); checkpoints are selected on dev P@1.
"""

import torch

from prompttune.data.facts import FACT_PROBING
from prompttune.training.metrics import TASK_METRICS, TaskMetrics, wilson_interval

TOP_K = 10


def answer_ranks(scores: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """Each answer's 1-based rank among its row's scores: 1 + the scores above it + equal scores at lower indices."""
    scores = scores.float()
    gold = scores.gather(1, answers[:, None])
    lower = torch.arange(scores.shape[1], device=scores.device)[None, :] < answers[:, None]
    return 1 + ((scores > gold) | ((scores == gold) & lower)).sum(1)


def macro_f1_over_objects(predicted: torch.Tensor, answers: torch.Tensor) -> float:
    """Mean over the distinct gold answers of each one's F1 as a prediction."""
    if answers.numel() == 0:
        return 0.0
    objects = answers.unique()
    true_positive = ((predicted == answers)[:, None] & (answers[:, None] == objects[None, :])).sum(0)
    guessed = (predicted[:, None] == objects[None, :]).sum(0)
    present = (answers[:, None] == objects[None, :]).sum(0)
    return float((2 * true_positive / (guessed + present)).mean())


def probing_metrics(scores: torch.Tensor, answers: torch.Tensor, labels: list[str]) -> dict:
    """P@1, P@10, MRR (and accuracy, macro-F1 over the objects) over the facts; what dev selects on."""
    if answers.numel() == 0:
        return {"p_at_1": 0.0, "p_at_10": 0.0, "mrr": 0.0, "accuracy": 0.0, "macro_f1": 0.0, "n": 0}
    ranks = answer_ranks(scores, answers)
    p_at_1 = float((ranks == 1).double().mean())
    return {
        "p_at_1": p_at_1,
        "p_at_10": float((ranks <= TOP_K).double().mean()),
        "mrr": float((1.0 / ranks.double()).mean()),
        "accuracy": p_at_1,
        "macro_f1": macro_f1_over_objects(scores.argmax(-1), answers),
        "n": int(answers.numel()),
    }


def probing_evaluation(scores: torch.Tensor, answers: torch.Tensor, labels: list[str]) -> dict:
    """The test report: probing_metrics, Wilson's 95% interval of P@1, the median rank and how many candidates."""
    metrics = probing_metrics(scores, answers, labels)
    correct = round(metrics["p_at_1"] * metrics["n"])
    ranks = answer_ranks(scores, answers) if metrics["n"] else torch.zeros(1)
    interval = list(wilson_interval(correct, metrics["n"]))
    return metrics | {
        "p_at_1_ci": interval,
        "accuracy_ci": interval,
        "median_rank": float(ranks.float().median()),
        "candidates": int(scores.shape[1]),
    }


TASK_METRICS[FACT_PROBING] = TaskMetrics(dev=probing_metrics, test=probing_evaluation, selection="p_at_1")
