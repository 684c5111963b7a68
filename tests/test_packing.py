"""Packing and a shared prefix run once (models/packing.py, CausalLM): every real token gets the states it gets in
its padded row, with and without key/value prefixes, and training sees the same loss and gradients."""

import pytest
import torch

from prompttune.data.records import Example
from prompttune.models import packing
from prompttune.models.families import CausalLM
from prompttune.prompts.encoding import collate
from tests.helpers import build_method
from tests.test_prefix import tiny_backbone

IDS = torch.tensor([[5, 17, 23, 9, 41, 7], [12, 3, 8, 0, 0, 0], [30, 31, 0, 0, 0, 0]])
MASK = (IDS != 0).long()
SMOLLM2_LAYER = (3_500_000, 576)  # weights of one layer's linear maps, hidden size


def test_one_packed_row_keeps_each_examples_positions_and_blocks_attention_across_examples():
    embeds = torch.arange(18.0).view(3, 6, 1)
    plan = packing.plan(MASK, weights_per_layer=10**6, hidden=4)  # linear maps dominate: one row of 11 tokens
    assert plan.rows == 1
    assert plan.positions.tolist() == [[0, 1, 2, 3, 4, 5, 0, 1, 2, 0, 1]]
    assert plan.mask[0, 0, 7].tolist() == [False] * 6 + [True, True] + [False] * 3  # example 2, its second token
    assert not plan.mask[0, 0, 0, 1]  # causal: no look ahead
    restored = packing.unpack(packing.pack(embeds, plan), plan, embeds.shape)
    assert torch.equal(restored[MASK.bool()], embeds[MASK.bool()])
    assert restored[~MASK.bool()].abs().sum() == 0


def test_rows_of_the_padded_length_are_filled_longest_first():
    # longest first: 6 fills row 0, 4 opens row 1, 3 does not fit beside it (row 2), 2 does (row 1, after the 4)
    assert packing.rows_for([6, 3, 2, 4], capacity=6) == ([0, 2, 1, 1], [0, 0, 4, 0])
    plan = packing.plan(MASK, weights_per_layer=10**6, hidden=10**6)  # attention dominates: rows stay L long
    assert plan.rows == 2 and plan.positions.shape == (2, 6)
    assert plan.positions.tolist() == [[0, 1, 2, 3, 4, 5], [0, 1, 2, 0, 1, 0]]


def test_the_padded_batch_stays_where_packing_saves_nothing():
    even = torch.ones(32, 30, dtype=torch.long)
    assert packing.plan(even, *SMOLLM2_LAYER) is None
    ragged = torch.tensor([[1] * 48, [1] * 10 + [0] * 38, [1] * 14 + [0] * 34, [1] * 21 + [0] * 27])
    assert packing.plan(ragged, *SMOLLM2_LAYER) is not None


def test_no_packed_row_is_longer_than_max_row_unless_an_example_is():
    long_ragged = torch.zeros(32, 300, dtype=torch.long)
    long_ragged[:, :100] = 1
    long_ragged[0] = 1
    plan = packing.plan(long_ragged, *SMOLLM2_LAYER)
    assert plan is not None and plan.positions.shape[1] <= packing.MAX_ROW


def test_the_shared_prefix_is_the_leading_positions_every_row_holds():
    ids = torch.tensor([[4, 8, 15, 16, 23, 42], [4, 8, 15, 7, 0, 0], [4, 8, 9, 0, 0, 0]])
    mask, embeds = (ids != 0).long(), ids.float()[..., None]
    assert packing.shared_prefix(embeds, mask) == 2
    assert packing.shared_prefix(embeds[:2], mask[:2]) == 3  # each row keeps a token of its own
    assert packing.shared_prefix(embeds[:1], mask[:1]) == 0


def padded_and_packed(backbone, embeds, mask):
    backbone.packs = False
    padded = backbone.run_embedded(embeds, mask)
    backbone.packs = True
    return padded, backbone.run_embedded(embeds, mask)


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_llama_gqa"])
def test_packed_states_equal_the_padded_rows(name, monkeypatch):
    backbone = tiny_backbone(name)
    monkeypatch.setattr(CausalLM, "_layer_size", lambda _self: SMOLLM2_LAYER)  # so that a tiny model packs
    with torch.no_grad():
        assert packing.plan(MASK, *backbone._layer_size()) is not None
        padded, packed = padded_and_packed(backbone, backbone.embeddings(IDS), MASK)
    real = MASK.bool()
    torch.testing.assert_close(packed[real], padded[real], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("under_prefixes", [False, True])
def test_a_shared_prefix_run_once_gives_every_row_its_padded_states(under_prefixes, monkeypatch):
    backbone = tiny_backbone("tiny_llama")
    monkeypatch.setattr(CausalLM, "_layer_size", lambda _self: SMOLLM2_LAYER)
    ran_apart = []
    run_after = CausalLM._run_after_shared_prefix
    monkeypatch.setattr(CausalLM, "_run_after_shared_prefix", lambda *a: ran_apart.append(a[3]) or run_after(*a))
    ids = torch.cat([torch.tensor([[4, 8, 15, 16, 2]]).expand(3, -1), IDS], 1)
    mask = (ids != 0).long()
    kv = backbone.key_values(torch.tensor([[6, 28, 496]]))
    with torch.no_grad():
        if under_prefixes:
            with backbone.key_value_prefixes(lambda i: kv[i]):
                padded, packed = padded_and_packed(backbone, backbone.embeddings(ids), mask)
        else:
            padded, packed = padded_and_packed(backbone, backbone.embeddings(ids), mask)
    assert ran_apart == [5]
    real = mask.bool()
    torch.testing.assert_close(packed[real], padded[real], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method, shared", [("prompt_tuning", True), ("ptuning_v2", False)])  # the soft prompt
def test_a_packed_training_loss_and_its_gradients_equal_the_padded_ones(method, shared, monkeypatch):
    monkeypatch.setattr(CausalLM, "_layer_size", lambda _self: SMOLLM2_LAYER)
    ran_apart = []
    run_after = CausalLM._run_after_shared_prefix
    monkeypatch.setattr(CausalLM, "_run_after_shared_prefix", lambda *a: ran_apart.append(a[3]) or run_after(*a))
    model = build_method(f"method={method}", "model=tiny_llama")
    words = ["awful", "great"]
    examples = [Example(f"x{i}", " ".join([words[i % 2]] * (1 + 3 * i)), i % 2) for i in range(6)]
    batch = collate(model.encode(examples), model.backbone.tokenizer.pad_token_id)
    assert packing.plan(batch["attention_mask"], *model.backbone._layer_size()) is not None
    results = []
    for packs in (False, True):
        model.backbone.packs = packs
        model.zero_grad()
        loss = model.training_loss(batch)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.prompt_parameters()]))
    assert bool(ran_apart) == shared
    (loss_padded, grads_padded), (loss_packed, grads_packed) = results
    torch.testing.assert_close(loss_packed, loss_padded, rtol=1e-4, atol=1e-5)
    for packed, padded in zip(grads_packed, grads_padded, strict=True):
        torch.testing.assert_close(packed, padded, rtol=1e-3, atol=1e-5)
