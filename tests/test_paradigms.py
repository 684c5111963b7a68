"""TF-IDF, in-context learning and LM-BFF demonstrations: the methods that receive the training examples."""

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import torch
from sklearn.linear_model import LogisticRegression

from prompttune.data.records import Example
from prompttune.errors import UserError
from prompttune.models.families import CausalLM
from prompttune.prompts import label_search
from prompttune.prompts.encoding import TemplateEncoder, collate
from prompttune.prompts.template import parse_template
from tests.helpers import build_method, toy_examples
from tests.test_cli import metrics_of, prompttune

REVIEWS = [
    ("a dull , lifeless and boring film", 0),
    ("boring plot and awful acting", 0),
    ("the worst movie of the year , dull", 0),
    ("lifeless , tedious , awful", 0),
    ("a wonderful , moving film", 1),
    ("great acting and a moving story", 1),
    ("the best movie of the year , wonderful", 1),
    ("delightful , great fun", 1),
]


def train_then_eval(tmp_path, *args: str) -> tuple[dict, Path]:
    """Train from the command line, evaluate the run with `eval run=`, and check that eval reproduces the test
    metrics; returns the training run's metrics and its dir."""
    train_dir, eval_dir = tmp_path / "train", tmp_path / "eval"
    trained = prompttune("train", *args, f"hydra.run.dir={train_dir}")
    assert trained.returncode == 0, trained.stderr
    evaluated = prompttune("eval", f"run={train_dir}", f"hydra.run.dir={eval_dir}")
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = metrics_of(train_dir)
    assert metrics_of(eval_dir)["test"] == metrics["test"]
    return metrics, train_dir


def reviews() -> list[Example]:
    return [Example(f"r-{i}", text, label) for i, (text, label) in enumerate(REVIEWS)]


def test_tfidf_replays_scikit_learn_exactly():
    method = build_method("method=tfidf", "method.c_grid=[10.0]")
    method.fit_examples(reviews(), reviews())
    queries = [Example("q0", "a boring , awful film", 0), Example("q1", "wonderful acting", 1)]
    with torch.no_grad():
        logits = method(collate(method.encode(queries), method.pad_token_id))
    texts = [e.text_a for e in reviews()]
    features = scipy.sparse.hstack([v.fit_transform(texts) for v in method.analyzers.values()]).tocsr()
    sklearn = LogisticRegression(C=10.0, max_iter=1000).fit(features, [e.label for e in reviews()])
    query_features = scipy.sparse.hstack([v.transform([q.text_a for q in queries]) for v in method.analyzers.values()])
    expected = sklearn.predict_proba(query_features.tocsr())
    assert np.allclose(logits.softmax(-1).numpy(), expected, atol=1e-5)
    assert logits.argmax(-1).tolist() == [0, 1]


def test_tfidf_uses_character_ngrams_for_chinese():
    method = build_method("method=tfidf", "dataset=chn_sentiment")
    assert list(method.analyzers) == ["char"]
    english = build_method("method=tfidf")
    assert list(english.analyzers) == ["word", "char_wb"]


def test_tfidf_chooses_c_on_dev():
    method = build_method("method=tfidf", "method.c_grid=[0.0001,100.0]")
    method.fit_examples(reviews()[:5], reviews())  # 4 negatives, 1 positive
    assert method.c == 100.0  # the tiny C predicts the majority class everywhere, half the dev set


@pytest.mark.slow
def test_tfidf_trains_evaluates_and_reproduces_without_loading_the_model(tmp_path, monkeypatch):
    # an empty model cache: the default model would be converted into it if it were loaded
    monkeypatch.setenv("PROMPTTUNE_CACHE", str(tmp_path / "cache"))
    metrics, train_dir = train_then_eval(tmp_path, "method=tfidf", "shots=4", "dataset.test_size=24")
    assert not list((tmp_path / "cache").rglob("*.safetensors"))
    assert metrics["status"] == "completed" and metrics["steps"] == 0 and metrics["test"]["n"] == 24
    fitted = json.loads((train_dir / "checkpoint/fitted.json").read_text())
    assert set(fitted["vocabulary"]) == {"word", "char_wb"} and fitted["C"] in (0.01, 0.1, 1.0, 10.0, 100.0)


def test_template_filled_with_a_label_word():
    method = build_method("method=pet", "model=tiny_llama")
    tokenizer = method.backbone.tokenizer
    encoder = TemplateEncoder(parse_template("{text_a} It was {mask}."), tokenizer, CausalLM, 64)
    example = Example("x", "a fine film", 1)
    texts = encoder.tokenize_texts([example])[0]
    word = tokenizer(" great", add_special_tokens=False)["input_ids"]
    filled = encoder.fill(texts, word, {"text_a": len(texts["text_a"])})
    assert tokenizer.decode(filled) == "a fine film It was great."
    assert len(filled) == encoder.filled_length(word) + len(texts["text_a"])


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_bert"])
def test_icl_puts_demonstrations_of_every_label_before_the_query(model):
    method = build_method("method=icl", f"model={model}", "method.demos_per_class=2")
    method.fit_examples(reviews(), reviews())
    assert sorted(e.label for e in method.fixed) == [0, 0, 1, 1]
    query = Example("q", "an odd little film", 0)
    plain = build_method("method=pet", f"model={model}").encode([query])[0]
    encoded = method.encode([query])[0]
    tail = len(plain.input_ids) - plain.mask_positions[0]
    assert encoded.input_ids[-tail:] == plain.input_ids[-tail:]  # the query, mask included, comes last
    assert encoded.mask_positions[0] == len(encoded.input_ids) - tail
    text = method.backbone.tokenizer.decode(encoded.input_ids).lower()
    for demo in method.fixed:
        assert demo.text_a.replace(" ", "") in text.replace(" ", "")
    assert text.count("was terrible.") == 2 and text.count("was great.") == 2


def test_icl_demonstrations_are_cut_never_the_query_and_the_same_before_every_query():
    args = ["model=tiny_llama", "model.max_length=20"]
    method = build_method("method=icl", *args, "method.max_length=40")
    long = [Example(f"l-{i}", " ".join(["story"] * 30), i % 2) for i in range(8)]
    method.fit_examples(long, long)
    queries = [Example("q", "a film about a trip", 1), Example("r", "a long film about a long road trip", 0)]
    plain = build_method("method=pet", *args).encode(queries)
    encoded = method.encode(queries)
    contexts = []
    for query, alone in zip(encoded, plain, strict=True):
        assert len(query.input_ids) <= 40 and query.input_ids[-len(alone.input_ids) :] == alone.input_ids
        contexts.append(query.input_ids[: -len(alone.input_ids)])
    assert contexts[0] == contexts[1] and len(contexts[0]) > 10  # one fixed prompt of demonstrations


def test_demonstration_context_must_leave_room_beside_the_query():
    with pytest.raises(UserError, match="method.max_length=20 leaves no room for demonstrations"):
        build_method("method=icl", "model=tiny_llama", "model.max_length=20", "method.max_length=20")
    with pytest.raises(UserError, match="method.demo_max_length=20 leaves no room for demonstrations"):
        build_method(
            "method=pet",
            "model=tiny_llama",
            "model.max_length=20",
            "method.demonstrations=true",
            "method.demo_max_length=20",
        )


def test_icl_nearest_demonstrations_are_the_most_similar():
    method = build_method("method=icl", "model=tiny_bert", "method.selection=similar", "method.demos_per_class=1")
    pool = reviews()
    method.fit_examples(pool, pool)
    chosen = method.demonstrations([pool[0], pool[4]])
    assert chosen[0][-1] == pool[0] and chosen[1][-1] == pool[4]  # itself, next to the query
    assert all(sorted(d.label for d in demos) == [0, 1] for demos in chosen)


def test_icl_draw_depends_on_the_seed_only():
    first = build_method("method=icl", "model=tiny_llama", "method.demos_per_class=2")
    again = build_method("method=icl", "model=tiny_llama", "method.demos_per_class=2")
    other = build_method("method=icl", "model=tiny_llama", "method.demos_per_class=2", "seed=21")
    for method in (first, again, other):
        method.fit_examples(reviews(), reviews())
    assert first.fixed == again.fixed and first.fixed != other.fixed


@pytest.mark.slow
def test_icl_writes_a_run_dir_with_zero_steps_that_eval_reproduces(tmp_path):
    args = ["method=icl", "model=tiny_llama", "shots=4", "dataset.test_size=12", "method.calibration=contextual"]
    metrics, train_dir = train_then_eval(tmp_path, *args, "method.demos_per_class=4")
    assert metrics["steps"] == 0 and metrics["params"]["trainable"] == 0
    demos = json.loads((train_dir / "checkpoint/fitted.json").read_text())["demonstrations"]
    train_guids = {r["guid"] for r in json.loads((train_dir / "splits.json").read_text())["train"]}
    assert len(demos) == 8 and set(demos) <= train_guids  # 4 per class


def test_icl_needs_the_verbalizer_head():
    with pytest.raises(UserError, match="method.head=linear is invalid; allowed: verbalizer"):
        build_method("method=icl", "model=tiny_llama", "method.head=linear")


@pytest.mark.parametrize("model, after", [("tiny_bert", True), ("tiny_llama", False)])
def test_pet_demonstrations_one_per_label_never_the_example_itself(model, after):
    method = build_method("method=pet", f"model={model}", "method.demonstrations=true")
    examples = toy_examples(8)
    method.fit_examples(examples, examples)
    drawn = method.demonstrations(examples)
    assert all(
        [d.label for d in demos] == [0, 1] and example not in demos
        for example, demos in zip(examples, drawn, strict=True)
    )
    assert drawn == method.demonstrations(examples)  # the same draw at training and at inference
    plain = build_method("method=pet", f"model={model}").encode(examples[:1])[0]
    encoded = method.encode(examples[:1])[0]
    if after:  # LM-BFF on a masked LM: the query first, its mask where it was
        assert encoded.mask_positions == plain.mask_positions
        assert encoded.input_ids[: plain.mask_positions[0] + 1] == plain.input_ids[: plain.mask_positions[0] + 1]
    else:  # a causal LM reads them before the query, which ends at the mask
        assert encoded.input_ids[-len(plain.input_ids) :] == plain.input_ids
    assert len(encoded.input_ids) > len(plain.input_ids)


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_llama"])
def test_pet_demonstrations_fit_beside_a_query_that_fills_max_length(model):
    """LM-BFF doubles the length with demonstrations: the query keeps model.max_length, they get the rest."""
    args = ["method=pet", f"model={model}", "model.max_length=24"]
    long = [Example(f"l-{i}", " ".join(["story"] * 40), i % 2) for i in range(8)]
    assert len(build_method(*args).encode(long[:1])[0].input_ids) == 24
    for extra, length in (([], 48), (["method.demo_max_length=40"], 40)):
        method = build_method(*args, "method.demonstrations=true", *extra)
        method.fit_examples(long, long)
        encoded = method.encode(long[:1])[0]
        assert len(encoded.input_ids) == length  # the query's 24 tokens and demonstrations in the rest


def test_label_search_keeps_the_assignment_that_separates_the_classes():
    # 4 examples, vocabulary of 5: token 2 is likely everywhere, tokens 1 and 3 tell the classes apart
    log_probs = torch.tensor(
        [[0, 3, 4, 0, 0], [0, 3, 4, 1, 0], [0, 0, 4, 3, 0], [0, 1, 4, 3, 0]], dtype=torch.float
    ).log_softmax(-1)
    labels = torch.tensor([0, 0, 1, 1])
    per_class = [[2, 1], [2, 3]]  # each class's likeliest tokens: the shared one first
    ranked = label_search.search(log_probs, labels, log_probs, labels, per_class, n_assignments=4)
    assert ranked[0].token_ids == (1, 3) and ranked[0].train_accuracy == ranked[0].dev_accuracy == 1.0
    assert all(len(set(a.token_ids)) == 2 for a in ranked)  # never one word for two classes


def test_label_search_candidates_are_whole_words():
    tokenizer = build_method("method=pet", "model=tiny_llama").backbone.tokenizer

    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    fragment, piece, word, han = ids("好")[0], ids("ing")[0], ids(" great")[0], ids("的")[0]
    ranked = [fragment, piece, han, word]
    assert label_search._first_whole_words(ranked, tokenizer, True, 5, cjk=False) == [word]
    assert label_search._first_whole_words(ranked, tokenizer, False, 5, cjk=True) == [han]


@pytest.mark.slow
def test_auto_verbalizer_writes_its_words_and_eval_reproduces(tmp_path):
    args = ["method=pet", "method.verbalizer=auto", "model=tiny_llama", "shots=4", "trainer.max_steps=2"]
    _, train_dir = train_then_eval(tmp_path, *args, "dataset.test_size=12", "method.auto_candidates=5")
    fitted = json.loads((train_dir / "checkpoint/fitted.json").read_text())
    words = fitted["label_words"]
    assert set(words) == {"negative", "positive"} and words["negative"] != words["positive"]
    assert all(len(c) == 5 for c in fitted["candidates"]) and fitted["top"][0]["label_words"] == words


def test_auto_verbalizer_on_chinese_picks_chinese_characters():
    method = build_method("method=pet", "method.verbalizer=auto", "model=tiny_llama", "dataset=chn_sentiment")
    examples = [Example(f"c-{i}", text, i % 2) for i, text in enumerate(["质量很差", "非常好用", "太失望了", "很满意"])]
    method.fit_examples(examples, examples)
    words = [w for ws in method.label_search["label_words"].values() for w in ws]
    assert all(label_search.is_whole_word(w, cjk=True) for w in words)
    assert method.head.verbalizer.words == words


def test_unknown_verbalizer_string_is_an_error():
    with pytest.raises(UserError, match="auto"):
        build_method("method=pet", "model=tiny_llama", "method.verbalizer=best")


def test_auto_verbalizer_is_refused_on_t5():
    with pytest.raises(UserError, match="T5"):
        method = build_method("method=pet", "model=tiny_t5", "method.verbalizer=auto")
        method.fit_examples(toy_examples(4), toy_examples(4))


@pytest.mark.slow
def test_zero_shot_eval_with_auto_verbalizer_writes_the_words(tmp_path):
    args = ["method=pet", "method.verbalizer=auto", "model=tiny_llama", "shots=4", "dataset.test_size=8"]
    result = prompttune("eval", *args, "method.auto_candidates=3", f"hydra.run.dir={tmp_path / 'eval'}")
    assert result.returncode == 0, result.stderr
    fitted = json.loads((tmp_path / "eval/checkpoint/fitted.json").read_text())
    assert set(fitted["label_words"]) == {"negative", "positive"}
