import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import default
from seqjax import parallel, training
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smoke_config(**train):
    config = default.get_config("smoke")
    for key, value in train.items():
        config.train[key] = value
    return config


def run_steps(config, devices, num_steps):
    return helpers.run_steps(training.Trainer(config, parallel.make_mesh(devices)), num_steps)


def test_eight_devices_give_the_same_losses_and_params_as_one():
    assert jax.device_count() == 8, "tests/conftest.py asks XLA for 8 CPU devices"
    config = smoke_config()
    config.model.dropout_rate = 0.2  # dropout keys must not depend on the device count
    config.model.num_layers = 2
    one_losses, one_params = run_steps(config, jax.devices()[:1], 4)
    eight_losses, eight_params = run_steps(config, jax.devices(), 4)
    np.testing.assert_allclose(one_losses, eight_losses, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), one_params, eight_params)


def test_batch_that_does_not_split_over_devices_is_refused():
    config = smoke_config(batch_size=12)
    with pytest.raises(ValueError, match=r"batch_size=12 must be divisible by the number of devices \(8\)"):
        training.Trainer(config)


def test_l2_penalty_pulls_weight_matrices_towards_zero_and_leaves_the_loss_alone():
    # Plain SGD: the l2 run's update differs from the plain run's by exactly
    # -lr * 2 * l2 * w on weight matrices, and not at all on biases.
    config = smoke_config()
    config.optimizer.name, config.optimizer.learning_rate = "sgd", 0.1
    config.optimizer.clip_global_norm = 0.0  # clipping would rescale the penalised gradient
    config.optimizer.warmup_steps = 0  # (a warm-up's first step has learning rate 0)
    trainer = training.Trainer(config, parallel.make_mesh(jax.devices()[:1]))
    initial = jax.device_get(trainer.init_state().params)
    plain_losses, plain = run_steps(config, jax.devices()[:1], 1)
    config.optimizer.l2 = 0.5
    l2_losses, penalised = run_steps(config, jax.devices()[:1], 1)
    np.testing.assert_allclose(l2_losses, plain_losses, rtol=1e-6)  # the logged loss is the task's
    for w0, a, b in zip(jax.tree.leaves(initial), jax.tree.leaves(plain), jax.tree.leaves(penalised)):
        expected = -0.1 * 2 * 0.5 * w0 if w0.ndim >= 2 else np.zeros_like(w0)
        np.testing.assert_allclose(b - a, expected, atol=2e-6)


def test_lstm_learns_a_short_adding_problem():
    config = default.get_config("smoke")
    config.task.seq_len = 10
    config.model.hidden_size = 32
    config.train.batch_size = 64
    config.optimizer.learning_rate = 1e-2
    config.train.num_steps = 300
    trainer = training.Trainer(config, parallel.make_mesh(jax.devices()[:1]))
    state = trainer.init_state()
    [before] = trainer.evaluate(state, "test")
    for _ in range(config.train.num_steps):
        state, _ = trainer.step(state)
    [after] = trainer.evaluate(state, "test")
    before, after = before["mse"], after["mse"]
    assert before > 0.1 and after < 0.02, (before, after)


def train_command(workdir, *overrides):
    return [
        sys.executable,
        "-m",
        "experiments.train",
        "--config=configs/default.py:smoke",
        f"--workdir={workdir}",
        *overrides,
    ]


@pytest.mark.slow
def test_entry_point_writes_the_output_contract(tmp_path):
    result = subprocess.run(train_command(tmp_path), cwd=REPO, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    final = json.loads(result.stdout.strip().splitlines()[-1])
    assert final == json.loads((tmp_path / "final_metrics.json").read_text())
    assert final["step"] == 20 and np.isfinite(final["test_mse"])
    assert json.loads((tmp_path / "config.json").read_text())["model"]["cell"] == "lstm"
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps[0] == 5 and steps[-1] == 20
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "tensorboard"))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "20"]
    run_info = json.loads((tmp_path / "run_info.json").read_text())
    assert run_info["status"] == "finished" and run_info["seed"] == 0
    assert run_info["devices"]["device_count"] >= 1 and run_info["packages"]["jax"]
    assert set(run_info["git"]) == {"revision", "dirty"} and run_info["wall_time_s"] > 0


# Runs training in a child process that SIGKILLs itself: after `kill_after_step`
# steps, or right after starting the asynchronous save of `kill_in_save_step`
# (while orbax is still writing it).
KILLER = """
import sys
from configs import default
from seqjax import training
from tests.helpers import die_after_step

kill_after_step, kill_in_save_step, kill_at_final = (int(a) for a in sys.argv[1:4])
workdir = sys.argv[4]
config = default.get_config("smoke")
config.train.num_steps = 30
die_after_step(kill_after_step, kill_in_save_step, bool(kill_at_final))
training.train_and_evaluate(config, workdir)
"""


def run_killer(workdir, kill_after_step=-1, kill_in_save_step=-1, kill_at_final=False):
    return subprocess.run(
        [
            sys.executable,
            "-c",
            KILLER,
            str(kill_after_step),
            str(kill_in_save_step),
            str(int(kill_at_final)),
            str(workdir),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.slow
def test_killed_runs_resume_to_the_uninterrupted_result(tmp_path):
    reference = tmp_path / "reference"
    assert run_killer(reference).returncode == 0
    expected = json.loads((reference / "final_metrics.json").read_text())

    killed = tmp_path / "killed"
    # SIGKILL at step 15 (last checkpoint: 10), then during the save of step
    # 20, then between the final test line and final_metrics.json.
    assert run_killer(killed, kill_after_step=15).returncode == -signal.SIGKILL
    assert run_killer(killed, kill_in_save_step=20).returncode == -signal.SIGKILL
    assert run_killer(killed, kill_at_final=True).returncode == -signal.SIGKILL
    assert "test_mse" in helpers.logged(killed)[-1] and not (killed / "final_metrics.json").exists()
    finished = run_killer(killed)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert json.loads((killed / "final_metrics.json").read_text()) == expected
    assert helpers.losses_by_step(killed) == helpers.losses_by_step(reference)
    no_speed = [{k: v for k, v in r.items() if k != "train_steps_per_second"} for r in helpers.logged(killed)]
    assert no_speed == [
        {k: v for k, v in r.items() if k != "train_steps_per_second"} for r in helpers.logged(reference)
    ]
