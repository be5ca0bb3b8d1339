"""A run refuses what would give a wrong number: another config in its
workdir, a second live run in it, a damaged checkpoint it could silently
fail on, a loss that is no longer a number."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest

from seqjax import checkpoint, optim, training, workdir
from tests.helpers import REPO, load_config, logged


def smoke(**train):
    """default.py:smoke with a constant learning rate after warm-up (so a
    run may be extended), checkpoints every 10 steps, and `train` overrides."""
    config = load_config("default", "smoke")
    config.optimizer.schedule = "constant"
    config.train.update({"checkpoint_every": 10, "keep_checkpoints": 3, "progress": False, **train})
    return config


def snapshot(run_dir):
    """Every file of a run dir outside its checkpoints, with its bytes."""
    found = {}
    for root, dirs, files in os.walk(run_dir):
        dirs[:] = [d for d in dirs if d != "checkpoints"]
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, run_dir)] = f.read()
    return found


def without_speed(records):
    return [{k: v for k, v in r.items() if k != "train_steps_per_second"} for r in records]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 10-step run: (its dir, its final metrics)."""
    run_dir = tmp_path_factory.mktemp("finished")
    return run_dir, training.train_and_evaluate(smoke(num_steps=10), str(run_dir))


# ---------------------------------------------------------------- run identity


def test_a_finished_run_started_again_reports_its_stored_result_and_writes_nothing(finished_run):
    run_dir, final = finished_run
    before = snapshot(run_dir)
    assert training.train_and_evaluate(smoke(num_steps=10), str(run_dir)) == final
    assert snapshot(run_dir) == before


def test_a_changed_learning_rate_is_refused_naming_the_key_and_both_values(finished_run):
    run_dir, _ = finished_run
    before = snapshot(run_dir)
    config = smoke(num_steps=10)
    config.optimizer.learning_rate = 0.03
    expected = (
        f"workdir {run_dir} holds a run of a different config "
        "(optimizer.learning_rate: 0.003 in the workdir, 0.03 now). A run's numbers come from one config: "
        "train this one in a new --workdir"
    )
    with pytest.raises(workdir.RunIdentityError, match=f"^{re.escape(expected)}"):
        training.train_and_evaluate(config, str(run_dir))
    assert snapshot(run_dir) == before  # config.json still says what trained the run


def test_a_changed_model_size_is_refused_before_any_checkpoint_is_read(finished_run):
    run_dir, _ = finished_run
    config = smoke(num_steps=10)
    config.model.hidden_size = 32
    with pytest.raises(workdir.RunIdentityError, match=r"model\.hidden_size: 16 in the workdir, 32 now"):
        training.train_and_evaluate(config, str(run_dir))


def test_more_steps_under_a_decaying_schedule_are_refused(finished_run):
    run_dir, _ = finished_run
    config = smoke(num_steps=20)
    config.optimizer.schedule = "cosine"
    with pytest.raises(workdir.RunIdentityError) as error:
        training.train_and_evaluate(config, str(run_dir))
    assert "optimizer.schedule: 'constant' in the workdir, 'cosine' now" in str(error.value)
    assert "train.num_steps: 10 in the workdir, 20 now" in str(error.value)


def test_logging_keys_may_change_between_starts(tmp_path):
    recorded = smoke(num_steps=10)
    training.train_and_evaluate(recorded, str(tmp_path))
    changed = smoke(num_steps=10, log_every=2, eval_every=4, keep_checkpoints=1)
    workdir.check_identity(str(tmp_path), changed)  # no error
    assert [k for k, _, _ in workdir.differences(workdir.as_recorded(recorded), workdir.as_recorded(changed))] == [
        "train.eval_every",
        "train.keep_checkpoints",
        "train.log_every",
    ]


def test_a_run_extended_under_a_constant_rate_equals_the_longer_run_from_the_start(tmp_path):
    training.train_and_evaluate(smoke(num_steps=10), str(tmp_path / "extended"))
    extended = training.train_and_evaluate(smoke(num_steps=20), str(tmp_path / "extended"))
    longer = training.train_and_evaluate(smoke(num_steps=20), str(tmp_path / "longer"))
    assert extended == longer
    # The same train lines, and the 10-step run's test line is gone: one final
    # line, at the end. (The longer run also evaluated at step 10, which was
    # the shorter run's last step, where the test split is scored instead.)
    extended_lines, longer_lines = (without_speed(logged(tmp_path / d)) for d in ("extended", "longer"))
    assert [r for r in extended_lines if "train_loss" in r] == [r for r in longer_lines if "train_loss" in r]
    assert [r for r in extended_lines if "test_loss" in r] == [longer_lines[-1]] == [dict(longer)]


# ---------------------------------------------------------------- checkpoints


def truncate_data_files(step_dir):
    """Cuts every array data file of a checkpoint (tensorstore's `d/` chunk
    files) to half its size, as a full disk or a killed copy leaves them."""
    for root, _, names in os.walk(step_dir):
        if os.path.basename(root) == "d":
            for name in names:
                path = os.path.join(root, name)
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)


def test_a_damaged_newest_checkpoint_is_skipped_and_the_run_ends_as_if_uninterrupted(tmp_path, caplog):
    damaged = tmp_path / "damaged"
    training.train_and_evaluate(smoke(num_steps=20), str(damaged))
    truncate_data_files(damaged / "checkpoints" / "20")
    os.remove(damaged / "final_metrics.json")  # as if killed after the save of step 20
    with caplog.at_level("WARNING"):
        final = training.train_and_evaluate(smoke(num_steps=20), str(damaged))
    assert re.search(r"checkpoint step 20 of .* is unusable \(\w+: .+\); trying an older one", caplog.text)
    assert final == training.train_and_evaluate(smoke(num_steps=20), str(tmp_path / "uninterrupted"))
    assert sorted(os.listdir(damaged / "checkpoints")) == ["10", "20"]  # step 20 saved anew
    assert os.listdir(damaged / "damaged_checkpoints") == ["20"]  # the damaged one, kept for inspection


def test_when_no_checkpoint_restores_the_error_names_every_step(tmp_path):
    training.train_and_evaluate(smoke(num_steps=20), str(tmp_path))
    for step in ("10", "20"):
        truncate_data_files(tmp_path / "checkpoints" / step)
    os.remove(tmp_path / "final_metrics.json")
    with pytest.raises(checkpoint.CheckpointError) as error:
        training.train_and_evaluate(smoke(num_steps=20), str(tmp_path))
    message = str(error.value)
    assert message.startswith(f"no checkpoint in {tmp_path / 'checkpoints'} can be restored: step 20 (")
    assert "; step 10 (" in message
    assert message.endswith("move the checkpoints directory away to train the run from the start.")


# ---------------------------------------------------------------- the lock


def test_a_second_run_in_a_live_workdir_is_refused_naming_the_holder(tmp_path):
    with workdir.lock([str(tmp_path)]):
        with pytest.raises(workdir.WorkdirBusyError, match=rf"^workdir {re.escape(str(tmp_path))} is in use by a "
                           rf"live run \(pid {os.getpid()} on host "):  # fmt: skip
            training.train_and_evaluate(smoke(num_steps=10), str(tmp_path))
    assert not os.path.exists(tmp_path / "config.json")  # refused before writing anything


HOLD_AND_DIE = """
import os, signal, sys
from seqjax import workdir
with workdir.lock([sys.argv[1]]):
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_lock_left_by_a_killed_run_does_not_block_its_resume(tmp_path):
    died = subprocess.run([sys.executable, "-c", HOLD_AND_DIE, str(tmp_path)], cwd=REPO, timeout=60)
    assert died.returncode == -signal.SIGKILL
    assert json.loads((tmp_path / ".lock").read_text())["pid"] != os.getpid()  # its record is still there
    with workdir.lock([str(tmp_path)]):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


def test_without_file_locks_the_record_decides(tmp_path, monkeypatch):
    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(workdir.fcntl, "flock", no_locks)
    lock_file = tmp_path / ".lock"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock_file.write_text(json.dumps({"host": workdir.socket.gethostname(), "pid": int(dead.stdout), "started_at": 0}))
    with workdir.lock([str(tmp_path)]):  # a dead process of this host: taken over
        with pytest.raises(workdir.WorkdirBusyError, match=rf"pid {os.getpid()} on host"):
            with workdir.lock([str(tmp_path)]):
                pass
    lock_file.write_text(json.dumps({"host": "another-host", "pid": 1, "started_at": 0}))
    with pytest.raises(workdir.WorkdirBusyError, match=r"pid 1 on host another-host.*delete .*\.lock"):
        with workdir.lock([str(tmp_path)]):
            pass


# ---------------------------------------------------------------- non-finite numbers


def test_a_diverging_run_stops_at_its_first_non_finite_loss_naming_its_last_checkpoint(tmp_path):
    config = smoke(num_steps=20)
    config.optimizer.learning_rate = 1e30
    with pytest.raises(FloatingPointError) as error:
        training.train_and_evaluate(config, str(tmp_path))
    match = re.match(
        rf"step (\d+): train (loss|grad_norm) is (nan|inf) in run {re.escape(str(tmp_path))}; ", str(error.value)
    )
    assert match, str(error.value)
    bad_step = int(match.group(1))
    steps = [r["step"] for r in logged(tmp_path)]
    assert all(s < bad_step for s in steps)  # the window holding the bad step was not logged
    saved = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints"))
    assert all(s < bad_step for s in saved)
    assert (f"its last checkpoint is step {saved[-1]}" if saved else "it has no checkpoint yet") in str(error.value)


def test_a_non_finite_test_loss_after_finite_training_is_refused_and_nothing_final_is_written(tmp_path):
    # A unit error in the test part of a series: 1e30 is finite, its squared
    # normalised error is not (float32), while training never sees it.
    series = tmp_path / "series.csv"
    values = 100 + 10 * np.sin(np.arange(200) / 3)
    values[-3] = 1e30
    series.write_text("t,value\n" + "".join(f"{t},{float(v)!r}\n" for t, v in enumerate(values)))
    config = load_config("forecast", "smoke")
    config.task.update(series=str(series), column="value", data_dir=str(tmp_path / "tfds"))
    config.train.update(num_steps=10, log_every=5, eval_every=5, progress=False)
    run_dir = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=rf"^step 10: test loss is inf in {re.escape(str(run_dir))}; nothing "
                       r"was written for it\. With a finite training loss, the test split holds inputs the model "
                       r"cannot score"):  # fmt: skip
        training.train_and_evaluate(config, str(run_dir))
    assert [r["step"] for r in logged(run_dir)] == [5, 5, 10]  # train, eval (finite), train: no test line
    assert not (run_dir / "final_metrics.json").exists()


def test_the_skip_policy_leaves_params_unchanged_on_a_non_finite_gradient():
    config = smoke(nonfinite="skip")
    config.optimizer.warmup_steps = 0  # the first update that goes through has the peak rate
    tx = optim.build_optimizer(config, num_updates=20)
    params = {"w": np.ones(3, np.float32)}
    state = tx.init(params)
    updates, state = tx.update({"w": np.array([1.0, np.nan, 1.0], np.float32)}, state, params)
    assert np.all(optax.apply_updates(params, updates)["w"] == params["w"])
    updates, state = tx.update({"w": np.ones(3, np.float32)}, state, params)
    assert np.all(optax.apply_updates(params, updates)["w"] < params["w"])


def test_the_skip_policy_stops_after_too_many_skipped_updates_in_a_row(tmp_path, caplog):
    config = smoke(num_steps=20, nonfinite="skip", eval_every=20)  # (an eval of the broken params would stop it)
    config.optimizer.learning_rate = 1e30
    with caplog.at_level("WARNING"), pytest.raises(FloatingPointError) as error:
        training.train_and_evaluate(config, str(tmp_path))
    skipped = [int(s) for s in re.findall(r"step (\d+): train \w+ is \w+ in .*; update skipped", caplog.text)]
    assert len(skipped) == optim.SKIP_LIMIT and skipped == list(range(skipped[0], skipped[0] + optim.SKIP_LIMIT))
    assert str(error.value).startswith(f"step {skipped[-1] + 1}: ")


# ---------------------------------------------------------------- preemption


def test_sigterm_stops_at_the_next_logging_step_with_a_checkpoint_and_exit_75_and_the_run_resumes_exactly(tmp_path):
    command = [sys.executable, "-m", "experiments.train", "--config=configs/default.py:smoke",
               "--config.train.num_steps=600", "--config.train.checkpoint_every=100"]  # fmt: skip
    workdir = tmp_path / "preempted"
    process = subprocess.Popen([*command, f"--workdir={workdir}"], cwd=REPO, stderr=subprocess.PIPE, text=True)
    while not logged(workdir):
        assert process.poll() is None, process.stderr.read()[-2000:]
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 75, err[-2000:]
    step = int(re.search(r"SIGTERM received: stopped at step (\d+) with a checkpoint saved in ", err).group(1))
    assert step % 5 == 0 and step < 600 and os.path.isdir(workdir / "checkpoints" / str(step))
    assert not (workdir / "final_metrics.json").exists()
    (attempt,) = json.loads((workdir / "run_info.json").read_text())["attempts"]
    assert attempt["stopped_at_step"] == step and attempt["signal"] == "SIGTERM"
    resumed = subprocess.run([*command, f"--workdir={workdir}"], cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from step {step} of 600 (its checkpoint)" in resumed.stderr
    whole = subprocess.run([*command, f"--workdir={tmp_path / 'whole'}"], cwd=REPO, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert without_speed(logged(workdir)) == without_speed(logged(tmp_path / "whole"))
    assert resumed.stdout.splitlines()[-1] == whole.stdout.splitlines()[-1]


def test_the_logged_learning_rate_does_not_count_skipped_updates():
    config = smoke(nonfinite="skip")
    config.optimizer.update(schedule="cosine", warmup_steps=0)  # a rate that changes every update
    trainer = training.Trainer(config)
    state = trainer.init_state()
    assert optim.skipped_updates(state.opt_state).tolist() == [0]

    def three_skipped(node):
        if isinstance(node, optax.ApplyIfFiniteState):
            return node._replace(total_notfinite=node.total_notfinite + 3)
        return node

    skipped = state.replace(
        opt_state=jax.tree.map(
            three_skipped, state.opt_state, is_leaf=lambda n: isinstance(n, optax.ApplyIfFiniteState)
        )
    )
    schedule = trainer.schedules[0]
    assert trainer.learning_rates(10, state) == [float(schedule(9))]
    assert trainer.learning_rates(10, skipped) == [float(schedule(9 - 3))] != [float(schedule(9))]
    assert optim.skipped_updates(training.Trainer(smoke()).init_state().opt_state) is None
