"""Synthetic long-range-dependency tasks, generated deterministically from a seed.

Both are classic probes of whether a recurrent net can carry information over
T steps (Hochreiter & Schmidhuber 1997; Le et al. 2015; Arjovsky et al. 2016).
Every generator takes a `numpy.random.Generator`, so batch i of a run is a
pure function of (seed, split, i) and a resumed run sees the same data.
"""

from __future__ import annotations

import numpy as np

# Variance of the sum of two U(0, 1) values: the MSE of always predicting 1.0.
ADDING_MEAN_BASELINE_MSE = 2.0 / 12.0


def adding_problem(
    rng: np.random.Generator, batch_size: int, seq_len: int, min_seq_len: int | None = None
) -> dict[str, np.ndarray]:
    """The adding problem.

    Each step carries two features: a value drawn from U(0, 1) and a marker
    that is 1 at exactly two steps (one in each half of the valid sequence)
    and 0 elsewhere. The target is the sum of the two marked values.

    Args:
      rng: the random source.
      batch_size: B.
      seq_len: T, the padded length.
      min_seq_len: when set, each row's length is drawn from
        [min_seq_len, seq_len] and steps past it are zero padding.

    Returns:
      {'inputs': [B, T, 2] float32, 'lengths': [B] int32, 'targets': [B] float32}
    """
    if seq_len < 2:
        raise ValueError(f"adding problem needs seq_len >= 2, got {seq_len}")
    if min_seq_len is not None and not 2 <= min_seq_len <= seq_len:
        raise ValueError(f"adding problem needs 2 <= min_seq_len <= seq_len={seq_len}, got {min_seq_len}")
    if min_seq_len is None:
        lengths = np.full(batch_size, seq_len)
    else:
        lengths = rng.integers(min_seq_len, seq_len + 1, size=batch_size)
    half = lengths // 2
    first = (rng.random(batch_size) * half).astype(np.int64)
    second = half + (rng.random(batch_size) * (lengths - half)).astype(np.int64)
    values = rng.random((batch_size, seq_len))
    valid = np.arange(seq_len)[None, :] < lengths[:, None]
    values = np.where(valid, values, 0.0)
    rows = np.arange(batch_size)
    markers = np.zeros((batch_size, seq_len))
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    return {
        "inputs": np.stack([values, markers], axis=-1).astype(np.float32),
        "lengths": lengths.astype(np.int32),
        "targets": (values[rows, first] + values[rows, second]).astype(np.float32),
    }


def copy_task(
    rng: np.random.Generator, batch_size: int, delay: int, num_symbols: int = 8, copy_len: int = 10
) -> dict[str, np.ndarray]:
    """The copy (memory) task of Arjovsky et al. (2016).

    Token 0 is blank, 1..num_symbols are data symbols, num_symbols + 1 is the
    delimiter. The input is `copy_len` symbols, `delay - 1` blanks, the
    delimiter, then `copy_len` blanks; the target is blank for the first
    `delay + copy_len` steps and the original symbols for the last `copy_len`.
    The sequence length is T = delay + 2 * copy_len.

    Returns:
      {'inputs': [B, T] int32 token ids, 'targets': [B, T] int32 token ids}
    """
    if delay < 1 or copy_len < 1 or num_symbols < 1:
        raise ValueError(f"copy task needs delay, copy_len, num_symbols >= 1; got {delay}, {copy_len}, {num_symbols}")
    seq_len = delay + 2 * copy_len
    symbols = rng.integers(1, num_symbols + 1, size=(batch_size, copy_len))
    inputs = np.zeros((batch_size, seq_len), np.int32)
    inputs[:, :copy_len] = symbols
    inputs[:, copy_len + delay - 1] = num_symbols + 1
    targets = np.zeros((batch_size, seq_len), np.int32)
    targets[:, -copy_len:] = symbols
    return {"inputs": inputs, "targets": targets}
