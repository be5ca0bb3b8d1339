"""Runs and sweeps on Slurm, submitted through submitit.

A sweep is one Slurm array job, one task per run (`submit_sweep`); a single
run may span nodes x tasks per node processes, which form one
`jax.distributed` run (`submit_run`, `launch.distributed_launch` recognises
the srun step). Every job trains in its own process through
`training.train_replicas`, so its run dir holds what `experiments.train`
writes, and a job started again resumes from the run dir's checkpoints.

Preemption and time limits: Slurm sends SIGUSR2 `signal_delay_s` before the
time limit (submitit's `--signal`), or SIGTERM when it preempts or requeues a
job. The training loop stops at its next logging step with a checkpoint
saved (`training.Preemption`); then on SIGUSR2 submitit's own handler
requeues the job (`TrainJob` is a `submitit.helpers.Checkpointable`: the
requeued job makes the same call, which resumes), and on SIGTERM the job
exits with `training.PREEMPTED_EXIT_CODE`, which Slurm requeues where
slurm.conf lists it in RequeueExit, as after its own preemption.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import ml_collections
import submitit

from seqjax import config as config_lib
from seqjax import launch, metrics, sweep_runner, sweeps


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    """What each job asks of Slurm (sbatch options; submitit's names)."""

    partition: str = ""  # '' = the cluster's default partition
    time_min: int = 60  # time limit per job, minutes
    nodes: int = 1
    tasks_per_node: int = 1  # processes per node; nodes x tasks_per_node form one run
    cpus_per_task: int = 1
    gpus_per_node: int = 0
    array_parallelism: int = 64  # array tasks running at once
    signal_delay_s: int = 90  # SIGUSR2 this long before the time limit
    extra: tuple[tuple[str, str], ...] = ()  # more sbatch options, e.g. (('qos', 'high'),)

    def executor(self, folder: str, name: str) -> submitit.SlurmExecutor:
        executor = submitit.SlurmExecutor(folder=os.path.join(folder, "%j"), max_num_timeout=10)
        parameters = dict(
            job_name=name,
            time=self.time_min,
            nodes=self.nodes,
            ntasks_per_node=self.tasks_per_node,
            cpus_per_task=self.cpus_per_task,
            array_parallelism=self.array_parallelism,
            signal_delay_s=self.signal_delay_s,
            additional_parameters=dict(self.extra),
            stderr_to_stdout=True,
        )
        if self.partition:
            parameters["partition"] = self.partition
        if self.gpus_per_node:
            parameters["gpus_per_node"] = self.gpus_per_node
        executor.update_parameters(**parameters)
        return executor


def parse_extra(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """['qos=high', 'constraint=a100'] -> (('qos', 'high'), ('constraint', 'a100')) (sbatch long options)."""
    parsed = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--sbatch needs option=value (an sbatch long option without --), got {item!r}")
        parsed.append((key.lstrip("-"), value))
    return tuple(parsed)


class TrainJob(submitit.helpers.Checkpointable):
    """One run (R = 1) or a group of replicas, trained in the job's process.
    Requeued by submitit after a time-limit signal, it trains again from the
    run dirs' checkpoints (`checkpoint()` resubmits the same call)."""

    def __init__(self, configs: Sequence[dict], workdirs: Sequence[str], compilation_cache: str = ""):
        self.configs = [dict(c) for c in configs]  # plain dicts pickle across versions of ml_collections
        self.workdirs = [os.path.abspath(w) for w in workdirs]
        self.compilation_cache = compilation_cache

    def __call__(self) -> list[dict]:
        if self.compilation_cache:
            os.environ.update(sweep_runner.compilation_cache_env(self.compilation_cache))
        launch.maybe_initialize_distributed()
        from seqjax import training  # after the distributed init: it touches devices

        configs = [ml_collections.ConfigDict(c) for c in self.configs]
        try:
            return training.train_replicas(configs, self.workdirs)
        except training.Preempted as stopped:
            if stopped.signum == signal.SIGUSR2:
                # Submitit's handler, restored by now: it resubmits this call,
                # requeues the job and exits.
                signal.raise_signal(signal.SIGUSR2)
            sys.exit(training.PREEMPTED_EXIT_CODE)


def prepare_sweep(config_spec: str, sweep_dir: str, sweep_name: str | None, runs: Sequence[sweeps.Run]) -> None:
    """sweep.json and every run's dir with its overrides.json, so
    `experiments.report` lists runs that have not started yet."""
    sweep_runner.write_sweep_record(sweep_dir, config_spec, sweep_name, runs)
    for run in runs:
        sweep_runner.start_run_dir(sweep_runner.run_dir(sweep_dir, run), run)


def submit_sweep(
    config_spec: str,
    sweep_dir: str,
    runs: Sequence[sweeps.Run],
    options: SlurmOptions,
    compilation_cache: bool = True,
    vmap: bool = False,
) -> dict[str, str]:
    """Submits every unfinished run of the sweep as one array job: one task
    per run, or with `vmap` one per group of runs that differ only in seed /
    learning rate (trained as one run of R replicas, as --mode=vmap does).
    Returns {run name: Slurm job id} (also in SWEEP_DIR/slurm_jobs.json)."""
    pending = [r for r in runs if sweep_runner.run_status(sweep_runner.run_dir(sweep_dir, r)) != "finished"]
    if not pending:
        return {}
    if vmap:
        from seqjax import replicas  # (jax: only for this mode)

        units = replicas.group_runs(pending)
    else:
        units = [[run] for run in pending]
    cache = sweep_dir if compilation_cache else ""
    jobs_for = [
        TrainJob(
            [run_config(config_spec, run).to_dict() for run in unit],
            [sweep_runner.run_dir(sweep_dir, run) for run in unit],
            cache,
        )
        for unit in units
    ]
    executor = options.executor(os.path.join(sweep_dir, "slurm"), f"seqjax-{os.path.basename(sweep_dir)}")
    with executor.batch():
        jobs = [executor.submit(job) for job in jobs_for]
    ids = {run.name: job.job_id for unit, job in zip(units, jobs) for run in unit}
    path = os.path.join(sweep_dir, "slurm_jobs.json")
    metrics.write_json_atomic(path, {**(metrics.read_json(path) or {}), **ids})
    return ids


def run_config(config_spec: str, run: sweeps.Run) -> ml_collections.ConfigDict:
    """The config a sweep run trains: its variant's config with its overrides."""
    base = config_lib.load_config(sweeps.config_spec_of(config_spec, run.overrides))
    return sweeps.apply_overrides(base, run.overrides)


def submit_run(config: ml_collections.ConfigDict, workdir: str, options: SlurmOptions) -> str:
    """Submits one run as one job of nodes x tasks_per_node processes
    (one `jax.distributed` run when there are several); returns the job id."""
    config_lib.validate(config)
    os.makedirs(workdir, exist_ok=True)
    executor = options.executor(os.path.join(workdir, "slurm"), f"seqjax-{os.path.basename(os.path.abspath(workdir))}")
    return executor.submit(TrainJob([config.to_dict()], [workdir])).job_id


def wait(job_ids: Sequence[str], poll_s: float = 2.0, report=None) -> None:
    """Blocks until none of `job_ids` (array tasks included) is pending or
    running in `squeue` (requeued jobs count as pending)."""
    if not job_ids:
        return
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    previous = None
    while True:
        listed = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(arrays)], capture_output=True, text=True
        )
        if listed.returncode != 0 and "Invalid job id" not in listed.stderr:
            raise RuntimeError(f"squeue failed: {listed.stderr.strip()}")
        states = [line.split() for line in listed.stdout.splitlines() if line.strip()]
        if not states:
            return
        summary = " ".join(sorted(f"{job}:{state}" for job, state in states))
        if report and summary != previous:
            report(f"slurm: {summary}")
        previous = summary
        time.sleep(poll_s)


def record_failures(sweep_dir: str, runs: Sequence[sweeps.Run], job_ids: dict[str, str]) -> dict[str, list[str]]:
    """After the jobs ended: {'finished': [...], 'failed': [...]} from the run
    dirs; a run without a result gets failed.json with the tail of its job's log."""
    result: dict[str, list[str]] = {"finished": [], "failed": []}
    for run in runs:
        directory = sweep_runner.run_dir(sweep_dir, run)
        if sweep_runner.run_status(directory) == "finished":
            result["finished"].append(run.name)
            continue
        job_id = job_ids.get(run.name, "")
        log = os.path.join(sweep_dir, "slurm", job_id, f"{job_id}_0_log.out")
        tail = sweep_runner.log_tail(log)
        metrics.write_json_atomic(
            os.path.join(directory, "failed.json"), {"returncode": None, "slurm_job": job_id, "log_tail": tail}
        )
        result["failed"].append(run.name)
    return result
