"""Demonstrations (GPT-3's in-context learning, LM-BFF): training examples written as the pattern filled with
their label word, put in the context of each query.

The query is encoded (cut to the method's max_length) and always keeps its mask. The demonstrations share a
fixed number of tokens, whatever the query's length, their texts cut longest first, and whole demonstrations
are dropped (farthest from the query first) when even their pattern words do not fit: one set of
demonstrations then reads the same before every query, and a causal LM runs it once (`models/packing.py`).
"""

import random
from collections.abc import Sequence

from prompttune.data.records import Example
from prompttune.prompts.encoding import EncodedExample, TemplateEncoder
from prompttune.prompts.template import allocate_lengths


def by_label(pool: Sequence[Example], n_labels: int) -> list[list[Example]]:
    groups: list[list[Example]] = [[] for _ in range(n_labels)]
    for example in pool:
        groups[example.label].append(example)
    return groups


def draw_per_label(groups: list[list[Example]], per_label: int, rng: random.Random, exclude: str | None = None):
    """`per_label` examples of each label (all it has when fewer), in label order; `exclude` is a guid left out
    (an example is never its own demonstration)."""
    drawn = []
    for group in groups:
        candidates = [e for e in group if e.guid != exclude]
        drawn += rng.sample(candidates, min(per_label, len(candidates)))
    return drawn


class DemonstrationEncoder:
    """Encodes each query with its demonstrations before it (in-context learning, causal LMs) or after it
    (LM-BFF on masked LMs), separated by `separator` tokens."""

    def __init__(
        self,
        encoder: TemplateEncoder,
        label_words: list[list[int]],
        separator: list[int],
        after_query: bool,
        budget: int,
    ):
        self.encoder = encoder
        self.budget = budget  # tokens for the demonstrations of a query, separators included
        self.label_words = label_words
        self.separator = separator
        self.after_query = after_query

    def encode(self, queries: list[Example], demonstrations: list[list[Example]]) -> list[EncodedExample]:
        encoded = self.encoder.encode(queries)
        distinct = list({e.guid: e for demos in demonstrations for e in demos}.values())
        texts = dict(zip((e.guid for e in distinct), self.encoder.tokenize_texts(distinct), strict=True))
        return [
            self._with_context(query, [(texts[d.guid], d.label) for d in demos])
            for query, demos in zip(encoded, demonstrations, strict=True)
        ]

    def _with_context(self, query: EncodedExample, demos: list[tuple[dict[str, list[int]], int]]) -> EncodedExample:
        context = self._context(demos, self.budget)
        if not context:
            return query
        prefix, suffix = self.encoder.special_tokens
        ids = query.input_ids
        if self.after_query:
            end = len(ids) - len(suffix)
            return EncodedExample(
                ids[:end] + context + ids[end:], query.mask_positions, query.soft_positions, query.label
            )
        shift = len(context)
        return EncodedExample(
            ids[: len(prefix)] + context + ids[len(prefix) :],
            [p + shift for p in query.mask_positions],
            [p + shift for p in query.soft_positions],
            query.label,
        )

    def _context(self, demos: list[tuple[dict[str, list[int]], int]], budget: int) -> list[int]:
        """The demonstrations, each followed (or, after the query, preceded) by the separator, in budget tokens."""
        fixed = [self.encoder.filled_length(self.label_words[label]) + len(self.separator) for _, label in demos]
        while demos and sum(fixed) > budget:
            demos, fixed = (demos[:-1], fixed[:-1]) if self.after_query else (demos[1:], fixed[1:])
        slots = [(i, name) for i, (texts, _) in enumerate(demos) for name in sorted(texts)]
        lengths = [len(demos[i][0][name]) for i, name in slots]
        kept = allocate_lengths(lengths, budget - sum(fixed))
        allowed: list[dict[str, int]] = [{} for _ in demos]
        for (i, name), n in zip(slots, kept, strict=True):
            allowed[i][name] = n
        context: list[int] = []
        for (texts, label), keep in zip(demos, allowed, strict=True):
            filled = self.encoder.fill(texts, self.label_words[label], keep)
            context += (self.separator + filled) if self.after_query else (filled + self.separator)
        return context
