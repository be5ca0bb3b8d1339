"""Checks of the token ids and lengths a caller hands to a model.

Three regimes, one per way a model is called:

* Eagerly (concrete arrays: `model.apply(variables, x)` outside `jit`): the
  values are checked on the host, and a bad one raises ValueError naming the
  argument, the value and its position.
* Under `jit` (traced arrays) nothing can raise, so the behaviour is
  defined instead of left to XLA's indexing (which clamps some indices and
  wraps negative ones): an out-of-range token id embeds as NaN, and a row
  whose length is outside [0, T] gets NaN inputs. Either makes the loss NaN,
  which stops training at that step (seqjax.training's non-finite guard)
  rather than learning from a clamped or wrapped value.
* Checked mode, opt-in: inside `with checks.enabled():` the same conditions
  are `jax.experimental.checkify` checks, so a checkified function raises
  with the offending value even under `jit`:

      with checks.enabled():
          error, out = jax.jit(checkify.checkify(apply))(variables, tokens, lengths)
      error.throw()  # ValueError: inputs holds token id 12 outside [0, 10) ...
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

_state = threading.local()


@contextlib.contextmanager
def enabled() -> Iterator[None]:
    """Stages checkify checks into functions traced inside the block."""
    previous = getattr(_state, "enabled", False)
    _state.enabled = True
    try:
        yield
    finally:
        _state.enabled = previous


def _checking() -> bool:
    return getattr(_state, "enabled", False)


def concrete_or_none(x: Any) -> np.ndarray | None:
    """The host value of `x`, or None when `x` is traced inside jit/grad."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def token_ids(ids: jax.Array, vocab_size: int, name: str = "inputs") -> jax.Array:
    """`ids` [..] with every id outside [0, vocab_size) replaced by
    `vocab_size`, which a `jnp.take(..., mode='fill')` lookup (flax's
    nn.Embed included) turns into NaN. Raises ValueError for concrete bad ids."""
    valid = (ids >= 0) & (ids < vocab_size)
    # (A constant array inside a traced function gives a traced `valid`.)
    if (host := concrete_or_none(valid)) is not None:
        bad = np.argwhere(~host)
        if bad.size:
            where = tuple(int(i) for i in bad[0])
            raise ValueError(
                f"{name} holds token id {int(np.asarray(ids)[where])} at position {where}, outside "
                f"[0, {vocab_size}) ({len(bad)} such ids): ids must come from the task's tokenizer/vocabulary"
            )
        return ids
    if _checking():
        first = jnp.argmin(valid.reshape(-1))
        checkify.check(
            jnp.all(valid),
            f"{name} holds token id {{}} outside [0, {vocab_size})",
            ids.reshape(-1)[first],
        )
    return jnp.where(valid, ids, vocab_size)


def row_lengths(lengths: jax.Array | None, max_len: int, name: str = "lengths") -> jax.Array | None:
    """Per row [B], whether its length is in [0, max_len] (None: no lengths,
    every row valid). Raises ValueError for concrete bad lengths."""
    if lengths is None:
        return None
    valid = (lengths >= 0) & (lengths <= max_len)
    if (host := concrete_or_none(valid)) is not None:
        bad = np.flatnonzero(~host)
        if bad.size:
            raise ValueError(
                f"{name}[{bad[0]}] = {int(np.asarray(lengths)[bad[0]])} is outside [0, {max_len}] "
                f"(the time axis of the inputs; {bad.size} such rows)"
            )
    elif _checking():
        first = jnp.argmin(valid)
        checkify.check(jnp.all(valid), f"{name} holds length {{}} outside [0, {max_len}]", lengths[first])
    return valid


def nan_rows(x: jax.Array, valid_rows: jax.Array | None) -> jax.Array:
    """x [B, ...] with the rows that are not `valid_rows` set to NaN."""
    if valid_rows is None:
        return x
    return jnp.where(valid_rows.reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.nan)
