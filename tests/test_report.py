"""`prompttune report` on synthetic metrics.json files."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from prompttune.commands import report
from prompttune.reporting import significance
from prompttune.reporting.summary import Stat
from prompttune.reporting.tables import format_stat

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# 2 methods x 2 seeds: (method, seed, test accuracy, test macro-F1)
RESULTS = [
    ("finetune", 13, 0.80, 0.78),
    ("finetune", 21, 0.70, 0.66),
    ("pet", 13, 0.60, 0.59),
    ("pet", 21, 0.64, 0.61),
]
# by hand: mean = (a + b) / 2, sample std of two values = |a - b| / sqrt(2)
EXPECTED = {
    "finetune": {"acc": (0.75, 0.10 / math.sqrt(2)), "f1": (0.72, 0.12 / math.sqrt(2))},
    "pet": {"acc": (0.62, 0.04 / math.sqrt(2)), "f1": (0.60, 0.02 / math.sqrt(2))},
}


def completed_metrics(method: str, seed: int, accuracy: float, macro_f1: float, shots: int = 16) -> dict:
    return {
        "status": "completed",
        "error": None,
        "command": "train",
        "method": method,
        "dataset": "mr",
        "model": "smollm2_135m",
        "shots": shots,
        "seed": seed,
        "dev": {"accuracy": accuracy - 0.05, "macro_f1": macro_f1 - 0.05, "n": 32},
        "test": {"accuracy": accuracy, "macro_f1": macro_f1, "n": 200},
        "params": {
            "trainable": 1000 if method == "pet" else 134515008,
            "total": 134515008,
            "ratio": 1000 / 134515008 if method == "pet" else 1.0,
        },
        "train_seconds": 100.0 if seed == 13 else 120.0,
    }


def write_metrics(run_dir: Path, metrics: dict | str) -> Path:
    run_dir.mkdir(parents=True)
    text = metrics if isinstance(metrics, str) else json.dumps(metrics)
    (run_dir / "metrics.json").write_text(text)
    return run_dir


def make_sweep(root: Path) -> Path:
    for job, (method, seed, accuracy, macro_f1) in enumerate(RESULTS):
        write_metrics(root / str(job), completed_metrics(method, seed, accuracy, macro_f1))
    return root


def add_unfinished_runs(root: Path) -> None:
    """A failed run and a running one that both carry test numbers (which must not count), and a half-written
    metrics.json."""
    failed = completed_metrics("pet", 42, 0.0, 0.0) | {"status": "failed", "error": "RuntimeError: boom\nin"}
    running = completed_metrics("finetune", 42, 1.0, 1.0) | {"status": "running"}
    write_metrics(root / "4", failed)
    write_metrics(root / "5", running)
    write_metrics(root / "6", json.dumps(completed_metrics("pet", 87, 0.5, 0.5))[:70])
    write_metrics(root / "7", completed_metrics("pet", 100, 0.5, 0.5) | {"shots": [16]})


def groups_by_method(report_json: dict) -> dict[str, dict]:
    return {group["method"]: group for group in report_json["groups"]}


def read_report_json(directory: Path) -> dict:
    return json.loads((directory / "report.json").read_text())


def test_means_and_sample_stds_over_seeds(tmp_path, capsys):
    sweep = make_sweep(tmp_path / "sweep")
    assert report.main([str(sweep)]) == 0
    groups = groups_by_method(read_report_json(sweep))
    for method, expected in EXPECTED.items():
        group = groups[method]
        assert group["n_seeds"] == 2 and group["seeds"] == [13, 21]
        assert group["test_accuracy"]["mean"] == pytest.approx(expected["acc"][0])
        assert group["test_accuracy"]["std"] == pytest.approx(expected["acc"][1])
        assert group["test_macro_f1"]["mean"] == pytest.approx(expected["f1"][0])
        assert group["test_macro_f1"]["std"] == pytest.approx(expected["f1"][1])
        assert group["train_seconds_mean"] == pytest.approx(110.0)
    assert groups["pet"]["trainable_ratio"] == pytest.approx(1000 / 134515008)
    printed = capsys.readouterr().out
    assert "75.0 ± 7.1" in printed and "72.0 ± 8.5" in printed  # finetune acc, macro-F1 in %
    assert "62.0 ± 2.8" in printed and "60.0 ± 1.4" in printed  # pet


def test_unfinished_failed_and_truncated_runs_are_listed_not_averaged(tmp_path, capsys):
    sweep = make_sweep(tmp_path / "sweep")
    add_unfinished_runs(sweep)
    assert report.main([str(sweep)]) == 0
    result = read_report_json(sweep)
    groups = groups_by_method(result)
    assert groups["pet"]["n_seeds"] == 2 and groups["finetune"]["n_seeds"] == 2
    assert groups["pet"]["test_accuracy"]["mean"] == pytest.approx(EXPECTED["pet"]["acc"][0])
    assert groups["finetune"]["test_accuracy"]["mean"] == pytest.approx(EXPECTED["finetune"]["acc"][0])
    statuses = {Path(run["run_dir"]).name: (run["status"], run["error"]) for run in result["incomplete"]}
    assert statuses["4"] == ("failed", "RuntimeError: boom in")
    assert statuses["5"][0] == "running"
    assert statuses["6"][0] == "unreadable"
    assert statuses["7"][0] == "completed" and "not all plain values" in statuses["7"][1]
    printed = capsys.readouterr().out
    assert "Runs not included" in printed
    assert all(word in printed for word in ("failed", "running", "unreadable", "RuntimeError: boom"))
    markdown = (sweep / "report.md").read_text()
    assert "| failed |" in markdown and "| running |" in markdown and "| unreadable |" in markdown


def test_writes_all_report_files_atomically(tmp_path):
    sweep = make_sweep(tmp_path / "sweep")
    assert report.main([str(sweep)]) == 0
    names = sorted(path.name for path in sweep.iterdir() if path.is_file())
    assert names == ["report.csv", "report.json", "report.md", "report.png"]  # no temp files left
    png = (sweep / "report.png").read_bytes()
    assert len(png) > 0 and png.startswith(PNG_MAGIC)
    csv_lines = (sweep / "report.csv").read_text().splitlines()
    assert csv_lines[0].startswith("dataset,model,shots,method,zero_shot,n_seeds,seeds,test_accuracy_mean")
    assert csv_lines[1].startswith("mr,smollm2_135m,16,finetune,False,2,13 21,0.75")
    pet_row = "| pet | 2 | 62.0 ± 2.8 | [36.6, 87.4] | 60.0 ± 1.4 | [47.3, 72.7] |"
    assert pet_row in (sweep / "report.md").read_text()


def test_plot_with_several_shot_counts_and_explicit_out(tmp_path):
    sweep = make_sweep(tmp_path / "sweep")
    write_metrics(sweep / "4", completed_metrics("pet", 13, 0.55, 0.5, shots=8))
    out = tmp_path / "reports" / "new"
    assert report.main([str(sweep), "--out", str(out), "--metric", "macro_f1"]) == 0
    assert (out / "report.png").read_bytes().startswith(PNG_MAGIC)
    assert not (sweep / "report.json").exists()
    eight_shot = [g for g in read_report_json(out)["groups"] if g["shots"] == 8]
    assert [(g["method"], g["n_seeds"], g["test_accuracy"]["std"]) for g in eight_shot] == [("pet", 1, None)]


def test_eval_runs_are_not_averaged_with_trained_runs(tmp_path, capsys):
    sweep = make_sweep(tmp_path / "sweep")
    write_metrics(sweep / "4", completed_metrics("pet", 42, 0.5, 0.5) | {"command": "eval"})
    assert report.main([str(sweep)]) == 0
    groups = groups_by_method(read_report_json(sweep))
    assert groups["pet"]["n_seeds"] == 2 and groups["pet [eval]"]["seeds"] == [42]
    assert "pet [eval]" in capsys.readouterr().out
    # a zero-shot evaluation trains nothing: no trainable share, unlike the trained runs
    assert groups["pet [eval]"]["trainable_ratio"] is None and groups["pet"]["trainable_ratio"] is not None


def test_single_seed_shows_dash_for_std(tmp_path, capsys):
    write_metrics(tmp_path / "run", completed_metrics("pet", 13, 0.813, 0.8))
    assert report.main([str(tmp_path / "run")]) == 0
    assert "81.3 ± -" in capsys.readouterr().out


def test_several_dirs_report_into_current_dir(tmp_path, monkeypatch):
    first = write_metrics(tmp_path / "a", completed_metrics("pet", 13, 0.6, 0.6))
    second = write_metrics(tmp_path / "b", completed_metrics("pet", 21, 0.8, 0.8))
    monkeypatch.chdir(tmp_path)
    assert report.main([str(first), str(second), str(first)]) == 0  # a dir given twice counts once
    group = read_report_json(tmp_path)["groups"][0]
    assert group["n_seeds"] == 2 and group["test_accuracy"]["mean"] == pytest.approx(0.7)


def test_sweep_with_nothing_completed_yet_still_reports(tmp_path, capsys):
    write_metrics(tmp_path / "0", {"status": "running", "method": "pet", "seed": 13})
    assert report.main([str(tmp_path)]) == 0
    assert "No completed run yet" in capsys.readouterr().out
    assert read_report_json(tmp_path)["groups"] == []
    assert not (tmp_path / "report.png").exists()


@pytest.mark.parametrize(
    "make_args",
    [
        lambda tmp: [str(tmp)],  # empty dir: no metrics.json
        lambda tmp: [],
        lambda tmp: [str(tmp / "missing")],
    ],
)
def test_no_dir_or_no_metrics_is_a_one_line_error(tmp_path, capsys, make_args):
    assert report.main(make_args(tmp_path)) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_format_stat_uses_percent_with_one_decimal():
    assert format_stat(Stat(0.8134, 0.0211)) == "81.3 ± 2.1"
    assert format_stat(Stat(0.5, None)) == "50.0 ± -"
    assert format_stat(Stat(None, None)) == "-"


# ---------------------------------------------------------------- statistics across seeds

SEEDS = [13, 21, 42, 87, 100, 7]


def synthetic_sweep(root: Path, seeds: list[int], label_counts: list[int]) -> dict[str, list[float]]:
    """Three trained methods and a zero-shot row; `strong` beats `weak` on every seed, `noisy` is noise."""
    scores = {
        "strong": [0.80 + 0.01 * i for i in range(len(seeds))],
        "weak": [0.60 + 0.012 * i for i in range(len(seeds))],
        "noisy": [0.80 + (0.15 if i % 2 else -0.15) for i in range(len(seeds))],
    }
    job = 0
    matrix = [[count if i == j else 0 for j in range(len(label_counts))] for i, count in enumerate(label_counts)]
    for method, values in scores.items():
        for seed, value in zip(seeds, values, strict=True):
            metrics = completed_metrics(method, seed, value + 0.02, value)
            metrics["test"]["confusion_matrix"] = matrix
            write_metrics(root / str(job), metrics)
            job += 1
    zero_shot = completed_metrics("pet", 13, 0.55, 0.5) | {"command": "eval"}
    zero_shot["test"]["confusion_matrix"] = matrix
    write_metrics(root / str(job), zero_shot)
    return scores


def test_t_interval_matches_scipy():
    values = [0.71, 0.75, 0.69, 0.80, 0.77]
    expected = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert significance.t_interval(values) == pytest.approx(expected)
    assert significance.t_interval([0.5]) is None
    assert significance.t_interval([0.0, 1.0], bounds=(0.0, 1.0)) == (0.0, 1.0)


@pytest.mark.parametrize("n", [3, 4, 5, 6])
def test_paired_tests_match_scipy(n):
    first = {seed: 0.7 + 0.03 * ((seed * 7) % 5) for seed in SEEDS[:n]}
    second = {seed: 0.65 + 0.02 * ((seed * 3) % 4) for seed in SEEDS[:n]}
    result = significance.paired_test(first, second)
    a, b = list(first.values()), list(second.values())
    if n >= 5:
        assert result.test.startswith("Wilcoxon") and result.p_value == pytest.approx(stats.wilcoxon(a, b).pvalue)
    else:
        assert result.test == "paired t-test" and result.p_value == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert result.mean_difference == pytest.approx(np.mean(a) - np.mean(b))
    forced_t = significance.paired_test(first, second, test="t")
    assert forced_t.p_value == pytest.approx(stats.ttest_rel(a, b).pvalue)


def test_paired_test_uses_only_common_seeds_and_handles_ties():
    result = significance.paired_test({13: 0.8, 21: 0.7, 42: 0.9}, {13: 0.6, 21: 0.5, 87: 0.1})
    assert result.n == 2 and result.mean_difference == pytest.approx(0.2) and result.p_value is None
    assert significance.paired_test({13: 0.5, 21: 0.6}, {13: 0.5, 21: 0.6}).p_value is None
    assert significance.paired_test({13: 0.5}, {21: 0.5}) is None


def test_chance_levels():
    assert significance.chance_level([50, 50], "accuracy") == 0.5
    assert significance.chance_level([50, 50], "macro_f1") == pytest.approx(0.5)
    # 90/10: F1 of random guessing is 2*0.9*0.5/1.4 and 2*0.1*0.5/0.6
    assert significance.chance_level([90, 10], "macro_f1") == pytest.approx((0.9 / 1.4 + 0.1 / 0.6) / 2)


def test_report_ranks_tests_pairs_and_marks_significance(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    scores = synthetic_sweep(sweep, SEEDS, [500, 500])
    assert report.main([str(sweep)]) == 0
    result = read_report_json(sweep)
    (comparison,) = result["comparisons"]
    assert comparison["metric"] == "accuracy" and comparison["chance"] == 0.5
    assert comparison["best"] == "strong" and comparison["ranking"][-1] == "pet [eval]"
    tests = {(t["first"], t["second"]): t for t in comparison["paired_tests"]}
    accuracy = {method: [v + 0.02 for v in values] for method, values in scores.items()}
    strong_weak = tests[("strong", "weak")]
    assert strong_weak["test"].startswith("Wilcoxon") and strong_weak["n"] == 6
    assert strong_weak["p_value"] == pytest.approx(stats.wilcoxon(accuracy["strong"], accuracy["weak"]).pvalue)
    assert strong_weak["significant"] and not tests[("strong", "noisy")]["significant"]
    zero_shot = tests[("strong", "pet [eval]")]  # one zero-shot run stands against every seed
    assert zero_shot["n"] == 6
    assert zero_shot["p_value"] == pytest.approx(stats.wilcoxon(accuracy["strong"], [0.55] * 6).pvalue)
    group = groups_by_method(result)["strong"]
    expected_ci = stats.t.interval(0.95, 5, loc=np.mean(accuracy["strong"]), scale=stats.sem(accuracy["strong"]))
    assert group["test_accuracy"]["ci95"] == pytest.approx(list(expected_ci))
    markdown = (sweep / "report.md").read_text()
    assert "**strong** has the highest mean accuracy" in markdown
    assert "significant at 0.05 over weak" in markdown and "not significant over noisy" in markdown
    assert "| pet [eval] | 1 |" in markdown  # zero-shot beside the trained rows
    assert "*" in markdown.split("Table 1b")[1] and "Chance (uniform random guessing) scores 50.0" in markdown
    assert "strong has the highest mean accuracy" in capsys.readouterr().out


def test_report_of_one_seed_says_its_gaps_cannot_be_tested(tmp_path):
    sweep = tmp_path / "sweep"
    synthetic_sweep(sweep, [13], [500, 500])
    assert report.main([str(sweep)]) == 0
    markdown = (sweep / "report.md").read_text()
    assert "over 1 seed (13)" in markdown
    assert "Its lead over noisy (+15.0 points, p n/a), weak (+20.0 points, p n/a)" in markdown
    assert "cannot be tested: run more seeds" in markdown
    assert "not significant" not in markdown.split("Table 1b")[0]


def test_imbalanced_test_set_leads_with_macro_f1_and_says_why(tmp_path):
    sweep = tmp_path / "sweep"
    synthetic_sweep(sweep, SEEDS[:5], [900, 100])
    assert report.main([str(sweep), "--test", "t"]) == 0
    (comparison,) = read_report_json(sweep)["comparisons"]
    assert comparison["metric"] == "macro_f1" and "imbalanced" in comparison["why"]
    assert comparison["chance"] == pytest.approx(significance.chance_level([900, 100], "macro_f1"))
    assert {t["test"] for t in comparison["paired_tests"]} == {"paired t-test"}
    markdown = (sweep / "report.md").read_text()
    assert "We lead with macro-F1: the test set is imbalanced (classes 90%, 10%)" in markdown


def test_five_seed_wilcoxon_limit_is_stated(tmp_path):
    sweep = tmp_path / "sweep"
    synthetic_sweep(sweep, SEEDS[:5], [500, 500])
    assert report.main([str(sweep)]) == 0
    (comparison,) = read_report_json(sweep)["comparisons"]
    assert not any(t["significant"] for t in comparison["paired_tests"])  # min exact p with 5 pairs: 0.0625
    assert "cannot go below p = 2/2^5 = 0.0625" in (sweep / "report.md").read_text()


def test_the_curve_against_k_has_a_band_per_method_and_zero_shot_as_a_dashed_level(tmp_path):
    from matplotlib.figure import Figure

    from prompttune.reporting.plots import draw_shot_lines
    from prompttune.reporting.reading import find_metrics_files, read_run
    from prompttune.reporting.summary import summarize

    sweep = tmp_path / "sweep"
    job = 0
    for shots, scores in ((4, (0.5, 0.6)), (16, (0.7, 0.72)), (64, (0.8, 0.84))):
        for seed, accuracy in zip((13, 21), scores, strict=True):
            for method in ("pet", "tfidf"):
                write_metrics(sweep / str(job), completed_metrics(method, seed, accuracy, accuracy, shots=shots))
                job += 1
    write_metrics(sweep / "zero_shot", completed_metrics("pet", 13, 0.65, 0.6) | {"command": "eval"})
    assert report.main([str(sweep)]) == 0

    summaries = summarize([read_run(path) for path in find_metrics_files([sweep])])
    ax = Figure().subplots()
    draw_shot_lines(ax, summaries, "test_accuracy", "mr / smollm2_135m")
    solid = [line for line in ax.lines if line.get_linestyle() == "-"]
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert sorted(line.get_label() for line in solid) == ["pet", "tfidf"]
    assert list(solid[0].get_xdata()) == [4, 16, 64] and list(solid[0].get_ydata()) == pytest.approx([55, 71, 82])
    assert len(ax.collections) == 2  # one 95% band per method
    assert ax.get_xlabel() == "labelled examples per class (K)"
    assert [line.get_ydata()[0] for line in dashed] == pytest.approx([65])  # zero-shot: a level, not a point at K=16
    rows = {(g["method"], g["shots"]): g for g in read_report_json(sweep)["groups"]}
    assert rows[("pet [eval]", 16)]["zero_shot"] and not rows[("pet", 16)]["zero_shot"]
    assert rows[("pet", 64)]["test_accuracy"]["ci95"][0] < 0.82 < rows[("pet", 64)]["test_accuracy"]["ci95"][1]


def test_model_size_is_an_axis_with_the_gap_to_finetuning_per_size(tmp_path):
    from matplotlib.figure import Figure

    from prompttune.reporting.plots import draw_size_lines
    from prompttune.reporting.reading import find_metrics_files, read_run
    from prompttune.reporting.sizes import size_panels
    from prompttune.reporting.summary import summarize

    sweep, job = tmp_path / "sweep", 0
    scores = {("smollm2_135m", "finetune"): (0.60, 0.64), ("smollm2_135m", "pet"): (0.70, 0.76)}
    scores |= {("gemma3_270m", "finetune"): (0.70, 0.72), ("gemma3_270m", "pet"): (0.80, 0.84)}
    for (model, method), accuracies in scores.items():
        for seed, accuracy in zip((13, 21), accuracies, strict=True):
            metrics = completed_metrics(method, seed, accuracy, accuracy) | {"model": model}
            metrics["params"]["total"] = 268_098_176 if model == "gemma3_270m" else 134_515_008
            write_metrics(sweep / str(job), metrics)
            job += 1
    assert report.main([str(sweep)]) == 0

    text = (sweep / "report.md").read_text()
    assert "## Model size: mr · K=16" in text
    assert (
        "| smollm2_135m | 135M | pet | 73.0 | +11.0 |" in text and "| gemma3_270m | 268M | pet | 82.0 | +11.0 |" in text
    )
    summaries = summarize([read_run(path) for path in find_metrics_files([sweep])])
    ((key, members),) = size_panels(summaries).items()
    ax = Figure().subplots()
    draw_size_lines(ax, members, "test_accuracy", "mr / K=16")
    lines = {line.get_label(): line for line in ax.lines}
    assert list(lines["pet"].get_xdata()) == [134_515_008, 268_098_176]
    assert list(lines["finetune"].get_ydata()) == pytest.approx([62, 71]) and len(ax.collections) == 2


def test_the_k_axis_says_what_k_counts_for_each_task_kind():
    from prompttune.reporting.plots import shots_axis_label

    assert shots_axis_label("test_f1") == "training sentences (K)"  # tagging: shots counts sentences
    assert shots_axis_label("test_p_at_1") == shots_axis_label("test_mrr") == "training facts (K)"
    assert shots_axis_label("test_macro_f1") == "labelled examples per class (K)"
