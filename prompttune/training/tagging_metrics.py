"""Sequence-labelling metrics (`token_classification`): entity-level precision, recall and micro-F1 with strict
span matching (seqeval's mode=strict: an entity counts only when its type and both ends match, and a predicted
sequence that breaks the scheme forms no entity there), per-type F1, their macro mean, token accuracy, and a
percentile bootstrap 95% interval of the F1 over sentences.

Inputs: tag logits [N, W, tags] (0 past a sentence's words: tag 0, O) and gold tags [N, W'] (IGNORED past a
sentence's words; training/metrics.py: gold_labels). A word the model never saw (past model.max_length) is
predicted O. BIO tags are scored as IOB2; BMES as IOBES (M- read as I-), which seqeval knows.

Registered in TASK_METRICS on import (training/__init__.py imports this module).
"""

from collections import Counter

import torch

from prompttune.data.tagging import TOKEN_CLASSIFICATION
from prompttune.prompts.encoding import IGNORED
from prompttune.training.metrics import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE, TASK_METRICS, TaskMetrics

Span = tuple[int, int, str]  # (start, end, type) of an entity in one sentence


def seqeval_names(tag_names: list[str]) -> tuple[list[str], str]:
    """The tags as seqeval reads them, and its scheme: IOB2 for BIO, IOBES for BMES (M-X as I-X) and IOBES."""
    prefixes = {name.split("-", 1)[0] for name in tag_names if name != "O"}
    if prefixes & {"E", "S"}:
        return [f"I-{name[2:]}" if name.startswith("M-") else name for name in tag_names], "IOBES"
    return list(tag_names), "IOB2"


def sentence_tags(logits: torch.Tensor, gold: torch.Tensor, tag_names: list[str]) -> tuple[list, list, str]:
    """Each sentence's predicted and gold tags as seqeval names (over its gold words), and the scheme."""
    predicted = logits.argmax(-1)[:, : gold.shape[1]]
    predicted = torch.nn.functional.pad(predicted, (0, gold.shape[1] - predicted.shape[1]))  # unseen words: O
    names, scheme = seqeval_names(tag_names)
    lengths = (gold != IGNORED).sum(1).tolist()
    as_names = lambda rows: [[names[t] for t in row[:n]] for row, n in zip(rows, lengths, strict=True)]  # noqa: E731
    return as_names(predicted.tolist()), as_names(gold.tolist()), scheme


def entity_spans(sequences: list[list[str]], scheme: str) -> list[set[Span]]:
    """seqeval's strict entities of every sentence."""
    from seqeval import scheme as schemes  # imported here: only a tagging run needs it

    found = schemes.Entities(sequences, getattr(schemes, scheme), suffix=False).entities
    return [{(e.start, e.end, e.tag) for e in entities} for entities in found]


def f1(true_positives, predicted, gold):
    """Micro-F1 from counts (numbers or tensors); 0 where nothing was predicted or is gold."""
    if isinstance(true_positives, torch.Tensor):
        denominator = predicted + gold
        return torch.where(denominator > 0, 2 * true_positives / denominator.clamp(min=1), 0.0)
    return 2 * true_positives / (predicted + gold) if predicted + gold else 0.0


def ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def tagging_metrics(logits: torch.Tensor, gold: torch.Tensor, tag_names: list[str]) -> dict:
    """Entity precision, recall and micro-F1, the macro mean of per-type F1, token accuracy; what dev selects on."""
    return _scored(logits, gold, tag_names)[0]


def tagging_evaluation(logits: torch.Tensor, gold: torch.Tensor, tag_names: list[str]) -> dict:
    """The test report: tagging_metrics, the bootstrap interval of F1 over sentences, per-type scores, counts."""
    metrics, counts, per_type = _scored(logits, gold, tag_names)
    return metrics | {
        "f1_ci": list(bootstrap_f1_interval(counts)),
        "per_type": per_type,
        "n_words": int((gold != IGNORED).sum()),
        "n_entities": int(counts[:, 2].sum()),
    }


def _scored(logits: torch.Tensor, gold: torch.Tensor, tag_names: list[str]) -> tuple[dict, torch.Tensor, dict]:
    predicted_tags, gold_tags, scheme = sentence_tags(logits, gold, tag_names)
    predicted, true = entity_spans(predicted_tags, scheme), entity_spans(gold_tags, scheme)
    counts = torch.tensor([[len(p & t), len(p), len(t)] for p, t in zip(predicted, true, strict=True)]).view(-1, 3)
    hits = Counter(span[2] for p, t in zip(predicted, true, strict=True) for span in p & t)
    guessed = Counter(span[2] for p in predicted for span in p)
    present = Counter(span[2] for t in true for span in t)
    per_type = {
        kind: {
            "precision": ratio(hits[kind], guessed[kind]),
            "recall": ratio(hits[kind], present[kind]),
            "f1": f1(hits[kind], guessed[kind], present[kind]),
            "support": present[kind],
        }
        for kind in sorted(guessed | present)
    }
    words = gold != IGNORED
    width = min(logits.shape[1], gold.shape[1])
    right = (logits.argmax(-1)[:, :width] == gold[:, :width]) & words[:, :width]
    right_outside = ((gold[:, width:] == 0) & words[:, width:]).sum()  # unseen words, predicted O
    tp, n_predicted, n_gold = (int(c) for c in counts.sum(0))
    metrics = {
        "accuracy": float((right.sum() + right_outside) / words.sum().clamp(min=1)),  # token accuracy
        "precision": ratio(tp, n_predicted),
        "recall": ratio(tp, n_gold),
        "f1": f1(tp, n_predicted, n_gold),
        "macro_f1": sum(t["f1"] for t in per_type.values()) / len(per_type) if per_type else 0.0,
        "n": int(gold.shape[0]),
    }
    return metrics, counts, per_type


def bootstrap_f1_interval(counts: torch.Tensor, resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """Percentile bootstrap over sentences: each resample's entity counts as one matrix product of how often it
    drew each sentence with the sentences' (true positive, predicted, gold) counts [N, 3]."""
    n = counts.shape[0]
    if n == 0:
        return (0.0, 0.0)
    generator = torch.Generator().manual_seed(BOOTSTRAP_SEED)
    draws = torch.randint(n, (resamples, n), generator=generator)
    drawn = torch.zeros(resamples, n, dtype=torch.float64).scatter_add_(1, draws, torch.ones(resamples, n).double())
    totals = drawn @ counts.double()
    scores = f1(totals[:, 0], totals[:, 1], totals[:, 2])
    tail = (1 - CONFIDENCE) / 2
    low, high = torch.quantile(scores, torch.tensor([tail, 1 - tail], dtype=scores.dtype))
    return (float(low), float(high))


TASK_METRICS[TOKEN_CLASSIFICATION] = TaskMetrics(dev=tagging_metrics, test=tagging_evaluation, selection="f1")
