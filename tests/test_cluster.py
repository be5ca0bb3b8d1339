"""Sweeps and runs where researchers run them: print mode for any scheduler,
and (marked `slurm`) a real Slurm cluster: an array-job sweep, an `srun -n 2`
run, and a job requeued mid-run.

The Slurm tests need a cluster that accepts jobs (`scripts/slurm_cluster.sh`
starts one on this machine; .ci/run does, and sets SEQJAX_REQUIRE_SLURM=1 so
that they fail rather than skip there)."""

import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np
import pytest

from seqjax import report
from tests.helpers import REPO, logged

pytestmark = pytest.mark.slow

# Two arms (cells) x two seeds of default.py:smoke: the report must keep the arms apart.
CELL_SWEEP = """
import importlib.util
spec = importlib.util.spec_from_file_location("base", {default!r})
base = importlib.util.module_from_spec(spec); spec.loader.exec_module(base)

def get_config(variant=None):
    return base.get_config("smoke")

def get_sweep(name=None):
    from seqjax import sweeps
    return sweeps.product(sweeps.values("model.cell", ["rnn", "irnn"]), sweeps.seeds(2))
"""


def sweep(config_file, sweep_dir, *flags: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "experiments.sweep", f"--config={config_file}", f"--sweep_dir={sweep_dir}"]
    result = subprocess.run([*command, *flags], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def table(sweep_dir) -> str:
    """The report's table of test_mse (mean ± std, n) per arm."""
    loaded = report.load_sweep(str(sweep_dir))
    rows = report.summarize_groups(report.group_runs(loaded), ["test_mse"])
    return report.to_markdown(rows, loaded.swept_keys, digits=9)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cells") / "cells.py"
    path.write_text(CELL_SWEEP.format(default=os.path.join(REPO, "configs", "default.py")))
    return path


@pytest.fixture(scope="module")
def local_table(config_file, tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("local") / "sweep"
    sweep(config_file, sweep_dir, "--mode=local", "--parallel=2")
    return table(sweep_dir)


def test_the_local_sweep_reports_two_arms_of_two_seeds(local_table):
    rows = [line for line in local_table.splitlines() if line.startswith(("| rnn ", "| irnn "))]
    assert [row.split(" | ")[1:4] for row in rows] == [["2", "0", "0"]] * 2  # n, failed, unfinished


def test_print_mode_records_the_sweep_so_its_report_keeps_the_arms_apart(config_file, local_table, tmp_path):
    sweep_dir = tmp_path / "printed"
    commands = sweep(config_file, sweep_dir, "--mode=print").stdout.strip().splitlines()
    assert len(commands) == 4 and json.loads((sweep_dir / "sweep.json").read_text())["swept_keys"] == [
        "model.cell",
        "seed",
    ]
    assert [r.status for r in report.load_sweep(str(sweep_dir)).runs] == ["pending"] * 4
    assert json.loads((sweep_dir / "runs" / "cell=irnn,seed=1" / "overrides.json").read_text()) == {
        "model.cell": "irnn",
        "seed": 1,
    }
    for pair in (commands[:2], commands[2:]):  # as a scheduler would run them, two at a time
        started = [subprocess.Popen(shlex.split(c.replace("python ", f"{sys.executable} ", 1)), cwd=REPO) for c in pair]
        assert [p.wait(timeout=300) for p in started] == [0, 0]
    assert table(sweep_dir) == local_table


# ---------------------------------------------------------------- a real Slurm cluster


@pytest.mark.slurm
def test_a_slurm_array_sweep_reports_the_table_of_the_local_sweep(slurm_cluster, config_file, local_table, tmp_path):
    sweep_dir = tmp_path / "slurm_sweep"
    done = sweep(config_file, sweep_dir, "--mode=slurm", "--wait", "--slurm_time_min=10")
    assert json.loads(done.stdout.strip().splitlines()[-1])["finished"] == 4
    job_ids = json.loads((sweep_dir / "slurm_jobs.json").read_text())
    assert len(job_ids) == 4 and len({job.split("_")[0] for job in job_ids.values()}) == 1  # one array job
    print("Slurm array tasks:", job_ids)
    assert table(sweep_dir) == local_table
    again = sweep(config_file, sweep_dir, "--mode=slurm", "--wait")  # finished runs are not submitted again
    assert "4 already finished, 0 submitted" in again.stderr


@pytest.mark.slurm
def test_a_slurm_sweep_of_vmap_groups_is_one_task_per_arm_with_the_same_table(
    slurm_cluster, config_file, local_table, tmp_path
):
    sweep_dir = tmp_path / "slurm_vmap"
    sweep(config_file, sweep_dir, "--mode=slurm", "--slurm_vmap", "--wait", "--slurm_time_min=10")
    job_ids = json.loads((sweep_dir / "slurm_jobs.json").read_text())
    assert job_ids["cell=rnn,seed=0"] == job_ids["cell=rnn,seed=1"] != job_ids["cell=irnn,seed=0"]
    assert len(set(job_ids.values())) == 2  # two array tasks: one per cell, its seeds as replicas
    assert table(sweep_dir) == local_table


def cpu_env(devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_", "XLA_FLAGS"))}
    return {**env, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def without_speed(records):
    return [{k: v for k, v in r.items() if k != "train_steps_per_second"} for r in records]


@pytest.mark.slurm
def test_srun_with_two_tasks_trains_one_run_with_one_writer(slurm_cluster, tmp_path):
    train = [sys.executable, "-m", "experiments.train", "--config=configs/default.py:smoke"]
    srun = subprocess.run(
        ["srun", "-n", "2", "--cpus-per-task=1", *train, f"--workdir={tmp_path / 'srun'}"],
        cwd=REPO,
        env=cpu_env(1),  # one CPU device per process
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert srun.returncode == 0, srun.stderr[-3000:]
    assert len([line for line in srun.stdout.splitlines() if line.startswith("{")]) == 1  # one result line
    single = subprocess.run(
        [*train, f"--workdir={tmp_path / 'single'}"], cwd=REPO, env=cpu_env(2), capture_output=True, text=True
    )
    assert single.returncode == 0, single.stderr[-3000:]
    multi, alone = without_speed(logged(tmp_path / "srun")), without_speed(logged(tmp_path / "single"))
    assert len(multi) == len(alone) == 6
    for a, b in zip(multi, alone):
        assert a.keys() == b.keys()
        np.testing.assert_allclose([a[k] for k in a], [b[k] for k in a], rtol=1e-5)


@pytest.mark.slurm
def test_a_submitted_job_of_two_tasks_is_one_run_like_one_process_with_their_devices(slurm_cluster, tmp_path):
    submitted = subprocess.run(
        [sys.executable, "-m", "experiments.submit", "--config=configs/default.py:smoke",
         f"--workdir={tmp_path / 'two_tasks'}", "--slurm_tasks_per_node=2", "--slurm_time_min=10", "--wait"],
        cwd=REPO, env=cpu_env(1), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    single = subprocess.run(
        [sys.executable, "-m", "experiments.train", "--config=configs/default.py:smoke",
         f"--workdir={tmp_path / 'single'}"],
        cwd=REPO, env=cpu_env(2), capture_output=True, text=True,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    assert json.loads(submitted.stdout.strip().splitlines()[-1]) == pytest.approx(
        json.loads(single.stdout.strip().splitlines()[-1]), rel=1e-5
    )
    assert len(logged(tmp_path / "two_tasks")) == 6  # one writer


def squeue_state(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout.strip()


def interrupt_mid_run(job_id: str, workdir, command: list[str]) -> None:
    """Runs `command` (a signal or requeue) once the job has logged a line,
    then waits for the run's final metrics (a requeued job starts again
    after the cluster's 10 s credential hold: scripts/slurm_cluster.sh)."""
    deadline = time.monotonic() + 240
    while not logged(workdir):
        assert time.monotonic() < deadline, f"job {job_id} logged nothing: {squeue_state(job_id)}"
        time.sleep(0.05)
    subprocess.run(command, check=True)
    while not (workdir / "final_metrics.json").exists():
        assert time.monotonic() < deadline + 240, f"job {job_id} did not finish: {squeue_state(job_id)!r}"
        time.sleep(0.2)


LONG_SMOKE = [
    "--config=configs/default.py:smoke",
    "--config.train.num_steps=600",
    "--config.train.checkpoint_every=100",
]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The records of LONG_SMOKE trained in one go."""
    workdir = tmp_path_factory.mktemp("whole") / "run"
    command = [sys.executable, "-m", "experiments.train", *LONG_SMOKE, f"--workdir={workdir}"]
    whole = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr[-3000:]
    return without_speed(logged(workdir))


# How a running job is interrupted: Slurm's requeue (SIGTERM to the job, which
# Slurm then restarts), or the time-limit warning (SIGUSR2, which submitit sends
# with --signal; submitit's handler requeues the job once the checkpoint is saved).
INTERRUPTIONS = {
    "SIGTERM": lambda job_id: ["scontrol", "requeue", job_id],
    "SIGUSR2": lambda job_id: ["scancel", "--signal=USR2", job_id],
}


@pytest.mark.slurm
@pytest.mark.parametrize("signal_name", sorted(INTERRUPTIONS))
def test_a_job_interrupted_mid_run_is_requeued_and_ends_with_the_uninterrupted_numbers(
    slurm_cluster, uninterrupted, tmp_path, signal_name
):
    workdir = tmp_path / "requeued"
    submitted = subprocess.run(
        [sys.executable, "-m", "experiments.submit", *LONG_SMOKE, f"--workdir={workdir}", "--slurm_time_min=10"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    job_id = submitted.stdout.strip().splitlines()[-1]
    interrupt_mid_run(job_id, workdir, INTERRUPTIONS[signal_name](job_id))
    first, second = json.loads((workdir / "run_info.json").read_text())["attempts"]
    assert first["signal"] == signal_name and second["start_step"] == first["stopped_at_step"] > 0, (first, second)
    assert without_speed(logged(workdir)) == uninterrupted


def sbatch_script(path, body: str) -> str:
    path.write_text("#!/bin/bash\n" + body)
    return str(path)


@pytest.mark.slurm
def test_a_batch_script_of_several_tasks_runs_train_as_one_process_without_srun(slurm_cluster, tmp_path):
    # SLURM_NTASKS=2 is inherited by everything the script starts; only an srun step makes a multi-process run.
    workdir = tmp_path / "batch"
    script = sbatch_script(
        tmp_path / "job.sh",
        f"cd {shlex.quote(REPO)}\n{shlex.quote(sys.executable)} -m experiments.train "
        f"--config=configs/default.py:smoke --workdir={shlex.quote(str(workdir))}\n",
    )
    log = tmp_path / "job.log"
    done = subprocess.run(["sbatch", "--wait", "-n", "2", "-o", str(log), script], capture_output=True, text=True)
    assert done.returncode == 0, log.read_text()[-3000:]
    assert len(logged(workdir)) == 6 and (workdir / "final_metrics.json").exists()


@pytest.mark.slurm
def test_an_own_sbatch_script_is_requeued_by_exit_75_and_resumes(slurm_cluster, uninterrupted, tmp_path):
    # The docs' recipe: #SBATCH --requeue around srun; a SIGTERM to the step (here from scancel) makes
    # the run exit 75, which slurm.conf's RequeueExit=75 requeues.
    workdir = tmp_path / "own"
    train = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "experiments.train", *LONG_SMOKE])
    script = sbatch_script(
        tmp_path / "job.sh",
        f"#SBATCH --requeue\ncd {shlex.quote(REPO)}\nsrun {train} --workdir={shlex.quote(str(workdir))}\n",
    )
    job_id = subprocess.run(
        ["sbatch", "--parsable", "-o", str(tmp_path / "job.log"), script], capture_output=True, text=True, check=True
    ).stdout.strip()
    interrupt_mid_run(job_id, workdir, ["scancel", "--signal=TERM", job_id])
    first, second = json.loads((workdir / "run_info.json").read_text())["attempts"]
    assert first["signal"] == "SIGTERM" and second["start_step"] == first["stopped_at_step"] > 0, (first, second)
    assert without_speed(logged(workdir)) == uninterrupted
