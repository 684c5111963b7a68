"""Classification heads: a linear head on one token, or label-word scores through the verbalizer."""

from collections.abc import Callable

import torch
from torch import nn

from prompttune.models.backbone import Backbone
from prompttune.prompts.verbalizer import Verbalizer

# A method's way of running the backbone: (input_ids, attention_mask, soft_positions) -> hidden [B, L, H]
HiddenFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def pick(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """hidden [B, L, H] at positions [B, T] -> [B, T, H]."""
    return hidden.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))


class LinearHead(nn.Module):
    """A new classifier on the first token (encoders, MLMs) or the last non-pad token (causal LMs)."""

    def __init__(self, backbone: Backbone, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.use_last_token = backbone.kind == "causal"
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(backbone.hidden_size, num_labels)

    def forward(self, hidden_fn: HiddenFn, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = hidden_fn(batch["input_ids"], batch["attention_mask"], batch["soft_positions"])
        if self.use_last_token:
            position = batch["attention_mask"].sum(1, keepdim=True) - 1
        else:
            position = torch.zeros_like(batch["attention_mask"][:, :1])
        pooled = pick(hidden, position).squeeze(1)
        return self.classifier(self.dropout(pooled.float()))


class VerbalizerHead(nn.Module):
    """Class logits from the label words at the mask (MLM) or after the pattern (causal LM): their logits for
    one-token words, the summed log-probabilities of their tokens otherwise."""

    def __init__(self, backbone: Backbone, verbalizer: Verbalizer):
        super().__init__()
        self.backbone = backbone
        self.verbalizer = verbalizer
        backbone.lm_head  # noqa: B018 -- fails now, with a clear message, on a backbone without one

    def forward(self, hidden_fn: HiddenFn, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.backbone.kind == "causal" and self.verbalizer.max_tokens > 1:
            return self.verbalizer.label_scores(self._causal_multi_token(hidden_fn, batch))
        hidden = pick(
            hidden_fn(batch["input_ids"], batch["attention_mask"], batch["soft_positions"]), batch["mask_positions"]
        )
        if self.verbalizer.max_tokens == 1:
            # One token per word: the logits of the label words alone. They differ from log-probabilities by
            # the same normaliser for every word, which no softmax over the classes can see.
            word_ids = self.verbalizer.word_ids[:, 0].to(hidden.device)
            return self.verbalizer.label_scores(self.backbone.token_logits(hidden[:, 0], word_ids))
        return self.verbalizer.label_scores(self.verbalizer.word_scores(self.backbone.lm_log_probs(hidden)))

    def _causal_multi_token(self, hidden_fn: HiddenFn, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Teacher-force every word after the pattern: one row per (example, word), one forward for all."""
        ids = batch["input_ids"]
        n, width = ids.shape
        words, lengths = self.verbalizer.word_ids.to(ids.device), self.verbalizer.word_lengths.to(ids.device)
        n_words, t = words.shape
        steps = torch.arange(t, device=ids.device)
        end = batch["mask_positions"][:, 0] + 1  # prefix length [N]
        rows = torch.cat([ids, ids.new_zeros(n, t)], 1).unsqueeze(1).repeat(1, n_words, 1)  # [N, W, L + T]
        write = (end[:, None, None] + steps[None, None, :-1]).expand(-1, n_words, -1)
        rows = rows.scatter(2, write, words[None, :, :-1].expand(n, -1, -1))
        keep = (
            torch.arange(width + t, device=ids.device)[None, None, :] < (end[:, None] + lengths[None, :] - 1)[..., None]
        )
        soft = batch["soft_positions"].repeat_interleave(n_words, 0)
        hidden = hidden_fn(rows.flatten(0, 1), keep.flatten(0, 1).long(), soft)
        positions = (end[:, None] - 1 + steps[None, :]).repeat_interleave(n_words, 0)  # [N*W, T]
        log_probs = self.backbone.lm_log_probs(pick(hidden, positions))  # [N*W, T, V]
        own = words.repeat(n, 1).unsqueeze(-1)  # [N*W, T, 1]
        token_scores = log_probs.gather(2, own).squeeze(-1) * (steps[None, :] < lengths.repeat(n)[:, None])
        return token_scores.sum(1).view(n, n_words)
