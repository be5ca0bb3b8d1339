"""Peak memory (and time per step) of TBPTT vs full BPTT as the sequence grows.

  python -m experiments.benchmark_tbptt [--lengths=1000,10000,100000,1000000] [--chunk=100] [--backprop=200]

One LSTM layer (hidden 128, batch 8, 16 input features, a per-step MSE loss).
Three ways to get the gradient of a length-T sequence:

  tbptt  stateful TBPTT as seqjax trains streams (seqjax.tbptt.make_stream_step
         semantics): one compiled step per K-step chunk, the carry passed on
         with its gradient stopped. The device only ever holds one chunk.
  tbptt_k2  TBPTT(K, --backprop) the way seqjax.tbptt runs it: per K-step
         chunk, one window of k2 steps (the k2 - K before the chunk as a
         warm-up, then the chunk) in two model calls. Holds one window.
  full   jax.grad through a lax.scan over all T steps (activations for all T).
  remat  the same with the scan cut into sqrt(T) blocks under jax.checkpoint,
         so only block-boundary carries are kept (O(sqrt T) memory).

`value` is the peak device memory XLA plans for the compiled program
(arguments + outputs + temporaries, from `compiled.memory_analysis()`), which
is exact on every backend and needs no allocation, so the full-BPTT program is
measured even where it would not fit. Time per whole sequence is measured where a run
takes under ~`--max_seconds`; for tbptt it is the measured time of one chunk
step times the number of chunks. Measured on 2 CPU cores (2026-11-23, other
jobs sharing the machine):

  case   T=1e3     T=1e4     T=1e5     T=1e6      seconds per sequence (1e3 / 1e4 / 1e5)
  tbptt  6.87 MB   6.87 MB   6.87 MB   6.87 MB    0.15 / 1.5 / 15   (1.5 ms per 100-step chunk)
  full   63 MB     626 MB    6.25 GB   62.5 GB    0.15 / 1.5 / 15.6 (1e6 does not fit in 24 GB)
  remat  4.7 MB    18.8 MB   162 MB    1.60 GB    0.13 / 1.4 / 14.7

TBPTT's peak at T=1e6 is 1.00x its peak at T=1e3.

TBPTT(100, 200) (`tbptt_k2`, added later, same settings, 2 heavily loaded
CPU cores): 12.6 MB at T=1e3 and at T=1e6, one 200-step window whatever T
is; 75 ms per chunk against 37 ms for TBPTT(100) in the same run (each step
is computed k2/k1 = 2 times).
"""

from __future__ import annotations

import math
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import app, flags

from experiments import timing
from seqjax.nn import LSTMCell, Recurrent

_LENGTHS = flags.DEFINE_list("lengths", ["1000", "10000", "100000", "1000000"], "Total sequence lengths T.")
_CHUNK = flags.DEFINE_integer("chunk", 100, "TBPTT chunk length K.")
_BATCH = flags.DEFINE_integer("batch", 8, "Batch size.")
_HIDDEN = flags.DEFINE_integer("hidden", 128, "LSTM units.")
_FEATURES = flags.DEFINE_integer("features", 16, "Input features.")
_BACKPROP = flags.DEFINE_integer("backprop", 200, "k2 of the tbptt_k2 case (0 skips it).")
_MAX_SECONDS = flags.DEFINE_float("max_seconds", 20.0, "Skip timing a case expected to take longer.")


class Tagger(nn.Module):
    """LSTM + per-step linear read-out; returns (predictions [B, T, 1], carry)."""

    hidden: int

    @nn.compact
    def __call__(self, x, carry=None):
        outputs, carry = Recurrent(LSTMCell(self.hidden), implementation="scan")(x, initial_carry=carry)
        return nn.Dense(1)(outputs), carry


def planned_bytes(compiled) -> int:
    stats = compiled.memory_analysis()
    return (
        stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes - stats.alias_size_in_bytes
    )


def chunk_loss(model, params, x, y, carry):
    predictions, carry = model.apply(params, x, carry)
    return jnp.mean((predictions[..., 0] - y) ** 2), carry


def tbptt_step(model):
    def step(params, carry, x, y):
        (loss, carry), grads = jax.value_and_grad(lambda p: chunk_loss(model, p, x, y, carry), has_aux=True)(params)
        return grads, jax.lax.stop_gradient(carry), loss

    return jax.jit(step)


def window_step(model, chunk: int):
    """TBPTT(k1, k2) step: loss on the last k1 steps of a k2-step window; also
    returns the carry after the first k1 steps, where the next window starts."""

    def loss(params, carry, x, y):
        head, next_carry = model.apply(params, x[:, :chunk], carry)
        tail, _ = model.apply(params, x[:, chunk:], next_carry)
        predictions = jnp.concatenate([head, tail], axis=1)[:, -chunk:, 0]
        return jnp.mean((predictions - y[:, -chunk:]) ** 2), next_carry

    def step(params, carry, x, y):
        (value, next_carry), grads = jax.value_and_grad(loss, has_aux=True)(params, carry, x, y)
        return grads, jax.lax.stop_gradient(next_carry), value

    return jax.jit(step)


def full_grad(model, blocks: int | None):
    """grad over the whole sequence; with `blocks`, scan over remat'ed blocks."""

    def loss(params, x, y):
        if blocks is None:
            return chunk_loss(model, params, x, y, None)[0]
        batch, time_steps = y.shape
        xb = x.reshape(batch, blocks, time_steps // blocks, -1).swapaxes(0, 1)
        yb = y.reshape(batch, blocks, time_steps // blocks).swapaxes(0, 1)

        @jax.checkpoint
        def block(carry, xy):
            value, carry = chunk_loss(model, params, xy[0], xy[1], carry)
            return carry, value

        zero = LSTMCell(model.hidden, parent=None).initial_carry(batch)
        _, values = jax.lax.scan(block, zero, (xb, yb))
        return values.mean()

    return jax.jit(jax.grad(loss))


def emit(case, length, value, seconds, extra):
    """Prints and returns one record. There is no baseline field: the cases
    are compared across lines (and T), not against one reference."""
    record = {
        "benchmark": "tbptt_memory",
        "case": case,
        "T": length,
        "value": value,
        "unit": "bytes",
        "seconds_per_sequence": seconds,
        **extra,
        **timing.context(),
    }
    return timing.emit(record)


def main(argv):
    del argv
    batch, features, k = _BATCH.value, _FEATURES.value, _CHUNK.value
    model = Tagger(_HIDDEN.value)
    params = model.init(jax.random.key(0), jnp.zeros((batch, k, features)))
    context = {"chunk": k, "batch": batch, "hidden": _HIDDEN.value, "features": features}
    step = tbptt_step(model)
    x_chunk, y_chunk = jnp.ones((batch, k, features)), jnp.ones((batch, k))
    carry = LSTMCell(_HIDDEN.value, parent=None).initial_carry(batch)
    chunk_bytes = planned_bytes(step.lower(params, carry, x_chunk, y_chunk).compile())
    chunk_seconds = timing.time_call(step, params, carry, x_chunk, y_chunk, repeats=3).median
    window = _BACKPROP.value
    if window:
        step_k2 = window_step(model, k)
        x_window, y_window = jnp.ones((batch, window, features)), jnp.ones((batch, window))
        window_bytes = planned_bytes(step_k2.lower(params, carry, x_window, y_window).compile())
        window_seconds = timing.time_call(step_k2, params, carry, x_window, y_window, repeats=3).median
    results = []
    for length in map(int, _LENGTHS.value):
        # One compiled program serves every chunk, whatever T is.
        results.append(
            emit(
                "tbptt",
                length,
                chunk_bytes,
                chunk_seconds * math.ceil(length / k),
                {**context, "seconds_per_chunk": chunk_seconds},
            )
        )
        if window:
            results.append(
                emit(
                    "tbptt_k2",
                    length,
                    window_bytes,
                    window_seconds * math.ceil(length / k),
                    {**context, "backprop": window, "seconds_per_chunk": window_seconds},
                )
            )
        x = jax.ShapeDtypeStruct((batch, length, features), jnp.float32)
        y = jax.ShapeDtypeStruct((batch, length), jnp.float32)
        for case, blocks in (("full", None), ("remat", _blocks(length))):
            fn = full_grad(model, blocks)
            compiled = fn.lower(params, x, y).compile()
            expected = chunk_seconds * length / k
            seconds = None
            if expected < _MAX_SECONDS.value:
                seconds = timing.time_call(fn, params, jnp.ones(x.shape), jnp.ones(y.shape), repeats=1).median
            results.append(emit(case, length, planned_bytes(compiled), seconds, {**context, "blocks": blocks}))
    first, last = results[0]["value"], [r for r in results if r["case"] == "tbptt"][-1]["value"]
    print(f"tbptt peak at T={_LENGTHS.value[-1]} / T={_LENGTHS.value[0]}: {last / first:.3f}", file=sys.stderr)


def _blocks(length: int) -> int:
    """The divisor of `length` closest to sqrt(length)."""
    root = int(math.sqrt(length))
    return min((d for d in range(1, length + 1) if length % d == 0), key=lambda d: abs(d - root))


if __name__ == "__main__":
    app.run(main)
