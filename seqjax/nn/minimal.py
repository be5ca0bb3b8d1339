r"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?").

Their gates read only x_t, never h_{t-1}, so the recurrence is linear in h:

  h_t = a_t ⊙ h_{t-1} + b_t,   (a_t, b_t) functions of x_t alone.

minGRU   z = σ(k_z),  h̃ = g(k_h);             a = 1 - z,  b = z ⊙ h̃
minLSTM  f = σ(k_f),  i = σ(k_i),  h̃ = g(k_h);  a = f / (f + i),  b = i / (f + i) ⊙ h̃

where k = x_t W_x + b (gate order (z, h) and (f, i, h); parameters
`input_kernel` [F, G*H] and `bias` [G*H], no recurrent kernel) and
g(x) = x + 1/2 for x >= 0, σ(x) otherwise, which keeps h̃ > 0.

A linear recurrence can run in O(log T) depth: the maps h -> a h + b compose
associatively, so `jax.lax.associative_scan` gives every prefix at once.
`parallel_scan` composes them in log space (the paper's stable form, possible
because a, b > 0): (la1, lb1) then (la2, lb2) is
(la1 + la2, logaddexp(la2 + lb1, lb2)). The initial carry h_0 (any sign)
enters afterwards:

  h_t = exp(Σ_{s<=t} log a_s) ⊙ h_0 + exp(log Σ_{s<=t} b_s Π_{s<r<=t} a_r).

`step` is the same cell one step at a time in linear space, so either form
can run under `Recurrent` (implementation 'parallel' or 'scan').

Importing this module registers the cells as 'mingru' and 'minlstm' with
`seqjax.nn.cells.make_cell` (cells.py does not import this module).

Shapes: B batch, T time, F input features, H hidden units, G gates.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax.nn.cells import RecurrentCell, register_cell

Array = jax.Array

# log(0) as a finite number: -inf would give NaN gradients in logaddexp.
LOG_ZERO = -1e30


def g(x: Array) -> Array:
    """The paper's positive activation: x + 1/2 for x >= 0, σ(x) below."""
    return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


def log_g(x: Array) -> Array:
    """log g(x), computed without forming g(x) (stable for very negative x)."""
    return jnp.where(x >= 0, jnp.log(jax.nn.relu(x) + 0.5), -jax.nn.softplus(-x))


class MinimalCell(RecurrentCell):
    """Base class of cells with h_t = a_t ⊙ h_{t-1} + b_t, (a_t, b_t) from x_t alone.

    Subclasses give the coefficients twice: `coefficients` in linear space
    (the sequential `step`) and `log_coefficients` (the parallel scan).
    """

    has_recurrent_kernel: ClassVar[bool] = False  # weights: input_kernel [F, G*H] and bias [G*H]

    @nn.nowrap
    def coefficients(self, projected: Array) -> tuple[Array, Array]:
        """[..., G*H] -> (a, b), each [..., H]."""
        raise NotImplementedError  # abstract: MinGRUCell / MinLSTMCell define it

    @nn.nowrap
    def log_coefficients(self, projected: Array) -> tuple[Array, Array]:
        """[..., G*H] -> (log a, log b), each [..., H]."""
        raise NotImplementedError  # abstract: MinGRUCell / MinLSTMCell define it

    @nn.nowrap
    def step(self, weights, carry, projected):
        del weights  # the step has no recurrent weights: everything is in `projected`
        a, b = self.coefficients(projected)
        h = a * carry + b
        return h, h


class MinGRUCell(MinimalCell):
    """minGRU: z = σ(k_z), h̃ = g(k_h), h_t = (1 - z) ⊙ h_{t-1} + z ⊙ h̃."""

    num_gates: ClassVar[int] = 2

    @nn.nowrap
    def coefficients(self, projected):
        k_z, k_h = jnp.split(projected, 2, axis=-1)
        z = jax.nn.sigmoid(k_z)
        return 1.0 - z, z * g(k_h)

    @nn.nowrap
    def log_coefficients(self, projected):
        k_z, k_h = jnp.split(projected, 2, axis=-1)
        # log(1 - σ(k)) = -softplus(k), log σ(k) = -softplus(-k)
        return -jax.nn.softplus(k_z), -jax.nn.softplus(-k_z) + log_g(k_h)


class MinLSTMCell(MinimalCell):
    """minLSTM: f = σ(k_f), i = σ(k_i), h̃ = g(k_h),
    h_t = f / (f + i) ⊙ h_{t-1} + i / (f + i) ⊙ h̃."""

    num_gates: ClassVar[int] = 3

    @nn.nowrap
    def coefficients(self, projected):
        k_f, k_i, k_h = jnp.split(projected, 3, axis=-1)
        f, i = jax.nn.sigmoid(k_f), jax.nn.sigmoid(k_i)
        return f / (f + i), i / (f + i) * g(k_h)

    @nn.nowrap
    def log_coefficients(self, projected):
        k_f, k_i, k_h = jnp.split(projected, 3, axis=-1)
        # log f/(f+i) = -softplus(log i - log f), with log σ(k) = -softplus(-k)
        diff = jax.nn.softplus(-k_f) - jax.nn.softplus(-k_i)
        return -jax.nn.softplus(diff), -jax.nn.softplus(-diff) + log_g(k_h)


register_cell("mingru", MinGRUCell)
register_cell("minlstm", MinLSTMCell)


def _compose(earlier: tuple[Array, Array], later: tuple[Array, Array]) -> tuple[Array, Array]:
    """Log-space composition of h -> a1 h + b1 followed by h -> a2 h + b2."""
    log_a1, log_b1 = earlier
    log_a2, log_b2 = later
    return log_a1 + log_a2, jnp.logaddexp(log_a2 + log_b1, log_b2)


def parallel_scan(
    cell: MinimalCell,
    weights: dict[str, Array],
    inputs: Array,
    mask: Array | None,
    carry: Array,
    *,
    reverse: bool = False,
    hoist_input_projection: bool = True,
    unroll: int = 1,
) -> tuple[Array, Array]:
    """`scan_cell` for a `MinimalCell`, with `jax.lax.associative_scan` over time.

    inputs [B, T, F], mask [B, T] or None, carry [B, H] -> (outputs [B, T, H],
    final carry [B, H]). A padded step is the identity map (a = 1, b = 0):
    the carry passes through unchanged and the output there is zero. The
    input projection always covers all steps at once and there is no time
    loop, so `hoist_input_projection` and `unroll` are accepted and ignored.
    The log-space scan runs in at least float32.
    """
    del hoist_input_projection, unroll
    compute_dtype = jnp.promote_types(inputs.dtype, jnp.float32)
    projected = cell.project_inputs(weights, inputs).astype(compute_dtype)
    log_a, log_b = cell.log_coefficients(projected)  # [B, T, H] each
    valid = None if mask is None else mask[..., None]
    if valid is not None:
        log_a = jnp.where(valid, log_a, 0.0)
        log_b = jnp.where(valid, log_b, LOG_ZERO)
    log_a, log_b = jax.lax.associative_scan(_compose, (log_a, log_b), reverse=reverse, axis=1)
    h0 = carry.astype(compute_dtype)[:, None, :]
    hidden = (jnp.exp(log_a) * h0 + jnp.exp(log_b)).astype(carry.dtype)
    final = hidden[:, 0] if reverse else hidden[:, -1]
    if valid is not None:
        hidden = jnp.where(valid, hidden, jnp.zeros_like(hidden))
    return hidden, final


def parallel_scan_for(cell: RecurrentCell):
    """`parallel_scan` when `cell` has a linear recurrence, else None."""
    return parallel_scan if isinstance(cell, MinimalCell) else None
