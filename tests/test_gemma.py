"""Gemma 3 (model=gemma3_270m): its family wiring on a tiny random Gemma3ForCausalLM (scaled embeddings, tied head,
sliding-window and global layers, one key/value head), and the GGUF parts' join and sha256 check on small fake
parts. The real weights are read only by the slow test at the end, and only once they have been converted."""

import hashlib
from pathlib import Path

import pytest
import torch

from prompttune.config.run import validate
from prompttune.errors import UserError
from prompttune.models import loading
from prompttune.models.families import CausalLM
from prompttune.models.gguf_parts import expected_sha256
from prompttune.models.loading import cache_root, converted_gguf_folder, load_backbone
from prompttune.prompts.encoding import collate
from tests.helpers import build_method, compose_config, toy_examples
from tests.test_packing import SMOLLM2_LAYER, padded_and_packed
from tests.test_prefix import joined_logits

HIDDEN = 32


def tiny_gemma(window: int = 64) -> list[str]:
    """A 2-layer Gemma 3 (one sliding-window layer, one global) with SmolLM2's tokenizer, from tiny_llama's YAML."""
    return [
        "model=tiny_llama",
        "model.name=tiny_gemma3",
        "model.architecture.model_type=gemma3_text",
        "model.architecture.num_key_value_heads=1",
        "+model.architecture.head_dim=16",
        "+model.architecture.query_pre_attn_scalar=16",
        f"+model.architecture.sliding_window={window}",
        "+model.architecture.layer_types=[sliding_attention,full_attention]",
    ]


def gemma_backbone(window: int = 64):
    return load_backbone(compose_config(*tiny_gemma(window)).model).eval()


def test_the_tiny_gemma_is_wired_as_a_causal_lm_with_scaled_embeddings_and_a_tied_head():
    backbone = gemma_backbone()
    model = backbone.model
    assert type(model).__name__ == "Gemma3ForCausalLM" and isinstance(backbone, CausalLM)
    assert model.config.layer_types == ["sliding_attention", "full_attention"]
    assert backbone.prompt_layers() == list(model.model.layers)
    assert backbone.attention_shape() == (2, 1, 16)  # head_dim is Gemma's own, not hidden / heads
    assert backbone.lm_head is model.lm_head and model.lm_head.weight is backbone.embeddings.weight
    assert backbone.max_positions == 128
    assert model.config.pad_token_id == backbone.tokenizer.pad_token_id
    ids = torch.tensor([[5, 17, 23, 9]])
    scale = HIDDEN**0.5
    torch.testing.assert_close(backbone.token_embeddings(ids[0]), backbone.embeddings.weight[ids[0]] * scale)
    with torch.no_grad():  # inputs_embeds skip Gemma's scaling: the family's embeddings must carry it
        own = model.model(input_ids=ids).last_hidden_state
        ours = backbone.hidden_states(ids, torch.ones_like(ids))
    torch.testing.assert_close(ours, own)


def test_prompt_tuning_starts_from_vocabulary_rows_as_gemmas_layers_receive_them():
    method = build_method("method=prompt_tuning", "method.init=text", "method.init_text=great film", *tiny_gemma())
    backbone = method.backbone
    ids = backbone.tokenizer("great film", add_special_tokens=False)["input_ids"]
    n = method.soft_embeddings.shape[0]
    rows = backbone.embeddings.weight[torch.tensor(ids * n)[:n]].detach()
    torch.testing.assert_close(method.soft_embeddings.detach(), rows * HIDDEN**0.5)


def test_key_value_prefixes_equal_a_preceding_text_on_both_kinds_of_layer():
    backbone = gemma_backbone()
    a = torch.tensor([[101, 2023, 3185, 2001, 2200]])
    b = torch.tensor([[2307, 1010, 2428, 2204, 102], [1996, 2143, 102, 0, 0]])
    b_mask = (b != 0).long()
    kv = backbone.key_values(a)
    assert len(kv) == 2 and kv[0][0].shape == (1, 1, 5, 16)
    with torch.no_grad():
        expected = joined_logits(backbone, a, b, b_mask)
        with backbone.key_value_prefixes(lambda i: kv[i]):
            got = backbone.model(input_ids=b, attention_mask=b_mask, position_ids=torch.arange(5, 10)[None]).logits
    valid = b_mask.bool()
    torch.testing.assert_close(got[valid], expected[valid], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("window, packs", [(64, True), (4, False)])
def test_rows_wider_than_the_sliding_window_are_not_packed(window, packs, monkeypatch):
    backbone = gemma_backbone(window)
    monkeypatch.setattr(CausalLM, "_layer_size", lambda _self: SMOLLM2_LAYER)  # so that a tiny model packs
    ids = torch.tensor([[5, 17, 23, 9, 41, 7], [12, 3, 8, 0, 0, 0], [30, 31, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    assert backbone._may_pack(ids.shape[1]) == packs
    with torch.no_grad():
        padded, packed = padded_and_packed(backbone, backbone.embeddings(ids), mask)
        own = backbone.model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(packed[real], padded[real], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(padded[real], own[real], rtol=1e-4, atol=1e-5)


METHODS = {
    "finetune": [],
    "pet": [],
    "prompt_tuning": [],
    "ptuning_v1": [],
    "ptuning_v2": [],
    "ptuning_v2_hidden_states": ["method=ptuning_v2", "method.prefix=hidden_states"],
    "icl": ["method.demos_per_class=1"],
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_runs_forward_and_backward_on_gemma(name):
    extra = METHODS[name]
    method_arg = [] if any(o.startswith("method=") for o in extra) else [f"method={name}"]
    method = build_method(*method_arg, *extra, *tiny_gemma())
    examples = toy_examples(8)
    method.fit_examples(examples, examples)
    batch = collate(method.encode(examples), method.pad_token_id)
    method.train()
    loss = method.training_loss(batch)
    assert torch.isfinite(loss)
    trainable = [p for p in method.parameters() if p.requires_grad]
    if not method.trains:
        assert method(batch).shape == (8, 2)
        return
    loss.backward()
    assert trainable and any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)


# --- the GGUF parts: join and sha256 check, on small fake parts ---------------------------------------------


def fake_parts(tmp_path: Path, monkeypatch, declared: str | None = None) -> tuple[list[str], bytes]:
    """Three part packages and an assembler package under tmp_path, found where loading looks for packages. The
    assembler's __init__ raises if it is ever run: its sha256 must be read from its source."""
    chunks = [b"GGUF" + bytes(range(256)) * 40, b"second part" * 100, b"last"]
    packages = {}
    parts = []
    for i, chunk in enumerate(chunks):
        name = f"fake_part{i + 1}"
        (tmp_path / name / "data").mkdir(parents=True)
        (tmp_path / name / "data" / f"m.gguf.part0{i}").write_bytes(chunk)
        packages[name] = tmp_path / name
        parts.append(f"{name}/data/m.gguf.part0{i}")
    joined = b"".join(chunks)
    sha = declared or hashlib.sha256(joined).hexdigest()
    (tmp_path / "fake_assembler").mkdir()
    (tmp_path / "fake_assembler" / "__init__.py").write_text(
        f'raise RuntimeError("never import me")\nMODEL_NAME = "m.gguf"\nEXPECTED_SHA256 = "{sha}"\n'
    )
    packages["fake_assembler"] = tmp_path / "fake_assembler"

    def package_dir(name: str) -> Path:
        if name not in packages:
            raise UserError(f"package {name} is not installed: run `make install`")
        return packages[name]

    monkeypatch.setattr(loading, "package_dir", package_dir)
    return parts, joined


def parts_overrides(tmp_path: Path, parts: list[str]) -> list[str]:
    return [
        "model.package=fake_assembler",
        "model.file=m.gguf",
        f"model.parts=[{','.join(parts)}]",
        f"model.cache_dir={tmp_path / 'cache'}",
    ]


def parts_config(tmp_path: Path, parts: list[str]):
    return compose_config("model=gemma3_270m", *parts_overrides(tmp_path, parts)).model


def test_the_parts_are_joined_in_order_and_the_sha256_read_without_running_the_assembler(tmp_path, monkeypatch):
    parts, joined = fake_parts(tmp_path, monkeypatch)
    assert expected_sha256(tmp_path / "fake_assembler") == hashlib.sha256(joined).hexdigest()
    cfg = parts_config(tmp_path, parts)
    (tmp_path / "cache").mkdir()
    loading.check_gguf_parts(cfg)  # the check before a run: passes, writes nothing
    assert list((tmp_path / "cache").iterdir()) == []
    with loading._gguf_folder(cfg, tmp_path / "cache") as folder:
        assert (folder / "m.gguf").read_bytes() == joined
    assert list((tmp_path / "cache").iterdir()) == []  # the joined file is gone once converted


@pytest.mark.parametrize("damage", ["corrupted", "missing", "declared"])
def test_a_corrupted_or_missing_part_is_one_line_naming_the_file_and_nothing_is_cached(damage, tmp_path, monkeypatch):
    parts, _ = fake_parts(tmp_path, monkeypatch, declared="0" * 64 if damage == "declared" else None)
    part = tmp_path / parts[1]
    if damage == "corrupted":
        data = bytearray(part.read_bytes())
        data[7] ^= 1
        part.write_bytes(bytes(data))
    elif damage == "missing":
        part.unlink()
    cfg = parts_config(tmp_path, parts)
    with pytest.raises(UserError) as err:
        converted_gguf_folder(cfg)
    message = str(err.value)
    assert "\n" not in message and "--force-reinstall" in message and "fake-part2" in message
    assert (str(part) if damage == "missing" else "m.gguf joined from m.gguf.part00") in message
    assert message.count("fake-part2") == 1  # each package named once
    assert list(cache_root(cfg).iterdir()) == []  # neither the joined file nor a half-converted folder stays
    with pytest.raises(UserError, match="GGUF part|joined from"):  # the same check, before a run dir is written
        validate(compose_config("model=gemma3_270m", *parts_overrides(tmp_path, parts)))


def test_an_assembler_without_a_sha256_literal_is_an_error(tmp_path):
    (tmp_path / "__init__.py").write_text("EXPECTED_SHA256 = compute()\n")
    with pytest.raises(UserError, match="declares no EXPECTED_SHA256"):
        expected_sha256(tmp_path)


@pytest.mark.parametrize("parts, wanted", [("null", "needs model.parts"), ("[part00]", "<package>/<path inside it>")])
def test_gguf_parts_needs_its_parts_as_package_paths(parts, wanted):
    validate(compose_config("model=gemma3_270m"))
    with pytest.raises(UserError, match=wanted):
        validate(compose_config("model=gemma3_270m", f"model.parts={parts}"))


# --- the real model, once converted (slow; skipped before the first use of model=gemma3_270m) ---------------


@pytest.mark.slow
def test_the_converted_gemma_puts_bos_first_and_knows_the_capital_of_france():
    cfg = compose_config("model=gemma3_270m").model
    if not (cache_root(cfg) / Path(cfg.file).stem / "model.safetensors").exists():
        pytest.skip("gemma3_270m not converted yet (the first `prompttune train model=gemma3_270m` converts it)")
    method = build_method("method=pet", "model=gemma3_270m")
    backbone = method.backbone
    encoded = method.encode(toy_examples(2))
    assert all(e.input_ids[0] == backbone.tokenizer.bos_token_id for e in encoded)
    ids = backbone.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        top = backbone.model(ids).logits[0, -1].topk(5).indices.tolist()
    assert backbone.tokenizer(" Paris", add_special_tokens=False)["input_ids"][0] in top
