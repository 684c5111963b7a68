"""Resumable runs: determinism, snapshots (save_every, SIGTERM, kill -9 mid-write), `prompttune train resume=`."""

import itertools
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prompttune.errors import UserError
from prompttune.runs.lifecycle import run_train
from prompttune.runs.record import RunRecord, config_sha, settings_of
from prompttune.runs.rundirs import OtherRunsDir
from prompttune.training import interrupts, loop
from prompttune.training.state import STATE_DIR
from tests.helpers import compose_config

REPO_ROOT = Path(__file__).resolve().parent.parent
METHODS = ["finetune", "pet", "prompt_tuning", "ptuning_v1", "ptuning_v2"]
MODELS = ["tiny_bert", "tiny_llama", "tiny_t5"]
# 2 epochs of 8 examples in batches of 3: epochs end mid-batch, dev every 2 steps, threads=1 for exact sums
RUN = ["shots=4", "dataset.test_size=16", "trainer.max_steps=6", "trainer.batch_size=3", "trainer.eval_every=2"]
RUN += ["trainer.warmup_ratio=0.2", "trainer.device=cpu", "trainer.threads=1"]


def train_run(run_dir: Path, *overrides: str) -> RunRecord:
    """One training run in this process, as a job would run it (one torch thread)."""
    run_dir.mkdir(exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_train(compose_config(*RUN, *overrides), run_dir)
    finally:
        torch.set_num_threads(threads)


def signal_at_step(monkeypatch, step: int, signum=signal.SIGTERM) -> None:
    """Send this process `signum` right after the loop's `step`-th optimizer step."""
    calls, original = itertools.count(1), loop._step

    def step_then_signal(*args):
        loss = original(*args)
        if next(calls) == step:
            signal.raise_signal(signum)
        return loss

    monkeypatch.setattr(loop, "_step", step_then_signal)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run per (method, model), shared by the tests below."""
    runs = {}

    def run(method: str, model: str) -> RunRecord:
        if (method, model) not in runs:
            run_dir = tmp_path_factory.mktemp(f"{method}-{model}")
            runs[(method, model)] = train_run(run_dir, f"method={method}", f"model={model}")
        return runs[(method, model)]

    return run


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", METHODS)
def test_two_runs_of_one_config_and_seed_give_identical_metrics(method, model, reference, tmp_path):
    first = reference(method, model)
    second = train_run(tmp_path, f"method={method}", f"model={model}")
    assert second.comparable() == first.comparable()
    assert second.run_dir != first.run_dir and second.test["n"] == 16 and len(second.history) == 3


@pytest.mark.parametrize("method", METHODS)
def test_a_run_stopped_by_sigterm_resumes_to_the_uninterrupted_metrics(method, reference, tmp_path, monkeypatch):
    stop_at = random.Random(method).randint(1, 5)
    signal_at_step(monkeypatch, stop_at)
    with pytest.raises(interrupts.Interrupted), interrupts.handled():
        train_run(tmp_path, f"method={method}", "model=tiny_bert")
    assert [p.name for p in sorted((tmp_path / STATE_DIR).iterdir())] == [
        f"{stop_at:08d}.json",
        f"{stop_at:08d}.safetensors",
    ]
    monkeypatch.undo()

    resumed = train_run(tmp_path, f"method={method}", "model=tiny_bert")

    assert resumed.resumed_at_steps == [stop_at]
    assert resumed.comparable() == reference(method, "tiny_bert").comparable()
    assert not (tmp_path / STATE_DIR).exists()  # a completed run keeps only its checkpoint


@pytest.mark.parametrize("method", ["finetune", "pet"])
def test_a_bf16_run_resumes_from_its_fp32_masters_to_the_uninterrupted_metrics(method, tmp_path, monkeypatch):
    bf16 = (f"method={method}", "model=tiny_llama", "trainer.precision=bf16", "trainer.lr=1e-3")
    uninterrupted = train_run(tmp_path / "whole", *bf16)
    signal_at_step(monkeypatch, 3)
    with pytest.raises(interrupts.Interrupted), interrupts.handled():
        train_run(tmp_path / "cut", *bf16)
    saved = load_file(next((tmp_path / "cut" / STATE_DIR).glob("*.safetensors")))
    masters = [v for k, v in saved.items() if k.startswith("master/")]
    assert masters and all(v.dtype == torch.float32 for v in masters)
    monkeypatch.undo()

    resumed = train_run(tmp_path / "cut", *bf16)

    assert resumed.resumed_at_steps == [3]
    assert resumed.comparable() == uninterrupted.comparable()


def test_save_every_saves_every_n_steps_and_at_the_end(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(loop.Snapshots, "save", lambda self, progress, live: saved.append(progress.step))
    train_run(tmp_path, "method=pet", "model=tiny_bert", "trainer.save_every=4")
    assert saved == [4, 6]  # every 4 steps, and at the end


def test_a_kill_mid_write_leaves_the_previous_snapshot_usable(reference, tmp_path, monkeypatch):
    signal_at_step(monkeypatch, 2)
    with pytest.raises(interrupts.Interrupted), interrupts.handled():
        train_run(tmp_path, "method=pet", "model=tiny_bert")
    monkeypatch.undo()
    state = tmp_path / STATE_DIR
    # what kill -9 can leave: a half-written temporary file, and a newer snapshot whose JSON was never written
    (state / ".00000004.safetensors.123.abcd.tmp").write_bytes(b"\0" * 10)
    (state / "00000004.safetensors").write_bytes((state / "00000002.safetensors").read_bytes()[:100])

    resumed = train_run(tmp_path, "method=pet", "model=tiny_bert")

    assert resumed.resumed_at_steps == [2]
    assert resumed.comparable() == reference("pet", "tiny_bert").comparable()


def interrupted_run(tmp_path: Path, monkeypatch, *overrides: str) -> Path:
    signal_at_step(monkeypatch, 3)
    with pytest.raises(interrupts.Interrupted), interrupts.handled():
        train_run(tmp_path, "method=prompt_tuning", "model=tiny_bert", *overrides)
    monkeypatch.undo()
    return tmp_path / STATE_DIR / "00000003"


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda s: s.with_suffix(".json").write_text('{"format": 1, "st'), "00000003.json is damaged"),
        (lambda s: s.with_suffix(".json").write_text("[1, 2]"), "00000003.json is not a prompttune state"),
        (lambda s: s.with_suffix(".safetensors").write_bytes(b"x" * 50), "00000003.safetensors is damaged"),
    ],
)
def test_a_damaged_snapshot_is_named(damage, message, tmp_path, monkeypatch):
    snapshot = interrupted_run(tmp_path, monkeypatch)
    damage(snapshot)
    with pytest.raises(UserError, match=message):
        train_run(tmp_path, "method=prompt_tuning", "model=tiny_bert")


def test_a_snapshot_of_another_config_is_refused_and_left_alone(tmp_path, monkeypatch):
    snapshot = interrupted_run(tmp_path, monkeypatch)
    with pytest.raises(OtherRunsDir, match="holds a run of another config"):
        train_run(tmp_path, "method=prompt_tuning", "model=tiny_bert", "trainer.lr=0.5")
    assert snapshot.with_suffix(".json").exists() and RunRecord.read(tmp_path).status == "running"


def test_a_snapshot_from_another_method_is_refused(tmp_path, monkeypatch):
    snapshot = interrupted_run(tmp_path, monkeypatch)
    other = interrupted_run(tmp_path / "other", monkeypatch, "method.n_tokens=2")
    snapshot.with_suffix(".safetensors").write_bytes(other.with_suffix(".safetensors").read_bytes())
    with pytest.raises(UserError, match="snapshot 00000003 does not fit this run"):
        train_run(tmp_path, "method=prompt_tuning", "model=tiny_bert")


# ---------------------------------------------------------------- through the command line


def prompttune(*args: str, cwd: Path = REPO_ROOT, **popen) -> subprocess.Popen:
    command = [sys.executable, "-m", "prompttune", *args]
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(*args: str, cwd: Path = REPO_ROOT) -> tuple[int, str, str]:
    process = prompttune(*args, cwd=cwd)
    out, err = process.communicate(timeout=600)
    return process.returncode, out, err


def wait_for(condition, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def saved_steps(run_dir: Path) -> list[int]:
    return [int(p.stem) for p in (run_dir / STATE_DIR).glob("*.json")]


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_kill_9_at_a_random_moment_then_resume(method, tmp_path):
    """Killed at a random point of a 60-step run that saves after every step (often in the middle of a save)."""
    longer = [f"method={method}", "model=tiny_bert", "trainer.max_steps=60", "trainer.save_every=1"]
    expected = train_run(tmp_path / "uninterrupted", *longer)
    run_dir, step, moment = tmp_path / "run", random.randint(1, 45), random.uniform(0, 0.05)
    process = prompttune("train", *RUN, *longer, f"hydra.run.dir={run_dir}")
    wait_for(lambda: any(s >= step for s in saved_steps(run_dir)) or process.poll() is not None)
    time.sleep(moment)
    process.kill()
    process.communicate()
    record = RunRecord.read(run_dir)
    assert record.status == "running", f"finished before the kill after step {step} + {moment:.3f} s"

    code, out, err = finished("train", f"resume={run_dir}")

    assert code == 0, err
    resumed = RunRecord.read(run_dir)
    assert resumed.resumed_at_steps[0] >= step
    assert (resumed.test, resumed.dev, resumed.history) == (expected.test, expected.dev, expected.history)
    assert finished("train", f"resume={run_dir}")[1].startswith(f"{run_dir} already completed")


@pytest.mark.slow
def test_sigint_marks_the_run_interrupted_and_resume_finishes_it(reference, tmp_path):
    run_dir = tmp_path / "run"
    args = ["train", "method=pet", "model=tiny_bert", *RUN, "trainer.max_steps=400", f"hydra.run.dir={run_dir}"]
    process = prompttune(*args)
    wait_for(lambda: "step 5/400" in (run_dir / "train.log").read_text() if (run_dir / "train.log").exists() else 0)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT
    assert "Traceback" not in err and f"resume with `prompttune train resume={run_dir}`" in err.strip()
    record = RunRecord.read(run_dir)
    assert record.status == "interrupted" and record.error == "interrupted by SIGINT"
    assert len(list((run_dir / STATE_DIR).glob("*.json"))) == 1


def test_keys_that_do_not_change_results_are_neither_settings_nor_fingerprinted():
    overrides = ["trainer.save_every=3", "trainer.threads=1", "resume=/r", "seed=21", "method.pattern_id=1"]
    assert settings_of(overrides) == ["method.pattern_id=1"]
    plain = compose_config("method=pet")
    assert config_sha(compose_config("method=pet", "trainer.save_every=3", "resume=/r")) == config_sha(plain)
    assert config_sha(compose_config("method=pet", "trainer.lr=0.1")) != config_sha(plain)
