"""Key/value prefixes (models/prefix.py, P-Tuning v2): exactness against a real preceding text, parameter count."""

import pytest
import torch

from prompttune.models.backbone import Backbone
from prompttune.models.loading import load_backbone
from tests.helpers import build_method, compose_config

# tiny_llama with fewer key/value heads than query heads checks grouped-query attention
MODELS = {
    "tiny_bert": [],
    "tiny_llama": [],
    "tiny_llama_gqa": [
        "model=tiny_llama",
        "model.architecture.num_attention_heads=4",
        "model.architecture.num_key_value_heads=2",
    ],
}


def model_overrides(name: str) -> list[str]:
    return MODELS[name] or [f"model={name}"]


def tiny_backbone(name: str) -> Backbone:
    cfg = compose_config(*model_overrides(name))
    return load_backbone(cfg.model).eval()


def joined_logits(backbone: Backbone, a: torch.Tensor, b: torch.Tensor, b_mask: torch.Tensor) -> torch.Tensor:
    """Logits at B's positions of the model run on A followed by B. On a bidirectional model A's rows attend to A
    only (a block mask), so that A's keys and values are those of A run alone, as a prefix's are."""
    rows, n_a, n_b = b.shape[0], a.shape[1], b.shape[1]
    ids = torch.cat([a.expand(rows, -1), b], 1)
    mask = torch.cat([torch.ones(rows, n_a, dtype=torch.long), b_mask], 1)
    if not backbone.cut_at_mask:  # bidirectional
        sees = mask.bool()[:, None, None, :].expand(-1, 1, n_a + n_b, -1).clone()
        sees[:, :, :n_a, n_a:] = False
        mask = sees
    return backbone.model(input_ids=ids, attention_mask=mask).logits[:, n_a:]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_keys_and_values_of_a_text_as_prefix_equal_the_joined_text(name):
    backbone = tiny_backbone(name)
    a = torch.tensor([[101, 2023, 3185, 2001, 2200]])
    b = torch.tensor([[2307, 1010, 2428, 2204, 102], [1996, 2143, 102, 0, 0]])
    b_mask = (b != 0).long()
    kv = backbone.key_values(a)
    n_a, n_b = a.shape[1], b.shape[1]
    with torch.no_grad():
        expected = joined_logits(backbone, a, b, b_mask)
        with backbone.key_value_prefixes(lambda i: kv[i]):
            # B as the continuation of A: its positions follow A's (the method itself starts the text at 0)
            positions = torch.arange(n_a, n_a + n_b)[None].expand(2, -1)
            got = backbone.model(input_ids=b, attention_mask=b_mask, position_ids=positions).logits
        alone = backbone.model(input_ids=b, attention_mask=b_mask, position_ids=positions).logits
    valid = b_mask.bool()
    torch.testing.assert_close(got[valid], expected[valid], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(alone[valid], expected[valid], atol=1e-3)  # the prefix does change the output


@pytest.mark.parametrize("name", sorted(MODELS))
def test_ptuning_v2_trains_two_key_value_prefixes_per_layer(name):
    n_tokens = 5
    method = build_method("method=ptuning_v2", f"method.n_tokens={n_tokens}", *model_overrides(name))
    config = method.backbone.model.config
    kv_heads = getattr(config, "num_key_value_heads", config.num_attention_heads)
    d_kv = config.hidden_size // config.num_attention_heads * kv_heads
    head = sum(p.numel() for p in method.head.parameters() if p.requires_grad)
    assert method.parameter_counts()["trainable"] == 2 * config.num_hidden_layers * n_tokens * d_kv + head
    if name == "tiny_llama_gqa":
        assert d_kv == config.hidden_size // 2


def test_text_positions_start_at_zero_with_prefixes():
    backbone = tiny_backbone("tiny_llama")
    prefix = [(k, v) for k, v in backbone.key_values(torch.tensor([[7, 8, 9]]))]
    b = torch.tensor([[2307, 1010, 2428]])
    with torch.no_grad(), backbone.key_value_prefixes(lambda i: prefix[i]):
        implicit = backbone.model(input_ids=b).logits
        from_zero = backbone.model(input_ids=b, position_ids=torch.arange(3)[None]).logits
        shifted = backbone.model(input_ids=b, position_ids=torch.arange(3, 6)[None]).logits
    torch.testing.assert_close(implicit, from_zero)
    assert not torch.allclose(implicit, shifted, atol=1e-4)
