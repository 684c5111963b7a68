"""Fact probing (dataset.task: fact_probing): the relations read from gensim's analogy questions, the single-token
filter on SmolLM2's tokenizer, the fixed split, P@1/P@10/MRR, the answer head on a tiny model, the CLI end to end
(train, eval run= reproduces, report leads with P@1) and the one-line errors."""

import csv
import json

import pytest
import torch
from omegaconf import OmegaConf

from prompttune import cli
from prompttune.commands import report
from prompttune.data import facts
from prompttune.data.load import load_splits
from prompttune.data.local import read_local_facts
from prompttune.errors import UserError
from prompttune.methods.probing import single_token_ids
from prompttune.models.loading import load_tokenizer
from prompttune.prompts.encoding import collate
from prompttune.training.metrics import task_metrics
from prompttune.training.probing_metrics import answer_ranks
from tests.helpers import build_method, compose_config
from tests.test_cli import prompttune

RELATIONS = ("facts_capital", "facts_city_state", "facts_currency", "facts_nationality")


def smollm2_tokenizer():
    return load_tokenizer(compose_config("model=tiny_llama").model)  # tiny_llama reads with SmolLM2's tokenizer


# --- the data ------------------------------------------------------------------------------------------


def test_the_relations_hold_the_issues_counts_of_unique_facts():
    counts = {name: len(facts.read_facts(name)) for name in RELATIONS}
    assert counts == {"facts_capital": 116, "facts_city_state": 68, "facts_currency": 30, "facts_nationality": 41}
    assert ("Greece", "Athens") in facts.read_facts("facts_capital")  # the country is the subject
    assert ("Chicago", "Illinois") in facts.read_facts("facts_city_state")
    assert ("Japan", "yen") in facts.read_facts("facts_currency")
    assert ("France", "French") in facts.read_facts("facts_nationality")
    assert len(facts.objects_of(facts.read_facts("facts_city_state"))) == 27  # states repeat; Glendale is in two
    assert len(facts.objects_of(facts.read_facts("facts_currency"))) == 28  # peso and dollar twice


def test_single_token_objects_on_smollm2s_tokenizer():
    tokenizer = smollm2_tokenizer()
    ids = single_token_ids(["Athens", "Abuja", "French", "hryvnia"], tokenizer, space_before=True)
    assert ids[0] == tokenizer(" Athens", add_special_tokens=False)["input_ids"][0] and ids[2] >= 0
    assert ids[1] == ids[3] == -1  # more than one token
    kept = {}
    for name in RELATIONS:
        objects = facts.objects_of(facts.read_facts(name))
        one_token = dict(zip(objects, single_token_ids(objects, tokenizer, True), strict=True))
        kept[name] = sum(one_token[obj] >= 0 for _, obj in facts.read_facts(name))
    assert kept == {"facts_capital": 37, "facts_city_state": 68, "facts_currency": 7, "facts_nationality": 36}


def test_the_split_is_fixed_sized_by_rule_and_shots_draws_training_facts():
    assert facts.split_sizes(37) == (10, 7, 20)  # test raised to 20
    assert facts.split_sizes(68) == (27, 14, 27)  # 40/20/40
    assert facts.split_sizes(7) == (2, 1, 4) and facts.split_sizes(3) == (1, 1, 1)
    dataset = compose_config("dataset=facts_city_state").dataset
    a, b = load_splits(dataset, 8, 13), load_splits(dataset, 8, 21)
    assert a.test == b.test and a.dev == b.dev and len(a.train) == 8 and a.train != b.train  # only train moves
    assert {e.guid for e in a.train} <= {e.guid for e in load_splits(dataset, "all", 13).train}
    assert a.facts == {"relation": "facts_city_state", "facts": 68, "single_token": 68, "train_pool": 27} | {
        "train": 8,
        "dev": 14,
        "test": 27,
    }


# --- the metrics ---------------------------------------------------------------------------------------


def test_p_at_1_p_at_10_and_mrr_on_a_hand_made_case():
    scores = torch.zeros(4, 12)
    scores[0, 3] = 5.0  # the answer first
    scores[1, :2] = torch.tensor([9.0, 8.0])  # third: two tokens above it
    scores[1, 5] = 1.0
    scores[2] = torch.arange(12.0)  # answer 0 is last of 12
    scores[3, 7] = 2.0  # a tie at the top: the lower index (4) ranks first
    scores[3, 4] = 2.0
    answers = torch.tensor([3, 5, 0, 4])
    assert answer_ranks(scores, answers).tolist() == [1, 3, 12, 1]
    metrics = task_metrics("fact_probing").test(scores, answers, [])
    assert metrics["p_at_1"] == metrics["accuracy"] == 0.5 and metrics["p_at_10"] == 0.75
    assert metrics["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 12 + 1) / 4)
    low, high = metrics["p_at_1_ci"]
    assert 0 < low < 0.5 < high < 1 and metrics["n"] == 4 and metrics["candidates"] == 12
    assert task_metrics("fact_probing").selection == "p_at_1"


# --- the head ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["pet", "prompt_tuning", "ptuning_v1", "ptuning_v2"])
def test_the_answer_head_scores_the_vocabulary_at_the_mask(method):
    prober = build_method(f"method={method}", "model=tiny_llama", "dataset=facts_capital")
    tokenizer = prober.backbone.tokenizer
    fact = next(
        e for e in facts.fact_examples("facts_capital", facts.read_facts("facts_capital")) if e.text_a == "Greece"
    )
    (encoded,) = prober.encode([fact])
    assert encoded.label == tokenizer(" Athens", add_special_tokens=False)["input_ids"][0]
    text = tokenizer.decode([i for p, i in enumerate(encoded.input_ids) if p not in encoded.soft_positions])
    assert text.endswith("The capital of Greece is")
    scores = prober(collate([encoded], prober.pad_token_id))
    assert scores.shape == (1, len(tokenizer)) and scores.dtype == torch.float32
    loss = prober.training_loss(collate([encoded], prober.pad_token_id))
    assert loss.item() == pytest.approx(-scores.log_softmax(-1)[0, encoded.label].item(), rel=1e-4)


def test_relation_candidates_score_only_the_relations_one_token_objects():
    prober = build_method(
        "method=ptuning_v1", "model=tiny_llama", "dataset=facts_capital", "dataset.candidates=relation"
    )
    fact = next(
        e for e in facts.fact_examples("facts_capital", facts.read_facts("facts_capital")) if e.text_a == "Greece"
    )
    (encoded,) = prober.encode([fact])
    scores = prober(collate([encoded], prober.pad_token_id))
    assert scores.shape == (1, 37) and prober.head.answer_text([encoded.label]) == ["Athens"]


# --- the command line ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["method=finetune"], "method=finetune cannot run on dataset facts_capital, a fact_probing dataset"),
        (["method=tfidf"], "use method=pet, prompt_tuning, ptuning_v1 or ptuning_v2"),
        (["method=icl"], "method=icl cannot run"),
        (["method=pet", "method.mode=ensemble"], "method.mode=ensemble is invalid; allowed: single on a fact_probing"),
        (["method=prompt_tuning", "method.verbalizer=auto"], "method.verbalizer=auto is invalid"),
        (["method=pet", "dataset.labels=[a,b]"], "dataset.labels=['a', 'b'] is invalid"),
        (["method=pet", "shots=0"], "shots=0 is invalid"),
    ],
)
def test_what_cannot_probe_stops_with_one_line_and_writes_nothing(args, message, tmp_path, capsys):
    assert cli.main(["train", "dataset=facts_capital", *args, f"hydra.run.dir={tmp_path / 'run'}"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], errors
    assert not (tmp_path / "run").exists()


def test_candidates_apply_to_fact_probing_only(capsys):
    assert cli.main(["train", "dataset=mr", "dataset.candidates=relation"]) == 2
    assert "dataset.candidates=relation is invalid" in capsys.readouterr().err


def local_facts(path, rows, *overrides):
    """The overrides of a fact-probing dataset read from a user's TSV of (country, capital) rows."""
    path.write_text("country\tcapital\n" + "".join(f"{s}\t{o}\n" for s, o in rows), encoding="utf-8")
    pattern = '[{template:"The capital of {text_a} is {mask}.",verbalizer:{}}]'
    return [
        "dataset=local", "dataset.task=fact_probing", "dataset.labels=[]", f"dataset.patterns={pattern}",
        "dataset.local.format=tsv", f"dataset.local.train={path}", "dataset.local.text_a=country",
        "dataset.local.label=capital", *overrides,
    ]  # fmt: skip


def test_a_users_facts_file_gives_the_relations_facts_and_split(tmp_path):
    rows = facts.read_facts("facts_capital")
    cfg = compose_config(*local_facts(tmp_path / "capitals.tsv", [*rows, rows[0], ("Nowhere", " ")]))
    assert facts.facts_of(cfg.dataset) == rows  # the repeat and the record without an object are left out
    objects = facts.objects_of(rows)
    token_ids = dict(zip(objects, single_token_ids(objects, smollm2_tokenizer(), True), strict=True))

    def keep(fact):
        return token_ids[objects[fact.label]] >= 0

    ours = load_splits(cfg.dataset, 4, 13, keep_fact=keep, model_name="tiny_llama")
    gensims = load_splits(compose_config("dataset=facts_capital").dataset, 4, 13, keep_fact=keep, model_name="x")
    for split in ("train", "dev", "test"):
        assert [e.text_a for e in getattr(ours, split)] == [e.text_a for e in getattr(gensims, split)]
    assert ours.facts["relation"] == str(tmp_path / "capitals.tsv") and ours.facts["test"] == 20


def test_a_relation_whose_objects_are_all_multi_token_is_one_line(tmp_path, capsys):
    rows = [("Algeria", "Supercalifragilisticexpialidocious"), ("Angola", "Antidisestablishmentarianism")]
    run = tmp_path / "run"
    args = local_facts(tmp_path / "f.tsv", rows, "method=ptuning_v1", "model=tiny_llama", f"hydra.run.dir={run}")
    assert cli.main(["train", *args]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: dataset local: 0 of its 2 facts have an object that is one token for model tiny_llama (with "
        "its leading space); fact probing needs 3 (one each for train, dev and test): choose another relation or model"
    ]
    assert not run.exists()


def test_a_facts_file_in_a_format_without_records_is_one_line(capsys):
    args = ["dataset=local", "dataset.task=fact_probing", "dataset.labels=[]", "dataset.local.format=lmbff"]
    assert cli.main(["train", *args]) == 2
    assert "dataset.local.format=lmbff is invalid" in capsys.readouterr().err


def test_the_facts_reader_itself_refuses_a_format_without_records():  # when called past the schema's check
    cfg = OmegaConf.create({"local": {"format": "conll", "train": "facts.conll"}})
    with pytest.raises(UserError, match="format=conll holds no facts: give fact probing a csv, tsv or jsonl file"):
        read_local_facts(cfg)


@pytest.mark.slow
def test_probing_runs_train_eval_reproduces_and_report_leads_with_p_at_1(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["dataset=facts_capital", "model=tiny_llama", "trainer.max_steps=2", "trainer.eval_every=1"]
    methods = "method=prompt_tuning,ptuning_v1,ptuning_v2"
    done = prompttune("train", "-m", methods, *args, f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr
    runs = sorted(sweep.glob("*/metrics.json"))
    assert len(runs) == 3
    for path in runs:
        metrics = json.loads(path.read_text())
        assert metrics["status"] == "completed" and metrics["facts"]["single_token"] == 37
        test = metrics["test"]
        assert test["n"] == 20 and test["candidates"] == 49152
        assert test["p_at_1_ci"][0] <= test["p_at_1"] <= test["p_at_1_ci"][1] and 0 < test["mrr"] <= 1
        predictions = [json.loads(line) for line in (path.parent / "predictions.jsonl").read_text().splitlines()]
        assert len(predictions) == 20 and all(len(p["top_10"]) == 10 and p["rank"] >= 1 for p in predictions)
    for trained in (sweep / "0", sweep / "1", sweep / "2"):
        evaluated = prompttune("eval", f"run={trained}", f"hydra.run.dir={tmp_path / trained.name}")
        assert evaluated.returncode == 0, evaluated.stderr
        again = json.loads((tmp_path / trained.name / "metrics.json").read_text())
        first = json.loads((trained / "metrics.json").read_text())
        assert again["test"] == first["test"] and again["dev"] == first["dev"], first["method"]
        assert again["facts"] == first["facts"]
        assert (tmp_path / trained.name / "predictions.jsonl").read_text() == (
            trained / "predictions.jsonl"
        ).read_text()
    zero_shot = prompttune("eval", "method=pet", *args[:2], f"hydra.run.dir={sweep / 'zero-shot'}")
    assert zero_shot.returncode == 0, zero_shot.stderr

    assert report.main([str(sweep)]) == 0
    (comparison,) = json.loads((sweep / "report.json").read_text())["comparisons"]
    assert comparison["metric"] == "p_at_1" and len(comparison["paired_tests"]) == 12
    assert "P@1" in (sweep / "report.md").read_text()
    rows = list(csv.DictReader((sweep / "report.csv").open()))
    assert rows and all(0 <= float(row["test_p_at_1_mean"]) <= float(row["test_mrr_mean"]) <= 1 for row in rows)
