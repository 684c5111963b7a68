"""The classic baseline: TF-IDF features and a linear classifier (scikit-learn), no language model at all.

Word 1-2-grams plus character 2-5-grams within word boundaries (English and other space-separated scripts),
or character 1-3-grams (Chinese, Japanese: `dataset.language`), each block L2-normalised as TfidfVectorizer
does it. `method.classifier` picks the estimator, each with its own regularisation chosen on the dev split
(ties: the first value of the grid) and fitted on the training split only:
- `logreg`: LogisticRegression, the inverse C of its L2 penalty from `method.c_grid`;
- `naive_bayes`: ComplementNB (Rennie et al. 2003), its smoothing alpha from `method.alpha_grid`. Complement
  rather than multinomial naive Bayes because Rennie et al. built it for exactly these features (TF-IDF
  weights, length-normalised documents), where MultinomialNB's model of raw counts no longer holds, and
  because it estimates each class's weights from the other classes' documents, which is steadier when a
  class has few of them;
- `svm`: LinearSVC (L2 penalty, squared hinge), its C from `method.c_grid`.
All three score a class linearly in the TF-IDF features (naive Bayes: the features times its log weights, no
intercept), so one torch replay serves them (term counts by one scatter, idf, per-block norms, the linear
layer), and evaluation, calibration and reports are shared; the checkpoint holds idf, coefficients and
intercepts (safetensors) and the vocabulary (checkpoint/fitted.json). The SVM's softmax over its margins is
not a calibrated probability (its nll and ece say little); its accuracy and F1 are the SVM's own.
"""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import scipy.sparse
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import ComplementNB
from sklearn.svm import LinearSVC
from torch import nn

from prompttune.config.schema import Invalid, bounded
from prompttune.data.records import Example
from prompttune.errors import UserError
from prompttune.methods import register
from prompttune.methods.core import Head, Method, MethodConfig
from prompttune.prompts.encoding import EncodedExample

# analyzer -> n-gram range, by whether the language separates words with spaces
ANALYZERS = {True: {"word": (1, 2), "char_wb": (2, 5)}, False: {"char": (1, 3)}}


class Classifier(StrEnum):
    logreg = "logreg"  # LogisticRegression, C from c_grid
    naive_bayes = "naive_bayes"  # ComplementNB, alpha from alpha_grid
    svm = "svm"  # LinearSVC, C from c_grid


@dataclass
class TfidfConfig(MethodConfig):
    head: Head = Head.linear
    classifier: Classifier = Classifier.logreg
    c_grid: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0, 100.0])  # logreg, svm: inverse L2
    alpha_grid: list[float] = field(default_factory=lambda: [0.03, 0.1, 0.3, 1.0, 3.0])  # naive_bayes: smoothing
    max_iter: int = bounded(1000, ge=1)  # logreg, svm

    def check(self) -> None:
        super().check()
        if self.head != Head.linear:
            raise Invalid("head", self.head, "linear (a linear classifier on TF-IDF features)")
        for name in ("c_grid", "alpha_grid"):
            grid = getattr(self, name)
            if not grid or any(not value > 0 or value == float("inf") for value in grid):
                raise Invalid(name, grid, "a non-empty list of positive, finite numbers")


@register("tfidf")
class Tfidf(Method):
    config_class = TfidfConfig
    trains = False
    uses_backbone = False

    def setup(self) -> None:
        analyzers = ANALYZERS[not self.task.unspaced]
        self.analyzers = {
            name: TfidfVectorizer(analyzer=name, ngram_range=span, dtype=np.float64) for name, span in analyzers.items()
        }
        self.vocabulary: dict[str, list[str]] = {}
        self._index: dict[tuple[str, str], int] = {}
        self.c = None  # the chosen C (logreg, svm)
        self.alpha = None  # the chosen alpha (naive_bayes)
        self.coef = nn.Parameter(torch.zeros(len(self.task.labels), 0))
        self.intercept = nn.Parameter(torch.zeros(len(self.task.labels)))
        self.register_buffer("idf", torch.zeros(0))
        self.register_buffer("block", torch.zeros(0, dtype=torch.long))

    def fit_examples(self, train: list[Example], dev: list[Example]) -> None:
        if self.restored:
            return
        texts = [_text(e) for e in train]
        features = scipy.sparse.hstack([v.fit_transform(texts) for v in self.analyzers.values()]).tocsr()
        labels = np.array([e.label for e in train])
        if len(set(labels)) < 2:
            raise UserError("method=tfidf needs training examples of at least two labels")
        dev_features = self._sklearn_features(dev)
        dev_labels = np.array([e.label for e in dev])
        best, best_accuracy, best_value = None, -1.0, None
        for value in self._grid():
            model = self._estimator(value).fit(features, labels)
            accuracy = float((model.predict(dev_features) == dev_labels).mean()) if dev else 0.0
            if accuracy > best_accuracy:
                best, best_accuracy, best_value = model, accuracy, value
        self._set_regularisation(best_value)
        vocabulary = {name: v.get_feature_names_out().tolist() for name, v in self.analyzers.items()}
        idf = np.concatenate([v.idf_ for v in self.analyzers.values()])
        self._set_model(vocabulary, torch.tensor(idf), *_class_weights(best, len(self.task.labels)))

    def _grid(self) -> list[float]:
        return self.cfg.alpha_grid if self.cfg.classifier == Classifier.naive_bayes else self.cfg.c_grid

    def _estimator(self, value: float):
        if self.cfg.classifier == Classifier.naive_bayes:
            return ComplementNB(alpha=value)
        if self.cfg.classifier == Classifier.svm:
            return LinearSVC(C=value, max_iter=self.cfg.max_iter, random_state=self.task.seed)
        return LogisticRegression(C=value, max_iter=self.cfg.max_iter)

    def _set_regularisation(self, value: float | None) -> None:
        if self.cfg.classifier == Classifier.naive_bayes:
            self.alpha = value
        else:
            self.c = value

    def _sklearn_features(self, examples: list[Example]):
        texts = [_text(e) for e in examples]
        return scipy.sparse.hstack([v.transform(texts) for v in self.analyzers.values()]).tocsr()

    def _set_model(self, vocabulary: dict[str, list[str]], idf, coef, intercept) -> None:
        self.vocabulary = vocabulary
        self._index = {}
        blocks = []
        for block, name in enumerate(self.analyzers):
            offset = len(self._index)
            self._index.update({(name, term): offset + i for i, term in enumerate(vocabulary[name])})
            blocks += [block] * len(vocabulary[name])
        if len(blocks) != len(idf) or coef.shape != (len(self.task.labels), len(idf)):
            raise UserError("the tfidf checkpoint's vocabulary and weights disagree; retrain the run")
        device = self.intercept.device
        self.idf = idf.float().to(device)
        self.block = torch.tensor(blocks, dtype=torch.long, device=device)
        self.coef = nn.Parameter(coef.float().to(device))
        self.intercept = nn.Parameter(intercept.float().to(device))

    def encode(self, examples: list[Example]) -> list[EncodedExample]:
        """An example's known n-grams as feature ids, once per occurrence (the term counts)."""
        analyze = {name: v.build_analyzer() for name, v in self.analyzers.items()}
        encoded = []
        for example in examples:
            text = _text(example)
            ids = [self._index[name, g] for name, fn in analyze.items() for g in fn(text) if (name, g) in self._index]
            encoded.append(EncodedExample(ids, [], [], example.label))
        return encoded

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids, present = batch["input_ids"], batch["attention_mask"].float()
        counts = torch.zeros(len(ids), len(self.idf), device=ids.device).scatter_add_(1, ids, present)
        weights = counts * self.idf
        n_blocks = len(self.analyzers)
        norms = torch.zeros(len(ids), n_blocks, device=ids.device).index_add_(1, self.block, weights.square()).sqrt()
        weights = weights / norms.clamp_min(1e-12)[:, self.block]
        return weights @ self.coef.T + self.intercept

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {"idf": self.idf, "coef": self.coef.detach(), "intercept": self.intercept.detach()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != {"idf", "coef", "intercept"}:
            raise UserError("the checkpoint is not a tfidf run's; evaluate it with the config it was trained with")
        self._set_model(self._loaded_vocabulary, state["idf"], state["coef"], state["intercept"])

    def fitted_json(self) -> dict[str, Any]:
        if self.cfg.classifier == Classifier.naive_bayes:
            return {"vocabulary": self.vocabulary, "classifier": str(self.cfg.classifier), "alpha": self.alpha}
        return {"vocabulary": self.vocabulary, "classifier": str(self.cfg.classifier), "C": self.c}

    def load_fitted_json(self, fitted: dict[str, Any]) -> None:
        vocabulary = fitted.get("vocabulary")
        if not isinstance(vocabulary, dict) or set(vocabulary) != set(self.analyzers):
            raise UserError(f"the run has no tfidf vocabulary for analyzers {sorted(self.analyzers)}; retrain it")
        trained_with = fitted.get("classifier", Classifier.logreg.value)  # runs before classifier= existed: logreg
        if trained_with != self.cfg.classifier:
            raise UserError(f"the run was fitted with classifier={trained_with}, not {self.cfg.classifier}")
        self._loaded_vocabulary, self.c, self.alpha = vocabulary, fitted.get("C"), fitted.get("alpha")


def _text(example: Example) -> str:
    return example.text_a if example.text_b is None else f"{example.text_a} {example.text_b}"


def _class_weights(model, n_labels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One row of logits per label; a binary LogisticRegression or LinearSVC has one row, for the positive
    class. ComplementNB's class scores are the features times its feature_log_prob_, with no intercept."""
    if isinstance(model, ComplementNB):
        coef = torch.tensor(model.feature_log_prob_)
        intercept = torch.zeros(len(coef), dtype=coef.dtype)
    else:
        coef, intercept = torch.tensor(model.coef_), torch.tensor(model.intercept_)
    if len(coef) == 1:
        coef, intercept = torch.cat([torch.zeros_like(coef), coef]), torch.cat([torch.zeros_like(intercept), intercept])
    full_coef = torch.zeros(n_labels, coef.shape[1], dtype=coef.dtype)
    full_intercept = torch.full((n_labels,), -1e4, dtype=intercept.dtype)  # a label absent from train never wins
    full_coef[model.classes_], full_intercept[model.classes_] = coef, intercept
    return full_coef, full_intercept
