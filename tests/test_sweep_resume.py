"""Resume a sweep: the same command, run again into its sweep dir, skips completed jobs, resumes interrupted
ones and runs failed ones again, with every launcher."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prompttune.runs.record import RunRecord

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY = ["model=tiny_bert", "shots=2", "dataset.test_size=16", "trainer.threads=1", "trainer.eval_every=5"]


def sweep_command(sweep_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "prompttune", "train", "-m", *overrides, *TINY, f"hydra.sweep.dir={sweep_dir}"]


def run(command: list[str]) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def records(sweep_dir: Path, jobs: int) -> list[RunRecord | None]:
    return [RunRecord.read(sweep_dir / str(job)) for job in range(jobs)]


def metrics_bytes(sweep_dir: Path, jobs: int) -> dict[int, bytes]:
    return {job: (sweep_dir / str(job) / "metrics.json").read_bytes() for job in range(jobs)}


@pytest.mark.slow
def test_a_killed_six_job_sweep_run_again_runs_only_its_unfinished_jobs(tmp_path):
    command = sweep_command(tmp_path, "method=pet,prompt_tuning", "seed=13,21,42", "trainer.max_steps=40")
    command += ["trainer.save_every=2"]
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not (tmp_path / "2" / "state").is_dir():  # jobs 0 and 1 completed, job 2 is training
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    process.kill()
    process.wait()
    before = records(tmp_path, 6)
    done = [job for job, record in enumerate(before) if record and record.status == "completed"]
    assert done == [0, 1] and before[2].status == "running" and before[5] is None
    completed_files = metrics_bytes(tmp_path, 2)

    run(command)

    after = records(tmp_path, 6)
    assert [r.status for r in after] == ["completed"] * 6
    assert metrics_bytes(tmp_path, 2) == completed_files  # skipped, untouched
    assert [trainings(tmp_path, job) for job in range(6)] == [1, 1, 2, 1, 1, 1]
    assert after[2].resumed_at_steps and after[2].resumed_at_steps[0] % 2 == 0  # job 2 went on from its state
    assert all(not r.resumed_at_steps for r in after[3:])
    report = run([sys.executable, "-m", "prompttune", "report", str(tmp_path)])
    groups = json.loads((tmp_path / "report.json").read_text())["groups"]
    assert sorted((g["method"], g["n_seeds"]) for g in groups) == [("pet", 3), ("prompt_tuning", 3)], report.stdout


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "parallel", "slurm_local"])
def test_a_sweep_run_again_skips_completed_jobs_and_reruns_failed_and_interrupted_ones(launcher, tmp_path):
    chosen = [] if launcher == "basic" else [f"hydra/launcher={launcher}"]
    command = sweep_command(tmp_path, *chosen, "method=prompt_tuning", "seed=13,21,42", "trainer.max_steps=2")
    run(command)
    first = records(tmp_path, 3)
    kept = metrics_bytes(tmp_path, 3)[0]
    for job, status in ((1, "failed"), (2, "interrupted")):
        path = tmp_path / str(job) / "metrics.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | {"status": status, "error": "by the test"}))

    run(command)

    again = records(tmp_path, 3)
    assert metrics_bytes(tmp_path, 3)[0] == kept
    assert [r.status for r in again] == ["completed"] * 3 and [r.error for r in again] == [None] * 3
    assert [r.comparable() for r in again] == [r.comparable() for r in first]
    assert [trainings(tmp_path, job) for job in range(3)] == [1, 2, 2]


def trainings(sweep_dir: Path, job: int) -> int:
    """How many times the job trained, by its log."""
    return (sweep_dir / str(job) / "train.log").read_text().count(" on mr with tiny_bert: ")
