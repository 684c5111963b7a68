"""PET as defined: the auxiliary LM loss, the unlabeled pool, the pattern ensemble and its distillation."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from prompttune.data import load_splits
from prompttune.data.records import Example
from prompttune.methods import method_config
from prompttune.methods.core import distillation_loss
from prompttune.plans.ensemble import LOGITS_FILE, Member, ensemble_weights, run_ensemble, soft_labels, weighted_logits
from prompttune.prompts.encoding import collate
from prompttune.training.loop import TrainResult, train
from tests.helpers import build_method, compose_config, toy_examples


def unlabeled_texts(n: int = 8) -> list[Example]:
    words = ["dull", "moving", "clumsy", "sharp"]
    return [Example(f"u-{i}", f"a {words[i % 4]} and {words[(i + 1) % 4]} story", -1) for i in range(n)]


def pet_with_unlabeled(model: str, lm_weight: float):
    method = build_method("method=pet", f"model={model}", f"method.lm_weight={lm_weight}")
    method.use_unlabeled(method.encode(unlabeled_texts()), batch_size=4)
    return method


def batch_of(method, examples):
    return collate(method.encode(examples), method.backbone.tokenizer.pad_token_id)


def gradients(method, batch) -> torch.Tensor:
    method.zero_grad()
    method.training_loss(batch).backward()
    return torch.cat([p.grad.flatten() for p in method.parameters() if p.grad is not None])


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_llama"])
def test_aux_lm_loss_mixes_in_with_its_weight_and_changes_gradients(model):
    torch.manual_seed(0)
    with_lm = pet_with_unlabeled(model, 0.5)
    torch.manual_seed(0)
    without = pet_with_unlabeled(model, 0.0)
    with_lm.eval(), without.eval()  # no dropout: the two differ only by the LM loss
    batch = batch_of(with_lm, toy_examples(4))

    ce = torch.nn.functional.cross_entropy(without(batch), batch["labels"])
    assert torch.allclose(without.training_loss(batch), ce)
    torch.manual_seed(7)
    mixed = with_lm.training_loss(batch)
    torch.manual_seed(7)  # the same unlabeled batch and masking again
    lm = with_lm.lm_loss(with_lm._next_unlabeled_batch(torch.device("cpu")))
    assert torch.allclose(mixed, 0.5 * ce + 0.5 * lm)
    assert not torch.allclose(gradients(with_lm, batch), gradients(without, batch))


def test_causal_lm_loss_is_the_next_token_loss_over_real_tokens():
    method = pet_with_unlabeled("tiny_llama", 1e-4)
    method.eval()
    batch = batch_of(method, unlabeled_texts(3))  # texts of different lengths: right padding
    ids, attention = batch["input_ids"], batch["attention_mask"]
    logits = method.backbone.model(input_ids=ids, attention_mask=attention).logits
    real = attention[:, 1:].bool()
    expected = torch.nn.functional.cross_entropy(logits[:, :-1][real], ids[:, 1:][real])
    assert torch.allclose(method.lm_loss(batch), expected, atol=1e-5)


def test_masked_lm_loss_is_the_models_own_mlm_loss_on_the_corrupted_text():
    method = pet_with_unlabeled("tiny_bert", 1e-4)
    method.eval()
    batch = batch_of(method, unlabeled_texts(4))
    torch.manual_seed(3)
    corrupted, chosen = method.backbone.mask_tokens(batch["input_ids"], batch["attention_mask"], None)
    labels = torch.where(chosen, batch["input_ids"], -100)
    expected = method.backbone.model(input_ids=corrupted, attention_mask=batch["attention_mask"], labels=labels).loss
    torch.manual_seed(3)
    assert torch.allclose(method.lm_loss(batch), expected, atol=1e-5)


def test_masking_picks_about_15_percent_of_real_non_special_tokens_and_changes_only_those():
    method = pet_with_unlabeled("tiny_bert", 1e-4)
    tokenizer = method.backbone.tokenizer
    ids = torch.randint(1000, 2000, (64, 50))
    ids[:, 0], ids[:, 10] = tokenizer.cls_token_id, tokenizer.mask_token_id  # the pattern's own [MASK]
    attention = torch.ones_like(ids)
    attention[:, 40:] = 0
    corrupted, chosen = method.backbone.mask_tokens(ids, attention, torch.Generator().manual_seed(0))
    assert not chosen[:, [0, 10]].any() and not chosen[:, 40:].any()
    share = chosen.sum().item() / (64 * 37)
    assert 0.12 < share < 0.18
    assert torch.equal(corrupted[~chosen], ids[~chosen])
    masked = (corrupted == tokenizer.mask_token_id) & chosen
    assert 0.7 < masked.sum().item() / chosen.sum().item() < 0.9


def test_unlabeled_pool_is_outside_the_split_drawn_by_seed_and_has_no_labels():
    dataset = compose_config("dataset=mr").dataset
    splits = load_splits(dataset, shots=8, seed=13, unlabeled_size=50)
    again = load_splits(dataset, shots=8, seed=13, unlabeled_size=50)
    other = load_splits(dataset, shots=8, seed=21, unlabeled_size=50)
    texts = {e.text_a for e in splits.train + splits.dev + splits.test}
    assert len(splits.unlabeled) == 50 and not texts & {e.text_a for e in splits.unlabeled}
    assert all(e.label == -1 for e in splits.unlabeled)
    assert [e.guid for e in again.unlabeled] == [e.guid for e in splits.unlabeled]
    assert [e.guid for e in other.unlabeled] != [e.guid for e in splits.unlabeled]
    assert splits.to_json()["counts"]["unlabeled"] == 50


def member(pattern_id: int, dev_accuracy: float, logits: torch.Tensor, before: float) -> Member:
    result = TrainResult(1, 1, {"accuracy": dev_accuracy}, 1.0, 1.0, 1.0)
    return Member(pattern_id, result, {"unlabeled": logits}, before, 1.0, {})


def test_ensemble_weights_are_dev_accuracies_and_soft_labels_their_weighted_mean_at_temperature():
    logits = [torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 4.0], [3.0, 0.0]])]
    members = [member(0, 0.75, logits[0], 0.5), member(1, 0.25, logits[1], 0.6)]
    weights = ensemble_weights(members, "dev")
    assert weights.tolist() == [0.75, 0.25]
    assert ensemble_weights(members, "train_before").tolist() == pytest.approx([0.5, 0.6])
    assert ensemble_weights(members, "uniform").tolist() == [1.0, 1.0]
    merged = weighted_logits([m.logits["unlabeled"] for m in members], weights)
    assert torch.allclose(merged, 0.75 * logits[0] + 0.25 * logits[1])
    first = torch.tensor([0.75 * 2.0, 0.25 * 4.0]) / 2.0  # example 0 at temperature 2
    assert torch.allclose(soft_labels(merged, 2.0)[0], torch.softmax(first, -1))


def test_distillation_loss_is_kl_at_temperature_times_t_squared():
    student, teacher = torch.tensor([[1.0, -1.0, 0.5]]), torch.tensor([[0.2, 0.3, 0.5]])
    log_p = torch.log_softmax(student / 2.0, -1)
    expected = (teacher * (teacher.log() - log_p)).sum() * 4.0
    assert torch.allclose(distillation_loss(student, teacher, 2.0), expected)
    assert distillation_loss(torch.log(teacher) * 2.0, teacher, 2.0).abs() < 1e-6


def test_distillation_moves_the_student_towards_the_soft_labels():
    from dataclasses import replace

    student = build_method("method=finetune", "model=tiny_bert", "method.head_lr=null")  # the head at trainer.lr
    student.distill_temperature = 2.0
    targets = [(0.9, 0.1) if e.label == 0 else (0.2, 0.8) for e in toy_examples()]
    pool = [replace(e, soft_label=t) for e, t in zip(student.encode(toy_examples()), targets, strict=True)]
    batch = collate(pool, student.backbone.tokenizer.pad_token_id)

    def loss() -> float:
        student.eval()
        with torch.no_grad():
            return student.training_loss(batch).item()

    before = loss()
    # the classification head (dense + tanh, initialised at std 0.02 as transformers does) needs a larger step
    cfg = compose_config("trainer.max_steps=15", "trainer.lr=3e-2", "trainer.eval_every=null", "trainer.warmup_ratio=0")
    train(student, pool, student.encode(toy_examples(4)), cfg.trainer, torch.device("cpu"), seed=0)
    assert loss() < 0.5 * before


@pytest.mark.slow
def test_ensemble_run_trains_each_pattern_weights_by_dev_and_distills(tmp_path):
    cfg = compose_config(
        "method=pet",
        "method.mode=ensemble",
        "method.ensemble_patterns=[0,2]",
        "method.unlabeled_size=12",
        "method.distill_steps=4",
        "model=tiny_bert",
        "shots=4",
        "dataset.test_size=20",
        "trainer.max_steps=2",
        "trainer.eval_every=1",
        "trainer.device=cpu",
        "trainer.lr=1e-3",
    )
    metrics = run_ensemble(cfg, tmp_path)

    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["status"] == "completed" and saved["test"] == saved["distilled"]["test"] == metrics.test
    patterns = saved["patterns"]
    assert [p["pattern_id"] for p in patterns] == [0, 2]
    assert saved["ensemble"]["weights"] == [p["dev"]["accuracy"] for p in patterns]
    logits = load_file(tmp_path / LOGITS_FILE)
    weights = torch.tensor(saved["ensemble"]["weights"])
    merged = weighted_logits([logits["pattern0/unlabeled"], logits["pattern2/unlabeled"]], weights)
    assert torch.allclose(logits["soft_labels"], torch.softmax(merged / 2.0, -1))
    assert logits["soft_labels"].shape == (12, 2)
    distilled = saved["distilled"]
    assert distilled["method"] == "finetune" and distilled["steps"] == 4
    assert not math.isnan(distilled["history"][-1]["loss"])
    splits = json.loads((tmp_path / "splits.json").read_text())
    assert splits["counts"]["unlabeled"] == 12
    assert (tmp_path / "checkpoint" / "trainable.safetensors").exists()


def test_distilling_into_pet_gives_a_single_pattern_pet_model_without_lm_loss():
    from prompttune.plans.ensemble import student_method, with_method

    cfg = compose_config("method=pet", "method.mode=ensemble", "method.distill_into=pet", "method.pattern_id=1")
    student = student_method(cfg, method_config(cfg.method))
    assert student["name"] == "pet" and student["mode"] == "single" and student["lm_weight"] == 0
    assert with_method(cfg, student).method.pattern_id == 1
    assert student_method(compose_config("method=pet"), method_config(compose_config("method=pet").method)) == {
        "name": "finetune",
        "head_lr": 1e-3,
    }


def test_ipet_labels_new_examples_with_the_other_models_in_the_train_sets_proportions():
    from prompttune.methods.pet import PetConfig
    from prompttune.plans.ensemble import label_quotas, labelled_by_others

    pool = [Example(f"u-{i}", f"text {i}", -1) for i in range(6)]
    splits = load_splits(compose_config("dataset=mr").dataset, shots=2, seed=13)
    splits.unlabeled = pool
    own = member(0, 0.9, torch.tensor([[9.0, 0.0]] * 6), 0.5)  # says negative everywhere: never consulted
    other = member(1, 0.8, torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0], [0.0, 4.0]]), 0.5)
    quotas = label_quotas([0, 0, 1, 1], 2, total=4)
    assert quotas == [2, 2]
    pet = PetConfig(name="pet", ipet_share=1.0)
    drawn = labelled_by_others(own, [own, other], pet, splits, quotas, torch.Generator())
    by_label = {label: {e.guid for e in drawn if e.label == label} for label in (0, 1)}
    assert by_label[0] == {"u-0", "u-3"}  # the only two the other model calls negative
    assert len(by_label[1]) == 2 and by_label[1] <= {"u-1", "u-2", "u-4", "u-5"}


@pytest.mark.slow
def test_ipet_run_trains_a_second_generation_and_distills(tmp_path):
    cfg = compose_config(
        "method=pet",
        "method.mode=ipet",
        "method.ipet_generations=2",
        "method.ipet_share=1.0",
        "method.ipet_scale=2.0",
        "method.ensemble_patterns=[0,1]",
        "method.unlabeled_size=12",
        "method.distill_steps=2",
        "model=tiny_bert",
        "shots=2",
        "dataset.test_size=10",
        "trainer.max_steps=2",
        "trainer.device=cpu",
    )
    run_ensemble(cfg, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["mode"] == "ipet" and len(saved["generations"]) == 1 and len(saved["patterns"]) == 2
    assert saved["test"] == saved["distilled"]["test"]


def test_the_distilled_classifier_gets_its_own_head_rate():
    from prompttune.plans.ensemble import student_method

    cfg = compose_config("method=pet", "method.mode=ensemble", "method.distill_head_lr=5e-3")
    student = student_method(cfg, method_config(cfg.method))
    assert student == {"name": "finetune", "head_lr": 5e-3}
