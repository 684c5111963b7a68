"""`prompttune report --select dev` and the rows of a PET ensemble run, on synthetic metrics.json files."""

import json

import pytest

from prompttune.commands import report
from tests.test_report import completed_metrics, write_metrics

# (seed, lr, dev accuracy, test accuracy): the best dev setting differs by seed
GRID = [
    (13, "1e-5", 0.70, 0.60),
    (13, "2e-5", 0.80, 0.65),
    (13, "5e-5", 0.75, 0.90),
    (21, "1e-5", 0.90, 0.70),
    (21, "2e-5", 0.60, 0.95),
    (21, "5e-5", 0.90, 0.50),  # a tie on dev: the first run found wins
]


def grid_sweep(root):
    for job, (seed, lr, dev, test) in enumerate(GRID):
        metrics = completed_metrics("pet", seed, test, test) | {"settings": [f"trainer.lr={lr}"]}
        metrics["dev"] = {"accuracy": dev, "macro_f1": dev, "n": 32}
        write_metrics(root / str(job), metrics)
    return root


def read_report(path) -> dict:
    return json.loads((path / "report.json").read_text())


def test_select_dev_keeps_the_best_dev_setting_per_seed_then_averages_test(tmp_path, capsys):
    sweep = grid_sweep(tmp_path / "sweep")
    assert report.main([str(sweep), "--select", "dev"]) == 0

    (group,) = read_report(sweep)["groups"]
    assert group["method"] == "pet" and group["n_seeds"] == 2
    assert group["test_accuracy"]["mean"] == pytest.approx((0.65 + 0.70) / 2)
    assert group["selected_settings"] == {"13": ["trainer.lr=2e-5"], "21": ["trainer.lr=1e-5"]}
    assert "Settings selected by best dev accuracy" in (sweep / "report.md").read_text()
    assert "trainer.lr=2e-5" in capsys.readouterr().out


def test_without_select_each_setting_is_its_own_row(tmp_path):
    sweep = grid_sweep(tmp_path / "sweep")
    assert report.main([str(sweep)]) == 0
    assert sorted(g["method"] for g in read_report(sweep)["groups"]) == [
        "pet trainer.lr=1e-5",
        "pet trainer.lr=2e-5",
        "pet trainer.lr=5e-5",
    ]


def ensemble_metrics(seed: int) -> dict:
    block = lambda accuracy: {"accuracy": accuracy, "macro_f1": accuracy, "n": 200}  # noqa: E731
    metrics = completed_metrics("pet", seed, 0.82, 0.82) | {"settings": ["method.mode=ensemble"]}
    metrics |= {
        "patterns": [
            {"pattern_id": 0, "dev": block(0.7), "test": block(0.70), "train_seconds": 10.0},
            {"pattern_id": 1, "dev": block(0.8), "test": block(0.76), "train_seconds": 12.0},
        ],
        "ensemble": {"weights": [0.7, 0.8], "dev": block(0.8), "test": block(0.78)},
        "distilled": {"method": "finetune", "dev": block(0.8), "test": block(0.82), "params": metrics["params"]},
        "train_seconds": 30.0,
    }
    return metrics


def test_an_ensemble_run_reports_each_pattern_the_ensemble_and_the_distilled_model_apart(tmp_path):
    write_metrics(tmp_path / "sweep" / "0", ensemble_metrics(13))
    write_metrics(tmp_path / "sweep" / "1", completed_metrics("pet", 13, 0.74, 0.74))
    assert report.main([str(tmp_path / "sweep")]) == 0

    groups = {g["method"]: g for g in read_report(tmp_path / "sweep")["groups"]}
    test = {method: g["test_accuracy"]["mean"] for method, g in groups.items()}
    assert test == {
        "pet": 0.74,
        "pet pattern 0": 0.70,
        "pet pattern 1": 0.76,
        "pet ensemble": 0.78,
        "pet distilled": 0.82,
    }
    assert groups["pet ensemble"]["train_seconds_mean"] == 22.0
