"""What a run tells its reader: the learning rate in its train lines, its
config in TensorBoard, plain progress lines in a log file, notes on setup,
resume and evaluation, and nothing but results on stdout."""

import glob
import json
import math
import re
import struct
import subprocess
import sys
import time

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
    assert "\r" not in captured.err  # no progress bars in a log file


# ---------------------------------------------------------------- Weights & Biases (offline)


def wandb_records(path: str) -> list:
    """The protobuf records of a W&B run file, read as W&B writes it: a
    7-byte ':W&B' header, then 32 KiB blocks of records, each
    checksum(4) length(2) type(1) + data (LevelDB's log format; a record
    may span blocks as first/middle/last parts)."""
    from wandb.proto import wandb_internal_pb2

    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B", path
    records, pending, offset, block = [], b"", 7, 32768
    while offset + 7 <= len(data):
        if block - offset % block < 7:  # a block's tail too short for a header is padding
            offset += block - offset % block
            continue
        length, kind = struct.unpack("<HB", data[offset + 4 : offset + 7])
        if offset + 7 + length > len(data):  # a record still being written
            break
        pending += data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):  # a whole record, or its last part
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def finished_wandb_records(path: str, timeout_s: float = 60.0) -> list:
    """The records of a finished run's W&B file, once its `exit` record is on
    disk: `run.finish()` returns before W&B's service has flushed the file
    (under load the file can still hold only its header)."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = wandb_records(path)
        if records and records[-1].WhichOneof("record_type") == "exit":
            return records
        if time.monotonic() > deadline:
            kinds = [record.WhichOneof("record_type") for record in records]
            raise AssertionError(f"{path}: no exit record after {timeout_s} s; records: {kinds}")
        time.sleep(0.2)


def wandb_history(run_dir) -> dict[int, dict]:
    """{step: the values W&B logged at it} over every offline attempt of a run."""
    rows = {}
    for path in sorted(glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))):
        for record in finished_wandb_records(path):
            if record.WhichOneof("record_type") == "history":
                row = {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item
                }
                rows.setdefault(row.get("_step", record.history.step.num), {}).update(row)
    return rows


@pytest.mark.slow
def test_wandb_offline_mirrors_every_metrics_line_and_a_resumed_run_continues_its_wandb_run(tmp_path, monkeypatch):
    from seqjax import training
    from tests.helpers import load_config

    monkeypatch.setenv("WANDB_MODE", "offline")
    config = load_config("default", "smoke")
    config.optimizer.update(schedule="constant", warmup_steps=0)  # so the run may be extended
    config.train.update(wandb_project="seqjax-test", num_steps=10)
    training.train_and_evaluate(config, str(tmp_path))
    config.train.num_steps = 20  # a second start of the same run, as after a preemption
    final = training.train_and_evaluate(config, str(tmp_path))
    run_id = json.loads((tmp_path / "run_info.json").read_text())["wandb_id"]
    attempts = sorted(glob.glob(str(tmp_path / "wandb" / "offline-run-*")))
    assert len(attempts) == 2 and all(path.endswith("-" + run_id) for path in attempts)
    history = wandb_history(tmp_path)
    for record in logged(tmp_path):
        if record["step"] == 10 and any(k.startswith("test_") for k in record):
            continue  # the first start's final line, before the run was extended
        assert {k: v for k, v in record.items() if k != "step"}.items() <= history[record["step"]].items()
    assert history[20]["test_mse"] == final["test_mse"]
    runs = [r for p in attempts for r in finished_wandb_records(glob.glob(p + "/run-*.wandb")[0]) if r.HasField("run")]
    config_items = {
        item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in runs[-1].run.config.update
    }
    assert config_items["train"]["num_steps"] == 20 and runs[-1].run.project == "seqjax-test"


def test_a_wandb_project_must_be_a_name():
    from seqjax import config as config_lib
    from tests.helpers import load_config

    config = load_config("default", "smoke")
    del config.train.wandb_project  # (a config file of its own could hold any type)
    config.train.wandb_project = 3
    with pytest.raises(config_lib.ConfigError, match=r"^bad value config.train.wandb_project=3: must be a W&B project"):
        config_lib.validate(config)
