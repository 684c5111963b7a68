"""Verbalizers: each label maps to words; a word's score is the log-probability of all its tokens."""

from enum import StrEnum

import torch
from transformers import PreTrainedTokenizerBase

from prompttune.errors import UserError


class Reduce(StrEnum):
    """How a label's several words combine into its score."""

    mean = "mean"
    max = "max"
    logsumexp = "logsumexp"


class Verbalizer:
    """Token ids of every label word, laid out for vectorised scoring.

    word_ids [W, T] (padded with 0), word_lengths [W], word_labels [W]: W words over all labels, T the most
    tokens any word takes.
    """

    def __init__(
        self,
        label_words: dict[str, list[str]],
        labels: list[str],
        tokenizer: PreTrainedTokenizerBase,
        space_before: bool,
        reduce: Reduce = Reduce.mean,
    ):
        if set(label_words) != set(labels):
            raise UserError(
                f"verbalizer labels {sorted(label_words)} differ from the dataset's labels {sorted(labels)}; "
                "give words for exactly these labels"
            )
        self.labels = labels
        self.reduce = Reduce(reduce)
        self.words: list[str] = []
        token_lists, word_labels = [], []
        for index, label in enumerate(labels):
            for word in label_words[label]:
                token_lists.append(_word_tokens(word, tokenizer, space_before))
                word_labels.append(index)
                self.words.append(word)
        self.max_tokens = max(len(t) for t in token_lists)
        self.word_ids = torch.tensor([t + [0] * (self.max_tokens - len(t)) for t in token_lists])
        self.word_lengths = torch.tensor([len(t) for t in token_lists])
        self.word_labels = torch.tensor(word_labels)

    def first_words(self) -> list[list[int]]:
        """Each label's first word as token ids (how a demonstration of that label is written)."""
        first = [self.word_labels.tolist().index(label) for label in range(len(self.labels))]
        return [self.word_ids[w, : self.word_lengths[w]].tolist() for w in first]

    def word_scores(self, log_probs: torch.Tensor) -> torch.Tensor:
        """log_probs [N, T, V] at the T scored positions -> summed token log-probs per word [N, W]."""
        n, t, _ = log_probs.shape
        ids = self.word_ids.to(log_probs.device)[:, :t]  # [W, T]
        picked = log_probs.gather(2, ids.T.unsqueeze(0).expand(n, -1, -1))  # [N, T, W]
        valid = torch.arange(t, device=ids.device)[:, None] < self.word_lengths.to(ids.device)[None, :]
        return (picked * valid).sum(1)

    def label_scores(self, word_scores: torch.Tensor) -> torch.Tensor:
        """Combine each label's words [N, W] -> [N, C]."""
        labels = self.word_labels.to(word_scores.device)
        member = labels[None, :] == torch.arange(len(self.labels), device=labels.device)[:, None]  # [C, W]
        scores = word_scores[:, None, :].masked_fill(~member, float("-inf"))  # [N, C, W]
        if self.reduce == "max":
            return scores.max(-1).values
        if self.reduce == "logsumexp":
            return scores.logsumexp(-1)
        return scores.masked_fill(~member, 0.0).sum(-1) / member.sum(-1)


def _word_tokens(word: str, tokenizer: PreTrainedTokenizerBase, space_before: bool) -> list[int]:
    ids = tokenizer((" " + word) if space_before else word, add_special_tokens=False)["input_ids"]
    unk = tokenizer.unk_token_id
    if not ids or (unk is not None and unk in ids):
        raise UserError(f"verbalizer word {word!r} is unknown to the tokenizer; pick a word in its vocabulary")
    return ids
