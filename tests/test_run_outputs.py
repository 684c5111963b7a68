"""What one run leaves behind for analysis: predictions.jsonl and the calibration metrics, read back."""

import json
import math
import subprocess
import sys

import pytest

from prompttune.runs.predictions import PREDICTIONS_FILE, read_predictions

TINY = ["model=tiny_bert", "shots=4", "trainer.max_steps=2", "dataset.test_size=40"]


@pytest.mark.slow
def test_a_runs_predictions_and_calibration_metrics_read_back(tmp_path):
    run_dir = tmp_path / "run"
    args = ["train", "method=pet", "method.calibration=contextual", *TINY, f"hydra.run.dir={run_dir}"]
    done = subprocess.run([sys.executable, "-m", "prompttune", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    predictions = read_predictions(run_dir / PREDICTIONS_FILE)
    splits = json.loads((run_dir / "splits.json").read_text())

    assert [p["guid"] for p in predictions] == [e["guid"] for e in splits["test"]]
    assert [p["label"] for p in predictions] == [e["label"] for e in splits["test"]]
    for p in predictions:
        assert set(p["probabilities"]) == set(splits["labels"])
        assert sum(p["probabilities"].values()) == pytest.approx(1, abs=1e-4)
        assert p["prediction"] == max(p["probabilities"], key=p["probabilities"].get)
    correct = [p["prediction"] == p["label"] for p in predictions]
    assert test["accuracy"] == pytest.approx(sum(correct) / len(correct))
    nll = -sum(math.log(p["probabilities"][p["label"]]) for p in predictions) / len(predictions)
    assert test["nll"] == pytest.approx(nll, rel=1e-3)
    index = {label: i for i, label in enumerate(splits["labels"])}
    cells = [[0, 0], [0, 0]]
    for p in predictions:
        cells[index[p["label"]]][index[p["prediction"]]] += 1
    assert test["confusion_matrix"] == cells
    assert test["accuracy_ci"][0] <= test["accuracy"] <= test["accuracy_ci"][1]
    assert test["macro_f1_ci"][0] <= test["macro_f1"] <= test["macro_f1_ci"][1]
    assert 0 <= test["ece"] <= 1
