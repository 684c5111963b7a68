"""predictions.jsonl: one line per test example with its guid, true label, prediction and class probabilities."""

import json
from pathlib import Path

import torch

from prompttune.data.records import Example
from prompttune.files import write_text

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


def read_predictions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
