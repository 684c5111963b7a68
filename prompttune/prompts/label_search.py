"""Automatic label words, as LM-BFF searches them (Gao et al. 2021, section 5.1).

1. For each class, the k tokens with the highest summed log-probability at the mask over that class's
   training examples, among tokens that are whole words on their own (letters, never a word piece or a
   fragment of a byte-level character; for Chinese and Japanese, Han characters only). Candidates
   are single tokens, as in LM-BFF: SmolLM2's byte-level vocabulary holds only 80 Chinese characters and words
   as single tokens (not 好 or 差), a Chinese vocabulary (bert_base_chinese) holds every character.
2. Assignments of one candidate per class (all distinct), built class by class with a beam of n, ranked by
   zero-shot accuracy on the training split.
3. The n best re-ranked by zero-shot accuracy on dev (ties: train accuracy). LM-BFF fine-tunes each of the n
   before re-ranking on dev; here they are compared as they stand, which costs forward passes only.
"""

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from prompttune.errors import UserError


@dataclass(frozen=True)
class Assignment:
    token_ids: tuple[int, ...]  # one per class
    train_accuracy: float
    dev_accuracy: float = 0.0


def is_whole_word(text: str, cjk: bool = False) -> bool:
    """Letters only (any script; a byte-level fragment of a character decodes to U+FFFD, never a letter); with
    cjk, Chinese (Han) characters only: a Chinese dataset's label words are Chinese."""
    word = text.strip()
    if cjk:
        return bool(word) and all("\u3400" <= c <= "\u9fff" for c in word)
    return bool(word) and word.isalpha()


def candidates(
    log_probs: torch.Tensor,
    labels: torch.Tensor,
    n_labels: int,
    tokenizer: PreTrainedTokenizerBase,
    space_before: bool,
    k: int,
    cjk: bool = False,
) -> list[list[int]]:
    """Each class's k likeliest whole-word tokens at the mask ([N, V] log-probabilities of its examples)."""
    member = labels[None, :] == torch.arange(n_labels)[:, None]  # [C, N]
    scores = member.float() @ log_probs  # [C, V]
    found = []
    for label in range(n_labels):
        ranked = scores[label].argsort(descending=True).tolist()
        found.append(_first_whole_words(ranked, tokenizer, space_before, k, cjk))
        if not found[-1]:
            raise UserError(
                f"no single-token whole word found for label {label} in the tokenizer's vocabulary; "
                "give method.verbalizer words instead of auto"
            )
    return found


def _first_whole_words(ranked: list[int], tokenizer, space_before: bool, k: int, cjk: bool) -> list[int]:
    """Walk down the ranking, keeping tokens that decode to a word and encode back to themselves alone (with
    the template's space before the mask, so ` great` and not `great` for byte-level BPE)."""
    kept = []
    for start in range(0, len(ranked), 256):
        chunk = ranked[start : start + 256]
        for token, text in zip(chunk, tokenizer.batch_decode([[t] for t in chunk]), strict=True):
            if not is_whole_word(text, cjk):
                continue
            word = (" " if space_before else "") + text.strip()
            if tokenizer(word, add_special_tokens=False)["input_ids"] == [token]:
                kept.append(token)
                if len(kept) == k:
                    return kept
    return kept


def accuracy(log_probs: torch.Tensor, labels: torch.Tensor, assignments: torch.Tensor) -> torch.Tensor:
    """Zero-shot accuracy of each assignment [M, C'] on the examples of its C' first classes -> [M]."""
    n_classes = assignments.shape[1]
    within = labels < n_classes
    scores = log_probs[within][:, assignments]  # [N', M, C']
    predicted = scores.argmax(-1)  # [N', M]
    return (predicted == labels[within][:, None]).float().mean(0)


def search(
    train_log_probs: torch.Tensor,
    train_labels: torch.Tensor,
    dev_log_probs: torch.Tensor,
    dev_labels: torch.Tensor,
    per_class: list[list[int]],
    n_assignments: int,
) -> list[Assignment]:
    """The n best assignments by train accuracy (beam over classes), sorted best first by dev then train."""
    beams = torch.zeros(1, 0, dtype=torch.long)
    train_acc = torch.zeros(1)
    for options in per_class:
        options = torch.tensor(options)
        grown = torch.cat(
            [beams.repeat_interleave(len(options), 0), options.repeat(len(beams))[:, None]], 1
        )  # [B * K, c + 1]
        distinct = (grown[:, :-1] != grown[:, -1:]).all(1)
        grown = grown[distinct]
        if not len(grown):
            raise UserError("the label-word candidates cannot give every class its own word; raise the candidates")
        train_acc = accuracy(train_log_probs, train_labels, grown)
        best = train_acc.argsort(descending=True, stable=True)[:n_assignments]
        beams, train_acc = grown[best], train_acc[best]
    dev_acc = accuracy(dev_log_probs, dev_labels, beams) if len(dev_labels) else torch.zeros(len(beams))
    found = [
        Assignment(tuple(row), float(t), float(d))
        for row, t, d in zip(beams.tolist(), train_acc.tolist(), dev_acc.tolist(), strict=True)
    ]
    return sorted(found, key=lambda a: (-a.dev_accuracy, -a.train_accuracy))
