"""predictions.jsonl: one line per test example with its guid, true label, prediction and class probabilities;
of a tagging dataset, one line per sentence with its tokens, true tags and predicted tags; of a fact-probing
dataset, one line per fact with its object, the best answers and the object's rank."""

import json
from collections.abc import Callable
from pathlib import Path

import torch

from prompttune.data.facts import FACT_PROBING
from prompttune.data.records import Example
from prompttune.data.tagging import TOKEN_CLASSIFICATION
from prompttune.files import write_text
from prompttune.methods.core import CLASSIFICATION, Method
from prompttune.training.probing_metrics import TOP_K, answer_ranks

PREDICTIONS_FILE = "predictions.jsonl"


def write_predictions(path: Path, examples: list[Example], logits: torch.Tensor, labels: list[str]) -> None:
    probs = logits.float().softmax(-1).tolist()
    predictions = logits.argmax(-1).tolist()
    lines = [
        json.dumps(
            {
                "guid": example.guid,
                "label": labels[example.label],
                "prediction": labels[predicted],
                "probabilities": dict(zip(labels, (round(p, 6) for p in row), strict=True)),
            },
            ensure_ascii=False,
        )
        for example, predicted, row in zip(examples, predictions, probs, strict=True)
    ]
    write_text(path, "".join(line + "\n" for line in lines))


def write_tag_predictions(path: Path, examples: list[Example], logits: torch.Tensor, tags: list[str]) -> None:
    """A tagged sentence per line: its guid, tokens, true tags and predicted tags (tag logits [N, W, tags]; a
    word past what the model read, model.max_length, is predicted O)."""
    predicted = logits.argmax(-1).tolist() if logits.numel() else [[] for _ in examples]
    lines = []
    for example, row in zip(examples, predicted, strict=True):
        words = len(example.tokens)
        guess = [tags[t] for t in row[:words]] + [tags[0]] * max(0, words - len(row))
        record = {
            "guid": example.guid,
            "tokens": list(example.tokens),
            "tags": [tags[t] for t in example.tags],
            "predicted": guess,
        }
        lines.append(json.dumps(record, ensure_ascii=False))
    write_text(path, "".join(line + "\n" for line in lines))


def write_fact_predictions(
    path: Path,
    facts: list[Example],
    scores: torch.Tensor,
    answers: torch.Tensor,
    objects: list[str],
    answer_text: Callable[[list[int]], list[str]],
) -> None:
    """A fact per line (fact probing): its guid, subject, object, the top-scored answer, the ten best and the
    object's rank among the head's scores (1: right; `answer_text` turns score indices into tokens)."""
    ranks = answer_ranks(scores, answers).tolist() if len(facts) else []
    top = scores.float().topk(min(TOP_K, scores.shape[-1]), dim=-1).indices.tolist() if len(facts) else []
    best = scores.argmax(-1).tolist() if len(facts) else []
    texts = iter(answer_text([i for row in top for i in row] + best))
    top_texts = [[next(texts) for _ in row] for row in top]
    best_texts = [next(texts) for _ in best]
    lines = [
        json.dumps(
            {
                "guid": fact.guid,
                "subject": fact.text_a,
                "object": objects[fact.label],
                "prediction": predicted,
                "top_10": words,
                "rank": rank,
            },
            ensure_ascii=False,
        )
        for fact, predicted, words, rank in zip(facts, best_texts, top_texts, ranks, strict=True)
    ]
    write_text(path, "".join(line + "\n" for line in lines))


# A task kind's predictions.jsonl, from the test examples, the method's scores, the gold labels and the method
# (label names, and of fact probing the head's token names): a new task kind adds its writer here.
PREDICTION_WRITERS: dict[str, Callable[[Path, list[Example], torch.Tensor, torch.Tensor, Method], None]] = {
    CLASSIFICATION: lambda path, examples, scores, gold, method: write_predictions(
        path, examples, scores, method.task.labels
    ),
    TOKEN_CLASSIFICATION: lambda path, examples, scores, gold, method: write_tag_predictions(
        path, examples, scores, method.task.labels
    ),
    FACT_PROBING: lambda path, examples, scores, gold, method: write_fact_predictions(
        path, examples, scores, gold, method.task.labels, method.head.answer_text
    ),
}


def write_task_predictions(
    path: Path, examples: list[Example], scores: torch.Tensor, gold: torch.Tensor, method: Method
) -> None:
    PREDICTION_WRITERS[method.task.kind](path, examples, scores, gold, method)


def read_predictions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
