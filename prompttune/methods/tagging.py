"""Sequence labelling (`dataset.task: token_classification`), shared by every method that declares it in
`task_kinds` (finetune, prompt_tuning, ptuning_v2): how a sentence is encoded word by word, and the tag head.

A method runs the backbone its own way (`hidden_states`: soft input tokens, key/value prefixes, or neither), and
the tag head scores every word on the state of its first sub-token: dropout and one linear layer, the head
transformers' AutoModelForTokenClassification puts on BERT, RoBERTa and Llama alike (Backbone.token_classifier).
A word's other sub-tokens carry no label (IGNORED), as in the BERT paper's NER setting. On a causal LM a token
sees only the words before it, so a word is tagged without its right context.

`method.head` does not apply (every head is this one); a template, a verbalizer or calibration are verbalizer
settings and stop the run with one line (`check_tagging_config`), as does a method without token_classification
in its `task_kinds` (`prompttune.methods.check_task_kind`).
"""

import logging

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from prompttune.config.schema import message
from prompttune.data.records import Example
from prompttune.data.tagging import TOKEN_CLASSIFICATION
from prompttune.errors import UserError
from prompttune.methods.core import CLASSIFICATION, Calibration, MethodConfig
from prompttune.models.backbone import Backbone, HiddenFn, pick
from prompttune.prompts.encoding import EncodedExample, TemplateEncoder
from prompttune.prompts.template import Template

log = logging.getLogger(__name__)
# The `task_kinds` of a method that tags words too (its head and encoding come from here)
WITH_TAGGING = frozenset({CLASSIFICATION, TOKEN_CLASSIFICATION})


class TaggingHead(nn.Module):
    """Tag logits [B, W, tags] for the words of a batch, from each word's first sub-token; 0 for every tag where
    a row has no word (the padding: its argmax is tag 0, O)."""

    def __init__(self, backbone: Backbone, num_tags: int):
        super().__init__()
        self.classifier = backbone.token_classifier(num_tags)

    def forward(self, hidden_fn: HiddenFn, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = hidden_fn(batch["input_ids"], batch["attention_mask"], batch["soft_positions"])
        logits = self.classifier(pick(hidden, batch["word_positions"]).float())
        return logits.masked_fill(~batch["word_mask"].unsqueeze(-1), 0.0)


class WordEncoder:
    """Tagged sentences as token ids: the tokenizer's special tokens around the words (as TemplateEncoder puts
    them around a text), the template's soft tokens before the words, the words split by the fast tokenizer
    (`is_split_into_words`; a space before every word but the first in a spaced language, so a byte-level BPE
    reads them as in running text). `word_ids()` gives each word's first sub-token; the words past
    model.max_length are left out (scored as O)."""

    def __init__(
        self,
        template: Template,
        tokenizer: PreTrainedTokenizerBase,
        family: type[Backbone],
        max_length: int,
        unspaced: bool,
    ):
        if not tokenizer.is_fast:
            raise UserError(
                f"token classification needs a fast tokenizer (its word_ids); {type(tokenizer).__name__} is not one"
            )
        self.tokenizer, self.unspaced, self.n_soft = tokenizer, unspaced, template.n_soft
        self.prefix, self.suffix = TemplateEncoder(template, tokenizer, family, max_length).special_tokens
        self.budget = max_length - len(self.prefix) - len(self.suffix) - self.n_soft  # (checked > 0 there)
        placeholder = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else tokenizer.pad_token_id
        self.soft_ids = [placeholder] * self.n_soft

    def encode(self, examples: list[Example]) -> list[EncodedExample]:
        words = [[w if i == 0 or self.unspaced else f" {w}" for i, w in enumerate(e.tokens)] for e in examples]
        tokenized = self.tokenizer(words, is_split_into_words=True, add_special_tokens=False) if words else None
        offset = len(self.prefix) + self.n_soft
        soft_positions = list(range(len(self.prefix), offset))
        encoded, cut = [], 0
        for i, example in enumerate(examples):
            ids = tokenized["input_ids"][i][: self.budget]
            positions = first_subtoken_positions(tokenized.word_ids(i)[: self.budget], offset)
            cut += len(positions) < len(example.tokens)
            input_ids = [*self.prefix, *self.soft_ids, *ids, *self.suffix]
            encoded.append(
                EncodedExample(input_ids, [], soft_positions, -1, word_positions=positions, tags=example.tags)
            )
        if cut:
            log.warning(
                "%d of %d sentences are longer than model.max_length: their last words are scored as O",
                cut,
                len(examples),
            )
        return encoded


def first_subtoken_positions(word_ids: list[int | None], offset: int) -> tuple[int, ...]:
    """Each word's first sub-token, shifted by `offset`, for the words up to the last one present; -1 for a word
    with no token (a character the tokenizer drops)."""
    ids = np.array([-1 if w is None else w for w in word_ids], dtype=np.int64)
    first = np.flatnonzero((ids >= 0) & (ids != np.concatenate(([-1], ids[:-1]))))
    positions = np.full(int(ids.max(initial=-1)) + 1, -1, dtype=np.int64)
    positions[ids[first]] = first + offset
    return tuple(positions.tolist())


def check_tagging_config(cfg: MethodConfig) -> None:
    """Settings of the verbalizer and the template, which a tagging method has none of: one line each."""
    for key, unset in (("template", None), ("verbalizer", None), ("calibration", Calibration.none)):
        value = getattr(cfg, key)
        if value != unset:
            allowed = f"{unset or 'null'} on a token_classification dataset (the tag head reads every word, no pattern)"
            raise UserError(message(f"method.{key}", value, allowed))
