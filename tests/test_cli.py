import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from prompttune import cli
from prompttune.config.run import validate
from prompttune.errors import UserError
from prompttune.paths import CONFIG_DIR
from tests.helpers import compose_config

TINY = ["model=tiny_bert", "shots=4", "trainer.max_steps=2", "dataset.test_size=24"]


def prompttune(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prompttune", *args], capture_output=True, text=True, cwd=cwd)


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


GROUP_OPTIONS = [
    (group, p.stem)
    for group in ("method", "dataset", "model", "trainer", "logger", "experiment")
    for p in sorted((CONFIG_DIR / group).glob("*.yaml"))
]


@pytest.mark.parametrize("group, option", GROUP_OPTIONS)
def test_every_group_option_composes(group, option):
    tagging = group == "dataset" and "token_classification" in (CONFIG_DIR / group / f"{option}.yaml").read_text()
    cfg = compose_config(f"{group}={option}", *(["method=finetune"] if tagging else []))  # pet cannot tag words
    if group == "experiment":  # presets set global keys (shots, seed, trainer.*) rather than a node
        assert cfg.trainer.max_steps is not None or cfg.trainer.epochs
    else:
        assert cfg[group] is not None
    if group in ("method", "dataset", "trainer", "logger", "experiment"):
        validate(cfg)


@pytest.mark.slow
def test_train_then_eval_reproduces_the_test_metrics(tmp_path):
    train_dir, eval_dir = tmp_path / "train", tmp_path / "eval"
    trained = prompttune("train", "method=finetune", *TINY, f"hydra.run.dir={train_dir}")
    assert trained.returncode == 0, trained.stderr
    for name in (
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        "splits.json",
        "train.log",
        "checkpoint/trainable.safetensors",
        "checkpoint/config.yaml",
    ):
        assert (train_dir / name).exists(), name
    metrics = metrics_of(train_dir)
    assert metrics["status"] == "completed"
    assert {"accuracy", "macro_f1"} <= set(metrics["test"]) and {"accuracy", "macro_f1"} <= set(metrics["dev"])
    assert metrics["params"]["trainable"] == metrics["params"]["total"] > 0
    for key in ("train_seconds", "eval_seconds", "train_examples_per_second", "eval_examples_per_second"):
        assert metrics[key] > 0
    splits = json.loads((train_dir / "splits.json").read_text())
    assert len(splits["train"]) == len(splits["dev"]) == 8 and len(splits["test"]) == 24

    evaluated = prompttune("eval", f"run={train_dir}", f"hydra.run.dir={eval_dir}")
    assert evaluated.returncode == 0, evaluated.stderr
    assert metrics_of(eval_dir)["test"] == metrics["test"]
    assert metrics_of(eval_dir)["dev"] == metrics["dev"]
    assert (eval_dir / "eval.log").exists()


@pytest.mark.slow
def test_prompt_only_checkpoint_reproduces(tmp_path):
    train_dir, eval_dir = tmp_path / "train", tmp_path / "eval"
    args = ["method=prompt_tuning", "model=tiny_llama", "shots=2", "trainer.max_steps=2", "dataset.test_size=12"]
    assert prompttune("train", *args, f"hydra.run.dir={train_dir}").returncode == 0
    assert (train_dir / "checkpoint/trainable.safetensors").stat().st_size < 1_000_000
    trained = metrics_of(train_dir)
    assert trained["params"]["ratio"] < 0.01 and trained["checkpoint_bytes"] < 1_000_000
    assert prompttune("eval", f"run={train_dir}", f"hydra.run.dir={eval_dir}").returncode == 0
    assert metrics_of(eval_dir)["test"] == trained["test"]


@pytest.mark.slow
def test_same_config_and_seed_give_the_same_metrics(tmp_path):
    args = ["method=ptuning_v1", "model=tiny_llama", "shots=2", "trainer.max_steps=3", "dataset.test_size=12"]
    first, second = tmp_path / "first", tmp_path / "second"
    for run_dir in (first, second):
        assert prompttune("train", *args, f"hydra.run.dir={run_dir}").returncode == 0
    for key in ("dev", "test", "history"):
        assert metrics_of(first)[key] == metrics_of(second)[key]


@pytest.mark.slow
def test_user_config_dir_with_a_local_csv_dataset(tmp_path):
    for name, first in (("train.csv", 0), ("test.csv", 100)):  # test texts differ: they leave the pool
        rows = [
            f"{'a great film' if i % 2 else 'a dull film'} {i},{'pos' if i % 2 else 'neg'}"
            for i in range(first, first + 30)
        ]
        (tmp_path / name).write_text("\n".join(["review,sentiment", *rows]) + "\n")
    (tmp_path / "configs" / "dataset").mkdir(parents=True)
    (tmp_path / "configs" / "dataset" / "my_reviews.yaml").write_text(f"""
name: my_reviews
source: local
labels: [negative, positive]
test_size: null
local: {{format: csv, train: {tmp_path}/train.csv, test: {tmp_path}/test.csv, text_a: review, label: sentiment,
        label_map: {{neg: negative, pos: positive}}}}
patterns:
  - {{template: "{{text_a}} It was {{mask}}.", verbalizer: {{negative: [terrible], positive: [great]}}}}
  - {{template: "{{text_a}} In short, {{mask}}.", verbalizer: {{negative: [bad], positive: [good]}}}}
""")
    args = ["--config-dir", str(tmp_path / "configs"), "dataset=my_reviews", "method=pet", *TINY[:3]]
    result = prompttune("train", *args, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr
    metrics = metrics_of(tmp_path / "run")
    assert metrics["dataset"] == "my_reviews" and metrics["test"]["n"] == 30


@pytest.mark.slow
def test_zero_shot_eval_writes_metrics(tmp_path):
    result = prompttune(
        "eval",
        "method=pet",
        "model=tiny_bert",
        "dataset.test_size=16",
        "method.calibration=contextual",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr
    metrics = metrics_of(tmp_path / "run")
    assert metrics["status"] == "completed" and metrics["command"] == "eval"
    assert metrics["test"]["n"] == 16 and 0 <= metrics["test"]["accuracy"] <= 1


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "method=nope"], "method 'nope' is unknown"),
        (["train", "trainer.nope=1"], "trainer.nope"),
        (["train", "method.pattern_idd=1"], "pattern_idd"),
        (["train", "trainer.precision=fp8"], "precision"),
        (["train", "trainer.lr=nan"], "trainer.lr=nan is invalid; allowed: a finite number >= 0"),
        (["train", "trainer.batch_size=0"], "trainer.batch_size=0"),
        (["train", "-m", "method=pet,nope"], "method 'nope' is unknown"),
        (["train", "-m", "method=pet,finetune", "--cfg", "job"], "-m cannot be combined with --cfg"),
        (["frobnicate"], "unknown command"),
    ],
)
def test_bad_input_fails_up_front_with_one_line(args, message, capsys):
    assert cli.main(args) == 2
    assert message in one_error_line(capsys.readouterr().err)


def test_a_bad_value_in_a_presets_own_sweep_fails_up_front(tmp_path):
    (tmp_path / "experiment").mkdir()
    preset = "# @package _global_\nhydra:\n  sweeper:\n    params:\n      method: pet,nope\n"
    (tmp_path / "experiment" / "bad_sweep.yaml").write_text(preset)
    args = ["-m", "--config-dir", str(tmp_path), "experiment=bad_sweep"]
    with pytest.raises(UserError, match="method 'nope' is unknown"):
        cli.check_overrides("train", args)
    # a value on the command line replaces the preset's list, as in Hydra's sweeper: nothing left to refuse
    cli.check_overrides("train", [*args, "method=pet"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "shots=100000", *TINY[:1]], "shots=100000"),
        (["train", "method.calibration=platt"], "calibration"),
        (["train", "method=pet", "method.pattern_id=9"], "pattern_id=9"),
        (["eval", "run=/no/such/run"], "/no/such/run"),
    ],
)
def test_bad_input_fails_with_one_line(args, message, tmp_path):
    result = prompttune(*args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    assert message in one_error_line(result.stderr)


@pytest.mark.slow
def test_failed_run_is_marked_failed(tmp_path):
    result = prompttune("train", "shots=100000", *TINY[:1], f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert metrics_of(tmp_path / "run")["status"] == "failed"
    assert "shots" in metrics_of(tmp_path / "run")["error"]


@pytest.mark.slow
def test_cfg_job_prints_the_resolved_config():
    result = prompttune("train", "method=ptuning_v1", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    cfg = OmegaConf.create(result.stdout)
    assert cfg.method.name == "ptuning_v1" and cfg.shots == 16 and cfg.seed == 13


@pytest.mark.slow
def test_every_method_trains_on_tiny_t5_and_eval_reproduces_it(tmp_path):
    methods = ["finetune", "pet", "prompt_tuning", "ptuning_v1", "ptuning_v2"]
    args = ["model=tiny_t5", "shots=2", "trainer.max_steps=2", "dataset.test_size=12"]
    swept = prompttune("train", "-m", f"method={','.join(methods)}", *args, f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert swept.returncode == 0, swept.stderr
    runs = {metrics_of(p.parent)["method"]: p.parent for p in (tmp_path / "sweep").rglob("metrics.json")}
    assert sorted(runs) == methods
    for method, run_dir in runs.items():
        trained = metrics_of(run_dir)
        assert trained["status"] == "completed", trained.get("error")
        eval_dir = tmp_path / f"eval-{method}"
        evaluated = prompttune("eval", f"run={run_dir}", f"hydra.run.dir={eval_dir}")
        assert evaluated.returncode == 0, evaluated.stderr
        assert metrics_of(eval_dir)["test"] == trained["test"], method
