import pytest
import torch

from prompttune.errors import UserError
from prompttune.models.families import EncoderDecoder, MaskedLM
from prompttune.prompts.encoding import collate
from prompttune.prompts.verbalizer import Verbalizer
from tests.helpers import build_method, toy_examples

MULTI_TOKEN = "method.verbalizer={negative:[flabbergasting],positive:[good]}"


def reference_word_scores(method, examples) -> torch.Tensor:
    """Slow reference: full-vocabulary logits from the model's own forward, one example and word at a time."""
    model, verbalizer, tokenizer = method.backbone.model, method.head.verbalizer, method.backbone.tokenizer
    rows = []
    for enc in method.encode(examples):
        scores = []
        for word, length in zip(verbalizer.word_ids.tolist(), verbalizer.word_lengths.tolist(), strict=True):
            word = word[:length]
            if isinstance(method.backbone, MaskedLM):  # a shorter word leaves the last masks unscored
                log_probs = model(torch.tensor([enc.input_ids])).logits[0].log_softmax(-1)
                scores.append(sum(log_probs[p, w] for p, w in zip(enc.mask_positions, word, strict=False)))
            elif isinstance(method.backbone, EncoderDecoder):  # T5's target: <pad> <extra_id_0> word ...
                sentinel = tokenizer.convert_tokens_to_ids("<extra_id_0>")
                assert enc.input_ids.count(sentinel) == 1 and tokenizer.mask_token_id not in enc.input_ids
                target = [model.config.decoder_start_token_id, sentinel, *word[:-1]]
                logits = model(input_ids=torch.tensor([enc.input_ids]), decoder_input_ids=torch.tensor([target])).logits
                log_probs = logits[0].log_softmax(-1)
                scores.append(sum(log_probs[1 + j, w] for j, w in enumerate(word)))
            else:
                ids = torch.tensor([enc.input_ids + word[:-1]])
                log_probs = model(ids).logits[0].log_softmax(-1)
                start = enc.mask_positions[0]
                scores.append(sum(log_probs[start + j, w] for j, w in enumerate(word)))
        rows.append(torch.stack(scores))
    return torch.stack(rows)


def fast_and_reference(model: str, *overrides: str) -> tuple[torch.Tensor, torch.Tensor]:
    method = build_method("method=pet", f"model={model}", *overrides).eval()
    examples = toy_examples(4)
    with torch.no_grad():
        fast = method(collate(method.encode(examples), method.backbone.tokenizer.pad_token_id))
        return fast, reference_word_scores(method, examples)


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_llama", "tiny_t5"])
def test_multi_token_scores_match_reference(model):
    assert build_method("method=pet", f"model={model}", MULTI_TOKEN).head.verbalizer.max_tokens > 1
    fast, slow = fast_and_reference(model, MULTI_TOKEN)
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_llama", "tiny_t5"])
def test_single_token_label_logits_give_the_reference_class_probabilities(model):
    fast, slow = fast_and_reference(model)  # the label words alone, without the vocabulary's normaliser
    torch.testing.assert_close(fast.log_softmax(-1), slow.log_softmax(-1), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(fast, slow)


def test_label_reductions():
    class Tok:
        unk_token_id = None

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [len(text)]}

    scores = torch.tensor([[-1.0, -3.0, -2.0]])  # words: a, bb (label 0), ccc (label 1)
    make = lambda reduce: Verbalizer({"x": ["a", "bb"], "y": ["ccc"]}, ["x", "y"], Tok(), False, reduce)  # noqa: E731
    assert make("mean").label_scores(scores).tolist() == [[-2.0, -2.0]]
    assert make("max").label_scores(scores).tolist() == [[-1.0, -2.0]]
    expected = torch.tensor([-1.0, -3.0]).logsumexp(0).item()
    assert make("logsumexp").label_scores(scores)[0, 0].item() == pytest.approx(expected)


@pytest.mark.parametrize(
    "verbalizer, message",
    [
        ("{negative:[''],positive:[good]}", "method.verbalizer=.* is invalid; allowed: null, auto or {label: "),
        ("{negative:[],positive:[good]}", "method.verbalizer=.* is invalid"),
        ("{negative:[bad]}", "differ from the dataset's labels"),
        ("{negative:['\u2603\u2604'],positive:[good]}", "unknown to the tokenizer"),
    ],
)
def test_verbalizer_errors(verbalizer, message):
    with pytest.raises(UserError, match=message):
        build_method("method=pet", "model=tiny_bert", f"method.verbalizer={verbalizer}")


def test_mlm_head_missing_is_a_clear_error():
    with pytest.raises(UserError, match="no LM head"):
        build_method("method=pet", "model=minilm_l6")
