"""Damaged run files: a checkpoint, config.yaml, splits.json or metrics.json that is missing, truncated or from
another method or model gives one line naming the file and what is wrong with it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from prompttune import cli
from prompttune.errors import UserError
from prompttune.runs.jobs import completed_before, print_summary
from prompttune.runs.lifecycle import run_eval, run_train
from tests.helpers import compose_config

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY = ["model=tiny_bert", "shots=2", "trainer.max_steps=2", "dataset.test_size=8", "trainer.device=cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("trained")
    run_train(compose_config("method=prompt_tuning", *TINY), run_dir)
    return run_dir


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def evaluate(run_dir: Path):
    out = run_dir.parent / "eval"
    out.mkdir(exist_ok=True)
    return run_eval(compose_config(f"run={run_dir}", name="eval"), out, [f"run={run_dir}"])


def truncate(path: Path, size: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:size])


def other_shape_checkpoint(path: Path) -> None:
    save_file({"soft_embeddings": torch.zeros(3, 4)}, path)


def other_run_checkpoint(path: Path) -> None:
    save_file(load_file(path), path, metadata={"method": "pet", "model": "tiny_bert"})


def config_of_another_model(path: Path) -> None:
    cfg = OmegaConf.load(path)
    cfg.model = compose_config("model=tiny_llama").model
    OmegaConf.save(cfg, path)


DAMAGES = {
    "checkpoint missing": (lambda d: (d / "checkpoint/trainable.safetensors").unlink(), "safetensors is missing"),
    "checkpoint truncated": (
        lambda d: truncate(d / "checkpoint/trainable.safetensors"),
        "trainable.safetensors is damaged (truncated or not safetensors",
    ),
    "checkpoint of another shape": (
        lambda d: other_shape_checkpoint(d / "checkpoint/trainable.safetensors"),
        "trainable.safetensors was not saved by this method and model",
    ),
    "checkpoint of another run": (
        lambda d: other_run_checkpoint(d / "checkpoint/trainable.safetensors"),
        "trainable.safetensors was saved by pet on tiny_bert, not prompt_tuning on tiny_bert",
    ),
    "config missing": (lambda d: (d / "checkpoint/config.yaml").unlink(), "config.yaml is missing"),
    "config truncated": (lambda d: truncate(d / "checkpoint/config.yaml", 30), "checkpoint/config.yaml is damaged"),
    "config of another method": (
        lambda d: (d / "checkpoint/config.yaml").write_text(
            (d / "checkpoint/config.yaml").read_text().replace("name: prompt_tuning", "name: finetune", 1)
        ),
        "config.yaml is for finetune on tiny_bert but metrics.json says prompt_tuning on tiny_bert",
    ),
    "config of another model": (
        lambda d: config_of_another_model(d / "checkpoint/config.yaml"),
        "config.yaml is for prompt_tuning on tiny_llama but metrics.json says prompt_tuning on tiny_bert",
    ),
    "splits missing": (lambda d: (d / "splits.json").unlink(), "splits.json is missing"),
    "splits truncated": (lambda d: truncate(d / "splits.json", 50), "splits.json is damaged (truncated"),
    "splits of another dataset": (
        lambda d: (d / "splits.json").write_text(
            json.dumps(json.loads((d / "splits.json").read_text()) | {"labels": ["objective", "subjective"]})
        ),
        "splits.json has labels ['objective', 'subjective']",
    ),
    "metrics missing": (lambda d: (d / "metrics.json").unlink(), "is not a run directory (it has no metrics.json)"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_eval_of_a_damaged_run_names_the_file(damage, run_copy):
    do_damage, message = DAMAGES[damage]
    do_damage(run_copy)
    with pytest.raises(UserError) as error:
        evaluate(run_copy)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_truncated_metrics_file_is_named_when_a_sweep_job_runs_again(run_copy):
    truncate(run_copy / "metrics.json", 40)
    with pytest.raises(UserError, match=f"{run_copy / 'metrics.json'} is damaged"):
        completed_before(compose_config("method=prompt_tuning", *TINY), run_copy)


def test_a_completed_job_dir_of_another_config_is_refused(run_copy):
    assert completed_before(compose_config("method=prompt_tuning", *TINY), run_copy).status == "completed"
    with pytest.raises(UserError, match="holds a completed run of another config"):
        completed_before(compose_config("method=prompt_tuning", *TINY, "seed=21"), run_copy)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: shutil.rmtree(d / ".hydra"), "is not a run directory (it has no .hydra/overrides.yaml)"),
        (lambda d: truncate(d / "metrics.json", 40), "metrics.json is damaged"),
        (lambda d: (d / "metrics.json").unlink(), "metrics.json is missing; it is not a run directory"),
    ],
)
def test_resume_of_a_damaged_or_foreign_dir_is_one_line(damage, message, run_copy, capsys):
    (run_copy / ".hydra").mkdir()
    (run_copy / ".hydra/overrides.yaml").write_text("- method=prompt_tuning\n")
    damage(run_copy)
    assert cli.main(["train", f"resume={run_copy}"]) == 2
    assert message in capsys.readouterr().err


def test_resume_of_a_completed_run_says_so(run_copy, capsys):
    (run_copy / ".hydra").mkdir()
    (run_copy / ".hydra/overrides.yaml").write_text("- method=prompt_tuning\n")
    assert cli.main(["train", f"resume={run_copy}"]) == 0
    assert capsys.readouterr().out.startswith(f"{run_copy} already completed (test accuracy")


def test_a_copied_run_is_summarised_with_the_dir_it_is_in(trained, run_copy, capsys):
    metrics = json.loads((run_copy / "metrics.json").read_text())
    assert metrics["run_dir"] == str(trained)  # the record keeps the dir it was first written in
    print_summary(metrics, run_copy)
    assert capsys.readouterr().out.splitlines()[-1] == f"run dir: {run_copy}"


def test_resume_of_a_plain_dir_is_one_line(tmp_path, capsys):
    assert cli.main(["train", f"resume={tmp_path}"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: resume={tmp_path} is not a run directory (it has no .hydra/overrides.yaml)"
    )


@pytest.mark.slow
def test_eval_of_a_truncated_checkpoint_from_the_command_line(run_copy):
    truncate(run_copy / "checkpoint/trainable.safetensors")
    command = [sys.executable, "-m", "prompttune", "eval", f"run={run_copy}", f"hydra.run.dir={run_copy.parent}/e"]
    result = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: {run_copy / 'checkpoint/trainable.safetensors'} is damaged (truncated or not safetensors")
    )


NEWER_KEYS = [("trainer", "compile"), ("model", "trust_remote_code"), ("dataset", "test_size")]


@pytest.mark.parametrize("group, key", NEWER_KEYS)
def test_a_run_saved_before_a_key_existed_is_evaluated_with_its_default(run_copy, group, key):
    saved = run_copy / "checkpoint/config.yaml"
    cfg = OmegaConf.load(saved)
    del cfg[group][key]  # as a run from before the key was added
    saved.write_text(OmegaConf.to_yaml(cfg))
    assert evaluate(run_copy).status == "completed"


def test_a_saved_setting_this_version_cannot_read_is_one_line(run_copy):
    saved = run_copy / "checkpoint/config.yaml"
    cfg = OmegaConf.load(saved)
    cfg.trainer.max_steps = "many"
    saved.write_text(OmegaConf.to_yaml(cfg))
    with pytest.raises(UserError, match=r"config.yaml: its trainer settings do not fit this version \("):
        evaluate(run_copy)
