"""Sequence heads: pool a [B, T, H] sequence to [B, H] over valid steps.

many-to-one tasks pool (`last`, `mean`, `max`); many-to-many tasks apply a
per-step projection (a Dense on [B, T, H] acts on every step).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

POOLINGS = ("last", "mean", "max")


def last_valid(outputs: Array, lengths: Array | None) -> Array:
    """outputs[b, lengths[b] - 1] for every row b: [B, T, H] -> [B, H].

    A row of length 0 gives zeros.
    """
    if lengths is None:
        return outputs[:, -1]
    index = jnp.clip(lengths - 1, 0, outputs.shape[1] - 1)
    picked = jnp.take_along_axis(outputs, index[:, None, None], axis=1)[:, 0]
    return jnp.where((lengths > 0)[:, None], picked, 0.0)


def masked_mean(outputs: Array, lengths: Array | None) -> Array:
    """Mean over valid steps: [B, T, H] -> [B, H] (zeros for empty rows)."""
    if lengths is None:
        return outputs.mean(axis=1)
    mask = (jnp.arange(outputs.shape[1])[None, :] < lengths[:, None])[..., None]
    total = jnp.where(mask, outputs, 0.0).sum(axis=1)
    return total / jnp.maximum(lengths, 1)[:, None].astype(outputs.dtype)


def masked_max(outputs: Array, lengths: Array | None) -> Array:
    """Max over valid steps: [B, T, H] -> [B, H] (zeros for empty rows)."""
    if lengths is None:
        return outputs.max(axis=1)
    mask = (jnp.arange(outputs.shape[1])[None, :] < lengths[:, None])[..., None]
    pooled = jnp.where(mask, outputs, -jnp.inf).max(axis=1)
    return jnp.where((lengths > 0)[:, None], pooled, 0.0)


def pool(outputs: Array, lengths: Array | None, method: str) -> Array:
    """Pools [B, T, H] -> [B, H] with `method` in POOLINGS."""
    if method == "last":
        return last_valid(outputs, lengths)
    if method == "mean":
        return masked_mean(outputs, lengths)
    if method == "max":
        return masked_max(outputs, lengths)
    raise ValueError(f"unknown pooling {method!r}; choose one of {', '.join(POOLINGS)}")
