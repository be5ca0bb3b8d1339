"""Attention throughput: the Pallas flash-attention kernel against XLA and cuDNN.

For each sequence length T (= S), head dim D and causal flag, times
  * fwd:     out = attention(q, k, v)
  * fwd_bwd: the VJP of attention w.r.t. q, k, v (forward included)
for `kernels.flash_attention` ("pallas") and `jax.nn.dot_product_attention`
with implementation='xla' and (on GPU) 'cudnn', round-robin within a case so
that machine noise hits all of them alike; value = median over --repeats.
Shapes follow the FlashAttention papers: batch = --tokens // T, heads =
--hidden // D, bfloat16. FLOPs: forward 4 B H T S D (two matmuls), halved
when causal; forward+backward 3.5x that (the backward is 2.5 forwards).

  python -m experiments.benchmark_attention                # GPU: T = 512 .. 16k, D = 64, 128
  python -m experiments.benchmark_attention --quick        # tiny shapes (any backend)

stdout: one JSON object per (pallas case, baseline): value/baseline_value in
TFLOP/s, ratio = value / baseline_value (> 1: the kernel is faster); a
baseline that fails (e.g. XLA running out of memory at 16k) is reported
with baseline_value null and its error. stderr: a table.

On CPU the kernel runs in Pallas interpret mode, which emulates the kernel
with XLA loops: its numbers say nothing about the kernel's speed (lines
carry "meaningful": false), and the full sweep would take hours, so CPU runs
use the --quick shapes. No GPU numbers have been measured yet: the table
owed by issue 7 needs a run of the default invocation on an H100.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from experiments import timing
from kernels.flash_attention import flash_attention

# Dense bf16 tensor-core peaks (TFLOP/s) for the fraction-of-peak column.
PEAK_TFLOPS = {"H100 80GB HBM3": 989.0, "H100 SXM": 989.0, "H200": 989.0, "H100 PCIe": 756.0, "A100": 312.0}


# Defaults of the full sweep and of --quick; flags given explicitly win over both.
FULL = dict(
    seq_lens="512,1024,2048,4096,8192,16384", head_dims="64,128", tokens=16384, hidden=2048, repeats=10, warmup=2
)
QUICK = dict(seq_lens="128,256", head_dims="64", tokens=512, hidden=128, repeats=3, warmup=1)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seq-lens", help=f"comma-separated T (= S); default {FULL['seq_lens']}")
    parser.add_argument("--head-dims", help=f"default {FULL['head_dims']}")
    parser.add_argument("--causal", default="false,true", help="comma-separated subset of false,true")
    parser.add_argument("--modes", default="fwd,fwd_bwd")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--tokens", type=int, help=f"batch * T per case; default {FULL['tokens']}")
    parser.add_argument("--hidden", type=int, help=f"heads * D per case; default {FULL['hidden']}")
    parser.add_argument("--repeats", type=int, help="timed rounds, median reported; default 10")
    parser.add_argument("--warmup", type=int, help="untimed calls per implementation after compiling")
    parser.add_argument("--baselines", default="xla,cudnn", help="cudnn is skipped off GPU")
    parser.add_argument("--quick", action="store_true", help=f"tiny defaults: {QUICK}")
    args = parser.parse_args(argv)
    if jax.default_backend() == "cpu" and not args.quick:
        print("CPU backend: the kernel runs in interpret mode; using --quick defaults", file=sys.stderr)
        args.quick = True
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def implementations(baselines: list[str], causal: bool) -> dict[str, Callable]:
    """name -> attention(q, k, v) for the kernel and the requested baselines."""
    impls = {"pallas": lambda q, k, v: flash_attention(q, k, v, causal=causal)}
    for name in baselines:
        if name == "cudnn" and jax.default_backend() != "gpu":
            continue
        impls[name] = (
            lambda impl: lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation=impl)
        )(name)
    return impls


def jitted_step(attention: Callable, mode: str, q, k, v, d_out) -> Callable[[], jax.Array]:
    """A no-argument callable running one jitted fwd or fwd+bwd step (compiled on its first call)."""
    if mode == "fwd":
        fn = jax.jit(attention)
        args = (q, k, v)
    else:
        fn = jax.jit(lambda q, k, v, d_out: jax.vjp(attention, q, k, v)[1](d_out))
        args = (q, k, v, d_out)
    return lambda: fn(*args)


def attention_flops(batch, heads, seq_len, head_dim, causal, mode) -> float:
    flops = 4.0 * batch * heads * seq_len * seq_len * head_dim * (0.5 if causal else 1.0)
    return flops * (3.5 if mode == "fwd_bwd" else 1.0)


def measure_case(seq_len, head_dim, causal, mode, args) -> dict[str, dict]:
    """name -> {"seconds": median} or {"error": message} for one case."""
    batch, heads = max(1, args.tokens // seq_len), max(1, args.hidden // head_dim)
    rng = np.random.default_rng(0)
    q, k, v, d_out = (
        jnp.asarray(rng.standard_normal((batch, seq_len, heads, head_dim), np.float32), args.dtype) for _ in range(4)
    )
    steps = {
        name: jitted_step(attention, mode, q, k, v, d_out)
        for name, attention in implementations(args.baselines.split(","), causal).items()
    }
    failures = {}  # a baseline may not fit (XLA at 16k) or not apply
    timings = timing.time_calls(steps, repeats=args.repeats, warmup=args.warmup, failures=failures)
    results = {
        name: {"seconds": timings[name].median} if name in timings else {"error": _first_line(failures[name])}
        for name in steps
    }
    flops = attention_flops(batch, heads, seq_len, head_dim, causal, mode)
    for result in results.values():
        if "seconds" in result:
            result["tflops"] = flops / result["seconds"] / 1e12
    return {"batch": batch, "heads": heads, "results": results}


def report_case(seq_len, head_dim, causal, mode, measured, args) -> list[str]:
    """Print the JSON lines of one case; return its table rows."""
    device_kind = jax.devices()[0].device_kind
    peak = next((p for name, p in PEAK_TFLOPS.items() if name in device_kind), None)
    meaningful = jax.default_backend() != "cpu"
    results = measured["results"]
    kernel = results.get("pallas", {})
    case = f"pallas_{mode}_T{seq_len}_D{head_dim}_{'causal' if causal else 'full'}"
    fields = {
        "mode": mode,
        "seq_len": seq_len,
        "head_dim": head_dim,
        "causal": causal,
        "batch": measured["batch"],
        "heads": measured["heads"],
        "dtype": args.dtype,
        "repeats": args.repeats,
        "seconds": kernel.get("seconds"),
        "meaningful": meaningful,
    }
    if kernel.get("tflops") is not None and peak:
        fields["fraction_of_peak"] = round(kernel["tflops"] / peak, 3)
    if not meaningful:
        fields["note"] = "CPU: Pallas interpret mode, not a performance measurement"
    if "error" in kernel:
        fields["error"] = kernel["error"]
    for baseline in (name for name in results if name != "pallas"):
        base = results[baseline]
        errors = {"baseline_error": base["error"]} if "error" in base else {}
        timing.emit(
            timing.measurement(
                "attention",
                case,
                kernel.get("tflops"),
                "TFLOP/s",
                baseline,
                base.get("tflops"),
                baseline_seconds=base.get("seconds"),
                **fields,
                **errors,
            )
        )
    return [
        f"{mode:<8}{seq_len:>7}{head_dim:>5}{str(causal):>7}  {name:<7}"
        f"{_fmt(r.get('tflops'))}{_fmt(r.get('seconds') and r['seconds'] * 1e3)}  {r.get('error', '')[:60]}"
        for name, r in results.items()
    ]


def _first_line(error: Exception) -> str:
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}"


def _fmt(x) -> str:
    return f"{'-':>12}" if x is None else f"{x:>12.4g}"


def main(argv=None) -> None:
    args = parse_args(argv)
    rows = []
    for head_dim in map(int, args.head_dims.split(",")):
        for seq_len in map(int, args.seq_lens.split(",")):
            for causal in (c.strip().lower() == "true" for c in args.causal.split(",")):
                for mode in args.modes.split(","):
                    measured = measure_case(seq_len, head_dim, causal, mode, args)
                    rows += report_case(seq_len, head_dim, causal, mode, measured, args)
    print(f"{'mode':<8}{'T':>7}{'D':>5}{'causal':>7}  {'impl':<7}{'TFLOP/s':>12}{'ms':>12}", file=sys.stderr)
    print("\n".join(rows), file=sys.stderr)
    if jax.default_backend() == "cpu":
        print(f"(CPU, {os.cpu_count()} cores: interpret-mode numbers, not kernel performance)", file=sys.stderr)


if __name__ == "__main__":
    main()
