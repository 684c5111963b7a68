"""bf16 fidelity (issue 24): what the bf16 path computes in fp32 (measured by scripts/compare_precision.py)."""

import torch

from prompttune.models.backbone import Backbone
from prompttune.prompts.encoding import collate
from prompttune.training import precision
from tests.helpers import build_method, toy_examples

CPU = torch.device("cpu")


def label_word_ids(method) -> torch.Tensor:
    assert method.head.verbalizer.max_tokens == 1  # one-token words: scored by token_logits
    return method.head.verbalizer.word_ids[:, 0]


def test_bf16_label_word_logits_are_computed_in_fp32(monkeypatch):
    method = build_method("method=pet", "model=tiny_llama", "trainer.precision=bf16")
    backbone, ids = method.backbone, label_word_ids(method)
    hidden = torch.randn(4, backbone.hidden_size).bfloat16()
    exact = hidden.float() @ backbone.model.get_output_embeddings().weight[ids].float().T
    with precision.autocast(CPU, "bf16"):
        logits = backbone.token_logits(hidden, ids)
    assert logits.dtype == torch.float32 and torch.equal(logits, exact)
    monkeypatch.setattr(Backbone, "fp32_word_logits", False)  # as before issue 24: a bf16 product, rounded
    with precision.autocast(CPU, "bf16"):
        rounded = backbone.token_logits(hidden, ids)
    assert torch.equal(rounded, rounded.bfloat16().float()) and not torch.equal(rounded, exact)


def test_fp32_label_word_logits_are_unchanged():
    method = build_method("method=pet", "model=tiny_llama")
    backbone, ids = method.backbone, label_word_ids(method)
    hidden = torch.randn(4, backbone.hidden_size)
    expected = hidden @ backbone.model.get_output_embeddings().weight[ids].T
    assert torch.equal(backbone.token_logits(hidden, ids), expected)


def test_bf16_pet_step_keeps_class_logits_and_loss_in_fp32():
    method = build_method("method=pet", "model=tiny_llama", "trainer.precision=bf16")
    batch = collate(method.encode(toy_examples(8)), method.pad_token_id)
    method.train()
    with precision.autocast(CPU, "bf16"):
        logits = method(batch)
        loss = method.training_loss(batch)
    assert logits.dtype == torch.float32 and not torch.equal(logits, logits.bfloat16().float())  # not bf16-rounded
    assert loss.dtype == torch.float32
    loss.backward()
    embeddings = method.backbone.embeddings.weight  # tied to the LM head: the label words' rows get gradients
    assert embeddings.dtype == torch.bfloat16 and embeddings.grad[label_word_ids(method)].abs().sum() > 0
