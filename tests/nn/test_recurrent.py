"""Recurrent / Bidirectional / RecurrentStack: masking, direction, stacking, errors.

Compilation dominates on CPU, so modules are applied through one cached
`jax.jit` per module (modules are hashable dataclasses) and random params are
built from `jax.eval_shape` instead of running `init`.
"""

import functools

import flax
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.nn import Bidirectional, LSTMCarry, Recurrent, RecurrentStack, make_cell

B, T, F, H = 4, 6, 3, 5
LENGTHS = np.array([6, 3, 0, 5], np.int32)
PAD = np.arange(T)[None, :] >= LENGTHS[:, None]  # [B, T] True on padded steps
MASK_CONFIGS = [("lstm", False), ("lstm", True), ("gru", True), ("rnn", True), ("gru_reset_before", False)]


def layer(cell="lstm", **kwargs):
    kwargs.setdefault("implementation", "scan")
    return Recurrent(make_cell(cell, H), **kwargs)


def bidirectional(cell="lstm", merge="concat"):
    return Bidirectional(layer(cell, parent=None), layer(cell, reverse=True, parent=None), merge=merge)


def inputs(seed=0, batch=B, time=T, features=F):
    return np.random.default_rng(seed).normal(size=(batch, time, features)).astype(np.float32)


@functools.cache
def _jitted(module, static):
    return jax.jit(functools.partial(module.apply, **dict(static)))


def apply(module, variables, *args, **static_kwargs):
    """module.apply through a jit cached per (module, static kwargs)."""
    return _jitted(module, tuple(sorted(static_kwargs.items())))(variables, *args)


@functools.cache
def _random_params(module, shape, seed):
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros(shape, jnp.float32))
    leaves, treedef = jax.tree.flatten(shapes)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(treedef, [jnp.asarray(rng.normal(0.0, 0.5, s.shape), s.dtype) for s in leaves])


def random_params(module, shape=(B, T, F), seed=0):
    """Variables for `module` with every entry random (non-trivial gates)."""
    return _random_params(module, shape, seed)


def with_garbage_padding(x, lengths, seed=1):
    """x with every padded step overwritten by large random values."""
    x = x.copy()
    garbage = 100.0 * np.random.default_rng(seed).normal(size=x.shape).astype(np.float32)
    pad = np.arange(x.shape[1])[None, :] >= lengths[:, None]
    x[pad] = garbage[pad]
    return x


def random_carry(cell, seed=3, batch=B):
    rng = np.random.default_rng(seed)
    if cell == "lstm":
        return LSTMCarry(
            jnp.asarray(rng.normal(size=(batch, H)), jnp.float32), jnp.asarray(rng.normal(size=(batch, H)), jnp.float32)
        )
    return jnp.asarray(rng.normal(size=(batch, H)), jnp.float32)


def hidden(carry):
    return carry.hidden if isinstance(carry, LSTMCarry) else carry


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(lambda u, v: np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol), a, b)


def row(tree, b):
    return jax.tree.map(lambda v: np.asarray(v)[b], tree)


def max_diff(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


# ----------------------------------------------------------------------------- masking


@functools.cache
def masked_runs(cell, reverse):
    """One layer run on clean and on garbage-padded inputs with LENGTHS and a random carry."""
    model = layer(cell, reverse=reverse)
    params = random_params(model)
    x = inputs()
    carry0 = random_carry(cell)
    clean = apply(model, params, jnp.asarray(x), jnp.asarray(LENGTHS), carry0)
    garbage = apply(model, params, jnp.asarray(with_garbage_padding(x, LENGTHS)), jnp.asarray(LENGTHS), carry0)
    return params, x, carry0, clean, garbage


@pytest.mark.parametrize("cell, reverse", MASK_CONFIGS)
def test_padding_values_never_change_valid_outputs_or_final_carry(cell, reverse):
    *_, (out_a, carry_a), (out_b, carry_b) = masked_runs(cell, reverse)
    np.testing.assert_array_equal(out_a, out_b)
    assert_trees_close(carry_a, carry_b, rtol=0, atol=0)


@pytest.mark.parametrize("cell, reverse", MASK_CONFIGS)
def test_padded_outputs_are_exactly_zero(cell, reverse):
    *_, (out, _), (out_garbage, _) = masked_runs(cell, reverse)
    for o in (np.asarray(out), np.asarray(out_garbage)):
        assert (o[PAD] == 0).all()
        assert (o[~PAD] != 0).all()  # valid steps hold real outputs


@pytest.mark.parametrize("cell, reverse", MASK_CONFIGS)
def test_length_zero_row_keeps_initial_carry(cell, reverse):
    _, _, carry0, (out, carry), _ = masked_runs(cell, reverse)
    empty = int(np.flatnonzero(LENGTHS == 0)[0])
    assert_trees_close(row(carry, empty), row(carry0, empty), rtol=0, atol=0)
    assert (np.asarray(out)[empty] == 0).all()
    for b in np.flatnonzero(LENGTHS > 0):  # every other row moved away from its initial carry
        assert max_diff(hidden(row(carry, b)), hidden(row(carry0, b))) > 1e-3


@pytest.mark.parametrize("cell, reverse", MASK_CONFIGS)
def test_layer_matches_cell_steps_over_each_rows_valid_part(cell, reverse):
    """Reference: the bare cell stepped in Python over steps 0..L-1 (or L-1..0 when reversed)."""
    params, x, carry0, (out, carry), _ = masked_runs(cell, reverse)
    cell_module = make_cell(cell, H)
    cell_params = {"params": params["params"]["cell"]}
    for b, length in enumerate(LENGTHS):
        state = jax.tree.map(lambda v: v[b : b + 1], carry0)
        for t in reversed(range(length)) if reverse else range(length):
            state, h = cell_module.apply(cell_params, state, jnp.asarray(x[b : b + 1, t]))
            np.testing.assert_allclose(np.asarray(out)[b, t], h[0], rtol=1e-5, atol=1e-6)
        assert_trees_close(row(carry, b), row(state, 0))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_reverse_layer_equals_forward_layer_on_flipped_valid_part(cell):
    forward, backward = layer(cell), layer(cell, reverse=True)
    params = random_params(forward)
    x = inputs()
    flipped = x.copy()
    for b, length in enumerate(LENGTHS):
        flipped[b, :length] = x[b, :length][::-1]
    lengths = jnp.asarray(LENGTHS)
    out_r, carry_r = apply(backward, params, jnp.asarray(x), lengths)
    out_f, carry_f = apply(forward, params, jnp.asarray(flipped), lengths)
    for b, length in enumerate(LENGTHS):
        np.testing.assert_allclose(
            np.asarray(out_r)[b, :length], np.asarray(out_f)[b, :length][::-1], rtol=1e-5, atol=1e-6
        )
    assert_trees_close(carry_r, carry_f)
    assert max_diff(out_r, apply(forward, params, jnp.asarray(x), lengths)[0]) > 1e-3  # direction matters


def test_masked_input_gradients_are_zero_on_padding():
    model = layer("gru")
    params = random_params(model)

    @jax.jit
    def grad(x):
        def loss(x):
            out, carry = model.apply(params, x, jnp.asarray(LENGTHS))
            return (out**2).sum() + (carry**2).sum()

        return jax.grad(loss)(x)

    g = np.asarray(grad(jnp.asarray(inputs())))
    assert (g[PAD] == 0).all()
    assert (np.abs(g[~PAD]).sum(-1) > 0).all()


def test_eager_call_matches_jit_with_traced_lengths():
    model = layer("lstm", reverse=True)
    _, x, carry0, jitted, _ = masked_runs("lstm", True)
    eager = model.apply(random_params(model), jnp.asarray(x), jnp.asarray(LENGTHS), carry0)
    assert_trees_close(eager, jitted)


# ----------------------------------------------------------------------------- bidirectional


@pytest.mark.parametrize("cell, merge", [("lstm", "concat"), ("gru", "sum")])
def test_bidirectional_equals_forward_and_reverse_layers_run_separately(cell, merge):
    model = bidirectional(cell, merge)
    params = random_params(model)["params"]
    assert set(params) == {"forward_layer", "backward_layer"}
    x, lengths = jnp.asarray(inputs()), jnp.asarray(LENGTHS)
    carries = random_carry(cell, 1), random_carry(cell, 2)
    out, (carry_f, carry_b) = apply(model, {"params": params}, x, lengths, carries)
    want_f, want_carry_f = apply(layer(cell), {"params": params["forward_layer"]}, x, lengths, carries[0])
    want_b, want_carry_b = apply(
        layer(cell, reverse=True), {"params": params["backward_layer"]}, x, lengths, carries[1]
    )
    assert max_diff(want_f, want_b) > 1e-3  # the two directions really differ
    if merge == "concat":
        assert out.shape == (B, T, 2 * H)
        np.testing.assert_allclose(out[..., :H], want_f, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(out[..., H:], want_b, rtol=1e-6, atol=1e-7)
    else:
        assert out.shape == (B, T, H)
        np.testing.assert_allclose(out, np.asarray(want_f) + np.asarray(want_b), rtol=1e-6, atol=1e-6)
    assert_trees_close(carry_f, want_carry_f)
    assert_trees_close(carry_b, want_carry_b)


def test_bidirectional_rejects_unknown_merge():
    with pytest.raises(ValueError, match=r"^Bidirectional.merge must be one of concat, sum, got 'mul'($|\n)"):
        bidirectional("gru", merge="mul").init(jax.random.key(0), jnp.zeros((B, T, F)))


def test_bidirectional_rejects_wrong_directions():
    model = Bidirectional(layer("gru", parent=None), layer("gru", parent=None))
    with pytest.raises(ValueError, match="backward_layer.reverse=True"):
        model.init(jax.random.key(0), jnp.zeros((B, T, F)))


# ----------------------------------------------------------------------------- stacks


def stack(cell="gru", **kwargs):
    return RecurrentStack(cell, hidden_size=H, implementation="scan", **kwargs)


@pytest.mark.parametrize("bidir, merge, width", [(False, "concat", H), (True, "concat", 2 * H), (True, "sum", H)])
def test_stack_output_and_param_shapes(bidir, merge, width):
    model = stack(num_layers=3, bidirectional=bidir, merge=merge)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((B, T, F)))["params"]
    assert set(shapes) == {"layer_0", "layer_1", "layer_2"}
    for depth in range(3):
        directions = (
            [shapes[f"layer_{depth}"][d]["cell"] for d in ("forward_layer", "backward_layer")]
            if bidir
            else [shapes[f"layer_{depth}"]["cell"]]
        )
        for cell_params in directions:
            assert cell_params["input_kernel"].shape == ((F if depth == 0 else width), 3 * H)
            assert cell_params["recurrent_kernel"].shape == (H, 3 * H)
    out, carries = jax.eval_shape(model.apply, random_params(model), jnp.zeros((B, T, F)), jnp.asarray(LENGTHS))
    assert out.shape == (B, T, width)
    assert len(carries) == 3
    for carry in carries:
        if bidir:
            assert len(carry) == 2 and all(c.shape == (B, H) for c in carry)
        else:
            assert carry.shape == (B, H)


@pytest.mark.parametrize("bidir", [False, True])
def test_stack_second_layer_consumes_first_layer_outputs(bidir):
    model = stack("lstm", num_layers=2, bidirectional=bidir)
    params = random_params(model)["params"]
    x, lengths = jnp.asarray(inputs()), jnp.asarray(LENGTHS)
    out, carries = apply(model, {"params": params}, x, lengths)
    single = bidirectional("lstm") if bidir else layer("lstm")
    y1, c1 = apply(single, {"params": params["layer_0"]}, x, lengths)
    y2, c2 = single.apply({"params": params["layer_1"]}, y1, lengths)
    np.testing.assert_allclose(out, y2, rtol=1e-5, atol=1e-6)
    assert_trees_close(carries, (c1, c2))
    assert max_diff(out, y1) > 1e-3  # layer 1's own output is not the stack's output


def test_stack_uses_per_layer_initial_carries():
    model = stack(num_layers=2)
    params = random_params(model)["params"]
    x = jnp.asarray(inputs())
    c0, c1 = random_carry("gru", 1), random_carry("gru", 2)
    out, _ = apply(model, {"params": params}, x, None, (c0, c1))
    y1, _ = apply(layer("gru"), {"params": params["layer_0"]}, x, None, c0)
    y2, _ = apply(layer("gru"), {"params": params["layer_1"]}, y1, None, c1)
    np.testing.assert_allclose(out, y2, rtol=1e-5, atol=1e-6)
    assert max_diff(out, apply(model, {"params": params}, x)[0]) > 1e-3


def test_stack_rejects_wrong_number_of_initial_carries():
    model = stack(num_layers=2)
    with pytest.raises(ValueError, match=r"one entry per layer \(2\), got 1"):
        model.apply(random_params(model), jnp.asarray(inputs()), None, (random_carry("gru"),))


def test_inter_layer_dropout_only_when_not_deterministic():
    model = stack(num_layers=2, dropout_rate=0.5)
    variables = random_params(stack(num_layers=2))
    params = variables["params"]
    x, lengths = jnp.asarray(inputs()), jnp.asarray(LENGTHS)
    plain_out, _ = apply(stack(num_layers=2), variables, x, lengths)
    det, _ = apply(model, variables, x, lengths, deterministic=True)
    np.testing.assert_array_equal(det, plain_out)

    @jax.jit
    def train(key):
        return model.apply(
            variables,
            x,
            lengths,
            deterministic=False,
            rngs={"dropout": key},
            capture_intermediates=True,
            mutable=["intermediates"],
        )

    (train_a, _), state = train(jax.random.key(1))
    (train_b, _), _ = train(jax.random.key(2))
    assert max_diff(train_a, det) > 1e-3
    assert max_diff(train_a, train_b) > 1e-3

    # The dropped tensor is layer 0's output with entries zeroed or scaled by
    # 1 / (1 - rate), and layer 1 consumed exactly that tensor.
    y1 = np.asarray(apply(layer("gru"), {"params": params["layer_0"]}, x, lengths)[0])
    dropped = np.asarray(state["intermediates"]["Dropout_0"]["__call__"][0])
    zeroed = dropped == 0
    valid = np.broadcast_to(~PAD[..., None], y1.shape)
    assert 0.2 < zeroed[valid].mean() < 0.8
    np.testing.assert_allclose(dropped[~zeroed], 2.0 * y1[~zeroed], rtol=1e-6)
    y2, _ = apply(layer("gru"), {"params": params["layer_1"]}, jnp.asarray(dropped), lengths)
    np.testing.assert_allclose(train_a, y2, rtol=1e-5, atol=1e-6)


def test_dropout_never_touches_the_last_layer_outputs():
    model = stack(num_layers=1, dropout_rate=0.9)
    variables = random_params(model)
    x = jnp.asarray(inputs())
    det, _ = apply(model, variables, x)
    train, _ = model.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
    np.testing.assert_allclose(det, train, rtol=1e-6, atol=1e-7)
    assert (np.asarray(train) != 0).all()


# ----------------------------------------------------------------------------- initial carries


def test_learned_initial_carry_is_a_param_and_is_used():
    cell = "lstm"  # two carry leaves: hidden and cell state
    model = layer(cell, learn_initial_carry=True)
    x = jnp.asarray(inputs())
    params = jax.jit(model.init)(jax.random.key(0), x)["params"]
    leaves = 2 if cell == "lstm" else 1
    names = [f"initial_carry_{i}" for i in range(leaves)]
    assert set(params) == {"cell", *names}
    for name in names:
        np.testing.assert_array_equal(params[name], np.zeros(H))  # starts from zeros
    plain = {"params": {"cell": params["cell"]}}
    np.testing.assert_allclose(apply(model, {"params": params}, x)[0], apply(layer(cell), plain, x)[0], rtol=1e-6)
    # A non-zero learned carry acts like the same vector supplied to every row.
    rng = np.random.default_rng(5)
    learned = {name: jnp.asarray(rng.normal(size=H), jnp.float32) for name in names}
    out, _ = apply(model, {"params": {**params, **learned}}, x)
    rows = [jnp.broadcast_to(learned[name], (B, H)) for name in names]
    supplied = LSTMCarry(*rows) if cell == "lstm" else rows[0]
    want, _ = apply(layer(cell), plain, x, None, supplied)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    assert max_diff(out, apply(layer(cell), plain, x)[0]) > 1e-3
    grads = jax.jit(jax.grad(lambda p: model.apply({"params": p}, x)[0].sum()))(params)
    assert all(np.abs(grads[name]).sum() > 0 for name in names)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_user_supplied_initial_carry_is_the_first_step_state(cell):
    model = layer(cell)
    variables = random_params(model)
    x = jnp.asarray(inputs())
    carry0 = random_carry(cell)
    out, _ = apply(model, variables, x, None, carry0)
    _, h1 = make_cell(cell, H).apply({"params": variables["params"]["cell"]}, carry0, x[:, 0])
    np.testing.assert_allclose(out[:, 0], h1, rtol=1e-5, atol=1e-6)
    assert max_diff(out, apply(model, variables, x)[0]) > 1e-3


# ----------------------------------------------------------------------------- hoisting, gradients


@pytest.mark.parametrize("cell, reverse", [("lstm", True), ("gru", False), ("gru_reset_before", True)])
def test_hoisted_input_projection_matches_per_step_projection(cell, reverse):
    x, lengths = jnp.asarray(inputs()), jnp.asarray(LENGTHS)
    hoisted = layer(cell, reverse=reverse, hoist_input_projection=True)
    per_step = layer(cell, reverse=reverse, hoist_input_projection=False)
    params = random_params(hoisted)
    carry0 = random_carry(cell)
    assert_trees_close(apply(hoisted, params, x, lengths, carry0), apply(per_step, params, x, lengths, carry0))


@pytest.mark.parametrize("cell, reverse", [("lstm", False), ("gru_reset_before", True)])
def test_scan_gradients_match_central_differences(cell, reverse):
    with jax.enable_x64(True):
        model = layer(cell, reverse=reverse)
        x = jnp.asarray(inputs(batch=2, time=4), jnp.float64)
        lengths = jnp.asarray([4, 2], jnp.int32)
        params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), random_params(model, (2, 4, F))["params"])
        target = jnp.asarray(np.random.default_rng(7).normal(size=(2, 4, H)))

        def loss(params, x):
            out, carry = model.apply({"params": params}, x, lengths)
            return ((out - target) ** 2).sum() + (hidden(carry) ** 3).sum()

        loss_fn = jax.jit(loss)
        grads_p, grads_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
        assert grads_p["cell"]["recurrent_kernel"].dtype == jnp.float64
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        flat_grads = jax.flatten_util.ravel_pytree(grads_p)[0]
        eps = 1e-6
        rng = np.random.default_rng(8)
        for _ in range(3):  # directional derivatives along random directions
            d = jnp.asarray(rng.normal(size=flat.shape))
            fd = (loss_fn(unravel(flat + eps * d), x) - loss_fn(unravel(flat - eps * d), x)) / (2 * eps)
            np.testing.assert_allclose(jnp.dot(flat_grads, d), fd, rtol=1e-6, atol=1e-8)
            dx = jnp.asarray(rng.normal(size=x.shape))
            fd_x = (loss_fn(params, x + eps * dx) - loss_fn(params, x - eps * dx)) / (2 * eps)
            np.testing.assert_allclose(jnp.vdot(grads_x, dx), fd_x, rtol=1e-6, atol=1e-8)


# ----------------------------------------------------------------------------- bad inputs


@pytest.fixture(scope="module")
def lstm_setup():
    model = layer("lstm")
    return model, random_params(model), jnp.asarray(inputs())


def test_integer_inputs_are_rejected(lstm_setup):
    model, params, _ = lstm_setup
    with pytest.raises(TypeError, match="floating-point inputs, got dtype int32.*Embed"):
        model.apply(params, jnp.ones((B, T, F), jnp.int32))


@pytest.mark.parametrize("shape", [(T, F), (B, T, F, 1)])
def test_wrong_input_ndim_is_rejected(lstm_setup, shape):
    model, params, _ = lstm_setup
    with pytest.raises(ValueError, match=r"inputs of shape \[batch, time, features\]; got shape"):
        model.apply(params, jnp.ones(shape))


def test_lengths_longer_than_sequence_are_rejected(lstm_setup):
    model, params, x = lstm_setup
    with pytest.raises(ValueError, match=rf"lengths\[\d+\] = 7 is outside \[0, {T}\]"):
        model.apply(params, x, jnp.asarray([6, 7, 1, 0]))


def test_negative_lengths_are_rejected(lstm_setup):
    model, params, x = lstm_setup
    with pytest.raises(ValueError, match=r"lengths\[\d+\] = -1 is outside \[0, \d+\]"):
        model.apply(params, x, jnp.asarray([6, -1, 1, 0]))


@pytest.mark.parametrize("lengths", [np.array([3, 3], np.int32), np.full((B, 1), 3, np.int32)])
def test_lengths_of_wrong_shape_are_rejected(lstm_setup, lengths):
    model, params, x = lstm_setup
    with pytest.raises(ValueError, match=rf"lengths must have shape \[batch\]=\({B},\)"):
        model.apply(params, x, jnp.asarray(lengths))


def test_float_lengths_are_rejected(lstm_setup):
    model, params, x = lstm_setup
    with pytest.raises(TypeError, match="lengths must be integers"):
        model.apply(params, x, jnp.full((B,), 3.0))


@pytest.mark.parametrize(
    "carry",
    [
        LSTMCarry(jnp.zeros((B, H + 1)), jnp.zeros((B, H + 1))),
        LSTMCarry(jnp.zeros((B + 1, H)), jnp.zeros((B + 1, H))),
        jnp.zeros((B, H)),  # a GRU-style carry handed to an LSTM
    ],
    ids=["wrong-hidden", "wrong-batch", "wrong-structure"],
)
def test_wrong_initial_carry_is_rejected(lstm_setup, carry):
    model, params, x = lstm_setup
    with pytest.raises(ValueError, match="initial_carry for LSTMCell must have shapes"):
        model.apply(params, x, None, carry)


def test_feature_size_different_from_params_is_rejected(lstm_setup):
    model, params, _ = lstm_setup
    with pytest.raises(flax.errors.ScopeParamShapeError, match=r'"input_kernel".*\(4, 20\).*\(3, 20\)'):
        model.apply(params, jnp.ones((B, T, F + 1)))


def test_unknown_implementation_is_rejected():
    with pytest.raises(ValueError, match="implementation must be one of auto, scan, fused, parallel, got 'cuda'"):
        layer("gru", implementation="cuda").init(jax.random.key(0), jnp.zeros((B, T, F)))


def test_lengths_as_a_python_list_and_carry_as_a_plain_tuple_are_accepted():
    layer = Recurrent(make_cell("lstm", 3), implementation="scan")
    x = jax.random.normal(jax.random.key(0), (2, 4, 2))
    h0 = jax.random.normal(jax.random.key(1), (2, 3))
    c0 = jax.random.normal(jax.random.key(2), (2, 3))
    variables = layer.init(jax.random.key(0), x)
    expected = layer.apply(variables, x, jnp.array([4, 2]), LSTMCarry(h0, c0))
    got = layer.apply(variables, x, [4, 2], (h0, c0))
    jax.tree.map(np.testing.assert_array_equal, got, expected)
