"""A run of two processes (2 CPU devices each, a coordinator on localhost,
Gloo between them) is one run: the numbers of one process with 4 devices,
each file written once, and a kill -9 of both resumes exactly."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import REPO, logged

pytestmark = pytest.mark.slow

SMOKE = ["-m", "experiments.train", "--config=configs/default.py:smoke"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(devices: int, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_", "XLA_FLAGS"))}
    return {**env, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **extra}


def start_two(workdir, *flags: str) -> list[subprocess.Popen]:
    """The two processes of one run, started as a launcher would."""
    port = str(free_port())
    return [
        subprocess.Popen(
            [sys.executable, *SMOKE, f"--workdir={workdir}", *flags],
            cwd=REPO,
            env=environment(
                2, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(rank)
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]


def finish(processes: list[subprocess.Popen]) -> list[str]:
    """Each process's stdout, once all exited 0."""
    outputs = [p.communicate(timeout=240) for p in processes]
    for rank, (process, (_, err)) in enumerate(zip(processes, outputs)):
        assert process.returncode == 0, f"process {rank} failed:\n{err[-3000:]}"
    return [out for out, _ in outputs]


def without_speed(records):
    return [{k: v for k, v in r.items() if k != "train_steps_per_second"} for r in records]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(the two-process run's dir and stdouts, the one-process run's dir)."""
    root = tmp_path_factory.mktemp("multiprocess")
    stdouts = finish(start_two(root / "two"))
    single = subprocess.run(
        [sys.executable, *SMOKE, f"--workdir={root / 'one'}"],
        cwd=REPO,
        env=environment(4),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    return root / "two", stdouts, root / "one"


def test_two_processes_report_the_numbers_of_one_process_with_as_many_devices(runs):
    two, _, one = runs
    both = without_speed(logged(two)), without_speed(logged(one))
    assert [sorted(r) for r in both[0]] == [sorted(r) for r in both[1]]
    largest = 0.0
    for multi, single in zip(*both):
        for key in single:
            np.testing.assert_allclose(multi[key], single[key], rtol=1e-5, err_msg=key)
            largest = max(largest, abs(multi[key] - single[key]) / max(abs(single[key]), 1e-12))
    print(f"largest relative difference, 2 processes vs 1: {largest:.2e}")  # 1.4e-7 when written


def test_only_process_0_writes_the_run_files(runs):
    two, stdouts, one = runs
    assert len(logged(two)) == len(logged(one)) == 6  # each line once
    assert [json.loads(stdouts[0].strip().splitlines()[-1])] == [json.loads((two / "final_metrics.json").read_text())]
    assert not [line for line in stdouts[1].splitlines() if line.startswith("{")]  # process 1 prints no result
    assert sorted(os.listdir(two / "checkpoints")) == ["10", "20"]  # one checkpoint directory, orbax's layout
    assert len([f for f in os.listdir(two / "tensorboard") if f.startswith("events.")]) == 1
    assert len(json.loads((two / "run_info.json").read_text())["attempts"]) == 1


def test_a_kill_of_both_processes_resumes_to_the_uninterrupted_numbers(runs, tmp_path):
    two, _, _ = runs
    workdir = tmp_path / "killed"
    # Checkpoints every 5 steps (a logging key: the same numbers), so the kill falls between two of them.
    processes = start_two(workdir, "--config.train.checkpoint_every=5")
    deadline = time.monotonic() + 180
    while not (workdir / "checkpoints" / "5").is_dir():
        assert time.monotonic() < deadline and all(p.poll() is None for p in processes), "no checkpoint in time"
        time.sleep(0.02)
    for process in processes:
        process.kill()
        process.wait()
    assert not (workdir / "final_metrics.json").exists()
    finish(start_two(workdir, "--config.train.checkpoint_every=5"))
    attempts = json.loads((workdir / "run_info.json").read_text())["attempts"]
    assert len(attempts) == 2 and attempts[1]["start_step"] >= 5
    assert without_speed(logged(workdir)) == without_speed(logged(two))


def test_a_signal_to_one_process_stops_both_at_the_same_step_and_the_run_resumes_exactly(runs, tmp_path):
    two, _, _ = runs
    workdir = tmp_path / "preempted"
    flags = ["--config.train.num_steps=200", "--config.train.checkpoint_every=100"]
    processes = start_two(workdir, *flags)
    deadline = time.monotonic() + 180
    while not logged(workdir):
        assert time.monotonic() < deadline and all(p.poll() is None for p in processes), "no metrics in time"
        time.sleep(0.02)
    processes[1].send_signal(signal.SIGTERM)  # as a scheduler would, to one of them
    outputs = [p.communicate(timeout=240) for p in processes]
    assert [p.returncode for p in processes] == [75, 75], outputs[0][1][-2000:]
    stopped = {int(re.search(r"stopped at step (\d+)", err).group(1)) for _, err in outputs}
    (step,) = stopped  # the same step in both
    assert step % 5 == 0 and step < 200 and (workdir / "checkpoints" / str(step)).is_dir()
    finish(start_two(workdir, *flags))
    uninterrupted = tmp_path / "uninterrupted"
    finish(start_two(uninterrupted, *flags))
    assert without_speed(logged(workdir)) == without_speed(logged(uninterrupted))
