"""Running a sweep: one training process per run, placed on the machine's devices.

Layout of a sweep directory:

    SWEEP_DIR/sweep.json           the config, the sweep name, swept keys, every run
    SWEEP_DIR/runs/<name>/         the run's training workdir (experiments.train output),
                                   plus overrides.json, log.txt, and failed.json after a crash

A run is finished when its final_metrics.json exists. Re-running a sweep skips
finished runs and restarts failed or unfinished ones, which resume from their
own checkpoints. A crashed run never stops the others.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from seqjax import config as config_lib
from seqjax import launch, metrics, sweeps

LOG_TAIL_LINES = 20


def plan(config_spec: str, sweep_name: str | None, extra_overrides: dict | None = None) -> list[sweeps.Run]:
    """The sweep's runs, each with `extra_overrides` added (sweeps.override:
    they replace what the sweep fixes, and may not touch what it varies); all
    validated."""
    path, _ = config_lib.split_spec(config_spec)
    get_sweep = vars(config_lib.load_config_module(path)).get("get_sweep")
    if not callable(get_sweep):
        raise config_lib.ConfigError(
            f"config file {path} defines no get_sweep: add `def get_sweep(name=None)` returning "
            "a sweep (see seqjax.sweeps), or train the config alone with experiments.train"
        )
    sweep = get_sweep(sweep_name)
    if extra_overrides:
        sweep = sweeps.override(sweep, extra_overrides)
    runs = sweeps.expand(sweep)
    by_spec = collections.defaultdict(list)  # each config variant validates its own runs
    for run in runs:
        by_spec[sweeps.config_spec_of(config_spec, run.overrides)].append(run)
    for spec, spec_runs in by_spec.items():
        sweeps.validate_runs(config_lib.load_config(spec), spec_runs)
    return runs


def write_sweep_record(sweep_dir: str, config_spec: str, sweep_name: str | None, runs: Sequence[sweeps.Run]) -> None:
    os.makedirs(os.path.join(sweep_dir, "runs"), exist_ok=True)
    record = {
        "config": config_spec,
        "sweep": sweep_name,
        "swept_keys": sweeps.swept_keys([r.overrides for r in runs]),
        "runs": [{"name": r.name, "overrides": r.overrides} for r in runs],
    }
    metrics.write_json_atomic(os.path.join(sweep_dir, "sweep.json"), record)


def run_dir(sweep_dir: str, run: sweeps.Run) -> str:
    return os.path.join(sweep_dir, "runs", run.name)


def run_status(directory: str) -> str:
    """'finished', 'failed', 'unfinished' (started, no result) or 'new'."""
    if os.path.exists(os.path.join(directory, "final_metrics.json")):
        return "finished"
    if os.path.exists(os.path.join(directory, "failed.json")):
        return "failed"
    return "unfinished" if os.path.exists(directory) else "new"


def train_command(config_spec: str, directory: str, run: sweeps.Run, python: str = sys.executable) -> list[str]:
    spec = sweeps.config_spec_of(config_spec, run.overrides)
    return [
        python,
        "-m",
        "experiments.train",
        f"--config={spec}",
        f"--workdir={directory}",
        *sweeps.override_flags(run.overrides),
    ]


# Printed as JSON by a fresh interpreter: what JAX sees, without starting a
# backend in the sweep's own process (which would hold the accelerators).
_DISCOVER = (
    "import json, jax; d = jax.devices(); v = d[0].client.platform_version.lower(); "
    "p = d[0].platform; p = ('rocm' if 'rocm' in v else 'cuda') if p == 'gpu' else p; "
    "print(json.dumps({'platform': p, 'count': jax.local_device_count()}))"
)


def discover_devices(python: str = sys.executable) -> tuple[str, int]:
    """(platform, device count) as JAX sees this machine: platform is 'cpu',
    'cuda', 'rocm' or 'tpu'. Asked in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k not in launch.LAUNCH_VARIABLES}
    found = subprocess.run([python, "-c", _DISCOVER], capture_output=True, text=True, env=env, timeout=300)
    if found.returncode != 0:
        raise RuntimeError(f"device discovery (python -c 'import jax; jax.devices()') failed:\n{found.stderr[-2000:]}")
    seen = json.loads(found.stdout.strip().splitlines()[-1])
    return seen["platform"], int(seen["count"])


# How one run is given one accelerator: the variable its runtime reads.
VISIBLE_DEVICES = {"cuda": "CUDA_VISIBLE_DEVICES", "rocm": "HIP_VISIBLE_DEVICES"}


def slots_for(platform: str, count: int, parallel: int) -> list[dict[str, str]]:
    """Environment overrides of each concurrent run slot: `parallel` runs per
    GPU, each seeing only its own (CUDA or ROCm); on a TPU host one run at a
    time with every chip (a TPU's chips are not split between processes
    here); on CPU `parallel` runs."""
    if platform in VISIBLE_DEVICES:
        return [{VISIBLE_DEVICES[platform]: str(i)} for i in range(count) for _ in range(parallel)]
    if platform == "tpu":
        return [{}]
    return [{"JAX_PLATFORMS": "cpu"} for _ in range(parallel)]


def detect_slots(devices: str, parallel: int, python: str = sys.executable) -> list[dict[str, str]]:
    """Slots (`slots_for`) for --devices: 'auto' asks JAX what the machine
    has (GPU, ROCm, TPU, else CPU), 'cpu' forces the CPU, 'gpu:0,2' names
    CUDA GPUs."""
    if devices.startswith("gpu:"):
        return [{"CUDA_VISIBLE_DEVICES": gpu} for gpu in devices[4:].split(",") for _ in range(parallel)]
    if devices == "auto":
        return slots_for(*discover_devices(python), parallel)
    if devices == "cpu":
        return slots_for("cpu", 0, parallel)
    raise ValueError(f"--devices must be auto, cpu or gpu:<ids>, got {devices!r}")


def compilation_cache_env(sweep_dir: str) -> dict[str, str]:
    """JAX's persistent compilation cache in `SWEEP_DIR/jax_cache`, shared by
    the sweep's runs (most compile the same programs), caching every program
    however fast it compiled."""
    return {
        "JAX_COMPILATION_CACHE_DIR": os.path.abspath(os.path.join(sweep_dir, "jax_cache")),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }


def start_run_dir(directory: str, run: sweeps.Run) -> None:
    """Creates a run's dir with its overrides.json and clears an earlier failure record."""
    os.makedirs(directory, exist_ok=True)
    metrics.write_json_atomic(os.path.join(directory, "overrides.json"), run.overrides)
    failed_record = os.path.join(directory, "failed.json")
    if os.path.exists(failed_record):
        os.remove(failed_record)


def log_tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
    if not os.path.exists(path):
        return ""
    with open(path, errors="replace") as f:
        return "".join(collections.deque(f, maxlen=lines))


@dataclasses.dataclass
class Running:
    run: sweeps.Run
    process: subprocess.Popen
    slot: int
    started: float
    log: object


class LocalRunner:
    """Runs pending runs as subprocesses, at most one per slot at a time."""

    def __init__(
        self,
        config_spec: str,
        sweep_dir: str,
        slots: list[dict[str, str]],
        python: str = sys.executable,
        report: Callable[[str], None] | None = None,
        compilation_cache: bool = True,
    ):
        self.config_spec, self.sweep_dir, self.slots = config_spec, sweep_dir, slots
        self.python = python
        # Each run is a process of its own, never a member of a launch this
        # sweep itself may belong to (an srun step, an MPI job).
        self.env = {k: v for k, v in os.environ.items() if k not in launch.LAUNCH_VARIABLES}
        if compilation_cache:
            self.env.update(compilation_cache_env(sweep_dir))
        self.report = report or (lambda line: print(line, file=sys.stderr, flush=True))
        self.durations: list[float] = []
        self.failed: list[str] = []

    def run(self, runs: Sequence[sweeps.Run]) -> dict[str, list[str]]:
        """Runs everything not finished; returns {'finished': [...], 'failed': [...], 'skipped': [...]}."""
        skipped = [r.name for r in runs if run_status(run_dir(self.sweep_dir, r)) == "finished"]
        pending = collections.deque(r for r in runs if r.name not in skipped)
        self.report(f"sweep: {len(runs)} runs, {len(skipped)} already finished, {len(pending)} to run")
        running: list[Running] = []
        finished: list[str] = []
        while pending or running:
            free = sorted(set(range(len(self.slots))) - {r.slot for r in running})
            while pending and free:
                running.append(self._start(pending.popleft(), free.pop(0)))
            time.sleep(0.2)
            for job in [j for j in running if j.process.poll() is not None]:
                running.remove(job)
                (finished if self._finish(job) else self.failed).append(job.run.name)
                self._progress(len(finished), len(running), len(pending))
        return {"finished": finished, "failed": self.failed, "skipped": skipped}

    def _start(self, run: sweeps.Run, slot: int) -> Running:
        directory = run_dir(self.sweep_dir, run)
        start_run_dir(directory, run)
        log = open(os.path.join(directory, "log.txt"), "a")
        env = {**self.env, **self.slots[slot]}
        process = subprocess.Popen(
            train_command(self.config_spec, directory, run, self.python), stdout=log, stderr=subprocess.STDOUT, env=env
        )
        self.report(f"started {run.name} (slot {slot}: {self.slots[slot]})")
        return Running(run, process, slot, time.monotonic(), log)

    def _finish(self, job: Running) -> bool:
        job.log.close()
        directory = run_dir(self.sweep_dir, job.run)
        code = job.process.returncode
        if code == 0 and run_status(directory) == "finished":
            self.durations.append(time.monotonic() - job.started)
            return True
        tail = log_tail(os.path.join(directory, "log.txt"))
        metrics.write_json_atomic(os.path.join(directory, "failed.json"), {"returncode": code, "log_tail": tail})
        self.report(f"FAILED {job.run.name} (exit {code}); last lines of its log:\n{tail}")
        return False

    def _progress(self, done: int, running: int, pending: int) -> None:
        eta = ""
        if self.durations:
            mean = sum(self.durations) / len(self.durations)
            eta = f", ETA {mean * (pending + running) / len(self.slots) / 60:.1f} min"
        self.report(f"progress: {done} done, {running} running, {len(self.failed)} failed, {pending} pending{eta}")


def print_commands(config_spec: str, sweep_dir: str, runs: Sequence[sweeps.Run], python: str = "python") -> list[str]:
    """One shell command per run (e.g. for a Slurm array), quoted for bash."""
    import shlex

    return [shlex.join(train_command(config_spec, run_dir(sweep_dir, r), r, python)) for r in runs]


def summary_line(result: dict[str, list[str]]) -> str:
    return json.dumps({k: len(v) for k, v in result.items()} | {"failed_runs": result["failed"]})


def run_vmap(
    config_spec: str,
    runs: Sequence[sweeps.Run],
    sweep_dir: str,
    report: Callable[[str], None] | None = None,
    chunk_size: int | None = None,
) -> dict[str, list[str]]:
    """Trains each group of runs that differ only in seed / learning rate
    as one run of R replicas (`training.train_replicas`: one vmapped
    program), in this process. Each run dir gets what a single run writes,
    checkpoints included, so a killed group resumes from them when the
    sweep is rerun; groups whose runs all finished are skipped; a group that
    raises is recorded as failed and the others go on. A group's runs share
    one config variant (the variant is not vmappable). `chunk_size`:
    replicas vmapped together (None: `parallel.default_chunk_size()`)."""
    import traceback

    from seqjax import replicas, training

    report = report or (lambda line: print(line, file=sys.stderr, flush=True))
    result: dict[str, list[str]] = {"finished": [], "failed": [], "skipped": []}
    groups = replicas.group_runs(runs)
    for index, group in enumerate(groups):
        directories = [run_dir(sweep_dir, r) for r in group]
        names = [r.name for r in group]
        if all(run_status(d) == "finished" for d in directories):
            result["skipped"] += names
            continue
        report(f"group {index + 1}/{len(groups)}: {len(group)} replicas in one program")
        try:
            base = config_lib.load_config(sweeps.config_spec_of(config_spec, group[0].overrides))
            configs = [sweeps.apply_overrides(base, run.overrides) for run in group]
            for run, directory in zip(group, directories):
                start_run_dir(directory, run)
            training.train_replicas(configs, directories, chunk_size=chunk_size)
            result["finished"] += names
        except Exception:  # one bad group must not stop the sweep
            tail = traceback.format_exc()
            for directory in directories:
                os.makedirs(directory, exist_ok=True)
                metrics.write_json_atomic(
                    os.path.join(directory, "failed.json"), {"returncode": None, "log_tail": tail}
                )
            report(f"FAILED group {names}:\n{tail}")
            result["failed"] += names
    return result
