"""minGRU / minLSTM: parallel scan == sequential step == numpy paper equations."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from seqjax import config as config_lib
from seqjax import parallel, training
from seqjax.nn import Recurrent, RecurrentStack, make_cell, minimal, recurrent

B, T, F, H = 4, 7, 3, 5
LENGTHS = np.array([7, 3, 0, 5], np.int32)
MASK = np.arange(T)[None, :] < LENGTHS[:, None]  # [B, T] True on valid steps
CELLS = ("mingru", "minlstm")


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_g(x):
    return np.where(x >= 0, x + 0.5, sigmoid(x))


def np_min_rnn(name, params, xs, mask, h, reverse):
    """The paper's sequential equations in numpy: xs [B, T, F] -> ([B, T, H], h)."""
    outs = np.zeros(xs.shape[:2] + (H,), np.float64)
    steps = range(xs.shape[1])
    for t in reversed(steps) if reverse else steps:
        k = xs[:, t] @ params["input_kernel"] + params["bias"]
        if name == "mingru":
            k_z, k_h = np.split(k, 2, axis=-1)
            z = sigmoid(k_z)
            new = (1 - z) * h + z * np_g(k_h)
        else:
            k_f, k_i, k_h = np.split(k, 3, axis=-1)
            f, i = sigmoid(k_f), sigmoid(k_i)
            new = f / (f + i) * h + i / (f + i) * np_g(k_h)
        valid = mask[:, t, None]
        h = np.where(valid, new, h)
        outs[:, t] = np.where(valid, new, 0.0)
    return outs, h


def setup(name, seed=0):
    """A cell, random weights (scaled so gates vary), inputs and a random initial carry."""
    cell = make_cell(name, H)
    rng = np.random.default_rng(seed)
    weights = {
        "input_kernel": rng.normal(size=(F, cell.num_gates * H)).astype(np.float32),
        "bias": rng.normal(size=(cell.num_gates * H,)).astype(np.float32),
    }
    xs = rng.normal(size=(B, T, F)).astype(np.float32)
    h0 = rng.normal(size=(B, H)).astype(np.float32)
    return cell, weights, xs, h0


@functools.partial(jax.jit, static_argnums=(0, 1, 6))
def run(fn, cell, weights, xs, mask, h0, reverse=False):
    return fn(cell, weights, xs, mask, h0, reverse=reverse)


@pytest.mark.parametrize("name", CELLS)
def test_cells_declare_input_kernel_and_bias_only(name):
    cell = make_cell(name, H)
    params = cell.init(jax.random.key(0), F, method=cell.weights)["params"]
    assert {k: v.shape for k, v in params.items()} == {
        "input_kernel": (F, cell.num_gates * H),
        "bias": (cell.num_gates * H,),
    }


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mask", [None, MASK], ids=["full", "padded"])
def test_parallel_and_sequential_match_the_paper_equations(name, reverse, mask):
    cell, weights, xs, h0 = setup(name)
    np_mask = np.ones((B, T), bool) if mask is None else mask
    want_out, want_carry = np_min_rnn(name, weights, xs.astype(np.float64), np_mask, h0, reverse)
    for fn in (recurrent.scan_cell, minimal.parallel_scan):
        out, carry = run(fn, cell, weights, xs, mask, h0, reverse)
        np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-5, err_msg=fn.__name__)
        np.testing.assert_allclose(carry, want_carry, rtol=1e-5, atol=1e-5, err_msg=fn.__name__)


@pytest.mark.parametrize("name", CELLS)
def test_padded_steps_leave_carry_unchanged_and_output_zero(name):
    cell, weights, xs, h0 = setup(name)
    out, carry = run(minimal.parallel_scan, cell, weights, xs, MASK, h0)
    assert np.all(np.asarray(out)[~MASK] == 0.0)
    np.testing.assert_array_equal(carry[2], h0[2])  # length-0 row: the initial carry
    short, short_carry = run(minimal.parallel_scan, cell, weights, xs[1:2, :3], None, h0[1:2])
    np.testing.assert_allclose(out[1, :3], short[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(carry[1], short_carry[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", CELLS)
def test_parallel_and_sequential_gradients_match(name):
    cell, weights, xs, h0 = setup(name, seed=1)
    cotangent = np.random.default_rng(2).normal(size=(2, B, T, H)).astype(np.float32)

    def loss(fn, weights, xs, h0):
        total = 0.0
        for direction, reverse in enumerate((False, True)):
            out, carry = fn(cell, weights, xs, MASK, h0, reverse=reverse)
            total += jnp.sum(out * cotangent[direction]) + jnp.sum(jnp.sin(carry))
        return total

    def grad(fn):
        return jax.jit(jax.grad(functools.partial(loss, fn), argnums=(0, 1, 2)))(weights, xs, h0)

    sequential, parallel_grads = grad(recurrent.scan_cell), grad(minimal.parallel_scan)
    for a, b in zip(jax.tree.leaves(sequential), jax.tree.leaves(parallel_grads)):
        assert np.all(np.isfinite(b))
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_long_sequences_stay_finite_and_match():
    cell, weights, _, h0 = setup("mingru")
    xs = np.random.default_rng(3).normal(size=(2, 1000, F)).astype(np.float32)
    out_seq, carry_seq = run(recurrent.scan_cell, cell, weights, xs, None, h0[:2])
    out_par, carry_par = run(minimal.parallel_scan, cell, weights, xs, None, h0[:2])
    assert np.all(np.isfinite(out_par))
    np.testing.assert_allclose(out_par, out_seq, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(carry_par, carry_seq, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "implementation,expected", [("parallel", minimal.parallel_scan), ("scan", recurrent.scan_cell)]
)
def test_implementation_picks_the_recurrence(implementation, expected):
    assert Recurrent(make_cell("mingru", H), implementation=implementation)._recurrence() is expected


def test_auto_picks_the_sequential_scan_on_cpu_and_the_parallel_one_elsewhere(monkeypatch):
    layer = Recurrent(make_cell("mingru", H))
    assert layer._recurrence() is recurrent.scan_cell  # the tests run on CPU
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert layer._recurrence() is minimal.parallel_scan


def test_parallel_implementation_is_refused_for_a_nonlinear_cell():
    with pytest.raises(ValueError, match="no parallel scan for LSTMCell"):
        Recurrent(make_cell("lstm", H), implementation="parallel")._recurrence()


@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_stack_parallel_equals_scan(bidirectional):
    xs = setup("mingru")[2]
    stacks = [
        RecurrentStack(cell="mingru", hidden_size=H, num_layers=2, bidirectional=bidirectional, implementation=impl)
        for impl in ("parallel", "scan")
    ]
    params = stacks[0].init(jax.random.key(0), xs, LENGTHS)
    (out_par, carries_par), (out_seq, carries_seq) = (s.apply(params, xs, LENGTHS) for s in stacks)
    assert out_par.shape == (B, T, 2 * H if bidirectional else H)
    np.testing.assert_allclose(out_par, out_seq, rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), carries_par, carries_seq)


def test_trainer_runs_two_steps_with_a_mingru_config():
    config = default.get_config("smoke")
    config.model.cell = "mingru"
    config_lib.validate(config)
    trainer = training.Trainer(config, parallel.make_mesh(jax.devices()[:1]))
    state = trainer.init_state()
    losses = []
    for _ in range(2):
        state, metrics = trainer.step(state)
        losses.append(float(metrics["loss"]))
    assert np.all(np.isfinite(losses))
