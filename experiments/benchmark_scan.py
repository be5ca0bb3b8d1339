"""Sequential vs parallel (associative) scan for minGRU/minLSTM, forward+backward.

For every T in --min-time, 2*min-time, ..., --max-time, times one jitted step
computing the gradient of sum(outputs) w.r.t. the parameters and the inputs
of a `Recurrent` layer with implementation='parallel' (case
`parallel_<cell>`) and with implementation='scan' (baseline
`sequential_<cell>`, lax.scan over `step`). The two run round-robin, one
call each per round, so load from other processes hits both alike; the
reported value is the median seconds per step over --repeats rounds
(compilation and --warmup calls excluded). ratio = baseline_value / value,
the parallel form's speedup (> 1: parallel is faster).

  python -m experiments.benchmark_scan                       # B=8, H=64, T = 1k .. 64k, minGRU
  python -m experiments.benchmark_scan --cells mingru,minlstm --max-time 16384

stdout: one JSON object per (cell, T); stderr: a table.

Measured on 2 shared CPU cores (default invocation, 3 min wall, other jobs
running, so read the times as upper bounds): the parallel form is 2.4-4.8x
slower than lax.scan at every T from 1k to 64k (s/step parallel vs
sequential: T=1k 0.13 vs 0.041, 8k 0.53 vs 0.22, 64k 6.9 vs 1.9). On CPU
there are too few cores for the O(log T) depth to pay for the extra work
(the log-space composition costs an exp and a log1p per element per level);
the parallel form is meant for GPU/TPU.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp

from experiments import timing
from seqjax.nn import Recurrent, make_cell


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64, help="hidden units (also the input width)")
    parser.add_argument("--min-time", type=int, default=1024)
    parser.add_argument("--max-time", type=int, default=65536, help="T doubles from --min-time up to this")
    parser.add_argument("--cells", default="mingru", help="comma-separated subset of mingru,minlstm")
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds; the median is reported")
    parser.add_argument("--warmup", type=int, default=0, help="untimed calls per case after the compiling call")
    return parser.parse_args(argv)


def grad_step(cell: str, implementation: str, time_steps: int, args) -> Callable[[], tuple]:
    """A no-argument callable running one jitted grad of sum(layer(x)) w.r.t. (params, x)
    (compiled on its first call)."""
    layer = Recurrent(make_cell(cell, args.hidden), implementation=implementation)
    key_x, key_p = jax.random.split(jax.random.key(0))
    x = jax.random.normal(key_x, (args.batch, time_steps, args.hidden))
    params = layer.init(key_p, x)

    def loss(params, x):
        return jnp.sum(layer.apply(params, x)[0])

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    return lambda: grad(params, x)


def measure(cell: str, time_steps: int, args) -> dict:
    """One JSON record: parallel vs sequential seconds per forward+backward step."""
    steps = {impl: grad_step(cell, impl, time_steps, args) for impl in ("parallel", "scan")}
    timings = timing.time_calls(steps, repeats=args.repeats, warmup=args.warmup)
    return timing.measurement(
        "scan_fwd_bwd",
        f"parallel_{cell}",
        timings["parallel"].median,
        "s/step",
        f"sequential_{cell}",
        timings["scan"].median,
        ratio=timing.BASELINE_OVER_VALUE,  # the parallel form's speed-up
        T=time_steps,
        B=args.batch,
        H=args.hidden,
    )


def time_grid(args) -> list[int]:
    grid, t = [], args.min_time
    while t <= args.max_time:
        grid.append(t)
        t *= 2
    return grid


def main(argv=None) -> None:
    args = parse_args(argv)
    print(f"{'case':18s} {'T':>6s} {'parallel s':>11s} {'sequential s':>13s} {'speedup':>8s}", file=sys.stderr)
    for cell in args.cells.split(","):
        for time_steps in time_grid(args):
            record = timing.emit(measure(cell, time_steps, args))
            print(
                f"{record['case']:18s} {time_steps:6d} {record['value']:11.4f} "
                f"{record['baseline_value']:13.4f} {record['ratio']:8.2f}",
                file=sys.stderr,
            )


if __name__ == "__main__":
    main()
