"""Per-run test metrics: intervals, confusion matrix, NLL, calibration error; contextual calibration."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import f1_score, log_loss

from prompttune.errors import UserError
from prompttune.training.loop import class_logits, contextual_calibration, predict
from prompttune.training.metrics import (
    bootstrap_macro_f1_interval,
    evaluation_metrics,
    expected_calibration_error,
    macro_f1_from_confusions,
    wilson_interval,
)
from tests.helpers import build_method, compose_config, toy_examples


def random_predictions(n=300, classes=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (n,), generator=generator)
    logits = torch.randn(n, classes, generator=generator) + 1.5 * torch.nn.functional.one_hot(labels, classes)
    return logits, labels


def test_wilson_interval_matches_the_closed_form():
    # 81 of 100: the textbook Wilson interval is (0.7222, 0.8749)
    low, high = wilson_interval(81, 100)
    assert low == pytest.approx(0.72225, abs=1e-4) and high == pytest.approx(0.87495, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_macro_f1_of_a_confusion_matrix_matches_scikit_learn():
    logits, labels = random_predictions()
    predictions = logits.argmax(-1)
    confusion = torch.tensor(sk_confusion_matrix(labels, predictions, labels=[0, 1, 2]))
    expected = f1_score(labels, predictions, average="macro", labels=[0, 1, 2], zero_division=0)
    assert float(macro_f1_from_confusions(confusion)) == pytest.approx(expected)


def test_bootstrap_interval_brackets_the_estimate_is_fixed_and_narrows_with_n():
    logits, labels = random_predictions(n=400)
    predictions = logits.argmax(-1)
    low, high = bootstrap_macro_f1_interval(labels, predictions, 3)
    estimate = f1_score(labels, predictions, average="macro")
    assert low < estimate < high
    assert (low, high) == bootstrap_macro_f1_interval(labels, predictions, 3)
    small_low, small_high = bootstrap_macro_f1_interval(labels[:50], predictions[:50], 3)
    assert small_high - small_low > high - low


def test_expected_calibration_error_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    labels = torch.tensor([0, 1, 1, 0])
    # bins of width 1/15: each example alone in its bin; |correct - confidence| summed / n
    expected = (abs(1 - 0.9) + abs(0 - 0.8) + abs(1 - 0.7) + abs(0 - 0.55)) / 4
    assert expected_calibration_error(probs, labels) == pytest.approx(expected)
    # two examples in one bin: their gaps cancel before the absolute value
    same_bin = torch.tensor([[0.9, 0.1], [0.9, 0.1]])
    assert expected_calibration_error(same_bin, torch.tensor([0, 1])) == pytest.approx(abs(1 - 0.9 - 0.9) / 2)


def test_test_metrics_agree_with_scikit_learn():
    logits, labels = random_predictions()
    metrics = evaluation_metrics(logits, labels, 3)
    predictions = logits.argmax(-1)
    assert metrics["confusion_matrix"] == sk_confusion_matrix(labels, predictions).tolist()
    assert metrics["nll"] == pytest.approx(log_loss(labels, logits.softmax(-1).numpy()), rel=1e-5)
    low, high = metrics["accuracy_ci"]
    assert low < metrics["accuracy"] < high
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["n"] == 300
    assert 0 <= metrics["ece"] <= 1 and not math.isnan(metrics["ece"])


def test_contextual_calibration_averages_na_empty_and_the_mask(monkeypatch):
    method = build_method("method=pet", "model=tiny_bert")
    texts = [example.text_a for example in method.content_free_examples()]
    assert texts == ["N/A", "", method.backbone.tokenizer.mask_token]
    cfg = compose_config("trainer.device=cpu").trainer
    device = torch.device("cpu")
    logits = predict(method, method.encode(toy_examples(6)), cfg, device)
    content_free = predict(method, method.encode(method.content_free_examples()), cfg, device)
    mean_probs = content_free.softmax(-1).mean(0)
    expected = (logits.softmax(-1) / mean_probs).softmax(-1)  # W = diag(p_cf)^-1, renormalised
    calibrated = contextual_calibration(method, logits, cfg, device).softmax(-1)
    assert torch.allclose(calibrated, expected, atol=1e-5)


def test_contextual_calibration_applies_only_when_asked_and_allowed():
    method = build_method("method=pet", "model=tiny_bert", "method.calibration=contextual")
    cfg = compose_config("trainer.device=cpu").trainer
    encoded, device = method.encode(toy_examples(4)), torch.device("cpu")
    raw = class_logits(method, encoded, cfg, device, calibrate=False)
    calibrated = class_logits(method, encoded, cfg, device)
    assert torch.allclose(raw, predict(method, encoded, cfg, device))
    assert not torch.allclose(calibrated.log_softmax(-1), raw.log_softmax(-1))


def test_contextual_calibration_of_a_linear_head_is_a_user_error():
    with pytest.raises(UserError, match="verbalizer"):
        build_method("method=finetune", "model=tiny_bert", "method.calibration=contextual")


def test_calibration_does_not_choose_the_dev_checkpoint_unless_asked(monkeypatch):
    from prompttune.training import loop

    seen = []
    real = loop.evaluate

    def spy(method, encoded, cfg, device, calibrate=True):
        seen.append(calibrate)
        return real(method, encoded, cfg, device, calibrate)

    monkeypatch.setattr(loop, "evaluate", spy)
    cfg = compose_config("trainer.device=cpu", "trainer.max_steps=2", "trainer.eval_every=1").trainer
    for calibrate_dev in (False, True):
        seen.clear()
        overrides = ("method=pet", "model=tiny_bert", "method.calibration=contextual")
        method = build_method(*overrides, f"method.calibrate_dev={calibrate_dev}")
        encoded = method.encode(toy_examples(8))
        loop.train(method, encoded, encoded, cfg, torch.device("cpu"), seed=0)
        assert seen == [calibrate_dev, calibrate_dev]


def test_probabilities_are_a_distribution():
    logits, _ = random_predictions()
    assert np.allclose(logits.softmax(-1).sum(-1).numpy(), 1)
