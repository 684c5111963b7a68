"""Run dirs written before the package moved (commit 61e0bc8, the layout with a flat top level) still work:
`prompttune eval run=DIR` gives their test metrics, and `resume=DIR` finishes an interrupted one as it would
have finished uninterrupted. The fixtures were written by that commit's code:
- pet_tiny_bert_run: `prompttune train method=pet model=tiny_bert shots=4 trainer.max_steps=2 dataset.test_size=64`
- prompt_tuning_interrupted_run: `method=prompt_tuning model=tiny_bert shots=4 trainer.max_steps=400
  trainer.save_every=20 dataset.test_size=64`, stopped by SIGTERM at step 21; beside it, the metrics.json of the
  same command run to the end."""

import json
import shutil
from pathlib import Path

import pytest

from prompttune import cli
from prompttune.runs.record import RunRecord

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def copied(name: str, tmp_path: Path) -> Path:
    run_dir = tmp_path / name
    shutil.copytree(FIXTURES / name, run_dir)
    return run_dir


FLOAT_SUMS = ("nll", "ece")  # means of float32 probabilities: their last digits follow the CPU's kernels


def assert_same_test_metrics(evaluated: dict, saved: dict) -> None:
    """The predictions' metrics exactly (accuracy, F1, their intervals, the confusion matrix); the two float sums
    to 1e-6, since the fixture was written on another machine, whose BLAS may add in another order."""
    assert {k: v for k, v in evaluated.items() if k not in FLOAT_SUMS} == {
        k: v for k, v in saved.items() if k not in FLOAT_SUMS
    }
    assert [evaluated[k] for k in FLOAT_SUMS] == pytest.approx([saved[k] for k in FLOAT_SUMS], rel=1e-6)


def test_a_run_dir_from_before_the_move_re_evaluates_to_its_test_metrics(tmp_path, monkeypatch):
    run_dir = copied("pet_tiny_bert_run", tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["eval", f"run={run_dir}", f"hydra.run.dir={tmp_path / 'eval'}"]) == 0
    saved = json.loads((run_dir / "metrics.json").read_text())
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert_same_test_metrics(evaluated["test"], saved["test"])
    assert evaluated["source_run"] == str(run_dir)


def test_a_completed_run_from_before_the_move_says_so_on_resume(tmp_path, monkeypatch, capsys):
    run_dir = copied("pet_tiny_bert_run", tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", f"resume={run_dir}"]) == 0
    assert "already completed" in capsys.readouterr().out


@pytest.mark.slow
def test_an_interrupted_run_from_before_the_move_resumes_to_the_uninterrupted_metrics(tmp_path, monkeypatch):
    run_dir = copied("prompt_tuning_interrupted_run", tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", f"resume={run_dir}"]) == 0
    resumed = RunRecord.read(run_dir)
    expected = RunRecord.from_json(
        json.loads((FIXTURES / "prompt_tuning_interrupted_run.uninterrupted_metrics.json").read_text())
    )
    assert resumed.resumed_at_steps == [21]
    assert_same_test_metrics(resumed.test, expected.test)
    assert resumed.dev == expected.dev
    assert [(h["step"], h["dev"]) for h in resumed.history] == [(h["step"], h["dev"]) for h in expected.history]
    losses = [h["loss"] for h in expected.history]
    assert [h["loss"] for h in resumed.history] == pytest.approx(losses, rel=1e-4)  # float sums, as above
