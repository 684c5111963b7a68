"""Kim (2014), "Convolutional Neural Networks for Sentence Classification": convolutions of widths 3, 4 and 5
(`method.filter_widths`, `method.feature_maps` = 100 each) over word vectors, ReLU, max-over-time pooling,
dropout 0.5, then a linear layer whose weight vector for each class has an l2 norm of at most 3
(`method.max_norm`). Trained from scratch on the few-shot split (words, vectors, vocabulary and checkpoint:
`word_level`).

As Kim's code pads each sentence with width - 1 zero vectors at both ends, the convolution is wide (every
window that holds at least one word), and the max is taken over those windows only, so padding never wins it
and a text's logits do not depend on its batch.

Deviations from the paper:
- the optimiser is the trainer's AdamW (lr 1e-3 in configs/method/textcnn.yaml), not Adadelta (rho 0.95), which
  the shared training loop does not offer; mini-batches of 8, not 50, for a few-shot split of a few dozen
  examples; the best dev checkpoint is kept (Kim: early stopping on dev), and no weight decay;
- the norm constraint is a reparameterisation: the layer applies its weight rows rescaled to norm 3 when they
  exceed it (`torch.renorm`), where Kim rescales the stored weights after each update; the function class is
  the same, and it needs nothing from the training loop;
- vectors: GloVe 6B 50d (or the Chinese word2vec, 100d), not the 300d Google News word2vec, which no offline
  package ships; words without a vector share one learned vector, where Kim gives each its own random one;
  `method.freeze_vectors` true is his CNN-static, false (the default) CNN-non-static, `method.vectors=random`
  CNN-rand.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from prompttune.config.schema import Invalid, bounded
from prompttune.methods import register
from prompttune.methods.word_level import WordConfig, WordNetwork, masked_max


@dataclass
class TextCnnConfig(WordConfig):
    filter_widths: list[int] = field(default_factory=lambda: [3, 4, 5])  # words per window
    feature_maps: int = bounded(100, ge=1)  # filters of each width
    max_norm: float | None = bounded(3.0, gt=0)  # l2 norm cap of each class's output weights; null: none

    def check(self) -> None:
        super().check()
        if not self.filter_widths or any(w < 1 for w in self.filter_widths):
            raise Invalid("filter_widths", self.filter_widths, "a non-empty list of whole numbers >= 1")


@register("textcnn")
class TextCnn(WordNetwork):
    config_class = TextCnnConfig

    def setup(self) -> None:
        maps = self.cfg.feature_maps
        self.convs = nn.ModuleList(nn.Conv1d(self.dim, maps, w, padding=w - 1) for w in self.cfg.filter_widths)
        self.head = nn.Linear(maps * len(self.convs), len(self.task.labels))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        words = self.embed(ids).transpose(1, 2)  # (batch, dim, time)
        lengths = mask.sum(1, keepdim=True)
        pooled = []
        for conv, width in zip(self.convs, self.cfg.filter_widths, strict=True):
            maps = F.relu(conv(words)).transpose(1, 2)  # (batch, time + width - 1, maps)
            window = torch.arange(maps.shape[1], device=ids.device)
            pooled.append(masked_max(maps, window[None] < lengths + width - 1))  # windows with a word in them
        weight = self.head.weight
        if self.cfg.max_norm is not None:
            weight = torch.renorm(weight, 2, 0, self.cfg.max_norm)
        return F.linear(self.dropout(torch.cat(pooled, -1)), weight, self.head.bias)
