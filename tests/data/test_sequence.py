"""pad_sequences / one_hot / to_categorical: hand-written cases and equality with Keras' own."""

import numpy as np
import pytest

from seqjax.data.sequence import one_hot, pad_sequences, sequence_lengths, to_categorical


@pytest.fixture(scope="module")
def keras_utils():
    # keras comes with tensorflow-cpu, a seqjax dependency; it is the reference implementation.
    return pytest.importorskip("keras.utils", reason="keras is the reference for these tests")


SEQS = [[1], [2, 3], [4, 5, 6]]


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, [[0, 0, 1], [0, 2, 3], [4, 5, 6]]),
        ({"value": -1}, [[-1, -1, 1], [-1, 2, 3], [4, 5, 6]]),
        ({"padding": "post"}, [[1, 0, 0], [2, 3, 0], [4, 5, 6]]),
        ({"maxlen": 2}, [[0, 1], [2, 3], [5, 6]]),
        ({"maxlen": 2, "truncating": "post"}, [[0, 1], [2, 3], [4, 5]]),
        ({"maxlen": 4, "padding": "post"}, [[1, 0, 0, 0], [2, 3, 0, 0], [4, 5, 6, 0]]),
    ],
)
def test_pad_sequences_hand_written(kwargs, expected):
    out = pad_sequences(SEQS, **kwargs)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.int32


def test_pad_sequences_equals_keras_on_random_inputs(keras_utils):
    rng = np.random.default_rng(0)
    for case in range(300):
        n = int(rng.integers(1, 7))
        is_float = case % 3 == 0
        seqs = []
        for _ in range(n):
            length = int(rng.integers(0, 9))  # empty sequences included
            values = rng.normal(size=length) if is_float else rng.integers(-50, 50, size=length)
            seqs.append(values.tolist() if case % 2 else values)
        kwargs = dict(
            maxlen=None if rng.random() < 0.3 else int(rng.integers(1, 11)),
            padding=str(rng.choice(["pre", "post"])),
            truncating=str(rng.choice(["pre", "post"])),
            value=float(rng.normal()) if is_float else int(rng.integers(-3, 4)),
            dtype="float32" if is_float else str(rng.choice(["int32", "int64"])),
        )
        ours, theirs = pad_sequences(seqs, **kwargs), keras_utils.pad_sequences(seqs, **kwargs)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, (case, kwargs)
        np.testing.assert_array_equal(ours, theirs, err_msg=str((case, kwargs)))


def test_pad_sequences_of_vectors_equals_keras(keras_utils):
    rng = np.random.default_rng(1)
    seqs = [rng.normal(size=(length, 3)) for length in (4, 0, 7, 2)]
    for padding in ("pre", "post"):
        for truncating in ("pre", "post"):
            kwargs = dict(maxlen=5, dtype="float32", padding=padding, truncating=truncating, value=-1.0)
            ours = pad_sequences(seqs, **kwargs)
            assert ours.shape == (4, 5, 3)
            np.testing.assert_array_equal(ours, keras_utils.pad_sequences(seqs, **kwargs))


def test_pad_sequences_of_strings():
    out = pad_sequences([["a", "b"], ["c"]], dtype=object, value="<pad>", padding="post")
    assert out.tolist() == [["a", "b"], ["c", "<pad>"]]


def test_pad_sequences_edge_shapes():
    assert pad_sequences([]).shape == (0, 0)
    assert pad_sequences([], maxlen=4).shape == (0, 4)
    assert pad_sequences([[], []]).shape == (2, 0)
    np.testing.assert_array_equal(pad_sequences([[], [7]], value=9), [[9], [7]])
    assert pad_sequences(SEQS, maxlen=0).shape == (3, 0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"padding": "left"}, ValueError, "padding must be 'pre' or 'post', got 'left'"),
        ({"truncating": "end"}, ValueError, "truncating must be 'pre' or 'post', got 'end'"),
        ({"maxlen": -1}, ValueError, "maxlen"),
        ({"maxlen": 2.5}, ValueError, "maxlen"),
        ({"value": 0.5}, ValueError, "would truncate"),
        ({"value": "x"}, TypeError, "dtype=object"),
    ],
)
def test_pad_sequences_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        pad_sequences(SEQS, **kwargs)


def test_pad_sequences_bad_sequences():
    with pytest.raises(ValueError, match="sequence 1 holds non-integer values"):
        pad_sequences([[1, 2], [0.5]])  # Keras would silently store 0
    with pytest.raises(ValueError, match="sequence 1 has per-step shape"):
        pad_sequences([np.zeros((2, 3)), np.zeros((2, 4))], dtype="float32")
    with pytest.raises(TypeError, match="sequence 0 must be a list"):
        pad_sequences([5, [1]])
    with pytest.raises(TypeError, match="sequence 0 must be a list or array, got str"):
        pad_sequences(["abc"])
    with pytest.raises(TypeError, match="sequence 1 must be a list or array, got a scalar"):
        pad_sequences([[1], np.array(3)])
    with pytest.raises(ValueError, match="sequence 2 holds non-integer values"):
        pad_sequences([[1, 2], [], [3, 4.25]])
    # Only what is kept is converted, as in Keras: a truncated-away value cannot do harm.
    np.testing.assert_array_equal(pad_sequences([[3, 4.25]], maxlen=1, truncating="post"), [[3]])
    with pytest.raises(TypeError, match="list of sequences"):
        pad_sequences("abc")


def test_sequence_lengths_match_the_real_steps_of_post_padding():
    seqs = [[5, 6, 7, 8], [], [3]]
    lengths = sequence_lengths(seqs, maxlen=3)
    np.testing.assert_array_equal(lengths, [3, 0, 1])
    padded = pad_sequences(seqs, maxlen=3, padding="post", truncating="post", value=0)
    np.testing.assert_array_equal((padded != 0).sum(axis=1), lengths)
    np.testing.assert_array_equal(sequence_lengths(seqs), [4, 0, 1])


def test_one_hot_values_and_shape():
    ids = np.array([[0, 2], [1, 1]])
    out = one_hot(ids, 3)
    assert out.shape == (2, 2, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.eye(3, dtype=np.float32)[ids])
    # The seeds' example: five words, one position each.
    np.testing.assert_array_equal(
        one_hot([0, 1, 4], 5, dtype="int32"), [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 1]]
    )


def test_one_hot_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match=r"id 3 \(flat position 1\) is outside \[0, 3\)"):
        one_hot([0, 3], 3)
    with pytest.raises(ValueError, match="id -1"):
        one_hot([-1], 3)  # NumPy indexing would wrap it round silently
    with pytest.raises(ValueError, match="num_classes"):
        one_hot([0], 0)
    with pytest.raises(ValueError, match="non-integer"):
        one_hot([0.5], 2)


def test_to_categorical_equals_keras(keras_utils):
    rng = np.random.default_rng(2)
    for shape in [(7,), (4, 1), (3, 5), (2, 3, 1)]:
        y = rng.integers(0, 6, size=shape)
        for num_classes in (None, 9):
            ours = to_categorical(y, num_classes)
            np.testing.assert_array_equal(ours, keras_utils.to_categorical(y, num_classes))
    np.testing.assert_array_equal(to_categorical([[1], [0]]), [[0, 1], [1, 0]])


def test_to_categorical_errors():
    with pytest.raises(ValueError, match="pass num_classes"):
        to_categorical([])
    with pytest.raises(ValueError, match="outside"):
        to_categorical([0, 4], num_classes=3)
