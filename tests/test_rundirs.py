"""Run dirs of their own (exclusive creation, the next free name on a clash), and output dirs that cannot be
written: a read-only dir, a full disk."""

import errno
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from prompttune import cli, files
from prompttune.errors import UserError
from prompttune.runs import rundirs

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY = ["method=prompt_tuning", "model=tiny_bert", "shots=2", "trainer.max_steps=2", "dataset.test_size=8"]


def test_concurrent_claims_of_one_dir_get_distinct_dirs(tmp_path):
    wanted, claimed, start = tmp_path / "outputs" / "12-00-00", [], threading.Barrier(8)

    def claim():
        start.wait()
        claimed.append(rundirs.claim(wanted))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(p.name for p in claimed) == ["12-00-00"] + [f"12-00-00-{n}" for n in range(1, 8)]


def test_a_run_dir_named_on_the_command_line_that_exists_is_not_reused(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    args = cli.place_run("train", ["method=pet", f"hydra.run.dir={tmp_path / 'run'}"])
    assert args == ["method=pet", f"hydra.run.dir={tmp_path / 'run-1'}"]
    assert f"{tmp_path / 'run'} exists; this run writes to {tmp_path / 'run-1'}" in capsys.readouterr().err


def test_default_run_and_sweep_dirs_are_claimed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, second = (cli.place_run("eval", ["method=pet"])[-1] for _ in range(2))
    assert first != second and first.startswith("hydra.run.dir=outputs/")
    for args in (first, second):
        assert Path(args.split("=", 1)[1]).is_dir()
    sweep = cli.place_run("train", ["-m", "seed=13,21"])[-1]
    assert sweep.startswith("hydra.sweep.dir=outputs/multirun/") and Path(sweep.split("=", 1)[1]).is_dir()


def test_a_sweep_dir_named_on_the_command_line_is_used_as_it_is(tmp_path):
    args = ["-m", "seed=13,21", f"hydra.sweep.dir={tmp_path}"]
    assert cli.place_run("train", args) == args


def test_a_run_dir_in_use_by_a_live_job_is_refused(tmp_path):
    with rundirs.owned(tmp_path):
        with pytest.raises(rundirs.RunDirBusy, match=f"{tmp_path} is in use by another running job"):
            with rundirs.owned(tmp_path):
                pass
    with rundirs.owned(tmp_path):  # free again once the job ends
        pass


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_an_unwritable_output_dir_is_one_line(code, tmp_path, monkeypatch, capsys):
    def refuse(path, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(rundirs.os, "mkdir", refuse)
    assert cli.main(["train", *TINY, f"hydra.run.dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: cannot create the run dir {tmp_path / 'run'}: {os.strerror(code)}; " + (
        "choose a writable place (hydra.run.dir=DIR, or hydra.sweep.dir=DIR with -m)"
    )


def full_disk_for(name: str, monkeypatch) -> None:
    """Writes of files called `name` fail as on a full disk, after half the bytes."""
    original = files.os.replace

    def replace(source, target):
        if Path(target).name == name:
            Path(source).write_bytes(Path(source).read_bytes()[:10])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(source))
        return original(source, target)

    monkeypatch.setattr(files.os, "replace", replace)


def test_a_failed_write_keeps_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    files.write_json(path, {"status": "running"})
    full_disk_for("metrics.json", monkeypatch)
    with pytest.raises(UserError, match=f"cannot write {path}: No space left on device; files already written"):
        files.write_json(path, {"status": "completed"})
    assert json.loads(path.read_text()) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left


def test_a_full_disk_mid_run_is_one_line_and_leaves_whole_files(tmp_path, monkeypatch, capsys):
    full_disk_for("trainable.safetensors", monkeypatch)
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        cli.main(["train", *TINY, f"hydra.run.dir={run_dir}"])
    assert stopped.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: cannot write {run_dir / 'checkpoint/trainable.safetensors'}: No space left on device; "
        + files.WRITE_HINT
    ]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "No space left" in metrics["error"]
    assert json.loads((run_dir / "splits.json").read_text())["counts"]["train"] == 4
    assert not list(run_dir.rglob("*.tmp"))


@pytest.mark.slow
def test_two_trains_started_at_once_leave_two_complete_run_dirs(tmp_path):
    command = [sys.executable, "-m", "prompttune", "train", *TINY, f"hydra.run.dir={tmp_path / 'run'}"]
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in "ab"]
    assert [p.wait(timeout=600) for p in processes] == [0, 0]
    run_dirs = sorted(tmp_path.iterdir())
    assert [d.name for d in run_dirs] == ["run", "run-1"]
    for run_dir in run_dirs:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["run_dir"] == str(run_dir)
        assert (run_dir / "checkpoint/trainable.safetensors").exists() and (run_dir / "splits.json").exists()
        assert (run_dir / "train.log").read_text().count("prompt_tuning on mr") == 1
