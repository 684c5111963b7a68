"""Turn examples into token ids through a template, with the mask and the pattern words always kept."""

from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import PreTrainedTokenizerBase

from prompttune.data.records import Example
from prompttune.errors import UserError
from prompttune.models.backbone import Backbone
from prompttune.prompts.template import Template, allocate_lengths


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]
    mask_positions: list[int]  # one per mask token; cut at the mask: the position whose next token is scored
    soft_positions: list[int]
    label: int
    second_segment: int | None = None  # where the text after the first {sep} starts (segment ids for pairs)
    soft_label: tuple[float, ...] | None = None  # a teacher's class distribution, for distillation
    # A tagged sentence (methods/tagging.py): each word's first sub-token position (-1: a word without a token),
    # for the words that fit in model.max_length, and every word's tag (words cut off are scored as O)
    word_positions: tuple[int, ...] | None = None
    tags: tuple[int, ...] | None = None


class TemplateEncoder:
    """Encodes examples through one template for one tokenizer, with {mask} laid out as the model family does."""

    def __init__(
        self,
        template: Template,
        tokenizer: PreTrainedTokenizerBase,
        family: type[Backbone],
        max_length: int,
        mask_tokens: int = 1,
        preamble: str = "",
    ):
        self.template = template
        self.preamble = preamble  # text after the tokenizer's own leading tokens, before any demonstration
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.cut_at_mask = family.cut_at_mask and template.has_mask
        self._mask_ids = family.mask_ids(tokenizer, mask_tokens) if template.has_mask and not self.cut_at_mask else []
        self._segments = self._segments_to_encode()
        self._prefix, self._suffix = self._special_tokens()
        literals = [s.value for s in template.segments if s.kind == "literal"]
        self._literal_ids = dict(zip(literals, self._tokenize(literals), strict=True))
        self._check_fixed_length()

    def _segments_to_encode(self):
        segments = list(self.template.segments)
        if self.cut_at_mask:
            segments = segments[: [s.kind for s in segments].index("mask") + 1]
        return segments

    def _special_tokens(self) -> tuple[list[int], list[int]]:
        """The special tokens the tokenizer puts around a single text (e.g. [CLS] ... [SEP]), the preamble after
        the leading ones."""
        plain = self._tokenize(["a"])[0]
        full = self.tokenizer("a")["input_ids"]
        at = next(i for i in range(len(full) - len(plain) + 1) if full[i : i + len(plain)] == plain)
        prefix, suffix = full[:at], full[at + len(plain) :]
        if self.preamble:
            prefix = prefix + self._tokenize([self.preamble])[0]
        return prefix, ([] if self.cut_at_mask else suffix)

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def _fixed_length(self) -> int:
        length = len(self._prefix) + len(self._suffix)
        for seg in self._segments:
            if seg.kind == "literal":
                length += len(self._literal_ids[seg.value])
            elif seg.kind == "soft":
                length += seg.count
            elif seg.kind == "mask":
                length += len(self._mask_ids)
            elif seg.kind == "sep" and self.tokenizer.sep_token_id is not None:
                length += 1
        return length

    def _check_fixed_length(self) -> None:
        fixed = self._fixed_length()
        if fixed >= self.max_length:
            raise UserError(
                f"template {self.template.source!r} needs {fixed} tokens before any text but model.max_length="
                f"{self.max_length}; shorten the template or raise model.max_length"
            )

    def encode(self, examples: list[Example]) -> list[EncodedExample]:
        slot_ids = {name: self._tokenize_slot(examples, name) for name in self.template.text_slots}
        budget = self.max_length - self._fixed_length()
        encoded = []
        for i, example in enumerate(examples):
            texts = {name: ids[i] for name, ids in slot_ids.items()}
            encoded.append(self._assemble(texts, budget, example.label))
        return encoded

    @property
    def special_tokens(self) -> tuple[list[int], list[int]]:
        """The tokens before (special tokens, then the preamble) and after every encoded example."""
        return self._prefix, self._suffix

    def tokenize_texts(self, examples: list[Example]) -> list[dict[str, list[int]]]:
        """Each example's text slots as token ids, in one tokenizer call per slot."""
        slot_ids = {name: self._tokenize_slot(examples, name) for name in self.template.text_slots}
        return [{name: ids[i] for name, ids in slot_ids.items()} for i in range(len(examples))]

    def filled_length(self, word: list[int]) -> int:
        """Tokens of the whole pattern filled with a label word, texts excluded."""
        length = len(word)
        for seg in self.template.segments:
            if seg.kind == "literal":
                length += len(self._literal_ids[seg.value])
            elif seg.kind == "sep" and self.tokenizer.sep_token_id is not None:
                length += 1
        return length

    def fill(self, texts: dict[str, list[int]], word: list[int], kept: dict[str, int]) -> list[int]:
        """A demonstration: the whole pattern (also after the mask) with the label word's tokens at the mask,
        texts cut to `kept` tokens, no special tokens and no soft tokens."""
        ids: list[int] = []
        for seg in self.template.segments:
            if seg.kind == "literal":
                ids += self._literal_ids[seg.value]
            elif seg.kind == "text":
                ids += texts[seg.value][: kept[seg.value]]
            elif seg.kind == "sep" and self.tokenizer.sep_token_id is not None:
                ids.append(self.tokenizer.sep_token_id)
            elif seg.kind == "mask":
                ids += word
        return ids

    def _tokenize_slot(self, examples: list[Example], name: str) -> list[list[int]]:
        space = any(s.space_before for s in self._segments if s.kind == "text" and s.value == name)
        texts = [getattr(e, name) for e in examples]
        if any(t is None for t in texts):
            raise UserError(f"template {self.template.source!r} uses {{{name}}} but the dataset has no {name}")
        return self._tokenize([(" " + t if space else t) for t in texts])

    def _assemble(self, texts: dict[str, list[int]], budget: int, label: int) -> EncodedExample:
        names = sorted(texts)
        kept = dict(zip(names, allocate_lengths([len(texts[n]) for n in names], budget), strict=True))
        ids = list(self._prefix)
        mask_positions: list[int] = []
        soft_positions: list[int] = []
        second_segment = None
        for seg in self._segments:
            if seg.kind == "literal":
                ids += self._literal_ids[seg.value]
            elif seg.kind == "text":
                ids += texts[seg.value][: kept[seg.value]]
            elif seg.kind == "soft":
                soft_positions += range(len(ids), len(ids) + seg.count)
                ids += [self._soft_placeholder] * seg.count
            elif seg.kind == "sep" and self.tokenizer.sep_token_id is not None:
                ids.append(self.tokenizer.sep_token_id)
                second_segment = len(ids) if second_segment is None else second_segment
            elif seg.kind == "mask":
                ids, mask_positions = self._place_mask(ids)
        ids += self._suffix
        return EncodedExample(ids, mask_positions, soft_positions, label, second_segment)

    def _place_mask(self, ids: list[int]) -> tuple[list[int], list[int]]:
        if self.cut_at_mask:
            if not ids:
                raise UserError(
                    f"template {self.template.source!r} starts with {{mask}}: a causal LM needs text before it"
                )
            return ids, [len(ids) - 1]
        return ids + self._mask_ids, list(range(len(ids), len(ids) + len(self._mask_ids)))

    @property
    def _soft_placeholder(self) -> int:
        tok = self.tokenizer
        return tok.unk_token_id if tok.unk_token_id is not None else tok.pad_token_id


def collate(batch: list[EncodedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch into tensors; positions index into the padded rows. Pairs also get segment ids
    (`token_type_ids`: 1 from the text after the first separator on, 0 elsewhere and on padding)."""
    width = max(len(e.input_ids) for e in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, e in enumerate(batch):
        input_ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
        attention_mask[row, : len(e.input_ids)] = 1
    tensors = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "mask_positions": torch.tensor([e.mask_positions for e in batch], dtype=torch.long),
        "soft_positions": torch.tensor([e.soft_positions for e in batch], dtype=torch.long),
        "labels": torch.tensor([e.label for e in batch], dtype=torch.long),
    }
    if batch[0].soft_label is not None:
        tensors["soft_labels"] = torch.tensor([e.soft_label for e in batch], dtype=torch.float)
    if any(e.second_segment is not None for e in batch):
        starts = torch.tensor([width if e.second_segment is None else e.second_segment for e in batch])
        tensors["token_type_ids"] = (torch.arange(width)[None] >= starts[:, None]).long() * attention_mask
    if batch[0].word_positions is not None:
        tensors |= word_tensors(batch)
    return tensors


IGNORED = -100  # a label the loss skips (cross_entropy's ignore_index): padding, a word without a token


def word_tensors(batch: list[EncodedExample]) -> dict[str, torch.Tensor]:
    """A tagged batch's words, padded to its most words W: `word_positions` [B, W] (0 where there is no word),
    `word_mask` [B, W] and `labels` [B, W], the tags of the words that fit (IGNORED elsewhere)."""
    positions = pad_sequence(
        [torch.tensor(e.word_positions, dtype=torch.long) for e in batch], batch_first=True, padding_value=-1
    )
    tags = pad_sequence(
        [torch.tensor(e.tags[: len(e.word_positions)], dtype=torch.long) for e in batch],
        batch_first=True,
        padding_value=IGNORED,
    )
    mask = positions >= 0
    return {"word_positions": positions.clamp(min=0), "word_mask": mask, "labels": tags.masked_fill(~mask, IGNORED)}
