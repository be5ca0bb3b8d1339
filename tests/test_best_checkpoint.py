"""config.train.best_metric and early stopping: the best checkpoint is the
one with the best eval metric, its test metrics are those of a run trained
exactly to its step, early stopping stops where patience runs out, and a
killed run resumes to the uninterrupted result."""

import json
import os
import signal
import subprocess
import sys

import pytest

from seqjax import config as config_lib
from seqjax import report, training
from tests import helpers
from tests.helpers import REPO, load_config

# The adding problem at a learning rate high enough that eval_mse goes up and
# down: on this config the best of the eight evaluations is step 20, and the
# last (step 40) is worse.
CHILD = """
import sys
from tests.helpers import die_after_step, load_config
from seqjax import report, training

kill_after_step, kill_at_final, patience, workdir = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
config = load_config("default", "smoke")
config.train.update(num_steps=40, eval_every=5, log_every=5, checkpoint_every=10,
                    best_metric="eval_mse", early_stopping_patience=patience)
config.optimizer.update(learning_rate=0.03, warmup_steps=0, schedule="constant")
die_after_step(kill_after_step, kill_at_final=bool(kill_at_final))
training.train_and_evaluate(config, workdir)
"""


def bumpy_config(**train):
    config = load_config("default", "smoke")
    config.train.update(num_steps=40, eval_every=5, log_every=5, checkpoint_every=10, best_metric="eval_mse")
    config.train.update(**train)
    config.optimizer.update(learning_rate=0.03, warmup_steps=0, schedule="constant")
    return config


def run_child(workdir, kill_after_step=-1, kill_at_final=False, patience=0):
    args = [str(kill_after_step), str(int(kill_at_final)), str(patience), str(workdir)]
    return subprocess.run([sys.executable, "-c", CHILD, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def eval_curve(workdir) -> dict[int, float]:
    return {r["step"]: r["eval_mse"] for r in helpers.logged(workdir) if "eval_mse" in r}


@pytest.mark.slow
def test_the_best_checkpoint_is_the_best_evaluation_and_tests_as_a_run_stopped_there(tmp_path):
    final = training.train_and_evaluate(bumpy_config(), str(tmp_path / "run"))
    curve = eval_curve(tmp_path / "run")
    best_step = min(curve, key=curve.get)
    assert sorted(curve) == list(range(5, 41, 5))  # the last step is evaluated too: it is a candidate
    assert best_step < 40 and curve[40] > curve[best_step]  # the last step is worse
    assert final["best_step"] == best_step and final["best_eval_mse"] == curve[best_step]
    assert os.listdir(tmp_path / "run" / "best_checkpoint") == [str(best_step)]  # orbax kept only the best
    # An independent reference: the same run trained to the best step (constant rate, same batches).
    stopped_there = training.train_and_evaluate(
        bumpy_config(num_steps=best_step, best_metric=""), str(tmp_path / "ref")
    )
    assert final["best_test_mse"] == stopped_there["test_mse"] and final["best_test_loss"] == stopped_there["test_loss"]
    assert final["test_mse"] != final["best_test_mse"] and final["step"] == 40 and "stopped_early" not in final
    reported = report.load_run(str(tmp_path / "run"), "run", {}).metrics  # the sweep report's columns
    assert reported["best_test_mse"] == final["best_test_mse"] and reported["best_eval_mse"] == curve[best_step]


@pytest.mark.slow
def test_early_stopping_stops_when_patience_runs_out_and_a_killed_run_resumes_exactly(tmp_path):
    reference = tmp_path / "reference"
    assert run_child(reference, patience=2).returncode == 0
    expected = json.loads((reference / "final_metrics.json").read_text())
    curve = eval_curve(reference)
    best_step = expected["best_step"]
    # Two evaluations after the best without a better one, then the stop: no step trained past it.
    assert expected["stopped_early"] is True and expected["step"] == best_step + 10 < 40
    assert max(curve) == expected["step"] and all(curve[s] >= curve[best_step] for s in curve if s > best_step)
    assert all(r["step"] <= expected["step"] for r in helpers.logged(reference))

    killed = tmp_path / "killed"
    assert run_child(killed, kill_after_step=expected["step"] - 3, patience=2).returncode == -signal.SIGKILL
    assert run_child(killed, kill_at_final=True, patience=2).returncode == -signal.SIGKILL
    assert not (killed / "final_metrics.json").exists()
    resumed = run_child(killed, patience=2)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((killed / "final_metrics.json").read_text()) == expected
    assert eval_curve(killed) == curve
    # Finished: started again, it reports the stored result and trains nothing.
    again = training.train_and_evaluate(bumpy_config(early_stopping_patience=2), str(reference))
    assert again == expected


@pytest.mark.parametrize(
    "train,message",
    [
        ({"best_metric": "accuracy"}, "bad value config.train.best_metric='accuracy': must be '' (off) or a metric"),
        (
            {"early_stopping_patience": 3},
            "bad value config.train.early_stopping_patience=3: needs config.train.best_metric",
        ),
        (
            {"best_metric": "eval_mse", "early_stopping_patience": -1},
            "bad value config.train.early_stopping_patience=-1: must be an integer >= 0",
        ),
        (
            {"best_metric": "eval_mse", "early_stopping_patience": 2, "eval_every": 7},
            "bad value config.train.eval_every=7: must be a multiple of config.train.log_every=5 with early stopping",
        ),
    ],
)
def test_bad_best_metric_settings_are_refused(train, message):
    config = load_config("default", "smoke")
    config.train.update(**train)
    with pytest.raises(config_lib.ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        config_lib.validate(config)


def test_a_best_metric_the_eval_split_does_not_report_is_refused_naming_those_it_does(tmp_path):
    with pytest.raises(
        config_lib.ConfigError,
        match=r"^config.train.best_metric='eval_accuracy' is not a metric of the eval split, which reports "
        r"eval_loss, eval_mse: choose one of them",
    ):
        training.train_and_evaluate(bumpy_config(best_metric="eval_accuracy", num_steps=5), str(tmp_path))
    with pytest.raises(config_lib.ConfigError, match=r"^config.train.best_metric='eval_norm': whether higher or lower"):
        training.train_and_evaluate(bumpy_config(best_metric="eval_norm", num_steps=5), str(tmp_path / "b"))
