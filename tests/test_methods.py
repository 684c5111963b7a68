import pytest
import torch
from safetensors.torch import load_file

from prompttune.errors import UserError
from prompttune.prompts.encoding import collate
from prompttune.runs.checkpoint import CHECKPOINT, save_checkpoint
from prompttune.training.loop import train
from tests.helpers import build_method, compose_config, toy_examples

FAST = ["trainer.max_steps=12", "trainer.eval_every=null", "trainer.batch_size=8", "trainer.warmup_ratio=0"]
# method -> (overrides, names of the parameters that must train; every other one stays frozen)
FROZEN_METHODS = {
    "prompt_tuning": (["method.prompt_lr=0.3", "method.n_tokens=4"], ("soft_embeddings",)),
    "ptuning_v1": (["method.freeze_backbone=true", "method.prompt_lr=0.01"], ("prompt_encoder.",)),
    "ptuning_v2": (
        ["method.head=linear", "method.prompt_lr=0.05", "method.lr=0.05"],
        ("kv_prefixes.", "head.classifier."),
    ),
    "ptuning_v2_reparameterized": (
        ["method=ptuning_v2", "method.head=linear", "method.prompt_lr=0.05", "method.lr=0.05"]
        + ["method.reparameterize=true"],
        ("kv_prefixes.", "head.classifier."),
    ),
    "ptuning_v2_verbalizer": (
        ["method=ptuning_v2", "method.head=verbalizer", "method.prompt_lr=0.05", "trainer.max_steps=20"],
        ("kv_prefixes.",),
    ),
    "ptuning_v2_hidden_states": (
        # deep prompts steer a random tiny causal LM's next-token scores slowly: more, gentler steps
        ["method=ptuning_v2", "method.prefix=hidden_states", "method.head=verbalizer", "method.prompt_lr=0.01"]
        + ["trainer.max_steps=40"],
        ("deep_prompts.",),
    ),
}
MODELS = ["tiny_bert", "tiny_llama", "tiny_t5"]


def method_overrides(name: str, extra: list[str]) -> list[str]:
    return ([] if any(o.startswith("method=") for o in extra) else [f"method={name}"]) + extra


def toy_loss(method, examples) -> float:
    method.eval()
    with torch.no_grad():
        batch = collate(method.encode(examples), method.backbone.tokenizer.pad_token_id)
        return torch.nn.functional.cross_entropy(method(batch), batch["labels"]).item()


def fit(method, *overrides):
    cfg = compose_config(*FAST, *overrides)
    encoded = method.encode(toy_examples())
    return train(method, encoded, encoded, cfg.trainer, torch.device("cpu"), seed=0)


def backbone_snapshot(method) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in method.backbone.model.state_dict().items()}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", sorted(FROZEN_METHODS))
def test_frozen_method_trains_only_its_prompts(name, model):
    extra, trainable = FROZEN_METHODS[name]
    overrides = [*method_overrides(name, extra), f"model={model}"]
    method = build_method(*overrides)
    before, frozen = toy_loss(method, toy_examples()), backbone_snapshot(method)

    fit(method, *overrides)

    assert toy_loss(method, toy_examples()) < before
    after = method.backbone.model.state_dict()
    assert all(torch.equal(frozen[k], after[k]) for k in frozen), "the backbone's weights changed"
    names = {n for n, p in method.named_parameters() if p.requires_grad}
    assert names and all(n.startswith(trainable) for n in names)
    assert method.parameter_counts()["ratio"] < 0.2


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", sorted(FROZEN_METHODS))
def test_only_expected_parameters_receive_gradients(name, model):
    extra, trainable = FROZEN_METHODS[name]
    method = build_method(*method_overrides(name, extra), f"model={model}")
    batch = collate(method.encode(toy_examples(4)), method.backbone.tokenizer.pad_token_id)
    torch.nn.functional.cross_entropy(method(batch), batch["labels"]).backward()
    with_grad = {n for n, p in method.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad and all(n.startswith(trainable) for n in with_grad)
    assert all(p.grad is None for p in method.backbone.parameters())


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", ["pet", "finetune"])
def test_full_training_reduces_loss(name, model):
    overrides = [f"method={name}", f"model={model}", "trainer.lr=3e-3"]
    method = build_method(*overrides)
    before = toy_loss(method, toy_examples())
    fit(method, *overrides)
    assert toy_loss(method, toy_examples()) < before


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", ["prompt_tuning", "ptuning_v1", "ptuning_v2", "pet"])
def test_checkpoint_round_trip_gives_identical_logits(name, model, tmp_path):
    overrides = [f"method={name}", f"model={model}", "trainer.lr=1e-3", "method.prompt_lr=0.05"]
    method = build_method(*overrides)
    fit(method, *overrides, "trainer.max_steps=3")
    size = save_checkpoint(tmp_path, method.trainable_state(), compose_config(*overrides))
    if method.cfg.freeze_backbone:
        assert size < 1_000_000  # prompt-only checkpoint (ptuning_v1 tunes the LM too by default)

    torch.manual_seed(1234)  # a different initialisation, overwritten by the checkpoint
    reloaded = build_method(*overrides)
    reloaded.load_trainable_state(load_file(tmp_path / CHECKPOINT))
    batch = collate(method.encode(toy_examples(6)), method.backbone.tokenizer.pad_token_id)
    method.eval(), reloaded.eval()
    with torch.no_grad():
        assert torch.equal(method(batch), reloaded(batch))


def test_soft_tokens_are_placed_among_anchors():
    method = build_method("method=ptuning_v1", "model=tiny_bert")
    assert method.template.source == "{soft:3}{text_a}{soft:3} The movie was {mask}."
    assert method.template.n_soft == 6


def test_pet_frozen_backbone_trains_only_the_mlm_head():
    method = build_method("method=pet", "model=tiny_bert", "method.freeze_backbone=true")
    names = {n for n, p in method.named_parameters() if p.requires_grad}
    assert names and all(n.startswith("backbone.model.cls.") for n in names)


def test_pet_frozen_backbone_with_tied_head_is_a_clear_error():
    with pytest.raises(UserError, match="tied to the input embeddings"):
        build_method("method=pet", "model=tiny_llama", "method.freeze_backbone=true")


def test_soft_slots_need_a_soft_method():
    with pytest.raises(UserError, match="trains none"):
        build_method("method=pet", "model=tiny_bert", "method.template='{soft:2}{text_a} {mask}'")


@pytest.mark.parametrize("overrides", [["method=ptuning_v2", "method.head=linear"], ["method=finetune"]])
def test_linear_head_methods_run_on_an_encoder_without_lm_head(overrides):
    method = build_method(*overrides, "model=minilm_l6")
    batch = collate(method.encode(toy_examples(2)), method.backbone.tokenizer.pad_token_id)
    assert method(batch).shape == (2, 2)


def test_ptuning_v1_prompt_encoder_runs_under_bf16_autocast():
    """oneDNN has no bf16 LSTM on CPUs without AVX512-BF16/AMX: the encoder's LSTM runs in fp32 under autocast."""
    from prompttune.methods.ptuning_v1 import Encoder, PromptEncoder

    encoder = PromptEncoder(6, 16, 16, Encoder.lstm)
    plain = encoder()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = encoder()
    assert mixed.shape == (6, 16)
    torch.testing.assert_close(mixed.float(), plain, atol=0.05, rtol=0.05)
