"""Packing (models/packing.py): a padded batch run as one row of its real tokens gives every real token the states
it gets in its padded row, with and without key/value prefixes, and training sees the same gradients."""

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
    assert packing.plan(even, weights_per_layer=3_500_000, hidden=576) is None
    ragged = torch.tensor([[1] * 48, [1] * 10 + [0] * 38, [1] * 14 + [0] * 34, [1] * 21 + [0] * 27])
    assert packing.plan(ragged, weights_per_layer=3_500_000, hidden=576) is not None


def test_a_prefix_every_row_shares_is_held_once_and_seen_by_every_example():
    ids = torch.tensor([[4, 8, 15, 16, 23, 42], [4, 8, 15, 7, 0, 0], [4, 8, 9, 0, 0, 0]])
    mask = (ids != 0).long()
    embeds = ids.float()[..., None]
    assert packing.shared_prefix(embeds, mask) == 2
    assert packing.shared_prefix(embeds[:2], mask[:2]) == 3
    assert packing.shared_prefix(embeds[:1], mask[:1]) == 0
    plan = packing.plan(mask, weights_per_layer=10**6, hidden=4, shared=2)
    assert plan.rows == 1 and plan.shared == 2
    assert plan.positions.tolist() == [[0, 1, 2, 3, 4, 5, 2, 3, 2]]
    assert plan.mask[0, 0, 6].tolist() == [True, True, False, False, False, False, True, False, False]
    packed = packing.pack(embeds, plan)
    assert packed[0, :, 0].tolist() == [4, 8, 15, 16, 23, 42, 15, 7, 9]
    restored = packing.unpack(packed, plan, embeds.shape)
    assert torch.equal(restored[mask.bool()], embeds[mask.bool()])


def test_a_shared_prefix_gives_every_row_the_states_of_its_padded_row():
    backbone = tiny_backbone("tiny_llama")
    ids = torch.cat([torch.tensor([[4, 8, 15, 16]]).expand(3, -1), IDS], 1)
    mask = (ids != 0).long()
    with torch.no_grad():
        embeds = backbone.embeddings(ids)
        backbone.packs = False
        padded = backbone.run_embedded(embeds, mask)
        backbone.packs = True
        plan = packing.plan(mask, *backbone._layer_size(), shared=packing.shared_prefix(embeds, mask))
        assert plan is not None and plan.shared == 4
        packed = backbone.run_embedded(embeds, mask)
    real = mask.bool()
    torch.testing.assert_close(packed[real], padded[real], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_llama_gqa"])
def test_packed_states_equal_the_padded_rows(name):
    backbone = tiny_backbone(name)
    with torch.no_grad():
        embeds = backbone.embeddings(IDS)
        backbone.packs = False
        padded = backbone.run_embedded(embeds, MASK)
        backbone.packs = True
        assert packing.plan(MASK, *backbone._layer_size()) is not None
        packed = backbone.run_embedded(embeds, MASK)
    real = MASK.bool()
    torch.testing.assert_close(packed[real], padded[real], rtol=1e-4, atol=1e-5)


def test_packed_states_equal_the_padded_rows_under_key_value_prefixes():
    backbone = tiny_backbone("tiny_llama")
    kv = backbone.key_values(torch.tensor([[4, 8, 15]]))
    with torch.no_grad(), backbone.key_value_prefixes(lambda i: kv[i]):
        embeds = backbone.embeddings(IDS)
        backbone.packs = False
        padded = backbone.run_embedded(embeds, MASK)
        backbone.packs = True
        packed = backbone.run_embedded(embeds, MASK)
    real = MASK.bool()
    torch.testing.assert_close(packed[real], padded[real], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method, shared", [("prompt_tuning", 20), ("ptuning_v2", 0)])  # 20: the soft prompt
def test_a_packed_training_loss_and_its_gradients_equal_the_padded_ones(method, shared, monkeypatch):
    # a tiny model's attention outweighs its linear maps: weigh them as SmolLM2's are, so that it packs
    monkeypatch.setattr(CausalLM, "_layer_size", lambda _self: (3_500_000, 576))
    model = build_method(f"method={method}", "model=tiny_llama")
    words = ["awful", "great"]
    examples = [Example(f"x{i}", " ".join([words[i % 2]] * (1 + 3 * i)), i % 2) for i in range(6)]
    batch = collate(model.encode(examples), model.backbone.tokenizer.pad_token_id)
    plans = []
    plan_of = packing.plan
    monkeypatch.setattr(packing, "plan", lambda *a, **k: plans.append(plan_of(*a, **k)) or plans[-1])
    results = []
    for packs in (False, True):
        model.backbone.packs = packs
        model.zero_grad()
        loss = model.training_loss(batch)
        loss.backward()
        grads = [p.grad.clone() for p in model.prompt_parameters()]
        results.append((loss.detach(), grads))
    assert plans and all(plan is not None and plan.shared == shared for plan in plans)
    (loss_padded, grads_padded), (loss_packed, grads_packed) = results
    torch.testing.assert_close(loss_packed, loss_padded, rtol=1e-4, atol=1e-5)
    for packed, padded in zip(grads_packed, grads_padded, strict=True):
        torch.testing.assert_close(packed, padded, rtol=1e-3, atol=1e-5)
