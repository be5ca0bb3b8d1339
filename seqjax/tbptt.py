r"""Truncated backpropagation through time (TBPTT) by chunking the time axis.

TBPTT(k1, k2): the parameters are updated every k1 steps (`tbptt_len`) and
each update backpropagates through the last k2 >= k1 steps
(`tbptt_backprop_len`). A [B, T] batch is cut into N = ceil(T / k1) chunks;
chunk c's loss covers its own k1 steps, and the graph behind it is the window
of k2 steps that ends with the chunk, entered from a stop-gradient carry:

    window c:  [ c*k1 - (k2-k1)  ...  c*k1  ...  (c+1)*k1 )
                 \_ warm-up: no loss _/ \_ chunk c: loss _/
                 ^ carry from window c-1, jax.lax.stop_gradient

With k2 = k1 there is no warm-up and the carry is simply the one chunk c-1
ended with. With k2 > k1 the window is run as two model calls, its first k1
steps (whose final carry starts window c+1) and the remaining k2 - k1, so the
carries the windows need come out of the same differentiated forward pass;
each step is computed k2/k1 times, the price of the longer gradient path.
Windows that reach before step 0 are front-padded and restarted at step 0 by
a reset, so every window has the same shape (the reset makes the layers use
their sequential scan recurrence). Per chunk, the loss is the chunk's share of
the full-sequence loss (its per-step sum over the whole sequence's step
count), so when every window reaches step 0 and gradients are accumulated
the update is exactly full BPTT's. The warm-up is the k2 - k1 steps before
each chunk, so chunk c's gradient reaches back to step c*k1 - (k2 - k1); a
ragged last chunk (r < k1 real steps) therefore reaches k2 - k1 + r steps
back from the sequence's end, not k2. Full BPTT needs k2 >= ceil(T / k1) * k1,
i.e. k2 >= T when k1 divides T.

Two ways to use the chunk gradients (`config.train.tbptt_update`):
  accumulate  sum them and update once per batch (truncated gradient, one step)
  per_chunk   update the parameters after every chunk (classic TBPTT(k1, k2))

The whole batch runs in one compiled program: window 0 starts from the
model's initial carry, the remaining windows run in a `lax.scan`. The ragged
last chunk is padded to k1 and its padded steps are masked (the carry does
not change, their loss weight is 0), so every window has the same shape.
Activation memory is that of one window, whatever T is.

Stateful streams (`make_stream_step`) are TBPTT over an endless sequence: each
batch is the next k1 steps of every stream (with k2 > k1, preceded by the
k2 - k1 steps before them, `stream_window`), and the carry between batches
lives in the train state.

Only per-step losses can be truncated (the task's `step_sums`); bidirectional
layers read the future and cannot be truncated causally.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from seqjax import models, tasks

UPDATES = ("accumulate", "per_chunk")


def check_truncatable(model, task: tasks.Task) -> None:
    """Raises a clear error when TBPTT cannot apply to this model or task."""
    if not isinstance(model, models.RecurrentModel):
        raise ValueError(f"TBPTT needs a recurrent model (config.model.name='recurrent'); got {type(model).__name__}")
    if model.stack.bidirectional:
        raise ValueError(
            "bidirectional layers read the whole sequence (the backward direction starts at "
            "its end), so they cannot be truncated causally; set config.model.bidirectional=False "
            "or config.train.tbptt_len=0"
        )
    if model.head != "per_step":
        raise ValueError(
            f"TBPTT needs a per-step loss, but the model head is {model.head!r} "
            f"(task {type(task).__name__} is many-to-one); use config.train.tbptt_len=0"
        )


def split_into_chunks(
    batch: dict[str, np.ndarray], chunk_len: int, backprop_len: int | None = None
) -> dict[str, np.ndarray]:
    """[B, T, ...] host arrays -> stacked windows [N, B, k2, ...], N = ceil(T / k1).

    k1 = `chunk_len`, k2 = `backprop_len` (None: k1). Window c holds steps
    [c*k1 - (k2-k1), (c+1)*k1) of the sequence; steps before 0 and after T
    are zero padding. Per-sequence arrays ([B]) are repeated for every
    window. Every window gets `lengths` [N, B] (its valid prefix: padding
    after the sequence's end is invalid, front padding is valid but erased
    by the reset), `step_mask` [N, B, k2] (1 where the loss counts: the
    chunk's own real steps) and, when k2 > k1, `resets` [N, B, k2] (True at
    step 0, on top of any resets the batch has).
    """
    time = batch["inputs"].shape[1]
    backprop_len = chunk_len if backprop_len is None else backprop_len
    if chunk_len <= 0:
        raise ValueError(f"chunk length must be positive, got {chunk_len}")
    if backprop_len < chunk_len:
        raise ValueError(f"TBPTT(k1, k2) needs k2 >= k1: backprop length {backprop_len} < chunk length {chunk_len}")
    warmup = backprop_len - chunk_len
    count = math.ceil(time / chunk_len)
    # positions[c, j]: the sequence step that window c holds at index j.
    positions = np.arange(count)[:, None] * chunk_len - warmup + np.arange(backprop_len)[None, :]
    lengths = batch.get("lengths", np.full(batch["inputs"].shape[0], time, np.int32))
    windows = {}
    for name, array in batch.items():
        if name in ("lengths", "step_mask"):
            continue
        if array.ndim >= 2:
            widths = [(0, 0), (warmup, count * chunk_len - time)] + [(0, 0)] * (array.ndim - 2)
            windows[name] = np.moveaxis(np.pad(array, widths)[:, positions + warmup], 1, 0)
        else:
            windows[name] = np.broadcast_to(array, (count, *array.shape)).copy()
    real = (positions[:, None, :] >= 0) & (positions[:, None, :] < lengths[None, :, None])
    if "step_mask" in batch:
        real = real & (
            np.pad(batch["step_mask"], [(0, 0), (warmup, count * chunk_len - time)])[:, positions + warmup].swapaxes(
                0, 1
            )
            > 0
        )
    windows["lengths"] = np.clip(lengths[None, :] - positions[:, :1], 0, backprop_len).astype(np.int32)
    windows["step_mask"] = (real & (np.arange(backprop_len) >= warmup)).astype(np.float32)
    if warmup:
        starts = np.broadcast_to(positions[:, None, :] == 0, windows["step_mask"].shape)
        windows["resets"] = starts | windows["resets"].astype(bool) if "resets" in windows else starts.copy()
    return windows


def stream_window(
    task: tasks.Task, split: str, index: int, batch_size: int, chunk_len: int, backprop_len: int, seed: int
) -> dict[str, np.ndarray]:
    """Training window `index` of `batch_size` streams for TBPTT(k1, k2): steps
    [index*k1 - (k2-k1), (index+1)*k1) of each, as [B, k2] arrays.

    Built from the task's pure `stream_batch` segments of k1 steps, so it is
    a pure function of its arguments too. The loss (`step_mask`) covers only
    the last k1 steps; steps before the stream's start are zero padding and
    `resets` is True at step 0, so they never reach the carry.
    """
    warmup = backprop_len - chunk_len
    if warmup < 0:
        raise ValueError(f"TBPTT(k1, k2) needs k2 >= k1: backprop length {backprop_len} < chunk length {chunk_len}")
    first = index - math.ceil(warmup / chunk_len)
    segments = [task.stream_batch(split, j, batch_size, chunk_len, seed) for j in range(max(first, 0), index + 1)]
    joined = {name: np.concatenate([s[name] for s in segments], axis=1) for name in segments[0]}
    before = max(-first, 0) * chunk_len  # whole segments that would lie before step 0
    joined = {name: np.pad(a, [(0, 0), (before, 0)] + [(0, 0)] * (a.ndim - 2)) for name, a in joined.items()}
    window = {name: a[:, -backprop_len:] for name, a in joined.items()}
    position = index * chunk_len - warmup + np.arange(backprop_len)
    window["resets"] = window["resets"].astype(bool) | (position == 0)[None, :]
    window["step_mask"] = window["step_mask"] * (np.arange(backprop_len) >= warmup)[None, :]
    return window


def _clip_lengths(lengths, start: int, size: int):
    return None if lengths is None else jnp.clip(lengths - start, 0, size)


def _piece(window, start: int, stop: int):
    """Steps [start, stop) of a [B, k2] window's per-step arrays."""
    return {name: window[name][:, start:stop] for name in ("inputs", "resets") if name in window}


def window_predictions(state, params, carry, window, rng, chunk_len: int):
    """Predictions over a window [B, k2, ...] and the carry after its first
    `chunk_len` (k1) steps, which is where the next window starts.

    With k2 = k1 that is one model call; with k2 > k1 two, so the carry at
    step k1 is available while the gradient of the whole window flows through
    it.
    """
    size = window["inputs"].shape[1]
    lengths = window.get("lengths")

    def run(piece, lengths, carry, rng):
        return state.apply_fn(
            {"params": params},
            piece["inputs"],
            lengths,
            deterministic=False,
            rngs={"dropout": rng},
            initial_carry=carry,
            return_carry=True,
            resets=piece.get("resets"),
        )

    if size == chunk_len:
        return run(window, lengths, carry, rng)
    head, next_carry = run(
        _piece(window, 0, chunk_len), _clip_lengths(lengths, 0, chunk_len), carry, jax.random.fold_in(rng, 0)
    )
    tail, _ = run(
        _piece(window, chunk_len, size),
        _clip_lengths(lengths, chunk_len, size - chunk_len),
        next_carry,
        jax.random.fold_in(rng, 1),
    )
    return jnp.concatenate([head, tail], axis=1), next_carry


def chunk_gradients(task: tasks.Task, state, params, carry, window, rng, loss_count, chunk_len: int):
    """Gradient of the chunk's share of the loss (through its whole window),
    the carry the next window starts from (gradient stopped) and the chunk's
    per-step metric sums."""

    def objective(params):
        predictions, next_carry = window_predictions(state, params, carry, window, rng, chunk_len)
        sums = task.step_sums(predictions, window)
        return sums["loss"][0] / loss_count, (next_carry, sums)

    (_, (next_carry, sums)), grads = jax.value_and_grad(objective, has_aux=True)(params)
    return grads, jax.lax.stop_gradient(next_carry), sums


def _add(tree_a, tree_b):
    return jax.tree.map(jnp.add, tree_a, tree_b)


def _metrics(sums: dict[str, tuple]) -> dict[str, jax.Array]:
    return {name: total / count for name, (total, count) in sums.items()}


def make_train_step(task: tasks.Task, update: str = "accumulate", chunk_len: int | None = None) -> Callable:
    """train_step(state, windows, rng) -> (state, metrics) over all chunks of a batch.

    `windows` is `split_into_chunks(batch, k1, k2)` (device arrays, batch
    axis 1); `chunk_len` is k1 (None: the window length, i.e. k2 = k1).
    """
    if update not in UPDATES:
        raise ValueError(f"config.train.tbptt_update must be one of {UPDATES}, got {update!r}")

    def apply(state, grads):
        return state.apply_gradients(grads=grads), optax.tree.norm(grads)

    def train_step(state, chunks, rng):
        advance = chunk_len or chunks["step_mask"].shape[-1]
        loss_count = chunks["step_mask"].sum()
        base_rng = jax.random.fold_in(rng, state.step)
        first = jax.tree.map(lambda a: a[0], chunks)
        rest = jax.tree.map(lambda a: a[1:], chunks)
        grads, carry, sums = chunk_gradients(
            task, state, state.params, None, first, jax.random.fold_in(base_rng, 0), loss_count, advance
        )
        if update == "per_chunk":
            state, norm = apply(state, grads)
            grads = jax.tree.map(jnp.zeros_like, grads)
        else:
            norm = jnp.zeros(())

        def body(loop, chunk_and_index):
            state, carry, grads, sums, norm = loop
            chunk, index = chunk_and_index
            chunk_grads, carry, chunk_sums = chunk_gradients(
                task, state, state.params, carry, chunk, jax.random.fold_in(base_rng, index), loss_count, advance
            )
            if update == "per_chunk":
                state, chunk_norm = apply(state, chunk_grads)
                norm = norm + chunk_norm
            else:
                grads = _add(grads, chunk_grads)
            return (state, carry, grads, _add(sums, chunk_sums), norm), None

        count = chunks["step_mask"].shape[0]
        (state, _, grads, sums, norm), _ = jax.lax.scan(
            body, (state, carry, grads, sums, norm), (rest, jnp.arange(1, count))
        )
        if update == "accumulate":
            state, norm = apply(state, grads)
        else:
            norm = norm / count
        metrics = _metrics(sums)
        metrics["grad_norm"] = norm
        return state, metrics

    return train_step


def make_stream_step(task: tasks.Task, chunk_len: int | None = None) -> Callable:
    """Stateful training on streams: train_step(state, segment, rng) -> (state, metrics).

    `segment` is the next [B, k1] piece of B streams (Task.stream_batch), or
    with k2 > k1 the [B, k2] `stream_window` ending with it (`chunk_len` = k1;
    None: k2 = k1). `state.stream_carry` is the carry at the segment's (or
    window's) first step; the gradient stops there (TBPTT across batches),
    the carry restarts where `segment['resets']` marks a new document, and
    the carry where the next segment (window) starts goes back into the
    state, so checkpoints hold it and a resumed run continues mid-stream.
    """

    def train_step(state, segment, rng):
        loss_count = segment["step_mask"].sum()
        grads, carry, sums = chunk_gradients(
            task,
            state,
            state.params,
            state.stream_carry,
            segment,
            jax.random.fold_in(rng, state.step),
            loss_count,
            chunk_len or segment["step_mask"].shape[-1],
        )
        metrics = _metrics(sums)
        metrics["grad_norm"] = optax.tree.norm(grads)
        return state.apply_gradients(grads=grads).replace(stream_carry=carry), metrics

    return train_step


def make_stream_eval_step(task: tasks.Task) -> Callable:
    """eval_step(state, carry, segment) -> (carry, per-step metric sums), no dropout."""

    def eval_step(state, carry, segment):
        predictions, carry = state.apply_fn(
            {"params": state.params},
            segment["inputs"],
            initial_carry=carry,
            return_carry=True,
            resets=segment["resets"],
        )
        return carry, task.step_sums(predictions, segment)

    return eval_step


def zero_carry(model, params, batch_size: int, example_inputs) -> Any:
    """All-zeros stream carry for `batch_size` rows, shaped like the model's carry."""
    shapes = jax.eval_shape(
        lambda p, x: model.apply({"params": p}, x, return_carry=True)[1], params, example_inputs[:1]
    )
    return jax.tree.map(lambda s: jnp.zeros((batch_size, *s.shape[1:]), s.dtype), shapes)


def updates_per_batch(update: str, seq_len: int, chunk_len: int) -> int:
    """Optimiser updates one batch makes (for the learning-rate schedule's length)."""
    return math.ceil(seq_len / chunk_len) if update == "per_chunk" else 1
