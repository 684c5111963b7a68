"""finetune's head as AutoModelForSequenceClassification, segment ids for pairs, separate learning rates."""

import pytest
import torch
from torch import nn

from prompttune.data.records import Example
from prompttune.prompts.encoding import collate
from tests.helpers import build_method, toy_examples


def layers(module: nn.Module) -> list[type]:
    return [type(m) for m in module.modules() if not isinstance(m, nn.Sequential)]


def test_finetune_head_on_a_masked_lm_is_a_new_dense_tanh_then_linear():
    method = build_method("method=finetune", "model=tiny_bert")
    assert layers(method.head.classifier) == [nn.Dropout, nn.Linear, nn.Tanh, nn.Dropout, nn.Linear]
    dense = method.head.classifier[0][1]
    assert dense.weight.shape == (32, 32)
    assert all(dense.weight is not p for p in method.backbone.parameters())


def test_finetune_head_on_an_encoder_uses_its_own_pooler():
    method = build_method("method=finetune", "model=minilm_l6")
    pooler = method.backbone.body.pooler
    assert method.head.classifier[0][0] is pooler.dense
    assert isinstance(method.head.classifier[0][1], nn.Tanh)


def test_finetune_head_on_a_causal_lm_is_a_linear_score_on_the_last_token():
    method = build_method("method=finetune", "model=tiny_llama")
    score = method.head.classifier
    assert isinstance(score, nn.Linear) and score.bias is None
    batch = collate(method.encode(toy_examples(3)[:1] + [Example("long", "awful awful awful awful film", 0)]), 0)
    hidden = method.backbone.hidden_states(batch["input_ids"], batch["attention_mask"])
    last = batch["attention_mask"].sum(1) - 1
    method.eval()
    with torch.no_grad():
        expected = score(hidden[torch.arange(2), last])
        torch.testing.assert_close(method(batch), expected)


def test_head_lr_gives_the_head_its_own_group():
    method = build_method("method=finetune", "model=tiny_bert", "method.head_lr=1e-3", "method.lr=1e-5")
    groups = method.param_groups(lr=2e-5, prompt_lr=1e-3, weight_decay=0.0)
    by_lr = {g["lr"]: {id(p) for p in g["params"]} for g in groups}
    assert by_lr[1e-3] == {id(p) for p in method.head.parameters()}
    assert by_lr[1e-5] == {id(p) for p in method.backbone.parameters()}


def test_model_lr_scale_scales_the_backbones_own_weights_only():
    method = build_method("method=finetune", "model=tiny_bert", "method.head_lr=1e-3", "model.lr_scale=0.1")
    groups = {g["name"]: g for g in method.param_groups(lr=2e-5, prompt_lr=1e-3, weight_decay=0.0)}
    assert groups["backbone"]["lr"] == pytest.approx(2e-6)
    assert {id(p) for p in groups["backbone"]["params"]} == {id(p) for p in method.backbone.parameters()}
    assert groups["head"]["lr"] == 1e-3 and "model" not in groups

    frozen = build_method(
        "method=ptuning_v2", "model=tiny_bert", "method.head=linear", "method.lr=1e-2", "model.lr_scale=0.1"
    )
    lrs = {g["name"]: g["lr"] for g in frozen.param_groups(lr=2e-5, prompt_lr=1e-3, weight_decay=0.0)}
    assert "backbone" not in lrs and lrs["model"] == 1e-2  # a frozen model: its new head keeps method.lr


def test_pairs_get_the_tokenizers_own_ids_and_segment_ids_on_bert():
    method = build_method("method=finetune", "model=tiny_bert", has_text_b=True)
    pairs = [Example("p0", "a fine film", 1, "it was great"), Example("p1", "dull", 0, "a waste of time")]
    batch = collate(method.encode(pairs), method.backbone.tokenizer.pad_token_id)
    reference = method.backbone.tokenizer(["a fine film", "dull"], ["it was great", "a waste of time"], padding=True)
    assert batch["input_ids"].tolist() == reference["input_ids"]
    assert batch["token_type_ids"].tolist() == reference["token_type_ids"]

    seen = {}
    method.backbone.body.embeddings.register_forward_hook(
        lambda _m, _args, kwargs, _out: seen.update(kwargs), with_kwargs=True
    )
    method(batch)
    assert torch.equal(seen["token_type_ids"], batch["token_type_ids"])


def test_ptuning_v1_can_tune_the_lm_at_its_own_rate():
    overrides = ["method.freeze_backbone=false", "method.lr=1e-5", "method.prompt_lr=1e-4"]
    method = build_method("method=ptuning_v1", "model=tiny_bert", *overrides)
    groups = {g["lr"]: {id(p) for p in g["params"]} for g in method.param_groups(2e-5, 1e-3, 0.0)}
    assert groups[1e-4] == {id(p) for p in method.prompt_encoder.parameters()}
    assert groups[1e-5] == {id(p) for p in method.backbone.parameters()}
    batch = collate(method.encode(toy_examples(4)), method.backbone.tokenizer.pad_token_id)
    torch.nn.functional.cross_entropy(method(batch), batch["labels"]).backward()
    assert method.backbone.embeddings.weight.grad is not None
