"""Multiruns through the real CLI (tiny model, 2 steps), the launcher configs, and `prompttune report` on a
real sweep."""

import itertools
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.conf import HydraConf
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from prompttune.paths import CONFIG_DIR
from prompttune.runs import launching

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_RUN = ["model=tiny_bert", "dataset=mr", "shots=2", "trainer.max_steps=2", "dataset.test_size=16"]
JOBLIB_TARGET = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def prompttune(*args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "PROMPTTUNE_N_JOBS"}  # default n_jobs
    # PYTHONPATH: submitit's job processes must import prompttune even when it is not pip-installed
    env |= {"PYTHONPATH": str(REPO_ROOT), "HYDRA_FULL_ERROR": "1"}
    command = [sys.executable, "-m", "prompttune", *args]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"exit {result.returncode}\n{output}"
    return result


def sweep(sweep_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return prompttune("train", "-m", *overrides, *TINY_RUN, f"hydra.sweep.dir={sweep_dir}")


def job_metrics(sweep_dir: Path, jobs: int) -> list[dict]:
    """The metrics.json of jobs 0..jobs-1, each of which must have completed."""
    metrics = [json.loads((sweep_dir / str(job) / "metrics.json").read_text()) for job in range(jobs)]
    assert [m["status"] for m in metrics] == ["completed"] * jobs
    return metrics


def job_launcher_target(sweep_dir: Path, job: int) -> str:
    hydra_yaml = OmegaConf.load(sweep_dir / str(job) / ".hydra" / "hydra.yaml")
    return hydra_yaml.hydra.launcher._target_


@pytest.mark.slow
def test_multirun_two_methods_two_seeds_then_report(tmp_path):
    sweep(tmp_path, "method=finetune,pet", "seed=13,21")
    metrics = job_metrics(tmp_path, 4)
    assert sorted((m["method"], m["seed"]) for m in metrics) == [
        ("finetune", 13),
        ("finetune", 21),
        ("pet", 13),
        ("pet", 21),
    ]

    printed = prompttune("report", str(tmp_path)).stdout
    groups = {g["method"]: g for g in json.loads((tmp_path / "report.json").read_text())["groups"]}
    for method in ("finetune", "pet"):
        accuracies = [m["test"]["accuracy"] for m in metrics if m["method"] == method]
        f1s = [m["test"]["macro_f1"] for m in metrics if m["method"] == method]
        assert groups[method]["n_seeds"] == 2
        assert groups[method]["test_accuracy"]["mean"] == pytest.approx(statistics.mean(accuracies))
        assert groups[method]["test_accuracy"]["std"] == pytest.approx(statistics.stdev(accuracies))
        assert groups[method]["test_macro_f1"]["mean"] == pytest.approx(statistics.mean(f1s))
        assert groups[method]["test_macro_f1"]["std"] == pytest.approx(statistics.stdev(f1s))
        expected_cell = f"{100 * statistics.mean(accuracies):.1f} ± {100 * statistics.stdev(accuracies):.1f}"
        assert expected_cell in printed
    assert (tmp_path / "report.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_runs_differing_in_more_than_the_seed_are_not_averaged_together(tmp_path):
    sweep(tmp_path, "method=pet", "method.pattern_id=0,1", "seed=13,21")
    groups = {
        g["method"]: g
        for g in json.loads((prompttune("report", str(tmp_path)), tmp_path / "report.json")[1].read_text())["groups"]
    }
    assert sorted(groups) == ["pet method.pattern_id=0", "pet method.pattern_id=1"]
    assert all(g["n_seeds"] == 2 for g in groups.values())


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep(tmp_path):
    # lr=1e30 blows the weights up, so the loss becomes NaN; the sweep goes on to the next job
    sweep(tmp_path, "method=finetune", "trainer.lr=1e30,1e-3", "trainer.max_steps=3")
    failed, completed = (json.loads((tmp_path / str(job) / "metrics.json").read_text()) for job in range(2))
    assert failed["status"] == "failed" and "loss became nan" in failed["error"]
    assert completed["status"] == "completed"
    assert "failed" in prompttune("report", str(tmp_path)).stdout


@pytest.mark.slow
def test_joblib_launcher_runs_a_two_job_sweep(tmp_path):
    result = sweep(tmp_path, "hydra/launcher=parallel", "method=pet", "seed=13,21")
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    assert [m["seed"] for m in job_metrics(tmp_path, 2)] == [13, 21]
    assert job_launcher_target(tmp_path, 0) == JOBLIB_TARGET


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_two_job_sweep(tmp_path):
    result = sweep(tmp_path, "hydra/launcher=slurm_local", "method=pet", "seed=13,21")
    assert "Submitit 'local' sweep output dir" in result.stdout + result.stderr
    assert [m["seed"] for m in job_metrics(tmp_path, 2)] == [13, 21]
    assert job_launcher_target(tmp_path, 1).endswith("submitit_launcher.LocalLauncher")
    assert list((tmp_path / ".submitit").glob("*/*_log.out")), "submitit wrote no job logs"


def composed(*overrides: str):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def launcher_config(name: str):
    return composed(f"hydra/launcher={name}").hydra.launcher


def test_slurm_config_extends_the_plugin_with_our_defaults():
    slurm = launcher_config("slurm")
    assert slurm._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    resources = ("partition", "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min")
    assert {key: slurm[key] for key in resources} == {
        "partition": None,
        "gpus_per_node": 1,
        "cpus_per_task": 4,
        "mem_gb": 32,
        "timeout_min": 120,
    }
    assert slurm.array_parallelism == 256  # the plugin's other keys are still there


def test_parallel_config_takes_n_jobs_from_the_environment(monkeypatch):
    monkeypatch.delenv("PROMPTTUNE_N_JOBS", raising=False)
    assert launcher_config("parallel").n_jobs == 2
    monkeypatch.setenv("PROMPTTUNE_N_JOBS", "3")
    parallel = launcher_config("parallel")
    assert parallel.n_jobs == 3 and parallel._target_ == JOBLIB_TARGET


PRESETS = [("lmbff", 16, "13,21,42,87,100"), ("quick", 8, "13,21,42")]


@pytest.mark.parametrize(("preset", "shots", "seeds"), PRESETS)
def test_experiment_presets_set_shots_seeds_and_only_known_trainer_keys(preset, shots, seeds):
    cfg = composed(f"experiment={preset}")
    assert cfg.shots == shots and cfg.seed == 13
    assert cfg.hydra.sweeper.params == {"seed": seeds}
    assert set(cfg.trainer) == set(composed().trainer)  # a misspelt trainer key would add a new one
    assert cfg.trainer.eval_every < cfg.trainer.max_steps


GROUPS = ("method", "dataset", "model")  # a swept group's option is its config's `name`


@pytest.mark.parametrize("preset", ["paradigm_curve", "ner_table", "size_table"])
def test_every_job_of_a_sweep_preset_composes_and_validates(preset):
    from prompttune.config.run import validate

    params = composed(f"experiment={preset}").hydra.sweeper.params
    swept = [[(key, value) for value in str(values).split(",")] for key, values in params.items()]
    jobs = list(itertools.product(*swept))
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        configs = [compose("train", [f"experiment={preset}", *(f"{k}={v}" for k, v in job)]) for job in jobs]
    for job, cfg in zip(jobs, configs, strict=True):
        validate(cfg)
        for key, value in job:
            assert str(OmegaConf.select(cfg, f"{key}.name" if key in GROUPS else key)) == value
    assert len(jobs) == 72


@pytest.fixture
def hydra_job():
    """Install a HydraConfig as a launched job would see it: `hydra_job(mode, launcher_dict)`."""
    saved = HydraConfig.instance().cfg

    def install(mode: RunMode, launcher: dict) -> None:
        cfg = OmegaConf.create({"hydra": OmegaConf.structured(HydraConf)})
        cfg.hydra.mode = mode
        cfg.hydra.launcher = launcher
        HydraConfig.instance().set_config(cfg)

    yield install
    HydraConfig.instance().cfg = saved


@pytest.mark.parametrize(
    ("n_jobs", "cpus", "threads"),
    [
        (2, 2, 1),
        (2, 16, 8),
        (3, 16, 5),
        (32, 16, 1),
        (-1, 16, 1),
        (-2, 16, 1),
        (-9, 16, 2),
        (1, 16, 16),
    ],
)
def test_joblib_jobs_share_the_cores(n_jobs, cpus, threads):
    assert launching.threads_per_joblib_job(n_jobs, cpus) == threads


def test_torch_threads_for_joblib_job(hydra_job, monkeypatch):
    monkeypatch.setattr(launching, "available_cpus", lambda: 8)
    hydra_job(RunMode.MULTIRUN, {"_target_": JOBLIB_TARGET, "n_jobs": 2})
    assert launching.torch_threads_for_job() == 4
    hydra_job(RunMode.RUN, {"_target_": JOBLIB_TARGET, "n_jobs": 2})  # no -m: the launcher is not used
    assert launching.torch_threads_for_job() is None


def test_torch_threads_for_submitit_and_basic_jobs(hydra_job):
    local = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    hydra_job(RunMode.MULTIRUN, {"_target_": local, "cpus_per_task": 3})
    assert launching.torch_threads_for_job() == 3
    hydra_job(RunMode.MULTIRUN, {"_target_": local, "cpus_per_task": None})
    assert launching.torch_threads_for_job() is None
    hydra_job(RunMode.MULTIRUN, {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})
    assert launching.torch_threads_for_job() is None


def test_torch_threads_outside_hydra_is_none(hydra_job):
    HydraConfig.instance().cfg = None
    assert launching.torch_threads_for_job() is None
