"""Forward+backward throughput of seqjax LSTM/GRU layers against Flax and PyTorch.

Every case times one jitted step that computes the gradient of sum(outputs)
with respect to the parameters and the inputs (PyTorch: forward, backward
with inputs.requires_grad). Cases run round-robin, one call each per round,
so that load from other processes hits all of them alike; the reported value
is the median over rounds of tokens/s = batch * time / seconds (the best
round is reported too: on a shared machine it shows the uncontended
speed). Compilation and `--warmup` calls are excluded.

  python -m experiments.benchmark_rnn                      # 32 x 128, 256 -> 512, float32
  python -m experiments.benchmark_rnn --repeats 30 --cells lstm

stdout: one JSON object per (seqjax case, baseline) pair; stderr: a table.
PyTorch baselines appear only when `torch` is importable (it is never a
dependency of seqjax); they run with torch.set_num_threads(--threads or the
number of cores JAX sees).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

import seqjax.nn as snn
from experiments import timing

FLAX_CELLS = {"lstm": ("flax_optimized_lstm", nn.OptimizedLSTMCell), "gru": ("flax_gru", nn.GRUCell)}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--time", type=int, default=128)
    parser.add_argument("--input", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds; the median is reported")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per case after compiling")
    parser.add_argument("--cells", default="lstm,gru", help="comma-separated subset of lstm,gru")
    parser.add_argument("--implementation", default="auto", help="seqjax Recurrent.implementation")
    parser.add_argument("--unroll", type=int, default=None, help="seqjax Recurrent.unroll (default: the layer's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: os.cpu_count())")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch baselines")
    return parser.parse_args(argv)


def jax_case(module: nn.Module, args, seed: int = 0) -> Callable[[], tuple]:
    """A no-argument callable running one jitted grad of sum(module(x)) w.r.t. (params, x)
    (compiled on its first call)."""
    key_x, key_p = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(key_x, (args.batch, args.time, args.input), args.dtype)
    params = module.init(key_p, x)

    def loss(params, x):
        outputs = module.apply(params, x)
        outputs = outputs[0] if isinstance(outputs, tuple) else outputs
        return jnp.sum(outputs)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    return lambda: grad(params, x)


def torch_case(cell: str, args) -> Callable[[], None]:
    import torch

    torch.manual_seed(0)
    layer_type = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
    layer = layer_type(args.input, args.hidden, batch_first=True).to(getattr(torch, args.dtype))
    x = torch.randn(args.batch, args.time, args.input, dtype=getattr(torch, args.dtype), requires_grad=True)

    def run():
        layer.zero_grad(set_to_none=True)
        x.grad = None
        outputs, _ = layer(x)
        outputs.sum().backward()

    return run


def build_cases(args) -> dict[str, Callable[[], None]]:
    cases = {}
    torch_ok = not args.no_torch and torch_available()
    if torch_ok:
        import torch

        torch.set_num_threads(args.threads or os.cpu_count())
    for cell in args.cells.split(","):
        layer_kwargs = {} if args.unroll is None else {"unroll": args.unroll}
        cases[f"seqjax_{cell}"] = jax_case(
            snn.Recurrent(snn.make_cell(cell, args.hidden), implementation=args.implementation, **layer_kwargs), args
        )
        flax_name, flax_cell = FLAX_CELLS[cell]
        cases[flax_name] = jax_case(nn.RNN(flax_cell(args.hidden)), args)
        if torch_ok:
            cases[f"torch_{cell}"] = torch_case(cell, args)
    return cases


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def measure(cases: dict[str, Callable[[], object]], args) -> dict[str, tuple[float, float]]:
    """(median, best) tokens/s per case, timing the cases round-robin."""
    timings = timing.time_calls(cases, repeats=args.repeats, warmup=args.warmup)
    tokens = args.batch * args.time
    return {name: (tokens / measured.median, tokens / measured.min) for name, measured in timings.items()}


def report(rates: dict[str, tuple[float, float]], args) -> None:
    """One JSON line per (seqjax case, baseline) on stdout (value: median); a table on stderr."""
    common = {
        "batch": args.batch,
        "time": args.time,
        "input": args.input,
        "hidden": args.hidden,
        "dtype": args.dtype,
        "repeats": args.repeats,
        "implementation": args.implementation,
    }
    for cell in args.cells.split(","):
        case = f"seqjax_{cell}"
        for baseline in (FLAX_CELLS[cell][0], f"torch_{cell}"):
            if baseline not in rates:
                continue
            timing.emit(timing.median_and_best("rnn_fwd_bwd", case, "tokens/s", baseline, rates, **common))
    print(f"{'case':<22}{'median tok/s':>14}{'best tok/s':>12}", file=sys.stderr)
    for name, (median, best) in rates.items():
        print(f"{name:<22}{median:>14.0f}{best:>12.0f}", file=sys.stderr)


def main(argv=None) -> None:
    args = parse_args(argv)
    report(measure(build_cases(args), args), args)


if __name__ == "__main__":
    main()
