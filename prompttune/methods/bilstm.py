"""A bidirectional LSTM over word vectors, max-pooled over time, then a linear layer: a word-level network
trained from scratch on the few-shot split (words, vectors, vocabulary and checkpoint: `word_level`).

The two directions are two LSTMs: one reads the padded batch left to right (padding only follows a text's
words), the other reads each text reversed within its own length (`reverse_within_length`), so it starts at
the last word, not at the padding; its states are put back in order. The padded batch runs through torch's
fused CPU kernel, about three times faster than a packed sequence. The max over time is masked, so padding
never wins it, and a text's logits do not depend on the batch it is in. Dropout (`method.dropout`) on the
pooled states, before the linear layer.
"""

from dataclasses import dataclass

import torch
from torch import nn

from prompttune.config.schema import bounded
from prompttune.methods import register
from prompttune.methods.word_level import WordConfig, WordNetwork, masked_max


@dataclass
class BiLstmConfig(WordConfig):
    hidden_size: int = bounded(100, ge=1)  # per direction; the pooled features are twice this


@register("bilstm")
class BiLstm(WordNetwork):
    config_class = BiLstmConfig

    def setup(self) -> None:
        self.ahead = nn.LSTM(self.dim, self.cfg.hidden_size, batch_first=True)
        self.behind = nn.LSTM(self.dim, self.cfg.hidden_size, batch_first=True)
        self.head = nn.Linear(2 * self.cfg.hidden_size, len(self.task.labels))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids, mask = batch["input_ids"], batch["attention_mask"].bool()
        lengths = mask.sum(1)
        # In fp32 even under bf16 autocast: oneDNN has no bf16 LSTM on CPUs without AVX512-BF16/AMX ("could not
        # create a primitive descriptor"), and the network is small.
        with torch.autocast(ids.device.type, enabled=False):
            words = self.embed(ids).float()
            ahead = self.ahead(words)[0]
            behind = reverse_within_length(self.behind(reverse_within_length(words, lengths))[0], lengths)
        states = torch.cat([ahead, behind], -1)
        return self.head(self.dropout(masked_max(states, mask)))


def reverse_within_length(sequences: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(batch, time, features) with each row's first `length` steps reversed and its padding left in place."""
    time = torch.arange(sequences.shape[1], device=sequences.device)[None]
    order = torch.where(time < lengths[:, None], lengths[:, None] - 1 - time, time)
    return sequences.gather(1, order[..., None].expand_as(sequences))
