"""Classification heads: a linear head on the family's pooled vector, or label-word scores through the
verbalizer, scored the family's way (at the mask, as the next tokens, or after a sentinel)."""

import torch
from torch import nn

from prompttune.models.backbone import Backbone, HiddenFn
from prompttune.prompts.verbalizer import Verbalizer


class LinearHead(nn.Module):
    """A new classifier on one vector per sequence, pooled as the backbone's family does it."""

    def __init__(self, backbone: Backbone, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.pool = backbone.pool
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(backbone.hidden_size, num_labels)

    def forward(self, hidden_fn: HiddenFn, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = hidden_fn(batch["input_ids"], batch["attention_mask"], batch["soft_positions"])
        return self.classifier(self.dropout(self.pool(hidden, batch["attention_mask"]).float()))


class ClassificationHead(nn.Module):
    """The head of transformers' AutoModelForSequenceClassification for the family (Backbone.sequence_classifier)
    on its pooled vector: pooler or dense + tanh then a linear layer for encoders, a linear `score` for causal LMs."""

    def __init__(self, backbone: Backbone, num_labels: int):
        super().__init__()
        self.pool = backbone.pool
        self.classifier = backbone.sequence_classifier(num_labels)

    def forward(self, hidden_fn: HiddenFn, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = hidden_fn(batch["input_ids"], batch["attention_mask"], batch["soft_positions"])
        return self.classifier(self.pool(hidden, batch["attention_mask"]))


class VerbalizerHead(nn.Module):
    """Class logits from the label words' scores, combined per label by the verbalizer."""

    def __init__(self, backbone: Backbone, verbalizer: Verbalizer):
        super().__init__()
        self.backbone = backbone
        self.verbalizer = verbalizer
        backbone.lm_head  # noqa: B018 -- fails now, with a clear message, on a backbone without one

    def forward(self, hidden_fn: HiddenFn, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.verbalizer.label_scores(self.backbone.word_scores(hidden_fn, batch, self.verbalizer))
