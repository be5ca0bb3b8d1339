"""What a run tells its reader: the learning rate in its train lines, its
config in TensorBoard, plain progress lines in a log file, notes on setup,
resume and evaluation, and nothing but results on stdout."""

import glob
import json
import math
import re
import subprocess
import sys

import pytest

from seqjax import metrics
from tests.helpers import REPO, logged


def train(workdir, stderr_path, *flags):
    with open(stderr_path, "w") as stderr:  # a file, as in a cluster job's log
        return subprocess.run(
            [sys.executable, "-m", "experiments.train", "--config=configs/default.py:smoke", f"--workdir={workdir}",
             "--config.train.progress=True", *flags],
            cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=300,
        )  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    done = train(root / "run", root / "stderr.txt")
    assert done.returncode == 0, (root / "stderr.txt").read_text()[-3000:]
    return root / "run", (root / "stderr.txt").read_text(), done.stdout


def test_train_lines_carry_the_learning_rate_of_the_schedule(run):
    workdir, _, _ = run
    peak, warmup, steps, end = 3e-3, 5, 20, 0.01  # default.py:smoke's cosine schedule
    for record in [r for r in logged(workdir) if "train_loss" in r]:
        update = record["step"] - 1  # the step's (only) update, counted from 0
        if update < warmup:
            expected = peak * update / warmup
        else:
            progress = (update - warmup) / (steps - warmup)
            expected = peak * (end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress)))
        assert record["train_learning_rate"] == pytest.approx(expected, rel=1e-6), record["step"]


def test_a_log_file_gets_plain_progress_lines_and_notes_on_each_phase(run):
    _, stderr, _ = run
    assert "\r" not in stderr
    assert re.search(r"^step 20/20 \(100%\) \| [\d.]+ steps/s \| ETA 0:00:00 \| loss [\d.e-]+$", stderr, re.M)
    for note in ("setting up (data, model, compiling the step)", "training from step 0",
                 "step 10: evaluating the eval split", "step 10: eval evaluation done in",
                 "step 20: evaluating the test split", "step 20: test evaluation done in"):  # fmt: skip
        assert note in stderr, note


def test_stdout_holds_only_the_final_metrics_line(run):
    workdir, _, stdout = run
    (line,) = stdout.strip().splitlines()
    assert json.loads(line) == json.loads((workdir / "final_metrics.json").read_text())


def test_tensorboard_gets_the_config_and_the_hparams_with_the_final_metrics(run):
    from tensorboard.backend.event_processing import event_accumulator

    workdir, _, _ = run
    events = event_accumulator.EventAccumulator(str(workdir / "tensorboard"))
    events.Reload()
    assert "config/text_summary" in events.Tags()["tensors"]
    assert "train_learning_rate" in events.Tags()["scalars"]
    hparams = glob.glob(str(workdir / "tensorboard" / "hparams" / "events.*"))
    assert hparams, "no hparams event file"
    session = event_accumulator.EventAccumulator(hparams[0])
    session.Reload()
    assert "test_mse" in session.Tags()["scalars"]


def test_progress_lines_without_a_terminal():
    progress = metrics.Progress(0, 10, interactive=False, interval_s=0.0)
    assert progress.line(10, {"loss": 0.5}).startswith("step 10/10 (100%) | ")
    assert progress.line(10, {"loss": 0.5}).endswith("| ETA 0:00:00 | loss 0.5")


def test_preparing_a_dataset_prints_nothing_on_stdout(tmp_path, capsys):
    from seqjax.data.sources import load_source

    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\n")
    load_source("local/classification", "train", paths=str(tmp_path / "train.tsv"), data_dir=str(tmp_path / "tfds"))
    captured = capsys.readouterr()
    assert captured.out == "" and "Downloading and preparing" in captured.err
