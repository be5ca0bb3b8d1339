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

import numpy as np

PAD_SIDES = ("pre", "post")


def pad_sequences(sequences, maxlen: int | None = None, dtype="int32", padding: str = "pre",
                  truncating: str = "pre", value=0) -> np.ndarray:
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
    if maxlen is not None and (isinstance(maxlen, bool) or not isinstance(maxlen, (int, np.integer))
                               or maxlen < 0):
        raise ValueError(f"maxlen must be None or an int >= 0, got {maxlen!r}")
    arrays, sample_shape = _as_arrays(sequences, dtype)
    if maxlen is None:
        maxlen = max((len(a) for a in arrays), default=0)
    out = np.full((len(arrays), int(maxlen)) + sample_shape, _checked_value(value, dtype), dtype=dtype)
    for i, array in enumerate(arrays):
        if len(array) == 0 or maxlen == 0:
            continue
        kept = array[-maxlen:] if truncating == "pre" else array[:maxlen]
        if padding == "post":
            out[i, :len(kept)] = kept
        else:
            out[i, maxlen - len(kept):] = kept
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
        raise ValueError(f"one_hot: id {ids.reshape(-1)[bad[0]]} (flat position {bad[0]}) is outside "
                         f"[0, {num_classes})")
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


def _as_arrays(sequences, dtype) -> tuple[list[np.ndarray], tuple[int, ...]]:
    """Each sequence as an array of `dtype`, and the per-step shape they share."""
    if isinstance(sequences, (str, bytes)) or not hasattr(sequences, "__len__"):
        raise TypeError(f"sequences must be a list of sequences, got {type(sequences).__name__}")
    arrays, sample_shape = [], None
    for i, seq in enumerate(sequences):
        if isinstance(seq, (str, bytes)) or not hasattr(seq, "__len__"):
            raise TypeError(f"sequence {i} must be a list or array, got {type(seq).__name__}: {seq!r:.40}")
        try:
            array = np.asarray(seq, dtype=object if len(seq) == 0 else None)
        except ValueError:  # numpy refuses ragged steps
            raise ValueError(f"sequence {i}: its steps have different shapes") from None
        if len(seq) and sample_shape is None:
            sample_shape = array.shape[1:]
        elif len(seq) and array.shape[1:] != sample_shape:
            raise ValueError(f"sequence {i} has per-step shape {array.shape[1:]}, the first non-empty "
                             f"sequence has {sample_shape}")
        arrays.append(_cast(array, dtype, f"sequence {i}") if len(seq) else array)
    return arrays, sample_shape or ()


def _cast(array: np.ndarray, dtype, where: str) -> np.ndarray:
    """`array` as `dtype`, refusing to truncate non-integer values into an integer dtype."""
    target = np.dtype(dtype)
    if np.issubdtype(target, np.integer) and array.dtype.kind in "fc":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError(f"{where} holds non-integer values, which dtype {target} would truncate; "
                             "pass a float dtype")
    if np.issubdtype(target, np.number) and array.dtype.kind in "USO":
        raise TypeError(f"{where} holds {array.dtype} values, not numbers for dtype {target}; "
                        "pass dtype=object for strings")
    return array.astype(target)


def _checked_value(value, dtype):
    return _cast(np.asarray(value), dtype, f"padding value {value!r}")[()]


def _integer_array(values, where: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind in "fc":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError(f"{where}: labels must be integers, got non-integer values")
        return array.astype(np.int64)
    if array.size and array.dtype.kind not in "iub":
        raise TypeError(f"{where}: labels must be integers, got dtype {array.dtype}")
    return array.astype(np.int64)
