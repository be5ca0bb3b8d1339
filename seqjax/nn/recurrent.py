"""Scan-based recurrent layers: masking, reverse, bidirectional, stacked.

A layer maps `(inputs [B, T, F], lengths [B] or None, initial_carry)` to
`(outputs [B, T, H], final_carry)`. Step t of row b is valid when
t < lengths[b]; a padded step leaves the carry unchanged and outputs zeros, so
padding never changes valid outputs or the final carry. A reverse layer reads
each row's valid steps from last to first (the padded tail is skipped first,
carry untouched) and writes outputs at their original positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax.nn import cells as cells_lib
from seqjax.nn import checks, fused, minimal

Array = jax.Array


def check_sequence_inputs(inputs: Array, lengths: Array | None) -> None:
    """Raises a clear error for malformed `inputs` [B, T, F] or `lengths` [B]
    (shapes and dtypes; their values: `checks.row_lengths`)."""
    if inputs.ndim != 3:
        raise ValueError(
            f"recurrent layers expect inputs of shape [batch, time, features]; got shape "
            f"{tuple(inputs.shape)} (ndim {inputs.ndim})"
        )
    if not jnp.issubdtype(inputs.dtype, jnp.floating):
        raise TypeError(
            f"recurrent layers expect floating-point inputs, got dtype {inputs.dtype}; "
            "embed integer token ids first (e.g. flax.linen.Embed)"
        )
    if lengths is None:
        return
    batch, time = inputs.shape[:2]
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must have shape [batch]=({batch},), got {tuple(lengths.shape)}")
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"lengths must be integers, got dtype {lengths.dtype}")


def valid_mask(lengths: Array | None, time: int) -> Array | None:
    """[B] lengths -> [B, T] bool mask of valid steps (None when all are valid)."""
    if lengths is None:
        return None
    return jnp.arange(time)[None, :] < lengths[:, None]


def default_hoist_input_projection() -> bool:
    """Whether to compute x @ W_x for all steps before the scan.

    On XLA:CPU the per-step matmul measured faster (the hoisted [T, B, G*H]
    buffer costs extra memory passes); on GPU/TPU, one big matmul beats T
    small ones.
    """
    return jax.default_backend() != "cpu"


def scan_cell(
    cell: cells_lib.RecurrentCell,
    weights: dict[str, Array],
    inputs: Array,
    mask: Array | None,
    carry: Any,
    *,
    reverse: bool = False,
    hoist_input_projection: bool = False,
    unroll: int = 1,
    resets: Array | None = None,
    reset_carry: Any = None,
) -> tuple[Array, Any]:
    """Runs `cell` over inputs [B, T, F] with `jax.lax.scan`; returns ([B, T, H], carry).

    resets [B, T] bool (optional): at a step where it is True the carry is
    replaced by `reset_carry` before the step (a new document starts there).
    """
    xs = jnp.swapaxes(inputs, 0, 1)  # time-major for the scan
    if hoist_input_projection:
        xs = cell.project_inputs(weights, xs)
    mask_tm = None if mask is None else jnp.swapaxes(mask, 0, 1)[..., None]
    resets_tm = None if resets is None else jnp.swapaxes(resets, 0, 1)[..., None]

    def body(carry, step_inputs):
        x_t, valid_t, reset_t = step_inputs
        if reset_t is not None:
            carry = jax.tree.map(lambda fresh, old: jnp.where(reset_t, fresh, old), reset_carry, carry)
        projected = x_t if hoist_input_projection else cell.project_inputs(weights, x_t)
        new_carry, h_t = cell.step(weights, carry, projected)
        if valid_t is not None:
            new_carry = jax.tree.map(lambda new, old: jnp.where(valid_t, new, old), new_carry, carry)
            h_t = jnp.where(valid_t, h_t, jnp.zeros_like(h_t))
        return new_carry, h_t

    carry, outputs = jax.lax.scan(body, carry, (xs, mask_tm, resets_tm), reverse=reverse, unroll=unroll)
    return jnp.swapaxes(outputs, 0, 1), carry


IMPLEMENTATIONS = ("auto", "scan", "fused", "parallel")
MERGES = ("concat", "sum")  # how a Bidirectional layer joins its two directions


class Recurrent(nn.Module):
    """One recurrent layer: a cell scanned over time.

    Attributes:
      cell: the cell (its parameters live under this layer as `cell`).
      reverse: read the sequence from its last valid step to its first.
      learn_initial_carry: learn the initial carry (one vector per state,
        shared across the batch) instead of starting from zeros.
      hoist_input_projection: compute x @ W_x for all steps before the scan;
        None picks the measured-faster default for the backend.
      implementation: 'scan' (autodiff through lax.scan), 'fused' (a
        custom-VJP recurrence that keeps weight gradients out of the time
        loop; LSTM and GRU only), 'parallel' (an associative scan over time;
        minGRU and minLSTM only) or 'auto' (fused or parallel where available).
      unroll: time steps per scan iteration (passed to lax.scan).
    """

    cell: cells_lib.RecurrentCell
    reverse: bool = False
    learn_initial_carry: bool = False
    hoist_input_projection: bool | None = None
    implementation: str = "auto"
    unroll: int = 1

    @nn.compact
    def __call__(
        self, inputs: Array, lengths: Array | None = None, initial_carry: Any = None, resets: Array | None = None
    ) -> tuple[Array, Any]:
        """inputs [B, T, F], lengths [B] -> (outputs [B, T, H], final carry).

        resets [B, T] bool: where True, the carry restarts from this layer's
        initial carry (zeros or learned) before the step: document boundaries
        in a stream. Runs the sequential scan (the fused and parallel
        recurrences do not take resets).
        """
        inputs = jnp.asarray(inputs)
        lengths = None if lengths is None else jnp.asarray(lengths)
        check_sequence_inputs(inputs, lengths)
        batch, time, features = inputs.shape
        inputs = checks.nan_rows(inputs, checks.row_lengths(lengths, time))  # seqjax.nn.checks: eager / jit / checked
        weights = self.cell.weights(features)
        dtype = self.cell.dtype or inputs.dtype
        inputs = inputs.astype(dtype)
        if initial_carry is None:
            initial_carry = self._initial_carry(batch, dtype)
        else:
            initial_carry = self._check_carry(initial_carry, batch)
        hoist = self.hoist_input_projection
        if hoist is None:
            hoist = default_hoist_input_projection()
        mask = valid_mask(lengths, time)
        if resets is not None:
            if self.reverse:
                raise ValueError(
                    "resets mark where documents start in a forward stream; a reverse layer cannot take them"
                )
            return scan_cell(
                self.cell,
                weights,
                inputs,
                mask,
                initial_carry,
                hoist_input_projection=hoist,
                unroll=self.unroll,
                resets=resets,
                reset_carry=self._initial_carry(batch, dtype),
            )
        run = self._recurrence()
        return run(
            self.cell,
            weights,
            inputs,
            mask,
            initial_carry,
            reverse=self.reverse,
            hoist_input_projection=hoist,
            unroll=self.unroll,
        )

    def _recurrence(self):
        """The recurrence function `implementation` asks for (see the class docstring)."""
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {', '.join(IMPLEMENTATIONS)}, got {self.implementation!r}")
        fused_fn = fused.fused_scan_for(self.cell)
        parallel_fn = minimal.parallel_scan_for(self.cell)
        if self.implementation == "fused" and fused_fn is None:
            raise ValueError(f"no fused recurrence for {type(self.cell).__name__}; use implementation='scan'")
        if self.implementation == "parallel" and parallel_fn is None:
            raise ValueError(
                f"no parallel scan for {type(self.cell).__name__} (its gates read h_{{t-1}}); use implementation='scan'"
            )
        if self.implementation == "scan":
            return scan_cell
        if self.implementation == "parallel":
            return parallel_fn
        if fused_fn is not None:
            return fused_fn
        # The associative scan does O(T log T) work: on CPU the sequential
        # scan measured 2.4-4.8x faster at T = 1k..64k (experiments/benchmark_scan.py).
        if parallel_fn is not None and jax.default_backend() != "cpu":
            return parallel_fn
        return scan_cell

    def _initial_carry(self, batch: int, dtype) -> Any:
        zeros = self.cell.initial_carry(batch, dtype)
        if not self.learn_initial_carry:
            return zeros
        leaves, treedef = jax.tree.flatten(zeros)
        learned = [
            self.param(f"initial_carry_{i}", nn.initializers.zeros_init(), leaf.shape[1:])
            for i, leaf in enumerate(leaves)
        ]
        return jax.tree.unflatten(
            treedef, [jnp.broadcast_to(p.astype(dtype), leaf.shape) for p, leaf in zip(learned, leaves)]
        )

    def _check_carry(self, carry: Any, batch: int) -> Any:
        """The user's carry in the cell's own structure (a plain (h, c) tuple
        becomes an LSTMCarry), or a ValueError naming the expected shapes."""
        expected = jax.tree.map(jnp.shape, self.cell.initial_carry(batch))
        if isinstance(expected, tuple) and isinstance(carry, (tuple, list)) and len(carry) == len(expected):
            carry = type(expected)(*carry)
        got = jax.tree.map(jnp.shape, carry)
        if jax.tree.structure(expected) != jax.tree.structure(got) or expected != got:
            raise ValueError(f"initial_carry for {type(self.cell).__name__} must have shapes {expected}, got {got}")
        return carry


class Bidirectional(nn.Module):
    """Runs a forward and a reverse layer and merges their outputs.

    merge='concat' gives [B, T, 2H]; merge='sum' gives [B, T, H]. The final
    carry is (forward_carry, backward_carry).
    """

    forward_layer: Recurrent
    backward_layer: Recurrent
    merge: str = "concat"

    @nn.compact
    def __call__(self, inputs, lengths=None, initial_carry=None):
        if self.merge not in MERGES:
            raise ValueError(f"Bidirectional.merge must be one of {', '.join(MERGES)}, got {self.merge!r}")
        if self.forward_layer.reverse or not self.backward_layer.reverse:
            raise ValueError("Bidirectional needs forward_layer.reverse=False and backward_layer.reverse=True")
        forward_carry, backward_carry = (None, None) if initial_carry is None else initial_carry
        forward_out, forward_carry = self.forward_layer(inputs, lengths, forward_carry)
        backward_out, backward_carry = self.backward_layer(inputs, lengths, backward_carry)
        if self.merge == "concat":
            outputs = jnp.concatenate([forward_out, backward_out], axis=-1)
        else:
            outputs = forward_out + backward_out
        return outputs, (forward_carry, backward_carry)


def final_hidden(layer_carry: Any, merge: str = "concat") -> Array:
    """The last hidden state [B, H] in a layer's final carry; for a
    bidirectional layer's (forward, backward) carry, both merged like the
    outputs ([B, 2H] for 'concat', [B, H] for 'sum')."""
    if isinstance(layer_carry, cells_lib.LSTMCarry):
        return layer_carry.hidden
    if isinstance(layer_carry, tuple):
        forward, backward = (final_hidden(c) for c in layer_carry)
        return jnp.concatenate([forward, backward], -1) if merge == "concat" else forward + backward
    return layer_carry


class RecurrentStack(nn.Module):
    """Stacked (optionally bidirectional) recurrent layers with dropout between them.

    Attributes:
      cell: cell name (see `seqjax.nn.cells.make_cell`).
      hidden_size: units per direction in every layer.
      num_layers: depth of the stack.
      bidirectional: wrap every layer in `Bidirectional`.
      merge: how bidirectional outputs merge, 'concat' or 'sum'.
      dropout_rate: dropout on the outputs of every layer but the last.
      learn_initial_carry, hoist_input_projection, implementation, unroll:
        passed to every `Recurrent` layer.
      cell_kwargs: extra cell attributes, e.g. {'forget_bias': 1.0}.
    """

    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    merge: str = "concat"
    dropout_rate: float = 0.0
    learn_initial_carry: bool = False
    hoist_input_projection: bool | None = None
    implementation: str = "auto"
    unroll: int = 1
    cell_kwargs: dict | None = None

    def _layer(self, reverse: bool, **module_kwargs) -> Recurrent:
        # parent=None: the cell becomes a child of its layer, not of the stack.
        cell = cells_lib.make_cell(self.cell, self.hidden_size, parent=None, **(self.cell_kwargs or {}))
        return Recurrent(
            cell,
            reverse=reverse,
            learn_initial_carry=self.learn_initial_carry,
            hoist_input_projection=self.hoist_input_projection,
            implementation=self.implementation,
            unroll=self.unroll,
            **module_kwargs,
        )

    @nn.compact
    def __call__(
        self,
        inputs: Array,
        lengths: Array | None = None,
        initial_carry: Sequence[Any] | None = None,
        *,
        deterministic: bool = True,
        resets: Array | None = None,
    ) -> tuple[Array, tuple[Any, ...]]:
        """inputs [B, T, F] -> (outputs [B, T, H or 2H], per-layer final carries).

        resets [B, T] bool restarts every layer's carry where a document
        starts (unidirectional stacks only)."""
        if resets is not None and self.bidirectional:
            raise ValueError("resets need a causal stack; a bidirectional layer reads across document boundaries")
        if initial_carry is not None and len(initial_carry) != self.num_layers:
            raise ValueError(f"initial_carry needs one entry per layer ({self.num_layers}), got {len(initial_carry)}")
        carries = []
        x = inputs
        for depth in range(self.num_layers):
            if self.bidirectional:
                # parent=None: the directions become children of the Bidirectional wrapper.
                layer = Bidirectional(
                    self._layer(False, parent=None),
                    self._layer(True, parent=None),
                    merge=self.merge,
                    name=f"layer_{depth}",
                )
            else:
                layer = self._layer(False, name=f"layer_{depth}")
            layer_carry = None if initial_carry is None else initial_carry[depth]
            if resets is None:
                x, carry = layer(x, lengths, layer_carry)
            else:
                x, carry = layer(x, lengths, layer_carry, resets)
            carries.append(carry)
            if depth < self.num_layers - 1 and self.dropout_rate > 0:
                x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
        return x, tuple(carries)
