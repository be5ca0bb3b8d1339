"""Run a sweep declared by a config file's `get_sweep(name)`.

  python -m experiments.sweep --config=configs/default.py --sweep=cell_by_length_cpu \
      --sweep_dir=runs/ablation [--mode=local|vmap|print] [--parallel=2] [--override=train.num_steps=500]

local: one training process per run, one per GPU in parallel (each sees only
  its GPU) or `--parallel` at a time on CPU; re-running skips finished runs and
  resumes the rest.
vmap:  runs that differ only in seed / learning rate are trained together in
  one compiled program: one run of R replicas (seqjax.replicas).
print: prints one launch command per run and nothing else.
Then `python -m experiments.report --sweep_dir=...` makes the tables and plots.
"""

import ast
import sys

from absl import app, flags, logging

from seqjax import sweep_runner

_CONFIG = flags.DEFINE_string("config", None, "Config file[:variant] that defines get_sweep().")
_SWEEP = flags.DEFINE_string("sweep", None, "Name passed to get_sweep (None: its default).")
_SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "Directory for the sweep's runs.")
_MODE = flags.DEFINE_enum("mode", "local", ["local", "vmap", "print"], "How to run the sweep.")
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
_OVERRIDE = flags.DEFINE_multi_string("override", [], "key=value applied to every run.")
flags.mark_flags_as_required(["config", "sweep_dir"])


def parse_overrides(items: list[str]) -> dict:
    """['train.num_steps=500', 'model.cell=gru'] -> {'train.num_steps': 500, 'model.cell': 'gru'}."""
    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise app.UsageError(f"--override needs key=value, got {item!r}")
        try:
            overrides[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            overrides[key] = text
    return overrides


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO (vmap mode trains here)
    config, sweep_dir = _CONFIG.value, _SWEEP_DIR.value
    runs = sweep_runner.plan(config, _SWEEP.value, parse_overrides(_OVERRIDE.value))
    if _MODE.value == "print":
        print("\n".join(sweep_runner.print_commands(config, sweep_dir, runs)))
        return
    sweep_runner.write_sweep_record(sweep_dir, config, _SWEEP.value, runs)
    if _MODE.value == "vmap":
        result = sweep_runner.run_vmap(config, runs, sweep_dir, chunk_size=_VMAP_CHUNK.value)
    else:
        slots = sweep_runner.detect_slots(_DEVICES.value, _PARALLEL.value)
        result = sweep_runner.LocalRunner(config, sweep_dir, slots).run(runs)
    print(sweep_runner.summary_line(result), flush=True)
    if result["failed"]:
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
