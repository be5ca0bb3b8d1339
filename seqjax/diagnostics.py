"""Gradient-flow diagnostics: how far back in time does the loss reach?

Backpropagation through time multiplies one Jacobian per step, so the
gradient of the loss with respect to an early hidden state shrinks
(vanishing) or grows (exploding) geometrically with the time lag unless the
cell keeps those Jacobians close to norm one (IRNN's identity init, the
LSTM/GRU's additive paths).

Two measurements:

* `hidden_state_gradient_norms`: ‖∂L/∂h_t‖ and ‖∂L/∂x_t‖ for every step t.
  Every recurrent layer's step output gets a zero "probe" added to it,
  h_t <- h_t + p_t (in the carry too, so the next steps see it), and the loss
  is differentiated with respect to the probes: ∂L/∂p_t = ∂L/∂h_t, the total
  derivative through all later steps. The probes go in through
  `flax.linen.intercept_methods`, which swaps the layer's recurrence for
  `probed_scan_cell`; the model's code is untouched.
* `global_norm_statistics`: global gradient norms over several batches,
  before and after the clipping chain of `seqjax.optim.build_optimizer`.

Shapes: B batch, T time, H hidden units, F input features.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from seqjax.nn import cells as cells_lib
from seqjax.nn import recurrent

Array = jax.Array
Batch = Mapping[str, Any]
LossFn = Callable[[Array, Batch], Array]  # (predictions, batch) -> scalar loss


# --------------------------------------------------------------------------
# Per-step gradient norms
# --------------------------------------------------------------------------


class GradientFlow(NamedTuple):
    """Batch means of per-example gradient norms, one value per time step.

    Attributes:
      layers: {layer path (e.g. 'stack/layer_0'): ‖∂L/∂h_t‖ [T]}, in call order.
      inputs: ‖∂L/∂x_t‖ [T], or None for token-id inputs.
    """

    layers: dict[str, np.ndarray]
    inputs: np.ndarray | None

    @property
    def hidden(self) -> np.ndarray:
        """‖∂L/∂h_t‖ [T] of the last recurrent layer called (the top one)."""
        return list(self.layers.values())[-1]


def add_to_hidden(carry: Any, value: Array) -> Any:
    """The carry with `value` added to its hidden state h (not to an LSTM's c)."""
    if isinstance(carry, cells_lib.LSTMCarry):
        return carry._replace(hidden=carry.hidden + value)
    if isinstance(carry, jax.Array):
        return carry + value
    raise TypeError(f"don't know where the hidden state is in a carry of type {type(carry).__name__}")


def probed_scan_cell(
    cell: cells_lib.RecurrentCell,
    weights: dict[str, Array],
    inputs: Array,
    mask: Array | None,
    carry: Any,
    probes: Array,
    *,
    reverse: bool = False,
    hoist_input_projection: bool = False,
    unroll: int = 1,
) -> tuple[Array, Any]:
    """`recurrent.scan_cell` with h_t <- h_t + probes[:, t] after every step.

    inputs [B, T, F], probes [B, T, H]. With zero probes the result equals
    `scan_cell`'s; the gradient with respect to probes[:, t] is ∂L/∂h_t. A
    padded step ignores its probe (its carry is the previous one).
    """
    xs = jnp.swapaxes(inputs, 0, 1)  # time-major for the scan
    if hoist_input_projection:
        xs = cell.project_inputs(weights, xs)
    mask_tm = None if mask is None else jnp.swapaxes(mask, 0, 1)[..., None]

    def body(carry, step_inputs):
        x_t, probe_t, valid_t = step_inputs
        projected = x_t if hoist_input_projection else cell.project_inputs(weights, x_t)
        new_carry, h_t = cell.step(weights, carry, projected)
        new_carry, h_t = add_to_hidden(new_carry, probe_t), h_t + probe_t
        if valid_t is not None:
            new_carry = jax.tree.map(lambda new, old: jnp.where(valid_t, new, old), new_carry, carry)
            h_t = jnp.where(valid_t, h_t, jnp.zeros_like(h_t))
        return new_carry, h_t

    carry, outputs = jax.lax.scan(
        body, carry, (xs, jnp.swapaxes(probes, 0, 1), mask_tm), reverse=reverse, unroll=unroll
    )
    return jnp.swapaxes(outputs, 0, 1), carry


def _layer_path(module: nn.Module) -> str:
    return "/".join(module.path)


def _probing_interceptor(probes: Mapping[str, Array] | None, shapes: dict[str, tuple] | None):
    """Replaces every `Recurrent` layer's recurrence by `probed_scan_cell`
    with that layer's probe; with `probes=None` it records each layer's
    output shape into `shapes` instead (to size the probes)."""

    def interceptor(next_fun, args, kwargs, context):
        if not (isinstance(context.module, recurrent.Recurrent) and context.method_name == "_recurrence"):
            return next_fun(*args, **kwargs)
        path = _layer_path(context.module)
        if probes is None:
            run = next_fun(*args, **kwargs)

            def recording(*run_args, **run_kwargs):
                outputs, carry = run(*run_args, **run_kwargs)
                shapes[path] = outputs.shape
                return outputs, carry

            return recording

        def probed(cell, weights, inputs, mask, carry, **run_kwargs):
            return probed_scan_cell(cell, weights, inputs, mask, carry, probes[path], **run_kwargs)

        return probed

    return interceptor


def _apply(model: nn.Module, variables, inputs, lengths):
    return model.apply(variables, inputs, lengths, deterministic=True)


def recurrent_output_shapes(model: nn.Module, variables, batch: Batch) -> dict[str, tuple]:
    """{layer path: output shape [B, T, H]} for every `Recurrent` layer `model` calls on `batch`."""
    shapes: dict[str, tuple] = {}
    with nn.intercept_methods(_probing_interceptor(None, shapes)):
        jax.eval_shape(lambda v, b: _apply(model, v, b["inputs"], b.get("lengths")), variables, dict(batch))
    if not shapes:
        raise ValueError(f"{type(model).__name__} calls no seqjax.nn.recurrent.Recurrent layer")
    return shapes


def probed_loss(
    model: nn.Module, variables, batch: Batch, loss_fn: LossFn, probes: Mapping[str, Array], inputs: Array | None = None
) -> Array:
    """loss_fn(model(inputs with h_t + probes[layer][:, t] in every layer), batch).

    `inputs` replaces batch['inputs'] (to differentiate with respect to it).
    """
    inputs = batch["inputs"] if inputs is None else inputs
    with nn.intercept_methods(_probing_interceptor(probes, None)):
        predictions = _apply(model, variables, inputs, batch.get("lengths"))
    return loss_fn(predictions, batch)


def hidden_state_gradient_norms(model: nn.Module, variables, batch: Batch, loss_fn: LossFn) -> GradientFlow:
    """‖∂L_b/∂h_t‖ and ‖∂L_b/∂x_t‖ averaged over the examples b of `batch`.

    L_b is `loss_fn` on the one-example batch {k: batch[k][b:b+1]}, so the
    norms do not depend on the batch size. `model(inputs, lengths,
    deterministic=True)` may be any Linen module built from
    `seqjax.nn.recurrent.Recurrent` layers (every cell, stacked or
    bidirectional); dropout is off. Padded steps contribute zero norms.
    """
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    one = jax.tree.map(lambda a: a[:1], batch)
    shapes = recurrent_output_shapes(model, variables, one)
    float_inputs = jnp.issubdtype(batch["inputs"].dtype, jnp.floating)

    def example_grads(example):
        example = jax.tree.map(lambda a: a[None], example)  # a batch of one
        probes = {
            path: jnp.zeros(shape, example["inputs"].dtype if float_inputs else jnp.float32)
            for path, shape in shapes.items()
        }
        inputs = example["inputs"] if float_inputs else None

        def loss(probes, inputs):
            return probed_loss(model, variables, example, loss_fn, probes, inputs)

        if float_inputs:
            return jax.grad(loss, argnums=(0, 1))(probes, inputs)
        return jax.grad(loss)(probes, None), None

    @jax.jit
    def mean_norms(batch):
        probe_grads, input_grads = jax.vmap(example_grads)(batch)

        # [B, 1, T, H] -> [T]: the norm over units, then the mean over examples.
        def per_step(g):
            return jnp.mean(scaled_norm(g[:, 0]), axis=0)

        return (jax.tree.map(per_step, probe_grads), None if input_grads is None else per_step(input_grads))

    layers, inputs = jax.device_get(mean_norms(batch))
    return GradientFlow(
        {path: np.asarray(layers[path]) for path in shapes}, None if inputs is None else np.asarray(inputs)
    )


def scaled_norm(g: Array) -> Array:
    """‖g‖ over the last axis, computed as m‖g/m‖ with m = max|g| so that
    vanished gradients (~1e-20, whose squares underflow float32) keep a norm."""
    scale = jnp.max(jnp.abs(g), axis=-1, keepdims=True)
    safe = jnp.where(scale > 0, scale, 1.0)
    return scale[..., 0] * jnp.linalg.norm(g / safe, axis=-1)


def ratio_first_to_last(norms: np.ndarray) -> float:
    """‖∂L/∂h_0‖ / ‖∂L/∂h_{T-1}‖: < 1 vanishing, > 1 exploding (many-to-one losses)."""
    return float(norms[0] / norms[-1])


# --------------------------------------------------------------------------
# Global gradient norms before and after clipping
# --------------------------------------------------------------------------


class NormStatistics(NamedTuple):
    """Global gradient norms of N batches, before and after clipping ([N] each)."""

    before: np.ndarray
    after: np.ndarray


def clipping_transform(clip_value: float = 0.0, clip_global_norm: float = 0.0) -> optax.GradientTransformation:
    """The clipping part of `seqjax.optim.build_optimizer`'s chain, in its order:
    clip each entry to [-clip_value, clip_value], then by global norm (0 turns either off)."""
    chain = []
    if clip_value > 0:
        chain.append(optax.clip(clip_value))
    if clip_global_norm > 0:
        chain.append(optax.clip_by_global_norm(clip_global_norm))
    return optax.chain(*chain)


def global_norm_statistics(
    grads: Iterable[Any], clip_value: float = 0.0, clip_global_norm: float = 0.0
) -> NormStatistics:
    """Global norms of each gradient pytree in `grads`, before and after
    `clipping_transform(clip_value, clip_global_norm)`."""
    transform = clipping_transform(clip_value, clip_global_norm)

    @jax.jit
    def norms(g):
        clipped, _ = transform.update(g, transform.init(g), g)
        return optax.tree.norm(g), optax.tree.norm(clipped)

    pairs = np.asarray([jax.device_get(norms(g)) for g in grads], dtype=np.float64).reshape(-1, 2)
    return NormStatistics(before=pairs[:, 0], after=pairs[:, 1])


def parameter_gradients(
    model: nn.Module, params, batches: Iterable[Batch], loss_fn: LossFn, penalty: Callable[[Any], Array] | None = None
) -> list[Any]:
    """∂(loss + penalty)/∂params for each batch (dropout off), as pytrees like `params`."""

    @jax.jit
    def grad(params, batch):
        def objective(params):
            loss = loss_fn(_apply(model, {"params": params}, batch["inputs"], batch.get("lengths")), batch)
            return loss if penalty is None else loss + penalty(params)

        return jax.grad(objective)(params)

    return [grad(params, dict(batch)) for batch in batches]


def norm_histogram(stats: NormStatistics, bins: int = 20) -> dict[str, list[float]]:
    """Counts of before/after norms in shared log-spaced bins: {'edges' [bins+1],
    'before' [bins], 'after' [bins]}."""
    values = np.concatenate([stats.before, stats.after])
    values = values[values > 0]
    low, high = (values.min(), values.max()) if values.size else (1e-3, 1.0)
    if high <= low:
        low, high = low / 2, high * 2
    edges = np.geomspace(low, high, bins + 1)
    return {
        "edges": edges.tolist(),
        "before": np.histogram(stats.before, edges)[0].tolist(),
        "after": np.histogram(stats.after, edges)[0].tolist(),
    }


# --------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    from matplotlib import pyplot as plt

    return plt


def plot_gradient_flow(
    curves: Mapping[str, np.ndarray], path: str, ylabel: str = "mean ‖∂L/∂h_t‖", title: str = ""
) -> None:
    """Norms [T] against the time lag T-1-t, one line per label, log y; writes a PNG."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for label, norms in curves.items():
        norms = np.asarray(norms)
        lag = np.arange(norms.shape[0])
        axis.plot(lag, np.maximum(norms[::-1], np.finfo(np.float32).tiny), label=label)
    axis.set_yscale("log")
    axis.set_xlabel("time lag T-1-t (steps before the last input)")
    axis.set_ylabel(ylabel)
    axis.set_title(title or "Gradient flow through time")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize="small")
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)


def plot_norm_histograms(
    stats: Mapping[str, NormStatistics], path: str, threshold: float = 0.0, bins: int = 20
) -> None:
    """One panel per label: histograms of global gradient norms before and
    after clipping (log x and y), a dashed line at `threshold`; writes a PNG."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(stats), figsize=(3.6 * len(stats), 3.4), squeeze=False)
    for axis, (label, s) in zip(axes[0], stats.items()):
        hist = norm_histogram(s, bins)
        edges = np.asarray(hist["edges"])
        axis.hist(s.before, edges, alpha=0.5, label="before clipping")
        axis.hist(s.after, edges, alpha=0.5, label="after clipping", histtype="step", linewidth=2)
        if threshold > 0:
            axis.axvline(threshold, color="k", linestyle="--", linewidth=1, label="clip_global_norm")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_ylim(bottom=0.5)  # log y: a bin with one batch stays visible
        axis.set_xlabel("global gradient norm")
        axis.set_ylabel("batches")
        axis.set_title(label, fontsize="medium")
    axes[0][0].legend(fontsize="x-small")
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)


def _save(figure, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=120)


def curve_summary(flow: GradientFlow, lags: Sequence[int] = (0, 10, 50, 99)) -> dict[str, Any]:
    """JSON-ready numbers of one GradientFlow: the top layer's curve, the
    input curve, ‖∂L/∂h_0‖ / ‖∂L/∂h_{T-1}‖ and the norm at a few lags."""
    hidden = flow.hidden
    time = hidden.shape[0]
    return {
        "hidden": hidden.tolist(),
        "inputs": None if flow.inputs is None else flow.inputs.tolist(),
        "layers": {path: norms.tolist() for path, norms in flow.layers.items()},
        "ratio_first_to_last": ratio_first_to_last(hidden),
        "hidden_at_lag": {str(lag): float(hidden[time - 1 - lag]) for lag in lags if lag < time},
    }
