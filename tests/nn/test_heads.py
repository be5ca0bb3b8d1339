"""Pooling heads over valid steps vs numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.nn import heads

B, T, H = 5, 7, 3
LENGTHS = np.array([7, 1, 0, 4, 6], np.int32)


@pytest.fixture
def outputs():
    # Padded steps hold large values, so a head that reads them fails loudly.
    x = np.random.default_rng(0).normal(size=(B, T, H)).astype(np.float32)
    pad = np.arange(T)[None, :] >= LENGTHS[:, None]
    x[pad] = 1e3
    return x


def np_pool(x, lengths, method):
    rows = []
    for b, length in enumerate(lengths):
        valid = x[b, :length]
        if length == 0:
            rows.append(np.zeros(x.shape[-1], x.dtype))
        elif method == "last":
            rows.append(valid[-1])
        elif method == "mean":
            rows.append(valid.mean(0))
        else:
            rows.append(valid.max(0))
    return np.stack(rows)


@pytest.mark.parametrize("method", heads.POOLINGS)
def test_pooling_over_valid_steps_matches_numpy(outputs, method):
    got = heads.pool(jnp.asarray(outputs), jnp.asarray(LENGTHS), method)
    assert got.shape == (B, H)
    np.testing.assert_allclose(got, np_pool(outputs, LENGTHS, method), rtol=1e-6, atol=1e-6)
    assert np.abs(np.asarray(got)).max() < 100  # no padded value leaked through


@pytest.mark.parametrize("method", heads.POOLINGS)
def test_pooling_empty_row_gives_zeros(outputs, method):
    got = np.asarray(heads.pool(jnp.asarray(outputs), jnp.asarray(LENGTHS), method))
    np.testing.assert_array_equal(got[LENGTHS == 0], 0.0)
    assert np.isfinite(got).all()


@pytest.mark.parametrize("method", heads.POOLINGS)
def test_pooling_without_lengths_uses_every_step(outputs, method):
    full = np.full(B, T, np.int32)
    got = heads.pool(jnp.asarray(outputs), None, method)
    np.testing.assert_allclose(got, np_pool(outputs, full, method), rtol=1e-6, atol=1e-6)


def test_max_pooling_ignores_padding_even_when_valid_values_are_negative():
    x = -np.ones((1, 4, 2), np.float32) * np.arange(1, 5, dtype=np.float32)[None, :, None]
    x[0, 2:] = 0.0  # padding zeros are larger than every valid value
    got = heads.masked_max(jnp.asarray(x), jnp.asarray([2]))
    np.testing.assert_array_equal(got, [[-1.0, -1.0]])


def test_last_valid_picks_the_step_before_length():
    x = jnp.arange(T, dtype=jnp.float32)[None, :, None] * jnp.ones((B, T, 1))
    got = heads.last_valid(x, jnp.asarray(LENGTHS))
    np.testing.assert_array_equal(got[:, 0], np.where(LENGTHS > 0, LENGTHS - 1, 0))


@pytest.mark.parametrize("method", heads.POOLINGS)
def test_pooling_gradients_only_reach_valid_steps(outputs, method):
    grad = jax.grad(lambda x: heads.pool(x, jnp.asarray(LENGTHS), method).sum())(jnp.asarray(outputs))
    grad = np.asarray(grad)
    pad = np.arange(T)[None, :] >= LENGTHS[:, None]
    assert (grad[pad] == 0).all()
    assert (grad[LENGTHS > 0].sum(axis=(1, 2)) > 0).all()


def test_pooling_works_under_jit_with_traced_lengths(outputs):
    fn = jax.jit(heads.pool, static_argnames="method")
    np.testing.assert_allclose(
        fn(jnp.asarray(outputs), jnp.asarray(LENGTHS), method="mean"),
        np_pool(outputs, LENGTHS, "mean"),
        rtol=1e-6,
        atol=1e-6,
    )


def test_unknown_pooling_is_rejected(outputs):
    with pytest.raises(ValueError, match="unknown pooling 'median'; choose one of last, mean, max"):
        heads.pool(jnp.asarray(outputs), None, "median")
