"""Sweep reports on fake sweep directories with known numbers."""

import csv
import io
import json
import math
import os
import subprocess
import sys

import pytest

from seqjax import metrics, report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Student-t 97.5% quantiles from a table, so the CI check does not reuse scipy's answer.
T_975 = {1: 12.706204736, 2: 4.302652730}
SWEPT = ["model.cell", "task.seq_len", "seed"]

# (cell, seq_len, seed) -> how the run ended and what it reported.
# test_mse: lower is better; test_copy_accuracy: higher is better. The best
# mse (lstm) and the best accuracy (gru) are in different groups on purpose.
RUNS = {
    ("rnn", 25, 0): dict(status="finished", mse=0.1, acc=0.5, curve=[1.0, 0.5]),
    ("rnn", 25, 1): dict(status="finished", mse=0.2, acc=0.6, curve=[2.0, 1.5]),
    ("rnn", 25, 2): dict(status="finished", mse=0.4, acc=0.7, curve=[3.0, 1.0]),
    ("rnn", 50, 0): dict(status="finished", mse=0.3, acc=0.4, curve=[1.0, 1.0]),
    ("rnn", 50, 1): dict(status="finished", mse=0.5, acc=0.2, curve=[1.0, 1.0]),
    ("lstm", 25, 0): dict(status="finished", mse=0.01, acc=0.9, curve=[0.4, 0.1]),
    ("lstm", 25, 1): dict(status="finished", mse=0.03, acc=0.95, curve=[0.6, 0.3]),
    ("lstm", 25, 2): dict(status="failed", curve=[0.5]),
    ("gru", 25, 0): dict(status="finished", mse=0.05, acc=0.99, curve=[0.2, 0.1]),
    ("gru", 25, 1): dict(status="unfinished", curve=[0.3]),
    ("gru", 25, 2): dict(status="missing"),
}
LOG_TAIL = "step 1\nstep 2\nTraceback (most recent call last):\nFloatingPointError: loss is nan\n"


def run_name(cell, seq_len, seed):
    return f"cell={cell},seq_len={seq_len},seed={seed}"


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)


def write_run(directory, spec, overrides):
    """A training workdir as the sweep runner leaves it (or a crashed/killed one)."""
    os.makedirs(directory)
    write_json(os.path.join(directory, "overrides.json"), overrides)
    records = [{"step": 100 * (i + 1), "train_loss": v, "train_mse": v} for i, v in enumerate(spec["curve"])]
    if spec["status"] == "finished":
        # eval_mse is best at the middle line, eval_copy_accuracy too: neither first nor last.
        records += [
            {"step": 100, "eval_mse": 0.5, "eval_copy_accuracy": 0.1},
            {"step": 200, "eval_mse": 0.2, "eval_copy_accuracy": 0.8},
            {"step": 300, "eval_mse": 0.3, "eval_copy_accuracy": 0.6},
        ]
        final = {"step": 300, "test_mse": spec["mse"], "test_copy_accuracy": spec["acc"]}
        records.append(final)
        write_json(os.path.join(directory, "final_metrics.json"), final)
    with open(os.path.join(directory, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    write_json(
        os.path.join(directory, "run_info.json"),
        {"status": "finished" if spec["status"] == "finished" else "running", "wall_time_s": 12.5},
    )
    if spec["status"] == "failed":
        write_json(os.path.join(directory, "failed.json"), {"returncode": 1, "log_tail": LOG_TAIL})


@pytest.fixture
def sweep_dir(tmp_path):
    runs = []
    for (cell, seq_len, seed), spec in RUNS.items():
        name = run_name(cell, seq_len, seed)
        overrides = {"model.cell": cell, "task.seq_len": seq_len, "seed": seed, "train.num_steps": 300}
        runs.append({"name": name, "overrides": overrides})
        if spec["status"] != "missing":
            write_run(tmp_path / "runs" / name, spec, overrides)
    write_json(
        tmp_path / "sweep.json", {"config": "configs/default.py", "sweep": "fake", "swept_keys": SWEPT, "runs": runs}
    )
    return str(tmp_path)


def rows_by_label(sweep, metric_names=("test_mse", "test_copy_accuracy")):
    rows = report.summarize_groups(report.group_runs(sweep), list(metric_names))
    return {report.group_label(row.group.values): row for row in rows}


def test_run_status_follows_the_files(sweep_dir):
    sweep = report.load_sweep(sweep_dir)
    status = {r.name: r.status for r in sweep.runs}
    assert status[run_name("lstm", 25, 2)] == "failed"
    assert status[run_name("gru", 25, 1)] == "unfinished"
    assert status[run_name("gru", 25, 2)] == "missing"
    assert sum(s == "finished" for s in status.values()) == 8
    assert len(sweep.runs) == len(RUNS)


def test_groups_ignore_seed_but_keep_other_swept_keys(sweep_dir):
    groups = report.group_runs(report.load_sweep(sweep_dir))
    labels = [report.group_label(g.values) for g in groups]
    assert labels == ["cell=rnn,seq_len=25", "cell=rnn,seq_len=50", "cell=lstm,seq_len=25", "cell=gru,seq_len=25"]
    assert [len(g.runs) for g in groups] == [3, 2, 3, 3]
    assert {r.overrides["seed"] for r in groups[0].runs} == {0, 1, 2}


def test_mean_std_ci_match_a_hand_computation(sweep_dir):
    rows = rows_by_label(report.load_sweep(sweep_dir))
    s = rows["cell=rnn,seq_len=25"].stats["test_mse"]  # values 0.1, 0.2, 0.4
    mean = 0.7 / 3
    std = math.sqrt(((0.1 - mean) ** 2 + (0.2 - mean) ** 2 + (0.4 - mean) ** 2) / 2)
    assert s.n == 3
    assert s.mean == pytest.approx(mean, rel=1e-12)
    assert s.std == pytest.approx(std, rel=1e-12) and s.std == pytest.approx(0.152753, rel=1e-5)
    assert s.ci95 == pytest.approx(T_975[2] * std / math.sqrt(3), rel=1e-8)

    s = rows["cell=lstm,seq_len=25"].stats["test_mse"]  # 0.01, 0.03; the failed seed adds nothing
    assert (s.n, s.mean) == (2, pytest.approx(0.02))
    assert s.std == pytest.approx(0.02 / math.sqrt(2))
    assert s.ci95 == pytest.approx(T_975[1] * 0.01, rel=1e-8)  # std / sqrt(2) = 0.01


def test_a_single_seed_has_a_mean_but_no_std_or_ci(sweep_dir):
    s = rows_by_label(report.load_sweep(sweep_dir))["cell=gru,seq_len=25"].stats["test_mse"]
    assert (s.n, s.mean) == (1, 0.05)
    assert math.isnan(s.std) and math.isnan(s.ci95)
    assert report.summarize([]).n == 0 and math.isnan(report.summarize([]).mean)


def test_failed_and_missing_runs_are_counted_and_listed(sweep_dir):
    sweep = report.load_sweep(sweep_dir)
    rows = rows_by_label(sweep)
    lstm, gru = rows["cell=lstm,seq_len=25"], rows["cell=gru,seq_len=25"]
    assert (lstm.n_finished, lstm.n_failed, lstm.n_unfinished) == (2, 1, 0)
    assert (gru.n_finished, gru.n_failed, gru.n_unfinished) == (1, 0, 2)

    table = report.to_markdown(list(rows.values()), sweep.swept_keys)
    lstm_line = next(line for line in table.splitlines() if line.startswith("| lstm | 25 |"))
    assert lstm_line.startswith("| lstm | 25 | 2 | 1 | 0 |")
    gru_line = next(line for line in table.splitlines() if line.startswith("| gru | 25 |"))
    assert gru_line.startswith("| gru | 25 | 1 | 0 | 2 | 0.05 ± – | – |")

    failures = report.failures_markdown(sweep, tail_lines=2)
    assert run_name("lstm", 25, 2) in failures and "return code 1" in failures
    assert "FloatingPointError: loss is nan" in failures and "step 1" not in failures  # last 2 lines only
    assert f"{run_name('gru', 25, 1)}**: unfinished" in failures
    assert f"{run_name('gru', 25, 2)}**: missing" in failures
    assert run_name("rnn", 25, 0) not in failures


def test_best_eval_metrics_respect_direction(sweep_dir):
    run = report.load_sweep(sweep_dir).runs[0]
    assert run.metrics["best_eval_mse"] == 0.2  # min of 0.5, 0.2, 0.3
    assert run.metrics["best_eval_copy_accuracy"] == 0.8  # max of 0.1, 0.8, 0.6
    assert run.metrics["wall_time_s"] == 12.5
    assert report.best_metrics([{"step": 1, "eval_grad_norm": 3.0}]) == {}  # unknown direction: no "best"


def test_metric_direction():
    assert metrics.metric_direction("test_mse") == "min"
    assert metrics.metric_direction("best_eval_loss") == "min"
    assert metrics.metric_direction("eval_perplexity") == "min"
    assert metrics.metric_direction("test_copy_accuracy") == "max"
    assert metrics.metric_direction("train_grad_norm") is None


def test_latex_uses_booktabs_and_bolds_the_best_group_per_column(sweep_dir):
    sweep = report.load_sweep(sweep_dir)
    rows = list(rows_by_label(sweep).values())
    tex = report.to_latex(rows, sweep.swept_keys)
    lines = tex.splitlines()
    assert lines[1] == r"\toprule" and r"\midrule" in lines and lines[-2] == r"\bottomrule"
    assert lines[2] == r"cell & seq\_len & n & no result & test\_mse & test\_copy\_accuracy \\"
    body = {line.split(" & ")[0] + line.split(" & ")[1]: line.split(" & ") for line in lines[4:-2]}
    # Columns: cell, seq_len, n, failed, test_mse, test_copy_accuracy.
    assert body["lstm25"][4] == r"\textbf{0.02 $\pm$ 0.014}"  # lowest mse
    assert body["gru25"][5] == r"\textbf{0.99 $\pm$ --} \\"  # highest accuracy
    assert body["gru25"][3] == "2"  # one unfinished + one missing
    assert tex.count(r"\textbf") == 2


def test_csv_parses_back_to_the_same_numbers(sweep_dir):
    sweep = report.load_sweep(sweep_dir)
    rows = list(rows_by_label(sweep).values())
    parsed = list(csv.DictReader(io.StringIO(report.to_csv(rows, sweep.swept_keys))))
    assert len(parsed) == 4
    by_group = {(r["model.cell"], r["task.seq_len"]): r for r in parsed}
    for row in rows:
        line = by_group[(row.group.values["model.cell"], str(row.group.values["task.seq_len"]))]
        for name, s in row.stats.items():
            for field in ("mean", "std", "ci95"):
                expected, got = getattr(s, field), float(line[f"{name}_{field}"])
                assert (math.isnan(expected) and math.isnan(got)) or got == expected
            assert int(line[f"{name}_n"]) == s.n
            assert int(line[f"{name}_failed"]) == len(row.group.runs) - s.n
    assert by_group[("lstm", "25")]["n_failed"] == "1"
    assert by_group[("gru", "25")]["n_unfinished"] == "2"


def test_learning_curve_is_the_mean_and_std_over_finished_seeds(sweep_dir):
    groups = report.group_runs(report.load_sweep(sweep_dir))
    curve = report.group_curve(groups[0], "train_loss")  # seeds: [1, .5], [2, 1.5], [3, 1]
    assert curve.steps.tolist() == [100, 200]
    assert curve.mean.tolist() == pytest.approx([2.0, 1.0])
    assert curve.std.tolist() == pytest.approx([1.0, 0.5])
    lstm = report.group_curve(groups[2], "train_loss")  # the failed seed's curve is left out
    assert lstm.n.tolist() == [2, 2] and lstm.mean.tolist() == pytest.approx([0.5, 0.2])


def test_plot_writes_a_valid_png(sweep_dir, tmp_path):
    path = str(tmp_path / "curves.png")
    report.plot_curves(report.group_runs(report.load_sweep(sweep_dir)), "train_loss", path, log_y=True)
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    from matplotlib import image

    pixels = image.imread(path)
    assert pixels.shape[0] > 300 and pixels.std() > 0.01  # not a blank canvas
    with pytest.raises(ValueError, match="no finished run logged 'eval_nothing'"):
        report.plot_curves(report.group_runs(report.load_sweep(sweep_dir)), "eval_nothing", path)


def test_cli_writes_every_output_and_prints_the_table(sweep_dir, tmp_path):
    out_dir = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.report",
            f"--sweep_dir={sweep_dir}",
            f"--out_dir={out_dir}",
            "--metrics=test_mse,best_eval_mse",
            "--curve_metric=train_loss",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "| rnn | 25 | 3 | 0 | 0 | 0.2333 ± 0.15 | ±0.38 |" in result.stdout
    assert run_name("lstm", 25, 2) in result.stdout  # the failure is listed, not dropped
    assert sorted(os.listdir(out_dir)) == ["curves_train_loss.png", "results.csv", "results.md", "results.tex"]
    header = (out_dir / "results.csv").read_text().splitlines()[0].split(",")
    assert "best_eval_mse_mean" in header and "test_copy_accuracy_mean" not in header


def test_cli_rejects_a_metric_no_run_reports(sweep_dir, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.report",
            f"--sweep_dir={sweep_dir}",
            f"--out_dir={tmp_path}",
            "--metrics=test_msee",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "test_msee" in result.stderr and "test_mse" in result.stderr


def test_a_diverged_seed_makes_the_mean_nan_instead_of_vanishing(tmp_path):
    runs = []
    for seed, mse in enumerate([0.1, float("nan")]):
        name = f"seed={seed}"
        runs.append({"name": name, "overrides": {"seed": seed}})
        os.makedirs(tmp_path / "runs" / name)
        write_json(tmp_path / "runs" / name / "final_metrics.json", {"step": 1, "test_mse": mse})
    write_json(tmp_path / "sweep.json", {"swept_keys": ["seed"], "runs": runs})
    sweep = report.load_sweep(str(tmp_path))
    (row,) = report.summarize_groups(report.group_runs(sweep), ["test_mse"])
    assert row.stats["test_mse"].n == 2 and math.isnan(row.stats["test_mse"].mean)
    assert "| 2 | 0 | 0 | nan ± – | – |" in report.to_markdown([row], sweep.swept_keys)
    assert r"\textbf" not in report.to_latex([row], sweep.swept_keys)


def test_equal_means_are_all_bold():
    group = report.Group({"model.cell": "a"}, [])
    rows = [
        report.GroupRow(group, {"test_mse": report.summarize([0.8, 0.8, 0.8])}),
        report.GroupRow(group, {"test_mse": report.summarize([0.8])}),
        report.GroupRow(group, {"test_mse": report.summarize([0.9])}),
    ]
    assert rows[0].stats["test_mse"].std == 0.0  # exact sums: no 1e-16 noise
    assert report.best_row_indices(rows, "test_mse") == {0, 1}


def test_without_sweep_json_runs_and_swept_keys_come_from_the_run_dirs(sweep_dir):
    os.remove(os.path.join(sweep_dir, "sweep.json"))
    sweep = report.load_sweep(sweep_dir)
    assert sweep.swept_keys == SWEPT  # train.num_steps is the same everywhere, so not swept
    assert len(sweep.runs) == len(RUNS) - 1  # the run with no directory cannot be known
    assert {r.status for r in sweep.runs} == {"finished", "failed", "unfinished"}
