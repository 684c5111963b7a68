import pytest
import torch
from transformers import PretrainedConfig

from prompttune.errors import UserError
from prompttune.models.families import CausalLM, EncoderDecoder, EncoderOnly, MaskedLM
from prompttune.models.loading import FAMILIES, family_of
from prompttune.prompts.encoding import collate
from tests.helpers import build_method, toy_examples

MULTI_TOKEN = "method.verbalizer={negative:[flabbergasting],positive:[good]}"


@pytest.mark.parametrize(
    "architecture, family",
    [
        ("BertForMaskedLM", MaskedLM),
        ("LlamaForCausalLM", CausalLM),
        ("GPT2LMHeadModel", CausalLM),
        ("T5ForConditionalGeneration", EncoderDecoder),
        ("BertModel", EncoderOnly),
    ],
)
def test_auto_kind_picks_the_family_by_architecture(architecture, family):
    assert family_of("auto", PretrainedConfig(architectures=[architecture])) is family


def test_every_kind_is_one_table_row_and_an_unknown_kind_is_an_error():
    assert {kind: family_of(kind) for kind in FAMILIES} == FAMILIES
    with pytest.raises(UserError, match="model.kind='seq2seq' is unknown"):
        family_of("seq2seq")


@pytest.mark.parametrize("verbalizer", [[], [MULTI_TOKEN]])
def test_t5_mask_is_one_sentinel_whatever_the_word_length(verbalizer):
    method = build_method("method=pet", "model=tiny_t5", *verbalizer)
    tokenizer = method.backbone.tokenizer
    sentinel = tokenizer.convert_tokens_to_ids("<extra_id_0>")
    for enc in method.encode(toy_examples(3)):
        assert enc.input_ids.count(sentinel) == 1 and tokenizer.mask_token_id not in enc.input_ids
        assert enc.mask_positions == [enc.input_ids.index(sentinel)]


def test_t5_nested_decoding_restores_the_outer_decoder_inputs():
    backbone = build_method("method=pet", "model=tiny_t5").backbone
    outer, inner = torch.zeros(2, 2, dtype=torch.long), torch.ones(1, 1, dtype=torch.long)
    with backbone.decoding(outer):
        with backbone.decoding(inner):
            assert backbone._decoder_ids is inner
        assert backbone._decoder_ids is outer
    assert backbone._decoder_ids is None


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_llama", "tiny_t5", "minilm_l6"])
def test_linear_head_pooling_ignores_padding(model):
    method = build_method("method=finetune", f"model={model}").eval()
    short, long = toy_examples(1)[0], toy_examples(2)[1]
    long = type(long)(long.guid, long.text_a + " and a much longer text after it", long.label)
    pad = method.backbone.tokenizer.pad_token_id
    with torch.no_grad():
        alone = method(collate(method.encode([short]), pad))
        padded = method(collate(method.encode([short, long]), pad))
    torch.testing.assert_close(alone[0], padded[0], atol=1e-5, rtol=1e-5)
