"""Wall time of a local sweep with and without the shared persistent compilation cache.

Both sides run the same sweep the same way (`sweep_runner.LocalRunner`, one
`experiments.train` process per run, `--parallel` at a time on the CPU),
each into a fresh sweep dir; they differ only in whether the runs share
JAX's persistent compilation cache in SWEEP_DIR/jax_cache (the default of
`experiments.sweep --mode=local`). Most runs of a sweep compile the same
programs (seeds always; other arms often), so all but the first of each
program load it from the cache. The order of the two sides alternates over
`--rounds` so load from other processes hits both alike.

  python -m experiments.benchmark_compile_cache                  # seeds 0..7 of default.py:smoke, 2 at a time
  python -m experiments.benchmark_compile_cache --seeds 4 --steps 200

stdout: one JSON line (ratio = without / with, > 1: the cache saves time).

Result on an idle 2-core CPU machine (2026-12-07, jax 0.10.2), 8 seeds of
default.py:smoke (20 steps), 2 runs at a time, 2 rounds: see
docs/cluster.md ("Compilation cache").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

from experiments import timing
from seqjax import sweep_runner, sweeps

SWEEP_FILE = """
import importlib.util
spec = importlib.util.spec_from_file_location("base", {default!r})
base = importlib.util.module_from_spec(spec); spec.loader.exec_module(base)

def get_config(variant=None):
    config = base.get_config("smoke")
    config.train.num_steps = {steps}
    config.optimizer.warmup_steps = {steps} // 4
    return config

def get_sweep(name=None):
    from seqjax import sweeps
    return sweeps.seeds({seeds})
"""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=8, help="runs in the sweep")
    parser.add_argument("--steps", type=int, default=20, help="training steps per run")
    parser.add_argument("--parallel", type=int, default=2, help="runs at once")
    parser.add_argument("--rounds", type=int, default=2, help="repetitions of both sides")
    return parser.parse_args(argv)


def sweep_seconds(config_file: str, sweep_dir: str, parallel: int, cache: bool) -> float:
    runs = sweep_runner.plan(config_file, None)
    runner = sweep_runner.LocalRunner(
        config_file, sweep_dir, sweep_runner.detect_slots("cpu", parallel), report=lambda line: None,
        compilation_cache=cache,
    )  # fmt: skip
    started = time.perf_counter()
    result = runner.run(runs)
    seconds = time.perf_counter() - started
    if result["failed"]:
        raise RuntimeError(f"runs failed: {result['failed']} (see {sweep_dir}/runs/*/log.txt)")
    return seconds


def main(argv=None) -> None:
    args = parse_args(argv)
    root = tempfile.mkdtemp(prefix="benchmark_compile_cache_")
    config_file = os.path.join(root, "seeds.py")
    default = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "default.py")
    with open(config_file, "w") as f:
        f.write(SWEEP_FILE.format(default=default, steps=args.steps, seeds=args.seeds))
    times: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(args.rounds):
        for cache in (True, False) if round_ % 2 == 0 else (False, True):
            sweep_dir = os.path.join(root, f"round{round_}_{'cache' if cache else 'nocache'}")
            times[cache].append(sweep_seconds(config_file, sweep_dir, args.parallel, cache))
    with_cache, without = statistics.median(times[True]), statistics.median(times[False])
    record = timing.measurement(
        "compile_cache",
        f"local_sweep_{args.seeds}_seeds_cache",
        with_cache,
        "s",
        f"local_sweep_{args.seeds}_seeds_no_cache",
        without,
        ratio=timing.BASELINE_OVER_VALUE,
        runs=len(sweeps.expand(sweeps.seeds(args.seeds))),
        steps=args.steps,
        parallel=args.parallel,
        rounds={"cache": times[True], "no_cache": times[False]},
    )
    timing.emit(record)
    print(
        f"sweep of {args.seeds} runs: {with_cache:.1f} s with the cache, {without:.1f} s without, "
        f"{without / with_cache:.2f}x",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
