"""Sequence labelling (dataset.task: token_classification): word alignment, the tag head on tiny models,
seqeval's strict entity metrics, the offline NER corpora, the CLI end to end (train, eval run=, report) and the
methods that stop with one line."""

import csv
import json

import pytest
import torch
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2, IOBES

from prompttune import cli
from prompttune.commands import report
from prompttune.data.tagging import tag_names, tagged_example
from prompttune.methods.tagging import first_subtoken_positions
from prompttune.prompts.encoding import IGNORED, collate
from prompttune.training.loop import predict
from prompttune.training.metrics import gold_labels, task_metrics
from prompttune.training.tagging_metrics import bootstrap_f1_interval, seqeval_names, tagging_evaluation
from tests.helpers import build_method, compose_config
from tests.test_cli import prompttune

BIO = tag_names(["PER", "LOC"], "bio")  # O, B-PER, I-PER, B-LOC, I-LOC


def one_hot(rows: list[list[int]], n_tags: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(rows), n_tags).float()


def padded(rows: list[list[int]]) -> torch.Tensor:
    width = max(map(len, rows))
    return torch.tensor([row + [IGNORED] * (width - len(row)) for row in rows])


# --- schemes and metrics ---------------------------------------------------------------------------------


def test_bmes_is_scored_as_iobes():
    names, scheme = seqeval_names(tag_names(["PER", "ORG"], "bmes"))
    assert scheme == "IOBES" and names == ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-ORG", "I-ORG", "E-ORG", "S-ORG"]
    assert seqeval_names(BIO) == (BIO, "IOB2")


def test_entity_metrics_match_seqeval_strict_on_a_hand_made_case():
    gold = [[1, 2, 0, 3], [0, 1, 2, 2, 0, 3, 4], [3, 0]]
    guess = [[1, 2, 0, 0], [0, 1, 2, 0, 0, 3, 4], [4, 0]]  # a span cut short; I-LOC with no B: no entity (strict)
    metrics = tagging_evaluation(one_hot([g + [0] * (7 - len(g)) for g in guess], 5), padded(gold), BIO)
    truth = [[BIO[t] for t in row] for row in gold]
    predicted = [[BIO[t] for t in row] for row in guess]
    strict = {"mode": "strict", "scheme": IOB2}
    assert metrics["f1"] == pytest.approx(f1_score(truth, predicted, **strict))
    assert metrics["precision"] == pytest.approx(precision_score(truth, predicted, **strict)) == 2 / 3
    assert metrics["recall"] == pytest.approx(recall_score(truth, predicted, **strict)) == 2 / 5
    by_type = classification_report(truth, predicted, output_dict=True, **strict)
    for kind in ("PER", "LOC"):
        assert metrics["per_type"][kind]["f1"] == pytest.approx(by_type[kind]["f1-score"])
        assert metrics["per_type"][kind]["support"] == by_type[kind]["support"]
    assert metrics["macro_f1"] == pytest.approx(by_type["macro avg"]["f1-score"])
    assert metrics["accuracy"] == pytest.approx(10 / 13)  # tokens
    assert metrics["n"] == 3 and metrics["n_words"] == 13 and metrics["n_entities"] == 5
    low, high = metrics["f1_ci"]
    assert 0 <= low <= metrics["f1"] <= high <= 1


def test_bmes_metrics_and_words_the_model_never_saw():
    names = tag_names(["PER"], "bmes")  # O B M E S
    gold = padded([[1, 2, 3, 0, 4], [4, 0]])
    logits = one_hot([[1, 2, 3], [4, 0, 0]], 5)  # sentence 0 cut after 3 words: its S-PER is predicted O
    metrics = tagging_evaluation(logits, gold, names)
    truth, predicted = (
        [["B-PER", "I-PER", "E-PER", "O", "S-PER"], ["S-PER", "O"]],
        [["B-PER", "I-PER", "E-PER", "O", "O"], ["S-PER", "O"]],
    )
    assert metrics["f1"] == pytest.approx(f1_score(truth, predicted, mode="strict", scheme=IOBES))
    assert metrics["recall"] == pytest.approx(2 / 3) and metrics["accuracy"] == pytest.approx(6 / 7)


def test_the_bootstrap_over_sentences_is_fixed_and_brackets_the_f1():
    counts = torch.tensor([[1, 1, 2], [0, 1, 1], [2, 2, 2], [1, 2, 1]])
    assert bootstrap_f1_interval(counts) == bootstrap_f1_interval(counts)
    low, high = bootstrap_f1_interval(counts)
    assert low < 2 * 4 / (6 + 6) < high
    assert bootstrap_f1_interval(torch.zeros(0, 3)) == (0.0, 0.0)


def test_tagging_selects_checkpoints_on_entity_f1():
    assert task_metrics("token_classification").selection == "f1"
    assert task_metrics("classification").selection == "accuracy"


# --- alignment and the tag head ---------------------------------------------------------------------------


def test_first_subtoken_positions():
    # words 0 (2 pieces), 1 (no token), 2, 3 (cut off after one piece)
    assert first_subtoken_positions([None, 0, 0, 2, 3], offset=1) == (2, -1, 4, 5)
    assert first_subtoken_positions([], offset=3) == ()


SENTENCES = [
    tagged_example("s0", ["Peter", "Blackburnshire", "visited", "Paris"], [1, 2, 0, 3]),
    tagged_example("s1", ["Hi", "!"], [0, 0]),
]


@pytest.mark.parametrize("method", ["finetune", "ptuning_v2", "prompt_tuning"])
@pytest.mark.parametrize("model", ["tiny_bert", "tiny_llama"])
def test_the_tag_head_scores_each_word_on_its_first_subtoken(method, model):
    tagger = build_method(f"method={method}", f"model={model}", "dataset=wnut16")
    encoded = tagger.encode(SENTENCES)
    tokenizer = tagger.backbone.tokenizer
    for sentence, row in zip(SENTENCES, encoded, strict=True):
        assert len(row.word_positions) == len(sentence.tokens)  # every word fits
        firsts = [tokenizer.decode([row.input_ids[p]]).strip().lower() for p in row.word_positions]
        assert all(word.lower().startswith(first) for word, first in zip(sentence.tokens, firsts, strict=True))
        assert len(row.soft_positions) == (tagger.cfg.n_tokens if method == "prompt_tuning" else 0)
    batch = collate(encoded, tagger.pad_token_id)
    assert batch["labels"].tolist() == [[1, 2, 0, 3], [0, 0, IGNORED, IGNORED]]
    logits = tagger(batch)
    assert logits.shape == (2, 4, len(tag_names(compose_config("dataset=wnut16").dataset.labels, "bio")))
    assert (logits[1, 2:] == 0).all()  # no word there: tag 0, O
    loss = tagger.training_loss(batch)
    loss.backward()
    trained = [n for n, p in tagger.named_parameters() if p.grad is not None]
    assert any(n.startswith("head.") for n in trained)
    if method != "finetune":  # the backbone stays frozen: only the head and the prompts learn
        assert all(n.startswith(("head.", "soft_embeddings", "kv_prefixes")) for n in trained)


def test_words_past_max_length_are_left_out_and_predicted_o():
    tagger = build_method("method=finetune", "model=tiny_bert", "dataset=wnut16", "model.max_length=8")
    long = tagged_example("long", [f"w{i}" for i in range(20)], [3] + [0] * 19)
    encoded = tagger.encode([long, SENTENCES[1]])
    assert len(encoded[0].word_positions) < 20 and len(encoded[0].input_ids) <= 8
    cfg = compose_config("trainer.device=cpu").trainer
    logits = predict(tagger, encoded, cfg, torch.device("cpu"))
    gold = gold_labels(encoded)
    assert gold.shape == (2, 20) and logits.shape[1] == len(encoded[0].word_positions)
    metrics = task_metrics("token_classification").test(logits, gold, tagger.task.labels)
    assert metrics["n_words"] == 22


def test_a_run_learns_a_toy_tagging_task():
    """A few steps of fine-tuning separate two words tagged differently (the loss falls)."""
    tagger = build_method("method=finetune", "model=tiny_bert", "dataset=wnut16")
    toy = [
        tagged_example(f"t{i}", ["paris", "is", "big"] if i % 2 else ["peter", "is", "big"], [3 if i % 2 else 1, 0, 0])
        for i in range(8)
    ]
    batch = collate(tagger.encode(toy), tagger.pad_token_id)
    optimizer = torch.optim.AdamW([p for p in tagger.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(15):
        loss = tagger.training_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 2


# --- the offline corpora ---------------------------------------------------------------------------------


def test_the_offline_ner_corpora_load():
    from prompttune.data import load_corpus

    wnut = load_corpus(compose_config("dataset=wnut16").dataset)
    assert len(wnut.train) + len(wnut.test) == 2394 and len(wnut.test) == round(0.2 * 2394)
    msra = load_corpus(compose_config("dataset=msra_ner").dataset)
    assert (len(msra.train), len(msra.test)) == (50289, 5000)
    names = tag_names(["PER", "LOC", "ORG"], "bmes")
    assert [names[t] for t in msra.test[0].tags][:3] and all(len(token) >= 1 for token in msra.test[0].tokens)


# --- the command line ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["method=pet"], "method=pet cannot run on dataset wnut16, a token_classification dataset"),
        (["method=tfidf"], "use method=finetune, prompt_tuning or ptuning_v2"),
        (["method=icl"], "method=icl cannot run"),
        (["method=finetune", "method.calibration=contextual"], "method.calibration=contextual is invalid"),
        (["method=prompt_tuning", "method.verbalizer=auto"], "method.verbalizer=auto is invalid"),
        (["method=finetune", "dataset.tag_scheme=bmes"], "dataset.tag_scheme=bmes is invalid; allowed: bio"),
        (["method=finetune", "shots=0"], "shots=0 is invalid; allowed: a whole number >= 1, or all"),
    ],
)
def test_what_cannot_tag_stops_with_one_line_and_writes_nothing(args, message, tmp_path, capsys):
    assert cli.main(["train", "dataset=wnut16", *args, f"hydra.run.dir={tmp_path / 'run'}"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]
    assert not (tmp_path / "run").exists()


def test_shots_all_is_for_tagging_datasets_only(capsys):
    assert cli.main(["train", "dataset=mr", "shots=all"]) == 2
    assert "shots=all is invalid; allowed: a whole number >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_pet_on_wnut16_is_one_line_exit_2(tmp_path):
    result = prompttune("train", "method=pet", "dataset=wnut16", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        "error: method=pet cannot run on dataset wnut16, a token_classification dataset (a tag for every word, which "
        "only a tag head on a language model gives): use method=finetune, prompt_tuning or ptuning_v2"
    ]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_tagging_runs_train_eval_reproduces_and_report_leads_with_entity_f1(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["dataset=wnut16", "shots=4", "trainer.max_steps=2", "dataset.test_size=16", "seed=13,21"]
    methods = "method=finetune,ptuning_v2,prompt_tuning"
    done = prompttune("train", "-m", methods, "model=tiny_llama", *args, f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr
    runs = sorted(sweep.glob("*/metrics.json"))
    assert len(runs) == 6
    for path in runs:
        metrics = json.loads(path.read_text())
        assert metrics["status"] == "completed" and metrics["shots"] == 4
        test = metrics["test"]
        assert {"f1", "f1_ci", "precision", "recall", "accuracy", "per_type", "macro_f1"} <= set(test)
        assert test["f1_ci"][0] <= test["f1"] <= test["f1_ci"][1] and test["n"] == 16
        predictions = [json.loads(line) for line in (path.parent / "predictions.jsonl").read_text().splitlines()]
        assert len(predictions) == 16 and all(len(p["predicted"]) == len(p["tokens"]) for p in predictions)
    for trained in (sweep / "0", sweep / "2", sweep / "4"):  # finetune, ptuning_v2, prompt_tuning (seed 13)
        evaluated = prompttune("eval", f"run={trained}", f"hydra.run.dir={tmp_path / trained.name}")
        assert evaluated.returncode == 0, evaluated.stderr
        again = json.loads((tmp_path / trained.name / "metrics.json").read_text())
        first = json.loads((trained / "metrics.json").read_text())
        assert again["test"] == first["test"] and again["dev"] == first["dev"], first["method"]
        predictions = (tmp_path / trained.name / "predictions.jsonl").read_text()
        assert predictions == (trained / "predictions.jsonl").read_text()

    assert report.main([str(sweep)]) == 0
    written = json.loads((sweep / "report.json").read_text())
    (comparison,) = written["comparisons"]
    assert comparison["metric"] == "f1" and len(comparison["paired_tests"]) == 6
    assert "entity F1" in (sweep / "report.md").read_text()
    rows = list(csv.DictReader((sweep / "report.csv").open()))
    assert rows and all(0 <= float(row["test_f1_mean"]) <= 1 for row in rows)


@pytest.mark.slow
def test_shots_all_trains_on_the_whole_pool(tmp_path):
    run = tmp_path / "run"
    args = ["dataset=wnut16", "method=finetune", "model=tiny_bert", "shots=all", "trainer.max_steps=1"]
    done = prompttune("train", *args, "dataset.test_size=8", f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr
    counts = json.loads((run / "splits.json").read_text())["counts"]
    assert counts["train"] + counts["dev"] <= 2394 - 479 and counts["dev"] == round(
        0.1 * (counts["train"] + counts["dev"])
    )
    assert json.loads((run / "metrics.json").read_text())["shots"] == "all"
