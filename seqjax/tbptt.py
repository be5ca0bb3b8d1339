"""Truncated backpropagation through time (TBPTT) by chunking the time axis.

A [B, T] batch is cut into chunks of K steps. The model runs over chunk c
starting from the carry that chunk c-1 ended with, passed through
`jax.lax.stop_gradient`, so gradients flow through at most K steps while the
forward pass still sees the whole sequence. Per chunk, the loss is the
chunk's share of the full-sequence loss (its per-step sum over the whole
sequence's step count), so with K = T the gradient is exactly full BPTT's.

Two ways to use the chunk gradients (`config.train.tbptt_update`):
  accumulate  sum them and update once per batch (truncated gradient, one step)
  per_chunk   update the parameters after every chunk (classic TBPTT(K, K))

The whole batch runs in one compiled program: chunk 0 starts from the model's
initial carry, the remaining chunks run in a `lax.scan`. The ragged last chunk
is padded to K and its padded steps are masked (the carry does not change,
their loss weight is 0), so every chunk has the same shape. Activation memory
is that of one chunk, whatever T is.

Only per-step losses can be truncated (the task's `step_sums`); bidirectional
layers read the future and cannot be truncated causally.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from seqjax import optim, tasks

UPDATES = ("accumulate", "per_chunk")


def check_truncatable(model, task: tasks.Task) -> None:
    """Raises a clear error when TBPTT cannot apply to this model or task."""
    stack = getattr(model, "stack", None)
    if stack is None:
        raise ValueError(f"TBPTT needs a recurrent model with a `stack`; got {type(model).__name__}")
    if stack.bidirectional:
        raise ValueError("bidirectional layers read the whole sequence (the backward direction starts at "
                         "its end), so they cannot be truncated causally; set config.model.bidirectional=False "
                         "or config.train.tbptt_len=0")
    if model.head != "per_step":
        raise ValueError(f"TBPTT needs a per-step loss, but the model head is {model.head!r} "
                         f"(task {type(task).__name__} is many-to-one); use config.train.tbptt_len=0")


def split_into_chunks(batch: dict[str, np.ndarray], chunk_len: int) -> dict[str, np.ndarray]:
    """[B, T, ...] host arrays -> stacked chunks [N, B, K, ...], N = ceil(T / K).

    Per-sequence arrays ([B]) are repeated for every chunk. Every chunk gets
    `lengths` (valid steps inside the chunk) and `step_mask` [B, K] (1 on
    valid steps, 0 on padding, including the ragged last chunk's).
    """
    time = batch["inputs"].shape[1]
    if chunk_len <= 0:
        raise ValueError(f"chunk length must be positive, got {chunk_len}")
    count = math.ceil(time / chunk_len)
    padded = count * chunk_len
    lengths = batch.get("lengths", np.full(batch["inputs"].shape[0], time, np.int32))
    chunks = {}
    for name, array in batch.items():
        if name == "lengths":
            continue
        if array.ndim >= 2:
            widths = [(0, 0), (0, padded - time)] + [(0, 0)] * (array.ndim - 2)
            array = np.pad(array, widths).reshape(array.shape[0], count, chunk_len, *array.shape[2:])
            chunks[name] = np.moveaxis(array, 1, 0)
        else:
            chunks[name] = np.broadcast_to(array, (count, *array.shape)).copy()
    starts = np.arange(count)[:, None] * chunk_len
    chunk_lengths = np.clip(lengths[None, :] - starts, 0, chunk_len).astype(np.int32)
    chunks["lengths"] = chunk_lengths
    chunks["step_mask"] = (np.arange(chunk_len)[None, None, :] < chunk_lengths[..., None]).astype(np.float32)
    return chunks


def chunk_gradients(task: tasks.Task, state, params, carry, chunk, rng, loss_count):
    """Gradient of the chunk's share of the loss, the chunk's final carry
    (gradient stopped) and its per-step metric sums."""

    def objective(params):
        predictions, new_carry = state.apply_fn(
            {"params": params}, chunk["inputs"], chunk.get("lengths"), deterministic=False,
            rngs={"dropout": rng}, initial_carry=carry, return_carry=True, resets=chunk.get("resets"))
        sums = task.step_sums(predictions, chunk)
        return sums["loss"][0] / loss_count, (new_carry, sums)

    (_, (new_carry, sums)), grads = jax.value_and_grad(objective, has_aux=True)(params)
    return grads, jax.lax.stop_gradient(new_carry), sums


def _add(tree_a, tree_b):
    return jax.tree.map(jnp.add, tree_a, tree_b)


def _metrics(sums: dict[str, tuple]) -> dict[str, jax.Array]:
    return {name: total / count for name, (total, count) in sums.items()}


def make_train_step(task: tasks.Task, update: str = "accumulate", l1: float = 0.0,
                    l2: float = 0.0) -> Callable:
    """train_step(state, chunks, rng) -> (state, metrics) over all chunks of a batch.

    `chunks` is `split_into_chunks(batch, K)` (device arrays, batch axis 1).
    """
    if update not in UPDATES:
        raise ValueError(f"config.train.tbptt_update must be one of {UPDATES}, got {update!r}")
    penalty_grad = jax.grad(lambda p: optim.weight_penalty(p, l1, l2))

    def apply(state, grads):
        grads = _add(grads, penalty_grad(state.params)) if (l1 or l2) else grads
        return state.apply_gradients(grads=grads), optax.global_norm(grads)

    def train_step(state, chunks, rng):
        loss_count = chunks["step_mask"].sum()
        base_rng = jax.random.fold_in(rng, state.step)
        first = jax.tree.map(lambda a: a[0], chunks)
        rest = jax.tree.map(lambda a: a[1:], chunks)
        grads, carry, sums = chunk_gradients(task, state, state.params, None, first,
                                             jax.random.fold_in(base_rng, 0), loss_count)
        if update == "per_chunk":
            state, norm = apply(state, grads)
            grads = jax.tree.map(jnp.zeros_like, grads)
        else:
            norm = jnp.zeros(())

        def body(loop, chunk_and_index):
            state, carry, grads, sums, norm = loop
            chunk, index = chunk_and_index
            chunk_grads, carry, chunk_sums = chunk_gradients(
                task, state, state.params, carry, chunk, jax.random.fold_in(base_rng, index), loss_count)
            if update == "per_chunk":
                state, chunk_norm = apply(state, chunk_grads)
                norm = norm + chunk_norm
            else:
                grads = _add(grads, chunk_grads)
            return (state, carry, grads, _add(sums, chunk_sums), norm), None

        count = chunks["step_mask"].shape[0]
        (state, _, grads, sums, norm), _ = jax.lax.scan(
            body, (state, carry, grads, sums, norm), (rest, jnp.arange(1, count)))
        if update == "accumulate":
            state, norm = apply(state, grads)
        else:
            norm = norm / count
        metrics = _metrics(sums)
        metrics["grad_norm"] = norm
        return state, metrics

    return train_step


def make_stream_step(task: tasks.Task, l1: float = 0.0, l2: float = 0.0) -> Callable:
    """Stateful training on streams: train_step(state, segment, rng) -> (state, metrics).

    `segment` is the next [B, K] piece of B streams (Task.stream_batch) and
    `state.stream_carry` the carry the previous segment ended with; the
    gradient stops there (TBPTT across batches), the carry restarts where
    `segment['resets']` marks a new document, and the new carry goes back into
    the state, so checkpoints hold it and a resumed run continues mid-stream.
    """
    penalty_grad = jax.grad(lambda p: optim.weight_penalty(p, l1, l2))

    def train_step(state, segment, rng):
        loss_count = segment["step_mask"].sum()
        grads, carry, sums = chunk_gradients(task, state, state.params, state.stream_carry, segment,
                                             jax.random.fold_in(rng, state.step), loss_count)
        if l1 or l2:
            grads = _add(grads, penalty_grad(state.params))
        metrics = _metrics(sums)
        metrics["grad_norm"] = optax.global_norm(grads)
        return state.apply_gradients(grads=grads).replace(stream_carry=carry), metrics

    return train_step


def make_stream_eval_step(task: tasks.Task) -> Callable:
    """eval_step(state, carry, segment) -> (carry, per-step metric sums), no dropout."""

    def eval_step(state, carry, segment):
        predictions, carry = state.apply_fn({"params": state.params}, segment["inputs"], initial_carry=carry,
                                            return_carry=True, resets=segment["resets"])
        return carry, task.step_sums(predictions, segment)

    return eval_step


def zero_carry(model, params, batch_size: int, example_inputs) -> Any:
    """All-zeros stream carry for `batch_size` rows, shaped like the model's carry."""
    shapes = jax.eval_shape(lambda p, x: model.apply({"params": p}, x, return_carry=True)[1],
                            params, example_inputs[:1])
    return jax.tree.map(lambda s: jnp.zeros((batch_size, *s.shape[1:]), s.dtype), shapes)


def updates_per_batch(update: str, seq_len: int, chunk_len: int) -> int:
    """Optimiser updates one batch makes (for the learning-rate schedule's length)."""
    return math.ceil(seq_len / chunk_len) if update == "per_chunk" else 1
