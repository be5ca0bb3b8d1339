"""Fused LSTM/GRU recurrences with a hand-written backward pass (custom VJP).

`fused_scan_for(cell)` returns a drop-in replacement for
`seqjax.nn.recurrent.scan_cell` (same signature, masking, reverse, hoisting
and unroll options, same results to float rounding) for LSTMCell and
GRUCell (reset_after True or False), else None. `Recurrent` uses it for
implementation='auto' or 'fused'.

Why: autodiff through `lax.scan` accumulates dW_x, dW_h and db step by
step inside the backward loop, and keeps every step's intermediates. Here
the backward loop does only what is sequential: dgates_t from the saved
gate activations, dh_{t-1} = dgates_t W_h^T and the cell-state chain. The
weight gradients dW_x = x^T dG, dW_h = h_{t-1}^T dG, db and dx = dG W_x^T
are matmuls over all B*n rows of a chunk of n steps, after its loop (as
cuDNN does). The forward saves only the gate activations [B, T, G*H], the
LSTM cell states [B, T, H] and the outputs (which double as the hidden
states; with a mask, padded steps output zeros, so the hidden states are
saved too).

What decided the layout, measured on the 2-core AMD EPYC (Zen 4) VM this
was written on, B=32, T=128, F=256, H=512, float32, jitted
grad(sum(outputs)) w.r.t. params and inputs:
  * Memory: XLA:CPU allocates a call's temporaries afresh and every 4 KiB
    page faults on first touch (~3 us each here): temporary memory costs
    about as much time as arithmetic. Hence batch-major buffers written in
    place (no [B, T] <-> [T, B] transposes), the outputs reused as hidden
    states, and a backward in chunks of CHUNK_STEPS steps whose dgates
    buffer every chunk reuses (a `fori_loop` over chunks, so XLA can
    neither hoist the chunks' matmuls nor keep all their buffers alive).
    LSTM: 72 MB of temporaries (18k page faults per call) against 106 MB
    for scan autodiff and 112 MB (29k) for flax OptimizedLSTMCell.
    CHUNK_STEPS of 16, 32 and 64 timed within noise; 32 kept.
  * The backward step multiplies by a stored W_h^T: a dot contracting
    W_h's minor axis ran at ~115 GFLOP/s against ~150-160 on W_h^T.
  * Kernel slices (GRU reset_before) are cut once before the loops; XLA
    otherwise copied them on every step.
  * The four LSTM activations are one tanh (sigmoid(x) = (1 + tanh(x/2))/2),
    no per-gate kernels + concatenation: forward 119 -> 107 ms (best of 12).
  * Hoisting the input projection (per chunk), unrolling by 2 or 4, and
    one [x_t, h] @ [W_x; W_h] matmul timed within noise of, or slower
    than, the per-step projection with unroll 1 (best of 8: 270 ms against
    283, 290 and 292 ms).
  * Overlapping a chunk's matmuls with the next chunk's loop gains nothing:
    every dot already runs on both cores.
Result (experiments/benchmark_rnn.py, median of 20 rounds, tokens/s; runs
on this shared VM vary by 10-20%): LSTM 12.5k against 14.3k for PyTorch
nn.LSTM (oneDNN) and 9.0k for flax OptimizedLSTMCell; GRU 16.1k against
11.2k (PyTorch) and 12.3k (flax). implementation='scan' (a separate run):
LSTM 7.3k, GRU 11.3k. With page faults taken out by the environment
(GLIBC_TUNABLES=glibc.malloc.hugetlb=1), a PyTorch LSTM step takes 237 ms
(median) against 310 ms for this one: oneDNN's kernels do the same
arithmetic faster than XLA's dots.

Limitation: custom_vjp has no forward-mode rule, so jax.jvp / jacfwd (and
forward-over-reverse Hessians) need implementation='scan'.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from seqjax.nn import cells as cells_lib

Array = jax.Array

CHUNK_STEPS = 32  # time steps per backward chunk (and per hoisted input projection)


# ---------------------------------------------------------------------------
# Shared pieces. Shapes: B batch, T time, F inputs, H hidden, G gates.
# Sequences are batch-major, [B, T, ...], as in the layers' inputs and outputs.
# ---------------------------------------------------------------------------


def _matmul_t(a: Array, b: Array) -> Array:
    """a [..., N] @ b [M, N]^T -> [..., M], without materialising b^T."""
    return jax.lax.dot_general(a, b, (((a.ndim - 1,), (1,)), ((), ())))


def _rows_t_matmul(a: Array, b: Array) -> Array:
    """a [B, n, P], b [B, n, Q] -> a^T b [P, Q]: one matmul summing over all B*n rows."""
    return jax.lax.dot_general(a, b, (((0, 1), (0, 1)), ((), ())))


def _stored(a: Array) -> Array:
    """`a` as its own buffer: the barrier stops XLA folding a slice or transpose back into its use.

    In the backward loop, dgates [B, G*H] @ W_h^T ran at ~115 GFLOP/s as a
    dot contracting W_h's minor axis and ~160 GFLOP/s on a stored W_h^T.
    """
    return jax.lax.optimization_barrier(a)


def _same_weights(w):
    return w


def _with_recurrent_t(w):
    """w plus recurrent_kernel_t = W_h^T [G*H, H], stored."""
    return dict(w, recurrent_kernel_t=_stored(w["recurrent_kernel"].T))


def _keep_valid(valid: Array | None, new: Any, old: Any) -> Any:
    """`new` where the step is valid, else `old` (leaf-wise); valid is [B, 1] bool or None."""
    if valid is None:
        return new
    return jax.tree.map(lambda n, o: jnp.where(valid, n, o), new, old)


class Spec(NamedTuple):
    """Static configuration of one fused recurrence."""

    kind: str  # 'lstm', 'gru' (reset after the matmul) or 'gru_reset_before'
    reverse: bool
    hoist: bool
    unroll: int
    chunk: int  # steps per chunk (CHUNK_STEPS); see _backward


class CellRule(NamedTuple):
    """The cell-specific half of a fused recurrence (all functions pure).

    step(w, carry, projected [B, G*H]) -> (new carry, saved_t): the forward
        step; `saved_t` are the activations the backward step needs.
    step_vjp(w, saved_t, prev_carry, new_carry, dcarry) -> (dprev_carry, dgates_t [B, G*H]):
        one backward step; dgates_t is the cotangent of `projected`.
    recurrent_grads(w, dgates [B, n, G*H], saved, prev_carries) -> dict:
        gradients of the recurrent weights, as matmuls over all B*n rows.
    input_bias: the key of the bias added by `project_inputs`.
    forward_weights(w), backward_weights(w) -> w plus the kernel slices and
        transposes that `step` and `step_vjp` use, computed once before the
        loops (XLA:CPU otherwise copies a slice of a kernel on every step).
    """

    step: Callable
    step_vjp: Callable
    recurrent_grads: Callable
    input_bias: str
    forward_weights: Callable
    backward_weights: Callable


# ---------------------------------------------------------------------------
# LSTM: gates (i, f, g, o); c' = f c + i g; h' = o tanh(c').
# ---------------------------------------------------------------------------


def _lstm_activations(gates: Array) -> Array:
    """[B, 4H] pre-activations -> (sigmoid i, sigmoid f, tanh g, sigmoid o), one tanh per entry.

    sigmoid(x) = (1 + tanh(x / 2)) / 2, so one elementwise kernel covers all
    four gates (no per-gate kernels and concatenation on every step).
    """
    hidden = gates.shape[-1] // 4
    is_g = (jnp.arange(4 * hidden) // hidden) == 2
    half = jnp.where(is_g, 1.0, 0.5).astype(gates.dtype)
    return half * jnp.tanh(half * gates) + jnp.where(is_g, 0.0, 0.5).astype(gates.dtype)


def _lstm_step(w, carry, projected):
    """saved_t: the gate activations [B, 4H] (sigmoid i, f, o; tanh g)."""
    acts = _lstm_activations(projected + carry.hidden @ w["recurrent_kernel"])
    i, f, g, o = jnp.split(acts, 4, axis=-1)
    cell = f * carry.cell + i * g
    hidden = o * jnp.tanh(cell)
    return cells_lib.LSTMCarry(hidden, cell), acts


def _lstm_step_vjp(w, acts, prev, new, dcarry):
    i, f, g, o = jnp.split(acts, 4, axis=-1)
    tanh_c = jnp.tanh(new.cell)
    dh = dcarry.hidden
    dc = dcarry.cell + dh * o * (1.0 - tanh_c * tanh_c)
    dgates = jnp.concatenate(
        [
            dc * g * i * (1.0 - i),
            dc * prev.cell * f * (1.0 - f),
            dc * i * (1.0 - g * g),
            dh * tanh_c * o * (1.0 - o),
        ],
        axis=-1,
    )
    dprev = cells_lib.LSTMCarry(dgates @ w["recurrent_kernel_t"], dc * f)
    return dprev, dgates


def _lstm_recurrent_grads(w, dgates, acts, prev):
    del w, acts
    return {"recurrent_kernel": _rows_t_matmul(prev.hidden, dgates)}


LSTM_RULE = CellRule(_lstm_step, _lstm_step_vjp, _lstm_recurrent_grads, "bias", _same_weights, _with_recurrent_t)


# ---------------------------------------------------------------------------
# GRU, gates (z, r, n); h' = z h + (1 - z) n.
# ---------------------------------------------------------------------------


def _gru_step(w, carry, projected):
    """Reset after the matmul: n = tanh(x_n + r (h W_hn + b_hn)).

    saved_t: [B, 4H] = (z, r, n, h W_hn + b_hn).
    """
    x_z, x_r, x_n = jnp.split(projected, 3, axis=-1)
    h_z, h_r, h_n = jnp.split(carry @ w["recurrent_kernel"] + w["recurrent_bias"], 3, axis=-1)
    z = jax.nn.sigmoid(x_z + h_z)
    r = jax.nn.sigmoid(x_r + h_r)
    n = jnp.tanh(x_n + r * h_n)
    return z * carry + (1.0 - z) * n, jnp.concatenate([z, r, n, h_n], axis=-1)


def _gru_step_vjp(w, saved, prev, new, dh):
    del new
    z, r, n, h_n = jnp.split(saved, 4, axis=-1)
    d_n = dh * (1.0 - z) * (1.0 - n * n)
    d_z = dh * (prev - n) * z * (1.0 - z)
    d_r = d_n * h_n * r * (1.0 - r)
    dgates = jnp.concatenate([d_z, d_r, d_n], axis=-1)
    d_hproj = jnp.concatenate([d_z, d_r, d_n * r], axis=-1)
    return dh * z + d_hproj @ w["recurrent_kernel_t"], dgates


def _gru_recurrent_grads(w, dgates, saved, prev):
    del w
    hidden = prev.shape[-1]
    r = saved[..., hidden : 2 * hidden]
    d_hproj = jnp.concatenate([dgates[..., : 2 * hidden], dgates[..., 2 * hidden :] * r], axis=-1)
    return {"recurrent_kernel": _rows_t_matmul(prev, d_hproj), "recurrent_bias": d_hproj.sum((0, 1))}


def _gru_before_forward_weights(w):
    """w plus kernel_zr = W_h[:, :2H] and kernel_n = W_h[:, 2H:], stored."""
    w_h = w["recurrent_kernel"]
    hidden = w_h.shape[0]
    return dict(w, kernel_zr=_stored(w_h[:, : 2 * hidden]), kernel_n=_stored(w_h[:, 2 * hidden :]))


def _gru_before_backward_weights(w):
    """w plus kernel_zr_t = W_h[:, :2H]^T and kernel_n_t = W_h[:, 2H:]^T, stored."""
    w_h = w["recurrent_kernel"]
    hidden = w_h.shape[0]
    return dict(w, kernel_zr_t=_stored(w_h[:, : 2 * hidden].T), kernel_n_t=_stored(w_h[:, 2 * hidden :].T))


def _gru_before_step(w, carry, projected):
    """Reset before the matmul: n = tanh(x_n + (r h) W_hn).  saved_t: [B, 3H] = (z, r, n)."""
    x_z, x_r, x_n = jnp.split(projected, 3, axis=-1)
    h_z, h_r = jnp.split(carry @ w["kernel_zr"], 2, axis=-1)
    z = jax.nn.sigmoid(x_z + h_z)
    r = jax.nn.sigmoid(x_r + h_r)
    n = jnp.tanh(x_n + (r * carry) @ w["kernel_n"])
    return z * carry + (1.0 - z) * n, jnp.concatenate([z, r, n], axis=-1)


def _gru_before_step_vjp(w, saved, prev, new, dh):
    del new
    z, r, n = jnp.split(saved, 3, axis=-1)
    d_n = dh * (1.0 - z) * (1.0 - n * n)
    d_z = dh * (prev - n) * z * (1.0 - z)
    d_reset_h = d_n @ w["kernel_n_t"]  # cotangent of r * h
    d_r = d_reset_h * prev * r * (1.0 - r)
    d_zr = jnp.concatenate([d_z, d_r], axis=-1)
    d_prev = dh * z + d_reset_h * r + d_zr @ w["kernel_zr_t"]
    return d_prev, jnp.concatenate([d_zr, d_n], axis=-1)


def _gru_before_recurrent_grads(w, dgates, saved, prev):
    del w
    hidden = prev.shape[-1]
    reset_prev = saved[..., hidden : 2 * hidden] * prev
    return {
        "recurrent_kernel": jnp.concatenate(
            [
                _rows_t_matmul(prev, dgates[..., : 2 * hidden]),
                _rows_t_matmul(reset_prev, dgates[..., 2 * hidden :]),
            ],
            axis=-1,
        )
    }


GRU_RULE = CellRule(_gru_step, _gru_step_vjp, _gru_recurrent_grads, "input_bias", _same_weights, _with_recurrent_t)
GRU_RESET_BEFORE_RULE = CellRule(
    _gru_before_step,
    _gru_before_step_vjp,
    _gru_before_recurrent_grads,
    "bias",
    _gru_before_forward_weights,
    _gru_before_backward_weights,
)
RULES = {"lstm": LSTM_RULE, "gru": GRU_RULE, "gru_reset_before": GRU_RESET_BEFORE_RULE}


# ---------------------------------------------------------------------------
# The cell-independent driver: masking, reverse, buffers, the custom VJP.
# ---------------------------------------------------------------------------


def _hidden(carry: Any) -> Array:
    """h_t [B, H]: the first leaf of every carry (LSTMCarry.hidden, or the GRU state)."""
    return jax.tree.leaves(carry)[0]


def _add_to_hidden(carry: Any, value: Array) -> Any:
    leaves, treedef = jax.tree.flatten(carry)
    return jax.tree.unflatten(treedef, [leaves[0] + value] + leaves[1:])


def _project(rule: CellRule, w, x: Array) -> Array:
    """x [..., F] -> x W_x + b [..., G*H]."""
    return x @ w["input_kernel"] + w[rule.input_bias]


def _at(buffer: Array, t) -> Array:
    """buffer[:, t] of a batch-major [B, T, ...] buffer (t may be traced)."""
    return jax.lax.dynamic_index_in_dim(buffer, t, axis=1, keepdims=False)


def _set(buffer: Array, value: Array, t) -> Array:
    """buffer[:, t] = value (in place inside a loop)."""
    return jax.lax.dynamic_update_index_in_dim(buffer, value, t, axis=1)


def _steps(buffer: Array, start, size: int) -> Array:
    """buffer[:, start:start + size] (start may be traced)."""
    return jax.lax.dynamic_slice_in_dim(buffer, start, size, axis=1)


def _over_chunks(time: int, chunk: int, ascending: bool, run: Callable, state):
    """state = run(start, size, state) for consecutive time chunks, ascending or descending.

    Full chunks run as iterations of one `fori_loop`, so their buffers are
    reused (and XLA cannot hoist or merge work across chunks); a shorter
    last chunk [full * chunk, T) runs on its own.
    """
    full, rest = divmod(time, chunk)

    def full_chunks(state):
        if full <= 1:
            return run(0, chunk, state) if full else state
        return jax.lax.fori_loop(0, full, lambda k, s: run((k if ascending else full - 1 - k) * chunk, chunk, s), state)

    def rest_chunk(state):
        return run(full * chunk, rest, state) if rest else state

    return rest_chunk(full_chunks(state)) if ascending else full_chunks(rest_chunk(state))


class Residuals(NamedTuple):
    """What the backward pass reads. Sequences are batch-major [B, T, ...]."""

    weights: dict[str, Array]
    inputs: Array  # [B, T, F]
    mask: Array | None  # [B, T] bool
    carry0: Any
    carries: list[Array]  # every carry leaf after each step; leaf 0 is the outputs if unmasked
    saved: Array  # [B, T, S]: the rule's per-step activations


def _forward_step(rule: CellRule, w, mask, save: bool, t, projected, state):
    """Step t: updates the carry and writes h_t (and, when `save`, the residuals) at t."""
    carry, outputs, carries, saved = state
    new, saved_t = rule.step(w, carry, projected)
    new = jax.tree.map(lambda n, o: n.astype(o.dtype), new, carry)
    valid = None if mask is None else _at(mask, t)[:, None]
    new = _keep_valid(valid, new, carry)
    hidden = _hidden(new)
    outputs = _set(outputs, hidden if valid is None else jnp.where(valid, hidden, 0), t)
    if save:
        stored = jax.tree.leaves(new)[1 if mask is None else 0 :]
        carries = [_set(buffer, leaf, t) for buffer, leaf in zip(carries, stored)]
        saved = _set(saved, saved_t.astype(saved.dtype), t)
    return new, outputs, carries, saved


def _forward(spec: Spec, w, inputs, mask, carry, *, save: bool):
    """-> (outputs [B, T, H], final carry, Residuals or None).

    Every step writes h_t into the outputs and, when `save`, its carry and
    activations into batch-major buffers (the outputs double as the hidden
    carries when there is no mask). A hoisted input projection is computed
    per chunk of `spec.chunk` steps, so its buffer stays small.
    """
    rule = RULES[spec.kind]
    batch, time = inputs.shape[:2]
    w_loop = rule.forward_weights(w)
    leaves = jax.tree.leaves(carry)
    saved_shape = jax.eval_shape(lambda: rule.step(w_loop, carry, _project(rule, w, inputs[:, 0])))[1]

    def buffer(leaf):
        return jnp.zeros((batch, time) + leaf.shape[1:], leaf.dtype)

    state = (
        carry,
        buffer(leaves[0]),
        [buffer(leaf) for leaf in leaves[1 if mask is None else 0 :]],
        buffer(saved_shape) if save else None,
    )

    def run(start, size, state):
        projected = _project(rule, w, _steps(inputs, start, size)) if spec.hoist else None

        def body(i, state):
            j = size - 1 - i if spec.reverse else i
            p = _at(projected, j) if spec.hoist else _project(rule, w, _at(inputs, start + j))
            return _forward_step(rule, w_loop, mask, save, start + j, p, state)

        return jax.lax.fori_loop(0, size, body, state, unroll=spec.unroll)

    chunk = spec.chunk if spec.hoist else time
    final, outputs, carries, saved = _over_chunks(time, chunk, not spec.reverse, run, state)
    if not save:
        return outputs, final, None
    carries = ([outputs] if mask is None else []) + carries
    return outputs, final, Residuals(w, inputs, mask, carry, carries, saved)


def _carry_at(res: Residuals, t) -> Any:
    """The carry after step t."""
    return jax.tree.unflatten(jax.tree.structure(res.carry0), [_at(b, t) for b in res.carries])


def _carry_before(res: Residuals, t, reverse: bool) -> Any:
    """The carry before step t: after the step processed just before it, or the initial carry."""
    time = res.inputs.shape[1]
    is_first = t == (time - 1 if reverse else 0)
    before = jnp.clip(t + 1 if reverse else t - 1, 0, time - 1)
    return jax.tree.map(lambda a, c: jnp.where(is_first, c, a), _carry_at(res, before), res.carry0)


def _carries_before(res: Residuals, start, size: int, reverse: bool) -> Any:
    """The carries before steps start..start+size-1, each leaf [B, size, ...]."""
    edge = jax.tree.leaves(_carry_before(res, start + size - 1 if reverse else start, reverse))
    leaves = []
    for buffer, first in zip(res.carries, edge):
        inner = _steps(buffer, start + 1 if reverse else start, size - 1)
        parts = [inner, first[:, None]] if reverse else [first[:, None], inner]
        leaves.append(jnp.concatenate(parts, axis=1))
    return jax.tree.unflatten(jax.tree.structure(res.carry0), leaves)


def _backward_steps(spec: Spec, res: Residuals, w_t, start, size: int, d_outputs, dcarry, dgates):
    """Backward loop over steps [start, start+size) -> (dcarry before them, dgates [B, size, G*H])."""
    rule = RULES[spec.kind]

    def body(i, state):
        dcarry, dgates = state
        j = i if spec.reverse else size - 1 - i
        t = start + j
        dcarry_in = _add_to_hidden(dcarry, _at(d_outputs, t))
        dprev, dgates_t = rule.step_vjp(
            w_t, _at(res.saved, t), _carry_before(res, t, spec.reverse), _carry_at(res, t), dcarry_in
        )
        if res.mask is not None:  # a padded step passed its carry through and output zeros
            valid = _at(res.mask, t)[:, None]
            dprev = _keep_valid(valid, dprev, dcarry)
            dgates_t = jnp.where(valid, dgates_t, 0)
        return dprev, _set(dgates, dgates_t.astype(dgates.dtype), j)

    return jax.lax.fori_loop(0, size, body, (dcarry, dgates), unroll=spec.unroll)


def _chunk_grads(rule: CellRule, res: Residuals, dgates, start, size: int, reverse: bool):
    """Weight gradients and dx [B, size, F] of one chunk: matmuls over all its B*size rows."""
    w = res.weights
    prev = _carries_before(res, start, size, reverse)
    grads = rule.recurrent_grads(w, dgates, _steps(res.saved, start, size), prev)
    grads["input_kernel"] = _rows_t_matmul(_steps(res.inputs, start, size), dgates)
    grads[rule.input_bias] = dgates.sum(axis=(0, 1))
    return grads, _matmul_t(dgates, w["input_kernel"])


def _backward(spec: Spec, res: Residuals, cotangents):
    """Backward loop for dgates, chunk by chunk in reverse processing order.

    Only dgates_t -> dh_{t-1} (and the cell-state chain) is sequential; the
    weight gradients and dx of a chunk are matmuls over its B*n rows, added
    up across chunks. Chunks keep the dgates buffer small: XLA:CPU pays
    page faults for every byte of temporary memory on every call.
    """
    rule = RULES[spec.kind]
    d_outputs, dcarry = cotangents
    w = res.weights
    w_t = rule.backward_weights(w)
    batch, time = res.inputs.shape[:2]
    chunk = min(spec.chunk, time)
    dtype = res.saved.dtype
    dgates_buffer = jnp.zeros((batch, chunk, w["input_kernel"].shape[-1]), dtype)
    zero_grads = {key: jnp.zeros(value.shape, dtype) for key, value in w.items()}

    def run(start, size, state):
        dcarry, grads, d_inputs, buffer = state
        dgates = buffer if size == chunk else jnp.zeros((batch, size, buffer.shape[-1]), dtype)
        dcarry, dgates = _backward_steps(spec, res, w_t, start, size, d_outputs, dcarry, dgates)
        chunk_grads, chunk_d_inputs = _chunk_grads(rule, res, dgates, start, size, spec.reverse)
        grads = jax.tree.map(lambda g, c: g + c.astype(dtype), grads, chunk_grads)
        d_inputs = jax.lax.dynamic_update_slice_in_dim(d_inputs, chunk_d_inputs.astype(d_inputs.dtype), start, axis=1)
        return dcarry, grads, d_inputs, dgates if size == chunk else buffer

    state = (dcarry, zero_grads, jnp.zeros_like(res.inputs), dgates_buffer)
    dcarry, grads, d_inputs, _ = _over_chunks(time, chunk, spec.reverse, run, state)
    grads = {key: grads[key].astype(value.dtype) for key, value in w.items()}
    dcarry = jax.tree.map(lambda d, c: d.astype(c.dtype), dcarry, res.carry0)
    return grads, d_inputs, None, dcarry


@functools.cache
def _custom_vjp_scan(spec: Spec) -> Callable:
    """(weights, inputs [B, T, F], mask [B, T] or None, carry) -> (outputs, final carry)."""

    @jax.custom_vjp
    def scan(w, inputs, mask, carry):
        outputs, final, _ = _forward(spec, w, inputs, mask, carry, save=False)
        return outputs, final

    def scan_fwd(w, inputs, mask, carry):
        outputs, final, residuals = _forward(spec, w, inputs, mask, carry, save=True)
        return (outputs, final), residuals

    scan.defvjp(scan_fwd, functools.partial(_backward, spec))
    return scan


def _fused_scan(kind: str) -> Callable:
    """A function with `scan_cell`'s signature running the fused `kind` recurrence."""

    def fused_scan(cell, weights, inputs, mask, carry, *, reverse=False, hoist_input_projection=False, unroll=1):
        if weights["recurrent_kernel"].shape[0] != cell.hidden_size:
            raise ValueError(
                f"recurrent_kernel {weights['recurrent_kernel'].shape} does not match hidden_size={cell.hidden_size}"
            )
        if inputs.shape[1] == 0:  # nothing to run: no outputs, the carry passes through
            return jnp.zeros(inputs.shape[:2] + (cell.hidden_size,), inputs.dtype), carry
        spec = Spec(kind, bool(reverse), bool(hoist_input_projection), unroll, CHUNK_STEPS)
        return _custom_vjp_scan(spec)(weights, inputs, mask, carry)

    fused_scan.__name__ = f"fused_{kind}_scan"
    return fused_scan


fused_lstm_scan = _fused_scan("lstm")
fused_gru_scan = _fused_scan("gru")
fused_gru_reset_before_scan = _fused_scan("gru_reset_before")


def fused_scan_for(cell):
    """The fused recurrence for `cell`, or None when the cell has none."""
    if type(cell) is cells_lib.LSTMCell:
        return fused_lstm_scan
    if type(cell) is cells_lib.GRUCell:
        return fused_gru_scan if cell.reset_after else fused_gru_reset_before_scan
    return None
