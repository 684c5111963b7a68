"""Model families: one class per way a pretrained model reads a cloze and scores its answer.

A family decides how a template's {mask} is laid out, how a sequence is pooled for a linear head, how label
words are scored, which modules are the prompt layers and where the LM head is. `models/loading.py` maps a
model config to its family; methods, heads and encoding only ask the family.
"""

import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

from prompttune.errors import UserError
from prompttune.models.backbone import Backbone, HiddenFn, pick


class MaskedLM(Backbone):
    """BERT, RoBERTa: one mask token per token of the word, scored where it stands; the first token pools."""

    architectures = ("ForMaskedLM",)
    auto_class = AutoModelForMaskedLM


class CausalLM(Backbone):
    """Llama, GPT-2: the template is cut at {mask} and the label words are scored as the next tokens
    (a word of several tokens teacher-forced, all words in one batched forward); the last token pools."""

    architectures = ("ForCausalLM", "LMHeadModel")
    auto_class = AutoModelForCausalLM
    cut_at_mask = True

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        last = attention_mask.sum(1, keepdim=True) - 1
        return pick(hidden, last).squeeze(1)

    def word_scores(self, hidden_fn: HiddenFn, batch: dict[str, torch.Tensor], verbalizer) -> torch.Tensor:
        if verbalizer.max_tokens == 1:
            return super().word_scores(hidden_fn, batch, verbalizer)
        return self._teacher_forced_scores(hidden_fn, batch, verbalizer)

    def _teacher_forced_scores(self, hidden_fn: HiddenFn, batch: dict[str, torch.Tensor], verbalizer) -> torch.Tensor:
        """Every word appended after the pattern: one row per (example, word), one forward for all."""
        ids = batch["input_ids"]
        n, width = ids.shape
        words, lengths = verbalizer.word_ids.to(ids.device), verbalizer.word_lengths.to(ids.device)
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
        log_probs = self.lm_log_probs(pick(hidden, positions))  # [N*W, T, V]
        own = words.repeat(n, 1).unsqueeze(-1)  # [N*W, T, 1]
        token_scores = log_probs.gather(2, own).squeeze(-1) * (steps[None, :] < lengths.repeat(n)[:, None])
        return token_scores.sum(1).view(n, n_words)


class EncoderOnly(Backbone):
    """A plain encoder (MiniLM sentence encoder): no LM head, so only linear heads; the first token pools."""

    auto_class = AutoModel

    @property
    def lm_head(self):
        raise UserError(
            f"model {self.name} has no LM head, so label words cannot be scored; use method.head=linear "
            "(or method=finetune / ptuning_v2), or a masked or causal LM"
        )
