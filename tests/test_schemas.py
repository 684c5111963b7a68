"""The schemas of the config groups: bad values, keys and types fail up front in one line; YAML files hold only
what differs from the schemas; a method's YAML carries its own trainer budget, and the command line wins."""

import dataclasses
import subprocess
import sys
from enum import Enum
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from prompttune.cli import check_overrides, main
from prompttune.config.logger import LOGGER_SCHEMAS
from prompttune.config.run import RunConfig, validate
from prompttune.data.config import DatasetConfig
from prompttune.methods import METHODS
from prompttune.models.config import ModelConfig
from prompttune.paths import CONFIG_DIR
from prompttune.training.config import TrainerConfig
from prompttune.training.loop import make_optimizer, train
from tests.helpers import build_method, compose_config, toy_examples

BAD_INPUTS = [
    # values of choice keys (Enums)
    (["method.calibration=platt"], "method.calibration=platt is invalid; allowed: none, contextual"),
    (["method.head=mlp"], "method.head=mlp is invalid; allowed: verbalizer, linear"),
    (["method.verbalizer_reduce=median"], "method.verbalizer_reduce=median is invalid; allowed: mean, max, logsumexp"),
    (["model.kind=x"], "model.kind=x is invalid; allowed: mlm, causal, encoder, encoder_decoder, auto"),
    (["model.source=x"], "model.source=x is invalid; allowed: hub, package_folder, gguf_package, gguf_parts, tiny"),
    (["trainer.precision=fp8"], "trainer.precision=fp8 is invalid; allowed: fp32, bf16, auto"),
    (["trainer.optimizer=sgd"], "trainer.optimizer=sgd is invalid; allowed: adamw, adafactor"),
    (["trainer.device=gpu"], "trainer.device=gpu is invalid; allowed: auto, cpu, cuda, cuda:N"),
    (["method=ptuning_v1", "method.encoder=gru"], "method.encoder=gru is invalid; allowed: lstm, mlp"),
    (["method=ptuning_v2", "method.init=text"], "method.init=text is invalid; allowed: vocab, random"),
    (["dataset.source=ftp"], "dataset.source=ftp is invalid; allowed: package, hub, local"),
    (["dataset=local", "dataset.local.format=xlsx"], "dataset.local.format=xlsx is invalid; allowed: csv, tsv"),
    # ranges
    (["trainer.lr=-1"], "trainer.lr=-1.0 is invalid; allowed: a finite number >= 0"),
    (["trainer.lr=nan"], "trainer.lr=nan is invalid; allowed: a finite number >= 0"),
    (["trainer.warmup_ratio=2"], "trainer.warmup_ratio=2.0 is invalid; allowed: a finite number >= 0 and <= 1"),
    (["trainer.max_steps=0"], "trainer.max_steps=0 is invalid; allowed: a whole number >= 1"),
    (["trainer.eval_every=-5"], "trainer.eval_every=-5 is invalid; allowed: a whole number >= 1"),
    (["shots=0"], "shots=0 is invalid; allowed: a whole number >= 1"),
    (["seed=-1"], "seed=-1 is invalid; allowed: a whole number >= 0"),
    (["method.pattern_id=-1"], "method.pattern_id=-1 is invalid; allowed: a whole number >= 0"),
    (["method=prompt_tuning", "method.n_tokens=0"], "method.n_tokens=0 is invalid; allowed: a whole number >= 1"),
    (["dataset.test_size=0"], "dataset.test_size=0 is invalid; allowed: a whole number >= 1"),
    (["model.max_length=2"], "model.max_length=2 is invalid; allowed: a whole number >= 8"),
    (["dataset.labels=[a]"], "dataset.labels=['a'] is invalid; allowed: two or more label names"),
    # types
    (["seed=abc"], "seed=abc is invalid; allowed: a whole number"),
    (["seed=1.5"], "seed=1.5 is invalid; allowed: a whole number"),
    (["method.freeze_backbone=maybe"], "method.freeze_backbone=maybe is invalid; allowed: true or false"),
    (["trainer.max_steps=many"], "trainer.max_steps=many is invalid; allowed: a whole number or null"),
    (["method.verbalizer=[good,bad]"], "method.verbalizer=['good', 'bad'] is invalid; allowed: null, auto or {label"),
    # rules between keys
    (["method=prompt_tuning", "method.init=text"], "method.init_text=null is invalid; allowed: some text when"),
    (["method.freeze_backbone=true", "method.head=linear"], "method.head=linear is invalid; allowed: verbalizer with"),
    (["model=tiny_bert", "model.kind=auto"], "model.kind=auto is invalid; allowed: mlm, causal, encoder, encoder_"),
    (["model=hub"], "model.name_or_path=null is invalid; allowed: a value: model.source=hub needs"),
    (["method=finetune", "method.calibration=contextual"], "method.calibration=contextual is invalid; allowed: none"),
    (["method.demonstrations=true", "method.head=linear"], "method.head=linear is invalid; allowed: verbalizer with"),
    (["method=icl", "method.head=linear"], "method.head=linear is invalid; allowed: verbalizer (method=icl"),
    (["method=tfidf", "method.c_grid=[1,-1]"], "method.c_grid=[1.0, -1.0] is invalid; allowed: a non-empty list"),
    (["method=tfidf", "method.c_grid=[]"], "method.c_grid=[] is invalid; allowed: a non-empty list"),
    (["method.verbalizer=best"], "method.verbalizer=best is invalid; allowed: null, auto or {label"),
    # paradigms' and report's keys
    (["method=icl", "method.selection=best"], "method.selection=best is invalid; allowed: random, similar"),
    (["method=icl", "method.demos_per_class=-1"], "method.demos_per_class=-1 is invalid; allowed: a whole number >= 0"),
    (["method=icl", "method.max_length=0"], "method.max_length=0 is invalid; allowed: a whole number >= 1"),
    (["method=tfidf", "method.max_iter=0"], "method.max_iter=0 is invalid; allowed: a whole number >= 1"),
    (["method.auto_candidates=0"], "method.auto_candidates=0 is invalid; allowed: a whole number >= 1"),
    (["method.calibrate_dev=sometimes"], "method.calibrate_dev=sometimes is invalid; allowed: true or false"),
    (["logger=mlflow", "logger.log_checkpoint=x"], "logger.log_checkpoint=x is invalid; allowed: true or false"),
    (["logger=none", "logger.dir=x"], "logger.dir is not a config key; allowed keys here: name"),
    # PET's auxiliary LM loss, ensemble and iPET keys
    (["method.mode=bagging"], "method.mode=bagging is invalid; allowed: single, ensemble, ipet"),
    (["method.ensemble_weights=train"], "method.ensemble_weights=train is invalid; allowed: dev, train_before, unif"),
    (["method.distill_into=tfidf"], "method.distill_into=tfidf is invalid; allowed: finetune, pet"),
    (["method.lm_weight=1.5"], "method.lm_weight=1.5 is invalid; allowed: a number in [0, 1)"),
    (["method.lm_weight=-1"], "method.lm_weight=-1.0 is invalid; allowed: a finite number >= 0"),
    (["method.temperature=0"], "method.temperature=0.0 is invalid; allowed: a finite number > 0"),
    (["method.unlabeled_size=-1"], "method.unlabeled_size=-1 is invalid; allowed: a whole number >= 0"),
    (["method.ipet_share=1.5"], "method.ipet_share=1.5 is invalid; allowed: a finite number > 0 and <= 1"),
    (["method.ipet_scale=0.5"], "method.ipet_scale=0.5 is invalid; allowed: a finite number >= 1"),
    (["method.ipet_generations=0"], "method.ipet_generations=0 is invalid; allowed: a whole number >= 1"),
    (["method.distill_steps=0"], "method.distill_steps=0 is invalid; allowed: a whole number >= 1"),
    (["method.ensemble_patterns=[]"], "method.ensemble_patterns=[] is invalid; allowed: null or a non-empty list"),
    (["-m", "method.mode=single,ipet", "method.ipet_share=0"], "method.ipet_share=0.0 is invalid"),
    # keys
    (["trainer.nope=1"], "trainer.nope is not a config key; allowed keys here: max_steps, epochs"),
    (["method.n_tokens=3"], "method.n_tokens is not a config key; allowed keys here: name, head"),
    (["dataset.nope=1"], "dataset.nope is not a config key; allowed keys here: name, source, labels"),
    (["model.nope=1"], "model.nope is not a config key; allowed keys here: name, source, kind"),
    (["method=nope"], "method 'nope' is unknown; choose one of: bilstm, finetune, icl, pet"),
    (["method=bilstm", "method.vectors=fasttext"], "method.vectors=fasttext is invalid; allowed: glove, zh_word2vec"),
    (
        ["method=bilstm", "model=minilm_l6"],
        "method=bilstm loads no language model, so model=minilm_l6 would be ignored",
    ),
    (["method=tfidf", "model.max_length=64"], "method=tfidf loads no language model, so model.max_length=64 would be"),
    # every job of a sweep is checked before the first starts
    (["-m", "method=pet,finetune", "trainer.batch_size=0"], "trainer.batch_size=0 is invalid; allowed: a whole"),
    (["-m", "seed=13,abc"], "seed=abc is invalid; allowed: a whole number"),
    (["-m", "trainer.lr=1e-5,-1e-5"], "trainer.lr=-1e-05 is invalid; allowed: a finite number >= 0"),
    (["-m", "method=pet,prompt_tuning", "method.n_tokens=5"], "method.n_tokens is not a config key"),
    (["-m", "method=prompt_tuning,ptuning_v1", "method.init=random"], "method.init is not a config key"),
]


@pytest.mark.parametrize("args, expected", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_before_anything_is_written(args, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *args]) == 2
    out, err = capsys.readouterr()
    assert err.splitlines() == [err.strip()] and err.startswith("error: "), err
    assert expected in err, err
    assert "Traceback" not in out + err
    assert not any(tmp_path.iterdir())  # no run dir, no sweep dir


def prompttune(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prompttune", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, expected",
    [
        (["train", "seed=abc"], "error: seed=abc is invalid; allowed: a whole number"),
        (["train", "-m", "method=pet,finetune", "trainer.batch_size=0"], "error: trainer.batch_size=0 is invalid"),
        (["eval", "method.calibration=platt"], "error: method.calibration=platt is invalid; allowed: none, contextual"),
    ],
)
def test_bad_input_through_the_command_line(args, expected, tmp_path):
    result = prompttune(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()] and expected in result.stderr, result.stderr
    assert not any(tmp_path.iterdir())


def test_a_valid_sweep_passes_the_check():
    check_overrides("train", ["-m", "method=pet,prompt_tuning", "seed=13,21", "trainer.optimizer=adafactor"])


def test_saved_config_round_trips_through_the_schema():
    """A run's checkpoint/config.yaml (plain YAML, Enums as names) validates again for `eval run=`."""
    cfg = compose_config("method=ptuning_v2", "trainer.precision=bf16")
    reloaded = OmegaConf.create(OmegaConf.to_yaml(cfg, resolve=True))
    validate(reloaded)
    assert reloaded.trainer.precision == "bf16" and cfg.trainer.precision == "bf16"  # Enums compare as text


SCHEMA_OF = {"model": ModelConfig, "dataset": DatasetConfig, "trainer": TrainerConfig}


def redundant_keys(node: dict, schema: type, where: str) -> list[str]:
    """Keys of a YAML node whose value equals the schema's default (nested schema nodes checked too)."""
    found = []
    for f in dataclasses.fields(schema):
        if f.name not in node:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        value = node[f.name]
        if isinstance(default, Enum):
            default = default.value
        if dataclasses.is_dataclass(default) or (isinstance(value, dict) and f.name in ("hub", "local", "tokenizer")):
            inner = type(default) if dataclasses.is_dataclass(default) else _optional_schema(schema, f.name)
            found += redundant_keys(value, inner, f"{where}.{f.name}")
        elif value == default and default is not dataclasses.MISSING:
            found.append(f"{where}.{f.name}")
    return found


def _optional_schema(schema: type, name: str) -> type:
    import typing

    hint = typing.get_type_hints(schema)[name]
    return next(a for a in typing.get_args(hint) if dataclasses.is_dataclass(a))


SHIPPED = [
    (group, p)
    for group in ("method", "model", "dataset", "trainer", "logger")
    for p in sorted((CONFIG_DIR / group).glob("*.yaml"))
]


@pytest.mark.parametrize("group, path", SHIPPED, ids=[f"{g}/{p.stem}" for g, p in SHIPPED])
def test_yaml_files_hold_only_values_that_differ_from_the_schema(group, path):
    raw = OmegaConf.to_container(OmegaConf.load(path)) or {}
    if group == "method":  # `# @package _global_`: a method block and maybe a trainer block (its budget)
        found = redundant_keys(raw["method"], METHODS[raw["method"]["name"]].config_class, "method")
        found += redundant_keys(raw.get("trainer", {}), TrainerConfig, "trainer")
    elif group == "logger":  # `# @package _global_` too: its option's schema
        found = redundant_keys(raw["logger"], LOGGER_SCHEMAS[raw["logger"]["name"]], "logger")
    else:
        found = redundant_keys(raw, SCHEMA_OF[group], group)
    assert found == []


def write_method_with_budget(config_dir: Path) -> None:
    (config_dir / "method").mkdir(parents=True)
    (config_dir / "method" / "pet_long.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - /schema/method@method: pet\n"
        "method:\n  name: pet\n  calibration: contextual\n"
        "trainer:\n  max_steps: 7\n  lr: 5.0e-4\n  optimizer: adafactor\n"
    )


def test_a_method_yaml_carries_its_trainer_budget_and_the_command_line_wins(tmp_path):
    write_method_with_budget(tmp_path)
    searchpath = f"hydra.searchpath=[file://{tmp_path}]"
    cfg = compose_config("method=pet_long", searchpath)
    assert (cfg.trainer.max_steps, cfg.trainer.lr, cfg.trainer.optimizer) == (7, 5.0e-4, "adafactor")
    assert cfg.trainer.batch_size == TrainerConfig().batch_size  # the rest stays the schema's
    assert cfg.method.calibration == "contextual"
    cfg = compose_config("method=pet_long", searchpath, "trainer.max_steps=3", "trainer.optimizer=adamw")
    assert (cfg.trainer.max_steps, cfg.trainer.lr, cfg.trainer.optimizer) == (3, 5.0e-4, "adamw")
    assert compose_config("method=pet_long", searchpath, "experiment=quick").trainer.max_steps == 8  # preset wins


def test_prompt_tuning_paper_budget_trains_with_adafactor():
    cfg = compose_config("experiment=paper_budgets/prompt_tuning")
    assert (cfg.method.name, cfg.trainer.optimizer, cfg.method.prompt_lr) == ("prompt_tuning", "adafactor", 0.3)
    assert compose_config("experiment=paper_budgets/pet").trainer.optimizer == "adamw"
    cfg = compose_config("experiment=paper_budgets/prompt_tuning", "trainer.optimizer=adamw")
    assert cfg.trainer.optimizer == "adamw"  # the command line still wins


@pytest.mark.slow
def test_cfg_job_shows_the_method_budget(tmp_path):
    write_method_with_budget(tmp_path / "configs")
    result = prompttune(
        "train", "--config-dir", str(tmp_path / "configs"), "method=pet_long", "--cfg", "job", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    shown = OmegaConf.create(result.stdout)
    assert shown.trainer.max_steps == 7 and shown.trainer.optimizer == "adafactor"


def test_adafactor_trains_the_prompt():
    method = build_method("method=prompt_tuning", "model=tiny_llama")
    cfg = compose_config("trainer.optimizer=adafactor", "trainer.max_steps=2", "trainer.eval_every=null").trainer
    assert isinstance(
        make_optimizer(cfg.optimizer, [{"params": [torch.nn.Parameter(torch.ones(2))]}], torch.device("cpu")),
        torch.optim.Adafactor,
    )
    before = method.soft_embeddings.detach().clone()
    encoded = method.encode(toy_examples(8))
    result = train(method, encoded, encoded, cfg, torch.device("cpu"), seed=0)
    assert result.steps == 2 and not torch.equal(before, method.soft_embeddings.detach())


def test_top_level_schema_declares_resume():
    assert RunConfig().resume is None and compose_config("resume=some/run").resume == "some/run"
