"""The logger group: TensorBoard events and MLflow runs, read back through each library's own reader."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from prompttune.errors import UserError
from prompttune.runs.tracking import TensorBoardLogger, TrackingCallback, build_logger, final_metrics, flat_params

TINY_SWEEP = [
    "model=tiny_bert",
    "method=pet,prompt_tuning",
    "seed=13,21",
    "shots=2",
    "trainer.max_steps=4",
    "trainer.eval_every=2",
    "trainer.log_every=1",
    "dataset.test_size=16",
]


def without_tracking_uri() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


def sweep(tmp_path: Path, *args: str) -> Path:
    sweep_dir = tmp_path / "sweep"
    command = [sys.executable, "-m", "prompttune", "train", "-m", *TINY_SWEEP, *args, f"hydra.sweep.dir={sweep_dir}"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=without_tracking_uri())
    assert done.returncode == 0, done.stderr
    return sweep_dir


def events_of(run_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return events


@pytest.mark.slow
def test_tensorboard_events_of_a_tiny_sweep_read_back(tmp_path):
    sweep_dir = sweep(tmp_path)  # logger=tensorboard is the default
    for job in range(4):
        events = events_of(sweep_dir / str(job))
        scalars = events.Tags()["scalars"]
        assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
        assert [e.step for e in events.Scalars("dev/accuracy")] == [2, 4]
        rate = "train/lr_model" if job < 2 else "train/lr_prompt"  # pet trains the model, prompt tuning prompts
        assert rate in scalars and len(events.Scalars(rate)) == 4
        assert {"test/accuracy", "test/nll", "test/ece", "best_dev/accuracy"} <= set(scalars)
        assert [e.step for e in events.Scalars("test/accuracy")] == [4]  # final metrics at the last step
        assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    test_accuracy = events_of(sweep_dir / "3").Scalars("test/accuracy")[0].value
    metrics = OmegaConf.load(sweep_dir / "3" / "metrics.json")
    assert test_accuracy == pytest.approx(metrics.test.accuracy)


@pytest.mark.slow
def test_mlflow_runs_of_a_tiny_sweep_read_back(tmp_path, monkeypatch):
    """With no tracking URI anywhere, the runs land where MLflow itself looks: `mlflow ui` in that dir finds them."""
    import mlflow
    from mlflow.tracking import MlflowClient

    sweep(tmp_path, "logger=mlflow")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert len(mlflow.search_runs(experiment_names=["prompttune"])) == 4
    client = MlflowClient()
    experiment = client.get_experiment_by_name("prompttune")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(
        f"train-{m}-mr-K2-seed{s}" for m in ("pet", "prompt_tuning") for s in (13, 21)
    )
    for run in runs:
        assert run.info.status == "FINISHED"
        params = run.data.params
        assert params["dataset.name"] == "mr" and params["trainer.max_steps"] == "4" and params["shots"] == "2"
        history = client.get_metric_history(run.info.run_id, "train/loss")
        assert sorted(m.step for m in history) == [1, 2, 3, 4]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "dev/accuracy")] == [2, 4]
        assert {"test/accuracy", "test/macro_f1", "test/ece", "test/nll"} <= set(run.data.metrics)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"metrics.json", "predictions.jsonl", "splits.json", "train.log", ".hydra"} <= artifacts
        assert "checkpoint" not in artifacts  # logger.log_checkpoint=false by default


@pytest.mark.slow
def test_logger_none_writes_no_event_files(tmp_path):
    run_dir = tmp_path / "run"
    args = ["train", "model=tiny_bert", "shots=2", "trainer.max_steps=1", "dataset.test_size=8", "logger=none"]
    done = subprocess.run([sys.executable, "-m", "prompttune", *args, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert done.returncode == 0
    assert not list(run_dir.glob("events.out.tfevents.*")) and not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_mlflow_tracking_uri_from_the_environment(tmp_path):
    from mlflow.tracking import MlflowClient

    args = [
        "train",
        "method=tfidf",
        "shots=4",
        "dataset.test_size=8",
        "logger=mlflow",
        f"hydra.run.dir={tmp_path / 'r'}",
    ]
    env = without_tracking_uri() | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'elsewhere.db'}"}
    done = subprocess.run([sys.executable, "-m", "prompttune", *args], cwd=tmp_path, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'elsewhere.db'}")
    runs = client.search_runs([client.get_experiment_by_name("prompttune").experiment_id])
    assert [r.info.run_name for r in runs] == ["train-tfidf-mr-K4-seed13"]


def test_tensorboard_logger_through_the_loop_callback(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    callback = TrackingCallback(logger)
    callback.on_step(1, 0.7, {"model": 2e-5, "prompt": 1e-3})
    callback.on_evaluation(1, {"accuracy": 0.75, "macro_f1": 0.7, "n": 8})
    logger.log_hparams({"method.name": "pet", "trainer.lr": 2e-5, "verbalizer": None}, {"test/accuracy": 0.8})
    logger.close("completed")
    events = events_of(tmp_path)
    assert events.Scalars("train/lr_prompt")[0].value == pytest.approx(1e-3)
    assert events.Scalars("dev/accuracy")[0].value == pytest.approx(0.75)
    assert "dev/n" not in events.Tags()["scalars"]
    assert events.Scalars("test/accuracy")[0].value == pytest.approx(0.8)


def test_flat_params_and_final_metrics():
    cfg = OmegaConf.create({"method": {"name": "pet", "lr": None}, "seed": 13, "logger": {"name": "mlflow"}})
    assert flat_params(cfg) == {"method.name": "pet", "method.lr": "null", "seed": 13}
    run = {"test": {"accuracy": 0.8, "n": 10, "accuracy_ci": [0.7, 0.9]}, "dev": {"accuracy": 0.6}, "train_seconds": 3}
    final = final_metrics(run)
    assert final == {
        "best_dev/accuracy": 0.6,
        "test/accuracy": 0.8,
        "test/accuracy_ci_low": 0.7,
        "test/accuracy_ci_high": 0.9,
        "cost/train_seconds": 3.0,
    }


@pytest.mark.parametrize(
    "logger, message",
    [
        ({"name": "wandb"}, "logger.name='wandb' is unknown"),
        ({"name": "none", "dir": "x"}, "logger.dir is not a config key"),
        ({"name": "mlflow", "dir": "mlruns"}, "logger.dir is not a config key"),
    ],
)
def test_bad_logger_config_is_a_user_error(tmp_path, logger, message):
    with pytest.raises(UserError, match=message):
        build_logger(OmegaConf.create(logger), tmp_path, "run")
