"""Fused recurrences (custom VJP) against `scan_cell` (autodiff through lax.scan)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.nn import cells, fused, recurrent

B, T, F, H = 4, 7, 3, 5
LENGTHS = jnp.array([7, 0, 3, 7])  # full rows, an empty row, a partial row
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Chunks of 3 steps over T=7 (3 + 3 + 1): the chunk loop, its seams and a 1-step chunk."""
    monkeypatch.setattr(fused, "CHUNK_STEPS", 3)


def setup(name, seed=0, dtype=jnp.float32):
    """(cell, weights, inputs [B, T, F], non-zero initial carry), all random (numpy: no compiles)."""
    cell = cells.make_cell(name, H)
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: cell.init(jax.random.key(0), F, method=cell.weights))["params"]

    def normal(shape, scale):
        return jnp.asarray(scale * rng.standard_normal(shape), dtype)

    weights = {key: normal(value.shape, 0.5) for key, value in shapes.items()}
    carry = jax.tree.map(lambda z: normal(z.shape, 0.5), cell.initial_carry(B))
    return cell, weights, normal((B, T, F), 1.0), carry


def loss_fn(scan, cell, mask, reverse, hoist, unroll=2):
    """A loss with random weights on every output and final-carry entry."""
    rng = np.random.default_rng(7)
    out_w, carry_w = rng.standard_normal((B, T, H)), rng.standard_normal((B, H))

    def loss(weights, inputs, carry):
        outputs, final = scan(
            cell, weights, inputs, mask, carry, reverse=reverse, hoist_input_projection=hoist, unroll=unroll
        )
        finals = jax.tree.leaves(final)
        return jnp.sum(outputs * out_w) + sum(jnp.sum(f * carry_w * (i + 1)) for i, f in enumerate(finals))

    return loss


def grads_of(loss, *args):
    """Jitted (one compilation per case, fast) value and gradients w.r.t. every argument."""
    return jax.jit(jax.value_and_grad(loss, argnums=tuple(range(len(args)))))(*args)


def run_and_grads(scan, cell, mask, reverse, hoist, weights, inputs, carry):
    """((outputs, final carry), gradients of loss_fn w.r.t. (weights, inputs, carry)), one jit."""
    loss = loss_fn(scan, cell, mask, reverse, hoist)

    def both(weights, inputs, carry):
        outputs = scan(cell, weights, inputs, mask, carry, reverse=reverse, hoist_input_projection=hoist)
        return outputs, jax.grad(loss, argnums=(0, 1, 2))(weights, inputs, carry)

    return jax.jit(both)(weights, inputs, carry)


def assert_trees_close(actual, expected, **tol):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        assert a.dtype == e.dtype and a.shape == e.shape
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(e, np.float32), **tol)


GRID = [  # every cell runs masked and not, forward and reverse, hoisted and not
    ("lstm", False, False, False),
    ("lstm", True, True, True),
    ("lstm", True, False, False),
    ("gru", False, True, True),
    ("gru", True, False, True),
    ("gru", True, True, False),
    ("gru_reset_before", True, False, False),
    ("gru_reset_before", True, True, True),
    ("gru_reset_before", False, False, True),
]


@pytest.mark.parametrize(
    "name,masked,reverse,hoist",
    GRID,
    ids=[
        f"{n}-{'lengths' if m else 'full'}-{'reverse' if r else 'forward'}{'-hoisted' if h else ''}"
        for n, m, r, h in GRID
    ],
)
def test_outputs_and_gradients_match_scan(name, masked, reverse, hoist):
    cell, weights, inputs, carry = setup(name)
    mask = recurrent.valid_mask(LENGTHS, T) if masked else None

    def run(scan):
        return run_and_grads(scan, cell, mask, reverse, hoist, weights, inputs, carry)

    (outputs, grads), (expected_outputs, expected_grads) = (run(fused.fused_scan_for(cell)), run(recurrent.scan_cell))
    assert_trees_close(outputs, expected_outputs, **TOL)
    assert_trees_close(grads, expected_grads, **TOL)
    for leaf in jax.tree.leaves(expected_grads):  # every gradient is exercised
        assert np.abs(np.asarray(leaf)).max() > 0


def test_hoisting_and_unroll_do_not_change_results():
    cell, weights, inputs, carry = setup("gru_reset_before", seed=1)
    mask = recurrent.valid_mask(LENGTHS, T)
    results = [
        grads_of(loss_fn(fused.fused_gru_reset_before_scan, cell, mask, True, hoist, unroll), weights, inputs, carry)
        for hoist, unroll in [(False, 1), (True, 3)]
    ]
    assert_trees_close(results[1], results[0], **TOL)


def test_gradients_without_chunking(monkeypatch):
    """One chunk covering the whole sequence (the layout used when T <= CHUNK_STEPS)."""
    monkeypatch.setattr(fused, "CHUNK_STEPS", 64)
    cell, weights, inputs, carry = setup("lstm", seed=2)
    mask = recurrent.valid_mask(LENGTHS, T)

    def grad(scan):
        return grads_of(loss_fn(scan, cell, mask, False, True), weights, inputs, carry)

    assert_trees_close(grad(fused.fused_lstm_scan), grad(recurrent.scan_cell), **TOL)


def test_padded_steps_output_zeros_and_keep_the_carry():
    cell, weights, inputs, carry = setup("lstm", seed=3)
    mask = recurrent.valid_mask(LENGTHS, T)
    outputs, final = fused.fused_lstm_scan(cell, weights, inputs, mask, carry, reverse=True)
    assert np.all(np.asarray(outputs)[1] == 0) and np.all(np.asarray(outputs)[2, 3:] == 0)
    np.testing.assert_array_equal(final.hidden[1], carry.hidden[1])
    np.testing.assert_array_equal(final.cell[1], carry.cell[1])


def test_finite_differences_float64():
    """Central differences on a tiny LSTM (float64) along random directions."""
    with jax.enable_x64(True):
        cell, weights, inputs, carry = setup("lstm", seed=4, dtype=jnp.float64)
        mask = recurrent.valid_mask(jnp.array([7, 0, 2, 5]), T)
        loss = jax.jit(loss_fn(fused.fused_lstm_scan, cell, mask, False, False))
        args = jax.tree.map(np.asarray, (weights, inputs, carry))
        _, grads = grads_of(loss, *args)
        rng, eps = np.random.default_rng(0), 1e-5
        for _ in range(3):
            direction = jax.tree.map(lambda a: rng.standard_normal(a.shape), args)

            def shifted(s):
                return float(loss(*jax.tree.map(lambda a, d: a + s * eps * d, args, direction)))

            numeric = (shifted(1.0) - shifted(-1.0)) / (2 * eps)
            analytic = sum(np.vdot(g, d) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
            np.testing.assert_allclose(analytic, numeric, rtol=1e-6)


def test_bfloat16_keeps_dtypes():
    cell, weights, inputs, carry = setup("gru", seed=5, dtype=jnp.bfloat16)
    mask = recurrent.valid_mask(LENGTHS, T)
    outputs, grads = run_and_grads(fused.fused_gru_scan, cell, mask, False, True, weights, inputs, carry)
    assert outputs[0].dtype == jnp.bfloat16 and outputs[1].dtype == jnp.bfloat16
    assert jax.tree.map(lambda g: g.dtype, grads) == jax.tree.map(lambda a: a.dtype, (weights, inputs, carry))
    assert all(np.isfinite(np.asarray(g, np.float32)).all() for g in jax.tree.leaves(grads))


def test_recurrent_stack_fused_equals_scan_under_jit():
    inputs = jax.random.normal(jax.random.key(0), (B, T, F))
    stacks = {
        impl: recurrent.RecurrentStack(
            cell="lstm", hidden_size=H, num_layers=2, bidirectional=True, implementation=impl
        )
        for impl in ("fused", "scan")
    }
    params = stacks["scan"].init(jax.random.key(1), inputs, LENGTHS)

    def grad(impl):
        def loss(params, inputs):
            outputs, carries = stacks[impl].apply(params, inputs, LENGTHS)
            last = recurrent.final_hidden(carries[-1], cells.LSTMCell)
            return jnp.sum(jnp.sin(outputs)) + jnp.sum(last**2)

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, inputs)

    fused_result, scan_result = grad("fused"), grad("scan")
    assert_trees_close(fused_result, scan_result, **TOL)
    assert np.abs(np.asarray(fused_result[1][1])).max() > 0  # d loss / d inputs


def test_fused_scan_for_dispatch():
    assert fused.fused_scan_for(cells.make_cell("lstm", H)) is fused.fused_lstm_scan
    assert fused.fused_scan_for(cells.make_cell("gru", H)) is fused.fused_gru_scan
    assert fused.fused_scan_for(cells.make_cell("gru_reset_before", H)) is fused.fused_gru_reset_before_scan
    for name in ("rnn", "relu_rnn", "irnn"):
        assert fused.fused_scan_for(cells.make_cell(name, H)) is None


def test_auto_uses_fused_and_hidden_size_is_checked():
    layer = recurrent.Recurrent(cells.make_cell("gru", H), implementation="auto")
    assert layer._recurrence() is fused.fused_gru_scan
    cell, weights, inputs, carry = setup("lstm")
    with pytest.raises(ValueError, match="hidden_size"):
        fused.fused_lstm_scan(cells.LSTMCell(H + 1), weights, inputs, None, carry)
