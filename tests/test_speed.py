import json
import subprocess
import sys

import pytest
import torch

from prompttune.data.records import Example
from prompttune.prompts.encoding import collate
from prompttune.training import precision
from prompttune.training.flops import FlopCounter
from prompttune.training.loop import predict, train
from tests.helpers import build_method, compose_config, toy_examples

FAST = ["trainer.max_steps=12", "trainer.eval_every=null", "trainer.batch_size=8", "trainer.warmup_ratio=0"]


def toy_loss(method, examples) -> float:
    batch = collate(method.encode(examples), method.backbone.tokenizer.pad_token_id)
    with torch.no_grad(), precision.autocast(torch.device("cpu"), "bf16"):
        return torch.nn.functional.cross_entropy(method(batch).float(), batch["labels"]).item()


def fit(method, *overrides):
    cfg = compose_config(*FAST, *overrides)
    encoded = method.encode(toy_examples())
    return train(method, encoded, encoded, cfg.trainer, torch.device("cpu"), seed=0)


def test_bf16_holds_the_frozen_backbone_in_bf16_and_trains_fp32_prompts():
    overrides = ["method=prompt_tuning", "model=tiny_llama", "method.prompt_lr=0.3", "method.n_tokens=4"]
    overrides += ["trainer.precision=bf16"]
    method = build_method(*overrides)
    assert {p.dtype for p in method.backbone.parameters()} == {torch.bfloat16}
    assert method.soft_embeddings.dtype == torch.float32
    frozen = {k: v.clone() for k, v in method.backbone.state_dict().items()}
    before = toy_loss(method, toy_examples())
    fit(method, *overrides)
    assert toy_loss(method, toy_examples()) < before
    assert all(torch.equal(frozen[k], v) for k, v in method.backbone.state_dict().items())


def test_bf16_fine_tuning_steps_fp32_masters_into_bf16_weights():
    overrides = ["method=pet", "model=tiny_llama", "trainer.lr=1e-3", "trainer.precision=bf16"]
    method = build_method(*overrides)
    before = toy_loss(method, toy_examples())
    weight = method.backbone.prompt_layers()[0].mlp.up_proj.weight
    start = weight.detach().clone()
    fit(method, *overrides)
    assert weight.dtype == torch.bfloat16 and not torch.equal(weight, start)
    assert weight.grad is None  # gradients move to the masters
    assert toy_loss(method, toy_examples()) < before


def test_master_copies_round_trip():
    bf16 = torch.nn.Parameter(torch.randn(4).bfloat16())
    fp32 = torch.nn.Parameter(torch.randn(3))
    masters = precision.MasterCopies([{"params": [bf16, fp32], "lr": 0.1}])
    [master, same] = masters.groups[0]["params"]
    assert same is fp32 and master.dtype == torch.float32 and torch.equal(master.bfloat16(), bf16.detach())
    bf16.grad = torch.ones(4, dtype=torch.bfloat16)
    masters.gradients_to_masters()
    assert bf16.grad is None and master.grad.dtype == torch.float32
    with torch.no_grad():
        master.add_(1.0)
    masters.masters_to_model()
    assert torch.equal(bf16.detach(), master.detach().bfloat16())


@pytest.mark.parametrize("name, model", [("pet", "tiny_llama"), ("ptuning_v2", "tiny_bert")])
def test_predict_returns_logits_in_the_examples_order(name, model):
    method = build_method(f"method={name}", f"model={model}")
    examples = [Example(e.guid, " ".join([e.text_a] * (1 + i % 5)), e.label) for i, e in enumerate(toy_examples(10))]
    encoded = method.encode(examples)
    cfg = compose_config("trainer.eval_batch_size=3").trainer
    together = predict(method, encoded, cfg, torch.device("cpu"))
    one_by_one = torch.cat([predict(method, [e], cfg, torch.device("cpu")) for e in encoded])
    torch.testing.assert_close(together, one_by_one, atol=1e-4, rtol=1e-4)


def test_auto_precision_follows_the_hardware(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "bf16_supported", lambda device: True)
    assert precision.resolve("auto", cpu) == "bf16"
    monkeypatch.setattr(precision, "bf16_supported", lambda device: False)
    assert precision.resolve("auto", cpu) == "fp32"
    assert precision.resolve("fp32", cpu) == "fp32"  # an unknown precision is the trainer schema's error


def test_flops_count_only_what_runs():
    full = build_method("method=pet", "model=tiny_llama")
    frozen = build_method("method=prompt_tuning", "model=tiny_llama")
    batch = collate(full.encode(toy_examples(4)), full.backbone.tokenizer.pad_token_id)
    rows, length = batch["input_ids"].shape
    counter = FlopCounter(full)
    with torch.no_grad():
        full(batch)
    layers = full.backbone.prompt_layers()
    weights = sum(m.weight.numel() for layer in layers for m in layer.modules() if isinstance(m, torch.nn.Linear))
    attention = 4 * len(layers) * full.backbone.hidden_size * rows * length**2
    assert counter.forward_flops(counter.eval) == 2 * weights * rows * length + attention
    counter.close()

    def step_flops(method):
        counter = FlopCounter(method)
        method(collate(method.encode(toy_examples(4)), method.backbone.tokenizer.pad_token_id))
        counter.close()
        return counter.training_flops(counter.train), counter.forward_flops(counter.train)

    full_step, full_forward = step_flops(full)
    frozen_step, frozen_forward = step_flops(frozen)
    assert full_step == pytest.approx(3 * full_forward, rel=0.2)  # forward, activation and weight gradients
    assert frozen_step == pytest.approx(2 * frozen_forward, rel=0.2)  # no weight gradients for frozen weights


@pytest.mark.slow
def test_metrics_carry_throughput_and_precision(tmp_path):
    run = tmp_path / "run"
    args = ["train", "model=tiny_llama", "method=pet", "shots=4", "trainer.max_steps=2", "dataset.test_size=24"]
    args += ["trainer.precision=bf16", f"hydra.run.dir={run}"]
    done = subprocess.run([sys.executable, "-m", "prompttune", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["precision"] == "bf16"
    flops = metrics["throughput"]
    assert flops["flops_per_train_step"] > 0 and flops["train_flop_per_second"] > 0
    assert flops["flops_per_eval_example"] > 0 and flops["eval_flop_per_second"] > 0
    assert flops["flops_per_train_step"] > 8 * flops["flops_per_eval_example"]  # batch of 8, with a backward


def test_trainer_compile_compiles_the_transformer_body(monkeypatch):
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    method = build_method("method=pet", "model=tiny_llama", "trainer.compile=true")
    assert compiled == [method.backbone.body]
    build_method("method=pet", "model=tiny_llama")
    assert len(compiled) == 1  # off by default
