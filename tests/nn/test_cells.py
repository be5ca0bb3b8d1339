"""Cells vs plain-numpy implementations of their equations, over several steps."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.nn import cells, minimal

B, F, H, T = 3, 4, 5, 6


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_rnn(params, xs, h, activation):
    act = np.tanh if activation == "tanh" else (lambda v: np.maximum(v, 0.0))
    outs = []
    for x in xs:
        h = act(x @ params["input_kernel"] + h @ params["recurrent_kernel"] + params["bias"])
        outs.append(h)
    return np.stack(outs), h


def np_lstm(params, xs, h, c):
    outs = []
    for x in xs:
        z = x @ params["input_kernel"] + h @ params["recurrent_kernel"] + params["bias"]
        i, f, g, o = np.split(z, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        outs.append(h)
    return np.stack(outs), (h, c)


def np_gru(params, xs, h, reset_after):
    wx, wh = params["input_kernel"], params["recurrent_kernel"]
    hz = slice(0, H)
    hr = slice(H, 2 * H)
    hn = slice(2 * H, 3 * H)
    outs = []
    for x in xs:
        if reset_after:
            bx, bh = params["input_bias"], params["recurrent_bias"]
            z = sigmoid(x @ wx[:, hz] + bx[hz] + h @ wh[:, hz] + bh[hz])
            r = sigmoid(x @ wx[:, hr] + bx[hr] + h @ wh[:, hr] + bh[hr])
            n = np.tanh(x @ wx[:, hn] + bx[hn] + r * (h @ wh[:, hn] + bh[hn]))
        else:
            b = params["bias"]
            z = sigmoid(x @ wx[:, hz] + h @ wh[:, hz] + b[hz])
            r = sigmoid(x @ wx[:, hr] + h @ wh[:, hr] + b[hr])
            n = np.tanh(x @ wx[:, hn] + (r * h) @ wh[:, hn] + b[hn])
        h = z * h + (1.0 - z) * n
        outs.append(h)
    return np.stack(outs), h


def random_params(cell, seed):
    """Cell params with every entry replaced by random values (non-trivial gates)."""
    params = cell.init(jax.random.key(0), cell.initial_carry(B), jnp.zeros((B, F)))["params"]
    rng = np.random.default_rng(seed)
    return {k: rng.normal(0.0, 0.6, v.shape).astype(np.float32) for k, v in params.items()}


def run_steps(cell, params, xs, carry):
    step = jax.jit(cell.apply)  # one compile for all steps
    outs = []
    for x in xs:
        carry, h = step({"params": params}, carry, jnp.asarray(x))
        outs.append(h)
    return np.stack(outs), carry


@pytest.fixture
def sequence():
    rng = np.random.default_rng(1)
    return rng.normal(size=(T, B, F)).astype(np.float32), rng.normal(size=(B, H)).astype(np.float32)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_simple_rnn_matches_numpy_equations(sequence, activation):
    xs, h0 = sequence
    cell = cells.SimpleRNNCell(H, activation=activation)
    params = random_params(cell, seed=2)
    got, carry = run_steps(cell, params, xs, jnp.asarray(h0))
    want, h = np_rnn(params, xs, h0, activation)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(carry, h, rtol=1e-5, atol=1e-5)
    if activation == "relu":
        assert (got >= 0).all() and (got == 0).any()  # the ReLU really clipped something
    else:
        assert (got < 0).any()


def test_simple_rnn_rejects_unknown_activation():
    with pytest.raises(ValueError, match="must be 'tanh' or 'relu'"):
        cells.SimpleRNNCell(H, activation="sigmoid")


def test_irnn_init_is_identity_recurrence_with_zero_bias():
    cell = cells.irnn_cell(H, identity_scale=0.5)
    params = cell.init(jax.random.key(3), cell.initial_carry(B), jnp.zeros((B, F)))["params"]
    np.testing.assert_array_equal(params["recurrent_kernel"], 0.5 * np.eye(H))
    np.testing.assert_array_equal(params["bias"], np.zeros(H))
    assert np.abs(params["input_kernel"]).sum() > 0  # the input kernel stays random
    assert cell.activation == "relu"
    # With zero input a positive state decays by exactly the identity scale per step.
    h0 = np.abs(np.random.default_rng(4).normal(size=(B, H))).astype(np.float32)
    _, carry = run_steps(cell, params, np.zeros((3, B, F), np.float32), jnp.asarray(h0))
    np.testing.assert_allclose(carry, h0 * 0.5**3, rtol=1e-6)


def test_irnn_matches_numpy_relu_rnn(sequence):
    xs, h0 = sequence
    cell = cells.irnn_cell(H)
    params = {
        k: np.asarray(v)
        for k, v in cell.init(jax.random.key(5), cell.initial_carry(B), jnp.zeros((B, F)))["params"].items()
    }
    got, carry = run_steps(cell, params, xs, jnp.asarray(h0))
    want, h = np_rnn(params, xs, h0, "relu")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(carry, h, rtol=1e-5, atol=1e-5)


def test_identity_init_rejects_non_square_shape():
    with pytest.raises(ValueError, match="square 2-D shape"):
        cells.identity_init()(jax.random.key(0), (3, 4))


def test_lstm_matches_numpy_equations(sequence):
    xs, h0 = sequence
    c0 = np.random.default_rng(6).normal(size=(B, H)).astype(np.float32)
    cell = cells.LSTMCell(H)
    params = random_params(cell, seed=7)
    got, carry = run_steps(cell, params, xs, cells.LSTMCarry(jnp.asarray(h0), jnp.asarray(c0)))
    want, (h, c) = np_lstm(params, xs, h0, c0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert isinstance(carry, cells.LSTMCarry)
    np.testing.assert_allclose(carry.hidden, h, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(carry.cell, c, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("forget_bias", [1.0, 2.5])
def test_lstm_bias_init_sets_only_the_forget_slice(forget_bias):
    cell = cells.LSTMCell(H, forget_bias=forget_bias)
    params = cell.init(jax.random.key(8), cell.initial_carry(B), jnp.zeros((B, F)))["params"]
    bias = np.asarray(params["bias"])
    assert bias.shape == (4 * H,)
    expected = np.zeros(4 * H, np.float32)
    expected[H : 2 * H] = forget_bias  # gate order (i, f, g, o)
    np.testing.assert_array_equal(bias, expected)


def test_lstm_explicit_bias_init_overrides_forget_bias():
    cell = cells.LSTMCell(H, forget_bias=3.0, bias_init=jax.nn.initializers.ones)
    params = cell.init(jax.random.key(8), cell.initial_carry(B), jnp.zeros((B, F)))["params"]
    np.testing.assert_array_equal(params["bias"], np.ones(4 * H))


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_matches_numpy_equations(sequence, reset_after):
    xs, h0 = sequence
    cell = cells.GRUCell(H, reset_after=reset_after)
    params = random_params(cell, seed=9)
    expected_names = (
        {"input_kernel", "recurrent_kernel", "input_bias", "recurrent_bias"}
        if reset_after
        else {"input_kernel", "recurrent_kernel", "bias"}
    )
    assert set(params) == expected_names
    got, carry = run_steps(cell, params, xs, jnp.asarray(h0))
    want, h = np_gru(params, xs, h0, reset_after)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(carry, h, rtol=1e-5, atol=1e-5)


def test_gru_formulations_differ_on_same_weights(sequence):
    """reset_after=True and False are genuinely different recurrences (the test above can tell)."""
    xs, h0 = sequence
    params = random_params(cells.GRUCell(H, reset_after=False), seed=10)
    before, _ = np_gru(params, xs, h0, reset_after=False)
    after_params = dict(params, input_bias=params["bias"], recurrent_bias=np.zeros_like(params["bias"]))
    after, _ = np_gru(after_params, xs, h0, reset_after=True)
    assert np.abs(before - after).max() > 1e-2


@pytest.mark.parametrize(
    "name, cls, extra",
    [
        ("rnn", cells.SimpleRNNCell, {"activation": "tanh"}),
        ("relu_rnn", cells.SimpleRNNCell, {"activation": "relu"}),
        ("irnn", cells.SimpleRNNCell, {"activation": "relu"}),
        ("lstm", cells.LSTMCell, {}),
        ("gru", cells.GRUCell, {"reset_after": True}),
        ("gru_reset_before", cells.GRUCell, {"reset_after": False}),
    ],
)
def test_make_cell_builds_the_named_cell(name, cls, extra):
    cell = cells.make_cell(name, H)
    assert type(cell) is cls and cell.hidden_size == H
    for attr, value in extra.items():
        assert getattr(cell, attr) == value


def test_make_cell_rejects_unknown_name():
    expected = (
        "unknown cell 'transformer'; choose one of rnn, relu_rnn, irnn, lstm, gru, gru_reset_before, mingru, minlstm"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        cells.make_cell("transformer", H)


def test_every_cell_family_is_registered_once_and_the_minimal_cells_register_themselves():
    assert cells.cell_names() == ("rnn", "relu_rnn", "irnn", "lstm", "gru", "gru_reset_before", "mingru", "minlstm")
    assert type(cells.make_cell("minlstm", H)) is minimal.MinLSTMCell
    with pytest.raises(ValueError, match="^cell 'mingru' is already registered$"):
        cells.register_cell("mingru", minimal.MinGRUCell)


def test_a_fixed_attribute_cannot_be_set_again():
    # 'rnn' is the tanh Elman cell: asking it for another activation is an error, not a silent relu_rnn.
    with pytest.raises(TypeError, match="activation"):
        cells.make_cell("rnn", H, activation="relu")


def test_cell_dtype_casts_computation():
    cell = cells.LSTMCell(H, dtype=jnp.bfloat16)
    params = cell.init(jax.random.key(0), cell.initial_carry(B), jnp.zeros((B, F)))["params"]
    assert params["input_kernel"].dtype == jnp.float32  # stored in param_dtype
    carry, h = cell.apply({"params": params}, cell.initial_carry(B, jnp.bfloat16), jnp.ones((B, F), jnp.bfloat16))
    assert h.dtype == jnp.bfloat16
