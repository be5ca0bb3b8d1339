"""Optimisers from `config.optimizer`, built with optax.

The chain is: [clip by value] -> [clip by global norm] -> optimiser (with its
learning-rate schedule). L1/L2 penalties are added to the loss by
`weight_penalty` so they mean the same thing under every optimiser (AdamW's
decoupled `weight_decay` is the optimiser's own, separate knob).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "linear")


def learning_rate_schedule(config: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Linear warm-up for `warmup_steps`, then constant, cosine or linear decay
    to `learning_rate * end_lr_fraction` at `num_steps`."""
    peak = config.learning_rate
    warmup = config.get("warmup_steps", 0)
    end = peak * config.get("end_lr_fraction", 0.0)
    name = config.get("schedule", "constant")
    decay_steps = max(num_steps - warmup, 1)
    if name == "constant":
        after = optax.constant_schedule(peak)
    elif name == "cosine":
        after = optax.cosine_decay_schedule(peak, decay_steps, alpha=end / peak if peak else 0.0)
    elif name == "linear":
        after = optax.linear_schedule(peak, end, decay_steps)
    else:
        raise ValueError(f"unknown config.optimizer.schedule={name!r}; choose one of {', '.join(SCHEDULES)}")
    if warmup <= 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def build_optimizer(config: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
    """The optax chain described by `config.optimizer` (see configs/default.py)."""
    schedule = learning_rate_schedule(config, num_steps)
    name = config.name
    if name == "adam":
        optimizer = optax.adam(schedule, b1=config.get("b1", 0.9), b2=config.get("b2", 0.999))
    elif name == "adamw":
        optimizer = optax.adamw(
            schedule, b1=config.get("b1", 0.9), b2=config.get("b2", 0.999), weight_decay=config.get("weight_decay", 0.0)
        )
    elif name == "sgd":
        momentum = config.get("momentum", 0.0) or None
        optimizer = optax.sgd(schedule, momentum=momentum, nesterov=config.get("nesterov", False))
    else:
        raise ValueError(f"unknown config.optimizer.name={name!r}; choose one of {', '.join(OPTIMIZERS)}")
    chain = []
    if config.get("clip_value", 0.0) > 0:
        chain.append(optax.clip(config.clip_value))
    if config.get("clip_global_norm", 0.0) > 0:
        chain.append(optax.clip_by_global_norm(config.clip_global_norm))
    return optax.chain(*chain, optimizer)


def weight_penalty(params, l1: float = 0.0, l2: float = 0.0) -> jax.Array:
    """l1 * Σ|w| + l2 * Σw² over weight matrices (params with ndim >= 2; biases,
    vectors and scalars are not penalised)."""
    matrices = [p for p in jax.tree.leaves(params) if p.ndim >= 2]
    penalty = jnp.zeros((), jnp.float32)
    if l1:
        penalty += l1 * sum(jnp.abs(w).sum() for w in matrices)
    if l2:
        penalty += l2 * sum(jnp.square(w).sum() for w in matrices)
    return penalty
