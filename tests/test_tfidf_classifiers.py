"""method=tfidf with each classifier (logreg, naive_bayes, svm): the torch replay scores as scikit-learn does,
each chooses its own regularisation on dev, and a restored checkpoint scores the same."""

import json

import numpy as np
import pytest
import scipy.sparse
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import ComplementNB
from sklearn.svm import LinearSVC

from prompttune.data.records import Example
from prompttune.errors import UserError
from prompttune.prompts.encoding import collate
from tests.helpers import build_method
from tests.test_paradigms import reviews, train_then_eval

QUERIES = [Example("q0", "a boring , awful film", 0), Example("q1", "wonderful acting", 1)]


def sklearn_features(method, examples: list[Example], fit: bool = False):
    texts = [e.text_a for e in examples]
    blocks = [v.fit_transform(texts) if fit else v.transform(texts) for v in method.analyzers.values()]
    return scipy.sparse.hstack(blocks).tocsr()


def replay(method, examples: list[Example]) -> torch.Tensor:
    with torch.no_grad():
        return method(collate(method.encode(examples), method.pad_token_id))


@pytest.mark.parametrize(
    "classifier, grid, estimator",
    [
        ("logreg", "method.c_grid=[10.0]", lambda: LogisticRegression(C=10.0, max_iter=1000)),
        ("naive_bayes", "method.alpha_grid=[0.1]", lambda: ComplementNB(alpha=0.1)),
        ("svm", "method.c_grid=[10.0]", lambda: LinearSVC(C=10.0, max_iter=1000, random_state=13)),
    ],
)
def test_each_classifier_replays_scikit_learn(classifier, grid, estimator):
    method = build_method("method=tfidf", f"method.classifier={classifier}", grid)
    method.fit_examples(reviews(), reviews())
    logits = replay(method, QUERIES)
    model = estimator().fit(sklearn_features(method, reviews(), fit=True), [e.label for e in reviews()])
    features = sklearn_features(method, QUERIES)
    if classifier == "svm":  # one margin for the positive class; the replay's logits are (0, margin)
        assert np.allclose((logits[:, 1] - logits[:, 0]).numpy(), model.decision_function(features), atol=1e-5)
    else:
        assert np.allclose(logits.softmax(-1).numpy(), model.predict_proba(features), atol=1e-5)
    assert logits.argmax(-1).tolist() == model.predict(features).tolist() == [0, 1]


@pytest.mark.parametrize(
    "classifier, grid, attribute, chosen",
    [
        ("logreg", "method.c_grid=[0.0001,100.0]", "c", 100.0),
        ("svm", "method.c_grid=[0.0001,100.0]", "c", 100.0),
        ("naive_bayes", "method.alpha_grid=[0.000001,0.1]", "alpha", 0.1),
    ],
)
def test_each_classifier_chooses_its_regularisation_on_dev(classifier, grid, attribute, chosen):
    method = build_method("method=tfidf", f"method.classifier={classifier}", grid)
    method.fit_examples(reviews()[:5], reviews())  # 4 negatives, 1 positive
    # a tiny C predicts the majority class everywhere (half the dev set); a tiny alpha lets the words one class
    # lacks outweigh the rest (5 of 8 on dev); the other value gets the whole dev set right
    assert getattr(method, attribute) == chosen
    assert method.fitted_json()[{"c": "C"}.get(attribute, attribute)] == chosen


@pytest.mark.parametrize("classifier", ["logreg", "naive_bayes", "svm"])
def test_each_classifier_reproduces_from_its_checkpoint(classifier):
    method = build_method("method=tfidf", f"method.classifier={classifier}")
    method.fit_examples(reviews(), reviews())
    state = {k: v.clone() for k, v in method.trainable_state().items()}
    fitted = json.loads(json.dumps(method.fitted_json()))  # what checkpoint/fitted.json holds
    assert fitted["classifier"] == classifier
    restored = build_method("method=tfidf", f"method.classifier={classifier}")
    restored.restore(state, fitted)
    restored.fit_examples(reviews()[:2], reviews()[:2])  # a restored method keeps what it was fitted with
    assert torch.equal(replay(restored, QUERIES), replay(method, QUERIES))


def test_a_checkpoint_of_another_classifier_is_refused():
    method = build_method("method=tfidf", "method.classifier=svm")
    method.fit_examples(reviews(), reviews())
    other = build_method("method=tfidf", "method.classifier=naive_bayes")
    with pytest.raises(UserError, match="fitted with classifier=svm"):
        other.restore(method.trainable_state(), method.fitted_json())


def test_a_logreg_checkpoint_from_before_classifiers_loads():
    method = build_method("method=tfidf")
    method.fit_examples(reviews(), reviews())
    fitted = {k: v for k, v in method.fitted_json().items() if k != "classifier"}
    restored = build_method("method=tfidf")
    restored.restore(method.trainable_state(), fitted)
    assert torch.equal(replay(restored, QUERIES), replay(method, QUERIES)) and restored.c == method.c


@pytest.mark.slow
@pytest.mark.parametrize("classifier", ["naive_bayes", "svm"])
def test_each_classifier_trains_and_reproduces_from_the_command_line(classifier, tmp_path):
    args = ["method=tfidf", f"method.classifier={classifier}", "shots=4", "dataset.test_size=24"]
    metrics, train_dir = train_then_eval(tmp_path, *args)
    assert metrics["status"] == "completed" and metrics["test"]["n"] == 24
    fitted = json.loads((train_dir / "checkpoint/fitted.json").read_text())
    assert fitted["classifier"] == classifier
