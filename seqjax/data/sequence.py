"""Padding and one-hot encoding for id sequences, with Keras' semantics (NumPy, for input pipelines).

`pad_sequences` equals `keras.utils.pad_sequences` on every input Keras
accepts, except where Keras silently produces wrong numbers, which raise
here: float values (or a float `value`) that an integer `dtype` would
truncate, and `maxlen=0` (Keras keeps whole sequences and fails to broadcast;
here the result is [N, 0]). An empty list gives [0, maxlen or 0] instead of an
error.

seqjax's recurrent layers take `lengths` and expect the padding at the end
(`padding='post'`); Keras defaults to 'pre', which suits unmasked RNNs whose
last step must be a real token. `sequence_lengths` gives the lengths that go
with a padded batch.
"""

from __future__ import annotations

import itertools

import numpy as np

PAD_SIDES = ("pre", "post")


def pad_sequences(
    sequences, maxlen: int | None = None, dtype="int32", padding: str = "pre", truncating: str = "pre", value=0
) -> np.ndarray:
    """Pads (and truncates) N sequences to one length.

    Args:
      sequences: N sequences, each of shape [L_i, *S] (S, the per-step shape,
        is usually empty: lists of ids).
      maxlen: the output length T; None pads to the longest sequence.
      dtype: output dtype ('int32', 'float32', object for strings, ...).
      padding: 'pre' puts `value` before each sequence, 'post' after.
      truncating: 'pre' drops steps from the start of sequences longer than
        maxlen, 'post' from the end.
      value: the padding value.

    Returns:
      [N, T, *S] array of `dtype`.
    """
    for name, side in (("padding", padding), ("truncating", truncating)):
        if side not in PAD_SIDES:
            raise ValueError(f"{name} must be 'pre' or 'post', got {side!r}")
    if maxlen is not None and (isinstance(maxlen, bool) or not isinstance(maxlen, (int, np.integer)) or maxlen < 0):
        raise ValueError(f"maxlen must be None or an int >= 0, got {maxlen!r}")
    lengths = np.array(_lengths(sequences), dtype=np.int64)
    if maxlen is None:
        maxlen = int(lengths.max(initial=0))
    target = np.dtype(dtype)
    kept_len = np.minimum(lengths, maxlen)
    # Truncate first, so long sequences cost no more than maxlen steps; slice (copy) only when needed.
    kept = [
        seq if k == n else seq[n - k :] if truncating == "pre" else seq[:k]
        for seq, n, k in zip(sequences, lengths.tolist(), kept_len.tolist())
        if k
    ]
    steps, sample_shape = _stack_steps(kept, sequences, lengths)
    out = np.full((len(lengths), int(maxlen)) + sample_shape, _checked_value(value, target), dtype=target)
    if steps.shape[0]:
        rows, cols = _positions(kept_len, maxlen, padding)
        step_size = max(int(np.prod(sample_shape)), 1)
        ends = np.cumsum(kept_len)

        def where(flat_index):  # the sequence holding a flat element of `steps`, for errors
            return f"sequence {int(np.searchsorted(ends, flat_index // step_size, side='right'))}"

        out[rows, cols] = _cast(steps, target, where)
    return out


def sequence_lengths(sequences, maxlen: int | None = None) -> np.ndarray:
    """[N] int32: each sequence's length after truncation to `maxlen` (the real steps of a padded row)."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    if maxlen is not None:
        lengths = np.minimum(lengths, maxlen)
    return lengths.astype(np.int32)


def one_hot(ids, num_classes: int, dtype="float32") -> np.ndarray:
    """[...] integer ids -> [..., num_classes] one-hot vectors; ids outside [0, num_classes) raise."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    ids = _integer_array(ids, "one_hot")
    bad = np.flatnonzero((ids < 0) | (ids >= num_classes))
    if bad.size:
        raise ValueError(
            f"one_hot: id {ids.reshape(-1)[bad[0]]} (flat position {bad[0]}) is outside [0, {num_classes})"
        )
    return (ids[..., None] == np.arange(num_classes)).astype(dtype)


def to_categorical(y, num_classes: int | None = None, dtype="float32") -> np.ndarray:
    """Keras' `to_categorical`: class labels [...] (or [..., 1]) -> [..., num_classes].

    A trailing axis of size 1 is dropped first; num_classes defaults to max(y) + 1.
    """
    y = _integer_array(y, "to_categorical")
    if y.ndim > 1 and y.shape[-1] == 1:
        y = y[..., 0]
    if num_classes is None:
        if y.size == 0:
            raise ValueError("to_categorical: cannot infer num_classes from no labels; pass num_classes")
        num_classes = int(y.max()) + 1
    return one_hot(y, num_classes, dtype)


def _lengths(sequences) -> list[int]:
    """len() of every sequence, refusing things that are not sequences (a str is not one here)."""
    if isinstance(sequences, (str, bytes)) or not hasattr(sequences, "__len__"):
        raise TypeError(f"sequences must be a list of sequences, got {type(sequences).__name__}")
    lengths = []
    for i, seq in enumerate(sequences):
        if isinstance(seq, (str, bytes)) or not hasattr(seq, "__len__"):
            raise TypeError(f"sequence {i} must be a list or array, got {type(seq).__name__}: {seq!r:.40}")
        try:
            lengths.append(len(seq))
        except TypeError:  # a 0-d array has __len__ but no length
            raise TypeError(f"sequence {i} must be a list or array, got a scalar: {seq!r:.40}") from None
    return lengths


def _positions(kept_len: np.ndarray, maxlen: int, padding: str) -> tuple[np.ndarray, np.ndarray]:
    """Output row and column of every kept step, in order ([S] each), so one scatter fills the batch."""
    starts = np.cumsum(kept_len) - kept_len  # where each row's steps begin in the flat order
    rows = np.repeat(np.arange(len(kept_len)), kept_len)
    cols = np.arange(int(kept_len.sum())) - np.repeat(starts, kept_len)
    if padding == "pre":
        cols += np.repeat(maxlen - kept_len, kept_len)
    return rows, cols


def _stack_steps(kept: list, sequences, lengths) -> tuple[np.ndarray, tuple[int, ...]]:
    """All kept steps as one [S, *shape] array, and the per-step shape they share."""
    sample_shape = next((np.shape(seq[0]) for seq, n in zip(sequences, lengths) if n), ())
    if not kept:
        return np.zeros((0,) + sample_shape), sample_shape
    try:
        if all(isinstance(k, np.ndarray) for k in kept):
            steps = np.concatenate(kept)
        else:
            steps = np.asarray(list(itertools.chain.from_iterable(kept)))
    except ValueError:  # ragged steps: find the first culprit below
        steps = None
    if steps is None or steps.shape[1:] != sample_shape:
        for i, seq in enumerate(sequences):
            if len(seq) and _step_shape(seq, i) != sample_shape:
                raise ValueError(
                    f"sequence {i} has per-step shape {_step_shape(seq, i)}, the first non-empty "
                    f"sequence has {sample_shape}"
                )
        raise ValueError(f"sequences could not be stacked into steps of shape {sample_shape}")
    return steps, sample_shape


def _step_shape(seq, i: int) -> tuple[int, ...]:
    try:
        return np.asarray(seq).shape[1:]
    except ValueError:
        raise ValueError(f"sequence {i}: its steps have different shapes") from None


def _cast(array: np.ndarray, dtype, where) -> np.ndarray:
    """`array` as `dtype`, refusing casts that would change values.

    `where(flat_index)` names the element for the error (a callable, so callers can map a position
    in a flattened batch back to its sequence).
    """
    target = np.dtype(dtype)
    if target.kind in "iub" and array.dtype.kind in "fc":
        lossy = np.flatnonzero(~np.isfinite(array) | (array != np.round(array)))
        if lossy.size:
            raise ValueError(
                f"{where(lossy[0])} holds non-integer values, which dtype {target} would truncate; pass a float dtype"
            )
    if target.kind in "iufcb" and array.dtype.kind in "USO":
        raise TypeError(
            f"{where(0)} holds {array.dtype} values, not numbers for dtype {target}; pass dtype=object for strings"
        )
    if target.kind in "iu" and array.dtype.kind in "iuf" and array.size:
        info = np.iinfo(target)
        outside = np.flatnonzero((array < info.min) | (array > info.max))
        if outside.size:
            raise ValueError(
                f"{where(outside[0])} holds {array.flat[outside[0]]}, outside the range of dtype {target} "
                f"[{info.min}, {info.max}]; pass a wider dtype (e.g. int32)"
            )
    return array.astype(target)


def _checked_value(value, dtype):
    return _cast(np.asarray(value), dtype, lambda _: f"padding value {value!r}")[()]


def _integer_array(values, where: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind in "fc":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError(f"{where}: labels must be integers, got non-integer values")
        return array.astype(np.int64)
    if array.size and array.dtype.kind not in "iub":
        raise TypeError(f"{where}: labels must be integers, got dtype {array.dtype}")
    return array.astype(np.int64)
