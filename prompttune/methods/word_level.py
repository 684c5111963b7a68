"""What the word-level networks trained from scratch share (`bilstm`, `textcnn`): words, vectors, vocabulary,
the embedding lookup, masked max-pooling and the checkpoint. No language model is loaded (`uses_backbone`).

Words: `prompttune.models.word_tokens` (lowercased GloVe-style splitting; jieba for `language: zh`), at most
`method.max_words` per text (a pair's two texts are read as one). Vectors (`method.vectors`): `glove` (GloVe 6B
50d), `zh_word2vec` (Chinese Wikipedia word2vec, 100d), `word2vec` (trained by gensim on the training texts and
`method.unlabeled_size` unlabeled texts of the training pool outside the few-shot split, drawn by seed as PET's
pool is: labels never read, the test set never seen) or `random` (uniform in [-0.25, 0.25], as Kim 2014
initialises unknown words).

The vocabulary, fixed before training: every word of the training texts that has a vector (with `random` and
`word2vec`: every word of the training texts), most frequent first, then the pretrained vectors' own words, most
frequent first, until `method.max_vocab` words, so that test words never seen in training keep their pretrained
vectors. A training word without a pretrained vector (the Chinese word2vec has no stopwords and no punctuation:
的, 不, ，) is out of vocabulary: giving each its own random vector instead (Kim 2014) scored lower at K=16
(bilstm, mean test accuracy over seeds 13, 21, 42 on 1,000 test texts: chn_sentiment 57.0% against 63.3%, mr
57.8% against 59.5%), the random vectors of words in every text being noise that 32 examples cannot train away.
Index 0 is padding (a zero vector that never trains), 1 the one learned out-of-vocabulary vector (zero at first;
it trains even with `method.freeze_vectors`), 2.. the vocabulary. The vectors of words that no training text
holds never receive a gradient, so they sit in a table of their own (`unseen_vectors`) that the optimiser never
sees: the same result as training them (the word vectors have no weight decay), without the optimiser's cost for
tens of thousands of rows. The checkpoint holds every vector used (frozen or not) with the network (safetensors)
and the vocabulary (fitted.json), so `eval run=` needs neither the vectors' package nor gensim.
"""

import logging
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prompttune.config.schema import Invalid, bounded
from prompttune.data.records import Example
from prompttune.errors import UserError
from prompttune.methods.core import Head, Method, MethodConfig
from prompttune.models import word_vectors
from prompttune.models.word_tokens import word_tokenizer
from prompttune.prompts.encoding import EncodedExample

log = logging.getLogger(__name__)
PAD, OOV, FIRST_WORD = 0, 1, 2
RANDOM_RANGE = 0.25


class Vectors(StrEnum):
    glove = "glove"  # GloVe 6B 50d, English, lowercased
    zh_word2vec = "zh_word2vec"  # Chinese Wikipedia word2vec, 100d
    word2vec = "word2vec"  # trained here on the training texts
    random = "random"  # the ablation: no pretraining


PRETRAINED = {Vectors.glove: ("en", 50), Vectors.zh_word2vec: ("zh", 100)}  # language, dimensions
SUGGESTED = {"en": Vectors.glove, "zh": Vectors.zh_word2vec}


@dataclass
class WordConfig(MethodConfig):
    head: Head = Head.linear
    vectors: Vectors = Vectors.glove
    freeze_vectors: bool = False  # true: the word vectors stay as they are (the OOV vector still trains)
    dim: int | None = bounded(None, ge=1)  # random, word2vec: vector size; null: 100 for zh, else 50 (as GloVe)
    max_vocab: int = bounded(50000, ge=1)  # words with a vector of their own (the checkpoint holds them all)
    max_words: int = bounded(256, ge=1)  # words read per text
    dropout: float = bounded(0.5, ge=0)  # on the pooled features, before the linear layer
    w2v_epochs: int = bounded(50, ge=1)  # vectors=word2vec: epochs over its texts
    # vectors=word2vec: unlabeled texts drawn by seed from the training pool outside the few-shot split, which
    # word2vec trains on with the training texts (labels never read; the test set never)
    unlabeled_size: int = bounded(5000, ge=0)

    def unlabeled_texts(self) -> int:
        return self.unlabeled_size if self.vectors == Vectors.word2vec else 0

    def check(self) -> None:
        super().check()
        if self.head != Head.linear:
            raise Invalid("head", self.head, "linear (the network's own linear layer)")
        if not self.dropout < 1:
            raise Invalid("dropout", self.dropout, "a number >= 0 and < 1")
        if self.dim is not None and self.vectors in PRETRAINED and self.dim != PRETRAINED[self.vectors][1]:
            raise Invalid("dim", self.dim, f"null or {PRETRAINED[self.vectors][1]} with vectors={self.vectors}")


class WordNetwork(Method):
    """The shared layer: subclasses build their network in `setup()` (on `self.dim`-sized inputs) and
    implement `forward` on `self.embed(ids)`."""

    config_class = WordConfig
    uses_backbone = False

    def prepare(self) -> None:
        language = self.task.language
        default_dim = PRETRAINED[SUGGESTED.get(language, Vectors.glove)][1]
        self.dim = PRETRAINED[self.cfg.vectors][1] if self.cfg.vectors in PRETRAINED else self.cfg.dim or default_dim
        self.tokenize = word_tokenizer(language)
        self.words: list[str] = []
        self.pool: list[list[str]] = []  # vectors=word2vec: the unlabeled texts' words
        self._index: dict[str, int] = {}
        self.coverage: float | None = None
        self.vectors = nn.Parameter(torch.zeros(0, self.dim), requires_grad=not self.cfg.freeze_vectors)
        self.unseen_vectors = nn.Parameter(torch.zeros(0, self.dim), requires_grad=False)
        self.oov = nn.Parameter(torch.zeros(1, self.dim))
        self.dropout = nn.Dropout(self.cfg.dropout)
        if self.cfg.vectors in PRETRAINED and PRETRAINED[self.cfg.vectors][0] != language:
            log.warning(
                "method.vectors=%s are %s word vectors but dataset %s is in %s: few of its words will have one "
                "(they share the out-of-vocabulary vector); use method.vectors=%s",
                self.cfg.vectors,
                PRETRAINED[self.cfg.vectors][0],
                self.task.name,
                language,
                SUGGESTED.get(language, "word2vec or random"),
            )

    def words_of(self, example: Example) -> list[str]:
        words = self.tokenize(example.text_a)
        if example.text_b is not None:
            words += self.tokenize(example.text_b)
        return words[: self.cfg.max_words]

    def see_unlabeled(self, texts: list[Example]) -> None:
        self.pool = [self.words_of(e) for e in texts]

    def fit_examples(self, train: list[Example], dev: list[Example]) -> None:
        if self.restored:
            return
        texts = [self.words_of(e) for e in train]
        counts = Counter(word for words in texts for word in words)
        source = self._source_vectors(texts + self.pool)
        words = vocabulary(counts, source, self.cfg.max_vocab)
        if source is None:
            generator = torch.Generator().manual_seed(self.task.seed)
            table = (torch.rand(len(words), self.dim, generator=generator) * 2 - 1) * RANDOM_RANGE
        else:
            table = torch.from_numpy(np.asarray(source.vectors[[source.index[w] for w in words]], dtype=np.float32))
        self._set_vocabulary(words, table, sum(word in counts for word in words))
        covered = sum(n for word, n in counts.items() if word in self._index)
        self.coverage = covered / max(1, sum(counts.values()))
        log.info(
            "%s: %d words with vectors=%s, %.1f%% of the training words among them",
            self.cfg.name,
            len(words),
            self.cfg.vectors,
            100 * self.coverage,
        )

    def _source_vectors(self, texts: list[list[str]]) -> word_vectors.WordVectors | None:
        if self.cfg.vectors == Vectors.glove:
            return word_vectors.glove_6b_50d()
        if self.cfg.vectors == Vectors.zh_word2vec:
            return word_vectors.zh_word2vec()
        if self.cfg.vectors == Vectors.word2vec:
            return word_vectors.train_word2vec(texts, self.dim, self.cfg.w2v_epochs, self.task.seed)
        return None

    def _set_vocabulary(self, words: list[str], table: torch.Tensor, seen: int) -> None:
        """`seen`: how many of the words, first in the vocabulary, occur in the training texts."""
        if len(set(words)) != len(words) or table.shape != (len(words), self.dim) or not 0 <= seen <= len(words):
            raise UserError(f"the {self.cfg.name} vocabulary and its vectors disagree; retrain the run")
        self.words = list(words)
        self._index = {word: FIRST_WORD + i for i, word in enumerate(words)}
        table = table.float().to(self.oov.device)
        self.vectors = nn.Parameter(table[:seen].clone(), requires_grad=not self.cfg.freeze_vectors)
        self.unseen_vectors = nn.Parameter(table[seen:].clone(), requires_grad=False)

    def encode(self, examples: list[Example]) -> list[EncodedExample]:
        """Word ids; a text without words reads as one out-of-vocabulary word (every row has a real position)."""
        encoded = []
        for example in examples:
            ids = [self._index.get(word, OOV) for word in self.words_of(example)] or [OOV]
            encoded.append(EncodedExample(ids, [], [], example.label))
        return encoded

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(batch, time) ids -> (batch, time, dim): padding a zero vector, OOV the learned one, then the
        training words' vectors and the others'."""
        special = torch.cat([torch.zeros_like(self.oov), self.oov])
        embedded = F.embedding(ids.clamp_max(OOV), special)
        start = FIRST_WORD
        for table in (self.vectors, self.unseen_vectors):  # two tables, each looked up for the whole batch
            if len(table):
                rows = F.embedding((ids - start).clamp(0, len(table) - 1), table)
                inside = (ids >= start) & (ids < start + len(table))
                embedded = torch.where(inside[..., None], rows, embedded)
            start += len(table)
        return embedded

    def param_groups(self, lr: float, prompt_lr: float, weight_decay: float) -> list[dict]:
        """The network at method.lr or trainer.lr with weight decay; the word vectors at the same rate without
        it (decay would shrink every pretrained vector, also those no training text uses)."""
        vectors = [p for p in (self.vectors, self.oov) if p.requires_grad]
        rest = [p for name, p in self.named_parameters() if p.requires_grad and name not in ("vectors", "oov")]
        groups = [
            {"name": "model", "params": rest, "lr": self.cfg.lr or lr, "weight_decay": weight_decay},
            {"name": "vectors", "params": vectors, "lr": self.cfg.lr or lr, "weight_decay": 0.0},
        ]
        return [g for g in groups if g["params"]]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Every parameter, frozen vectors included: a run is evaluated without the vectors' package."""
        return {name: p.detach() for name, p in self.named_parameters()}

    def fitted_json(self) -> dict[str, Any]:
        return {
            "vocabulary": self.words,
            "seen": len(self.vectors),
            "vectors": str(self.cfg.vectors),
            "dim": self.dim,
            "coverage": self.coverage,
        }

    def load_fitted_json(self, fitted: dict[str, Any]) -> None:
        words = fitted.get("vocabulary")
        seen = fitted.get("seen")
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words) or not isinstance(seen, int):
            raise UserError(f"the run has no {self.cfg.name} vocabulary (checkpoint/fitted.json); retrain it")
        self._set_vocabulary(words, torch.zeros(len(words), self.dim), seen)
        self.coverage = fitted.get("coverage")


def vocabulary(counts: Counter, source: word_vectors.WordVectors | None, max_vocab: int) -> list[str]:
    """The training words (those with a vector, when there are vectors), most frequent first (ties: first
    seen), then the vectors' own words in their order (most frequent first), until `max_vocab`."""
    training = [word for word, _ in counts.most_common()]
    if source is None:
        return training[:max_vocab]
    chosen = [word for word in training if word in source.index][:max_vocab]
    taken = set(chosen)
    for word in source.words:
        if len(chosen) >= max_vocab:
            break
        if word not in taken:
            chosen.append(word)
            taken.add(word)
    return chosen


def masked_max(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over time of (batch, time, features) where mask (batch, time) is true: padding never wins."""
    return states.masked_fill(~mask[..., None], float("-inf")).amax(1)
