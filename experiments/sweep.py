"""Run a sweep declared by a config file's `get_sweep(name)`.

  python -m experiments.sweep --config=configs/default.py --sweep=cell_by_length_cpu \
      --sweep_dir=runs/ablation [--mode=local|vmap|slurm|print] [--parallel=2] [--config.train.num_steps=500]

local: one training process per run, on the accelerators JAX finds (one run
  per GPU at a time, each seeing only its own; `--parallel` at a time on
  CPU); re-running skips finished runs and resumes the rest. The runs share
  a persistent compilation cache in SWEEP_DIR/jax_cache (--nocompilation_cache).
vmap:  runs that differ only in seed / learning rate are trained together in
  one compiled program: one run of R replicas (seqjax.replicas).
slurm: one Slurm array job through submitit, a task per unfinished run (or
  per vmap group with --slurm_vmap), with the --slurm_* and --sbatch options;
  requeued on preemption or time limit, each run resuming from its
  checkpoints (docs/cluster.md). --wait waits.
print: prints one launch command per run (for another scheduler).
--config.<key>=value sets a field in every run, as in experiments.train: it
replaces a value the sweep fixes; a key the sweep varies is refused.
Every mode first writes SWEEP_DIR/sweep.json and each run's overrides.json,
so `python -m experiments.report --sweep_dir=...` reports the finished runs
and lists the others, while the sweep runs.
"""

import sys

from absl import app, flags, logging

from experiments import command, slurm_flags
from seqjax import config as config_lib
from seqjax import slurm, sweep_runner

_CONFIG = command.define_config(f"{command.CONFIG_HELP} The file defines get_sweep().")
_SWEEP = flags.DEFINE_string("sweep", None, "Name passed to get_sweep (None: its default).")
_SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "Directory for the sweep's runs.")
_MODE = flags.DEFINE_enum("mode", "local", ["local", "vmap", "slurm", "print"], "How to run the sweep.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs at once per GPU, or on the CPU.")
_DEVICES = flags.DEFINE_string("devices", "auto", "auto | cpu | gpu:<ids>, e.g. gpu:0,1.")
_VMAP_CHUNK = flags.DEFINE_integer(
    "vmap_chunk",
    None,
    "--mode=vmap: replicas vmapped together (default: 1 on CPU, a loop over unbatched replicas that is as "
    "fast there and bitwise equal to runs trained alone; all of them on accelerators). 1 reproduces "
    "sequential runs exactly on any device.",
    lower_bound=1,
)
_SLURM_VMAP = flags.DEFINE_boolean(
    "slurm_vmap",
    False,
    "--mode=slurm: one array task per group of runs that differ only in seed / learning rate, trained as one "
    "run of R replicas (as --mode=vmap), instead of one task per run.",
)
_CACHE = flags.DEFINE_boolean(
    "compilation_cache", True, "Share JAX's persistent compilation cache (SWEEP_DIR/jax_cache) between runs."
)
flags.mark_flags_as_required(["sweep_dir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO (vmap mode trains here)
    config, sweep_dir = command.config_spec(_CONFIG), _SWEEP_DIR.value
    try:
        runs = sweep_runner.plan(config, _SWEEP.value, command.config_overrides(_CONFIG))
    except (config_lib.ConfigError, ValueError) as error:
        raise app.UsageError(str(error)) from error
    slurm.prepare_sweep(config, sweep_dir, _SWEEP.value, runs)
    if _MODE.value == "print":
        print("\n".join(sweep_runner.print_commands(config, sweep_dir, runs)))
        return
    if _MODE.value == "slurm":
        result = submit(config, sweep_dir, runs)
    elif _MODE.value == "vmap":
        result = sweep_runner.run_vmap(config, runs, sweep_dir, chunk_size=_VMAP_CHUNK.value)
    else:
        slots = sweep_runner.detect_slots(_DEVICES.value, _PARALLEL.value)
        result = sweep_runner.LocalRunner(config, sweep_dir, slots, compilation_cache=_CACHE.value).run(runs)
    print(sweep_runner.summary_line(result), flush=True)
    if result["failed"]:
        sys.exit(1)


def submit(config: str, sweep_dir: str, runs) -> dict[str, list[str]]:
    """--mode=slurm: submits the unfinished runs; with --wait, waits and sums up."""
    try:
        options = slurm_flags.options()
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    job_ids = slurm.submit_sweep(config, sweep_dir, runs, options, _CACHE.value, vmap=_SLURM_VMAP.value)
    report = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    report(f"sweep: {len(runs)} runs, {len(runs) - len(job_ids)} already finished, {len(job_ids)} submitted")
    for name, job_id in job_ids.items():
        report(f"submitted {name}: Slurm job {job_id}")
    skipped = [r.name for r in runs if r.name not in job_ids]
    if not slurm_flags.WAIT.value:
        return {"submitted": list(job_ids), "failed": [], "skipped": skipped}
    slurm.wait(list(job_ids.values()), report=report)
    ended = slurm.record_failures(sweep_dir, [r for r in runs if r.name in job_ids], job_ids)
    return {**ended, "skipped": skipped}


def entry() -> None:
    command.start(main)


if __name__ == "__main__":
    entry()
