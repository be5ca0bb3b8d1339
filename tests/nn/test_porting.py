"""Weight import from Keras and PyTorch: seqjax layers reproduce the source layers.

Keras layers are built and run directly. PyTorch layers are checked against an
independent numpy implementation of PyTorch's documented RNN/LSTM/GRU
equations on random numpy state_dicts (torch not needed); when torch is
installed, one extra test compares against the real torch modules.
"""

import os
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from seqjax.nn import (
    Bidirectional,
    LSTMCarry,
    Recurrent,
    RecurrentStack,
    check_params_compatible,  # noqa: E402
    import_keras_layer,
    import_keras_stack,
    import_torch_rnn,
    keras_layer_config,
    keras_stack_config,
    make_cell,
    torch_rnn_config,
)

keras = pytest.importorskip("keras")

B, T, F, H = 3, 5, 4, 3
LENGTHS = np.array([5, 2, 4], np.int32)
VALID = np.arange(T)[None, :] < LENGTHS[:, None]  # [B, T]


def inputs(seed=0, features=F):
    return np.random.default_rng(seed).normal(size=(B, T, features)).astype(np.float32)


def randomize(keras_layer, seed):
    """Random weights everywhere (Keras initialises biases to zero, which would hide bias bugs)."""
    rng = np.random.default_rng(seed)
    keras_layer.set_weights([rng.normal(0.0, 0.5, w.shape).astype(np.float32) for w in keras_layer.get_weights()])


def build(keras_layer, x, seed=1, **call_kwargs):
    """Builds `keras_layer` on x, randomises its weights, returns its outputs as numpy."""
    keras_layer(x[:, :1])
    randomize(keras_layer, seed)
    out = keras_layer(x, **call_kwargs)
    return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else np.asarray(out)


def seqjax_layer(config):
    cell = make_cell(config["cell"], config["hidden_size"])
    if config["bidirectional"]:
        return Bidirectional(
            Recurrent(cell.clone(parent=None), implementation="scan", parent=None),
            Recurrent(cell.clone(parent=None), reverse=True, implementation="scan", parent=None),
            merge=config["merge"],
        )
    return Recurrent(cell, reverse=config["reverse"], implementation="scan")


def close(a, b, tol=2e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def carry_list(carry):
    """seqjax carry -> Keras state list ([h] or [h, c])."""
    return [carry.hidden, carry.cell] if isinstance(carry, LSTMCarry) else [carry]


# ----------------------------------------------------------------------------- Keras


KERAS_SINGLE = [
    ("SimpleRNN", {"activation": "tanh"}, "rnn"),
    ("SimpleRNN", {"activation": "relu"}, "relu_rnn"),
    ("LSTM", {}, "lstm"),
    ("GRU", {"reset_after": True}, "gru"),
    ("GRU", {"reset_after": False}, "gru_reset_before"),
]


@pytest.mark.parametrize("cls, kwargs, cell", KERAS_SINGLE, ids=[c for *_, c in KERAS_SINGLE])
def test_keras_layer_outputs_and_states_are_reproduced(cls, kwargs, cell):
    x = inputs()
    keras_layer = getattr(keras.layers, cls)(H, return_sequences=True, return_state=True, **kwargs)
    out, *states = build(keras_layer, x)
    config = keras_layer_config(keras_layer)
    assert config == {
        "cell": cell,
        "hidden_size": H,
        "bidirectional": False,
        "merge": "concat",
        "reverse": False,
        "input_size": F,
    }
    params = import_keras_layer(keras_layer)
    got, carry = seqjax_layer(config).apply({"params": params}, jnp.asarray(x))
    close(got, out)
    for mine, theirs in zip(carry_list(carry), states, strict=True):
        close(mine, theirs)
    # The weights list gives the same params as the layer object.
    from_list = import_keras_layer(keras_layer.get_weights())
    jax.tree.map(np.testing.assert_array_equal, from_list, params)


def test_keras_gru_reset_after_bias_rows_map_to_input_and_recurrent_bias():
    x = inputs()
    keras_layer = keras.layers.GRU(H, reset_after=True)
    build(keras_layer, x)
    bias = keras_layer.get_weights()[2]
    assert bias.shape == (2, 3 * H)
    params = import_keras_layer(keras_layer)["cell"]
    np.testing.assert_array_equal(params["input_bias"], bias[0])
    np.testing.assert_array_equal(params["recurrent_bias"], bias[1])


def test_keras_go_backwards_maps_to_reverse_layer():
    x = inputs()
    keras_layer = keras.layers.LSTM(H, return_sequences=True, return_state=True, go_backwards=True)
    out, h, c = build(keras_layer, x)
    config = keras_layer_config(keras_layer)
    assert config["reverse"] is True
    got, carry = seqjax_layer(config).apply({"params": import_keras_layer(keras_layer)}, jnp.asarray(x))
    close(np.asarray(got)[:, ::-1], out)  # Keras returns go_backwards outputs in processing order
    close(carry.hidden, h)
    close(carry.cell, c)


@pytest.mark.parametrize("cls, merge", [("LSTM", "concat"), ("GRU", "sum")])
def test_keras_bidirectional_is_reproduced(cls, merge):
    x = inputs()
    wrapper = keras.layers.Bidirectional(
        getattr(keras.layers, cls)(H, return_sequences=True, return_state=True), merge_mode=merge
    )
    out, *states = build(wrapper, x)
    config = keras_layer_config(wrapper)
    assert (config["bidirectional"], config["merge"], config["cell"]) == (True, merge, cls.lower())
    params = import_keras_layer(wrapper)
    assert set(params) == {"forward_layer", "backward_layer"}
    got, (carry_f, carry_b) = seqjax_layer(config).apply({"params": params}, jnp.asarray(x))
    assert got.shape == out.shape == (B, T, 2 * H if merge == "concat" else H)
    close(got, out)
    for mine, theirs in zip(carry_list(carry_f) + carry_list(carry_b), states, strict=True):
        close(mine, theirs)
    jax.tree.map(np.testing.assert_array_equal, import_keras_layer(wrapper.get_weights()), params)


@pytest.mark.parametrize("kind", ["lstm", "bidirectional_gru"])
def test_keras_mask_matches_seqjax_lengths_on_post_padded_inputs(kind):
    x = inputs()
    if kind == "lstm":
        keras_layer = keras.layers.LSTM(H, return_sequences=True, return_state=True)
    else:
        keras_layer = keras.layers.Bidirectional(keras.layers.GRU(H, return_sequences=True, return_state=True))
    out, *states = build(keras_layer, x, mask=VALID)
    model = seqjax_layer(keras_layer_config(keras_layer))
    got, carry = model.apply({"params": import_keras_layer(keras_layer)}, jnp.asarray(x), jnp.asarray(LENGTHS))
    got = np.asarray(got)
    close(got[VALID], out[VALID])
    assert (got[~VALID] == 0).all()
    carries = carry_list(carry) if kind == "lstm" else carry_list(carry[0]) + carry_list(carry[1])
    for mine, theirs in zip(carries, states, strict=True):
        close(mine, theirs)


@pytest.mark.parametrize("bidir", [False, True])
def test_keras_stack_of_return_sequences_layers_is_reproduced(bidir):
    x = inputs()
    make = lambda: keras.layers.GRU(H, return_sequences=True, reset_after=False)  # noqa: E731
    layers = [keras.layers.Bidirectional(make()) if bidir else make() for _ in range(2)]
    y = x
    for seed, keras_layer in enumerate(layers):
        keras_layer(y[:, :1])
        randomize(keras_layer, seed)
        y = np.asarray(keras_layer(y))
    config = keras_stack_config(layers)
    assert config == {
        "cell": "gru_reset_before",
        "hidden_size": H,
        "num_layers": 2,
        "bidirectional": bidir,
        "merge": "concat",
    }
    params = import_keras_stack(layers)
    model = RecurrentStack(**config, implementation="scan")
    check_params_compatible(params, jax.eval_shape(model.init, jax.random.key(0), jnp.asarray(x)))
    got, _ = model.apply({"params": params}, jnp.asarray(x))
    close(got, y)
    # A Sequential of the same layers imports identically.
    sequential = keras.Sequential([keras.Input((T, F)), *layers])
    jax.tree.map(np.testing.assert_array_equal, import_keras_stack(sequential), params)


# Keras error cases (cheap: tiny layers built on a single step).


def built(keras_layer, features=F):
    keras_layer(np.zeros((1, 1, features), np.float32))
    return keras_layer


def test_keras_unknown_layer_type_is_rejected():
    with pytest.raises(TypeError, match="unsupported Keras layer type 'Dense'"):
        import_keras_layer(keras.layers.Dense(3))


def test_keras_unbuilt_layer_is_rejected():
    with pytest.raises(ValueError, match="has no weights yet"):
        import_keras_layer(keras.layers.LSTM(H))


def test_keras_unsupported_activation_is_rejected():
    with pytest.raises(ValueError, match="activation 'sigmoid'.*only 'tanh' and 'relu'"):
        import_keras_layer(built(keras.layers.SimpleRNN(H, activation="sigmoid")))
    with pytest.raises(ValueError, match="recurrent_activation='hard_sigmoid'"):
        import_keras_layer(built(keras.layers.LSTM(H, recurrent_activation="hard_sigmoid")))


def test_keras_unsupported_merge_mode_is_rejected():
    with pytest.raises(ValueError, match="merge_mode='mul'"):
        import_keras_layer(built(keras.layers.Bidirectional(keras.layers.GRU(H), merge_mode="mul")))


def test_keras_weights_of_wrong_shape_are_rejected():
    kernel, recurrent, bias = built(keras.layers.GRU(H)).get_weights()
    with pytest.raises(ValueError, match=r"GRU \(reset_after=True\) bias must have shape \(2, 9\).*got \(2, 6\)"):
        import_keras_layer([kernel, recurrent, bias[:, :6]])
    with pytest.raises(ValueError, match=r"mismatched hidden size: kernel shape \(4, 12\)"):
        import_keras_layer([np.zeros((F, 12), np.float32), recurrent, bias])
    with pytest.raises(ValueError, match=r"recurrent_kernel shape \(3, 6\) has 2 gates"):
        import_keras_layer([kernel[:, :6], recurrent[:, :6], bias[0, :6]])
    with pytest.raises(ValueError, match=r"cell 'lstm' has 4 gates but recurrent_kernel shape \(3, 9\)"):
        import_keras_layer([kernel, recurrent, bias], cell="lstm")
    with pytest.raises(ValueError, match="expected \\[kernel, recurrent_kernel, bias\\].*got 1 arrays"):
        import_keras_layer([kernel])
    with pytest.raises(TypeError, match="must be floating point"):
        import_keras_layer([kernel.astype(np.int32), recurrent, bias])


def test_keras_bias_free_weights_get_zero_bias():
    kernel, recurrent = built(keras.layers.LSTM(H, use_bias=False)).get_weights()
    params = import_keras_layer([kernel, recurrent])["cell"]
    np.testing.assert_array_equal(params["bias"], np.zeros(4 * H))
    with pytest.raises(ValueError, match="GRU without bias is ambiguous"):
        import_keras_layer(built(keras.layers.GRU(H, use_bias=False)).get_weights())


def test_keras_stack_with_mismatched_hidden_size_is_rejected():
    first = built(keras.layers.LSTM(H, return_sequences=True))
    second = built(keras.layers.LSTM(H + 1), features=H)
    with pytest.raises(
        ValueError,
        match=r"mismatched hidden size: layer 0 has hidden_size=3 but layer 1 "
        r"has hidden_size=4",
    ):
        import_keras_stack([first, second])


def test_keras_stack_with_unchained_layers_is_rejected():
    first = built(keras.layers.GRU(H, return_sequences=True))
    second = built(keras.layers.GRU(H), features=F)  # expects F inputs, but layer 0 outputs H
    with pytest.raises(ValueError, match=f"layer 1 expects {F} input features but layer 0 outputs {H}"):
        import_keras_stack([first, second])


def test_keras_stack_with_mixed_cells_is_rejected():
    first = built(keras.layers.GRU(H, return_sequences=True))
    second = built(keras.layers.LSTM(H), features=H)
    with pytest.raises(ValueError, match="mismatched cell: layer 0 has cell='gru' but layer 1 has cell='lstm'"):
        import_keras_stack([first, second])


# ----------------------------------------------------------------------------- PyTorch (numpy reference)


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def torch_state_dict(mode, num_layers, bidirectional, input_size=F, hidden=H, seed=0, bias=True):
    """A random state_dict with PyTorch's names and shapes."""
    gates = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}[mode]
    rng = np.random.default_rng(seed)
    state = {}
    for layer in range(num_layers):
        layer_input = input_size if layer == 0 else hidden * (2 if bidirectional else 1)
        for suffix in ("", "_reverse") if bidirectional else ("",):
            state[f"weight_ih_l{layer}{suffix}"] = rng.normal(0, 0.5, (gates * hidden, layer_input))
            state[f"weight_hh_l{layer}{suffix}"] = rng.normal(0, 0.5, (gates * hidden, hidden))
            if bias:
                state[f"bias_ih_l{layer}{suffix}"] = rng.normal(0, 0.5, (gates * hidden,))
                state[f"bias_hh_l{layer}{suffix}"] = rng.normal(0, 0.5, (gates * hidden,))
    return {k: v.astype(np.float32) for k, v in state.items()}


def torch_cell_step(mode, w, x, h, c):
    """PyTorch's documented equations (torch.nn.RNN / LSTM / GRU docs), row vectors."""
    w_ih, w_hh, b_ih, b_hh = w
    gi = x @ w_ih.T + b_ih
    gh = h @ w_hh.T + b_hh
    if mode == "RNN_TANH":
        return np.tanh(gi + gh), None
    if mode == "RNN_RELU":
        return np.maximum(gi + gh, 0.0), None
    if mode == "LSTM":
        i, f, g, o = np.split(gi + gh, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        return sigmoid(o) * np.tanh(c), c
    i_r, i_z, i_n = np.split(gi, 3, axis=-1)
    h_r, h_z, h_n = np.split(gh, 3, axis=-1)
    r = sigmoid(i_r + h_r)
    z = sigmoid(i_z + h_z)
    n = np.tanh(i_n + r * h_n)
    return (1.0 - z) * n + z * h, None


def torch_reference(mode, state, x, lengths, num_layers, bidirectional):
    """Packed-sequence semantics: each row runs over its first lengths[b] steps only.

    Returns outputs [B, T, D*H] (zeros on padding) and h_n, c_n [L*D, B, H].
    """
    directions = ("", "_reverse") if bidirectional else ("",)
    hidden = state["weight_hh_l0"].shape[1]
    layer_in = x.astype(np.float64)
    h_n, c_n = [], []
    for layer in range(num_layers):
        outs = []
        for suffix in directions:
            w = [
                state.get(f"{name}_l{layer}{suffix}", 0.0) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            ]
            out = np.zeros(layer_in.shape[:2] + (hidden,))
            h_last = np.zeros((len(x), hidden))
            c_last = np.zeros((len(x), hidden))
            for b, length in enumerate(lengths):
                h, c = np.zeros(hidden), np.zeros(hidden)
                steps = range(length - 1, -1, -1) if suffix else range(length)
                for t in steps:
                    h, c = torch_cell_step(mode, w, layer_in[b, t], h, c)
                    out[b, t] = h
                h_last[b], c_last[b] = h, (c if c is not None else 0.0)
            outs.append(out)
            h_n.append(h_last)
            c_n.append(c_last)
        layer_in = np.concatenate(outs, axis=-1)
    return layer_in, np.stack(h_n), np.stack(c_n)


def stack_final_states(carries, bidirectional):
    """seqjax per-layer carries -> torch-style h_n, c_n [L*D, B, H]."""
    flat = [c for layer in carries for c in (layer if bidirectional else (layer,))]
    h = np.stack([np.asarray(c.hidden if isinstance(c, LSTMCarry) else c) for c in flat])
    c = np.stack([np.asarray(c.cell) if isinstance(c, LSTMCarry) else np.zeros_like(h[0]) for c in flat])
    return h, c


TORCH_CASES = [
    ("RNN_TANH", 1, False),
    ("RNN_RELU", 2, True),
    ("LSTM", 2, True),
    ("GRU", 2, False),
    ("GRU", 1, True),
]


@pytest.mark.parametrize("mode, num_layers, bidirectional", TORCH_CASES)
def test_torch_state_dict_matches_numpy_torch_equations(mode, num_layers, bidirectional):
    state = torch_state_dict(mode, num_layers, bidirectional, seed=num_layers)
    x = inputs(seed=3)
    config = torch_rnn_config(state, mode=mode)
    cell = {"RNN_TANH": "rnn", "RNN_RELU": "relu_rnn", "LSTM": "lstm", "GRU": "gru"}[mode]
    assert config == {
        "cell": cell,
        "hidden_size": H,
        "num_layers": num_layers,
        "bidirectional": bidirectional,
        "merge": "concat",
    }
    params = import_torch_rnn(state, mode=mode)
    model = RecurrentStack(**config, implementation="scan")
    check_params_compatible(params, jax.eval_shape(model.init, jax.random.key(0), jnp.asarray(x)))
    out, carries = jax.jit(model.apply)({"params": params}, jnp.asarray(x), jnp.asarray(LENGTHS))
    want, h_n, c_n = torch_reference(mode, state, x, LENGTHS, num_layers, bidirectional)
    close(out, want)
    got_h, got_c = stack_final_states(carries, bidirectional)
    close(got_h, h_n)
    if mode == "LSTM":
        close(got_c, c_n)


def test_torch_gru_gates_are_reordered_and_biases_kept_apart():
    state = torch_state_dict("GRU", 1, False)
    cell = import_torch_rnn(state)["layer_0"]["cell"]
    r, z, n = np.split(state["weight_ih_l0"], 3)
    np.testing.assert_array_equal(cell["input_kernel"], np.concatenate([z, r, n]).T)
    b_r, b_z, b_n = np.split(state["bias_hh_l0"], 3)
    np.testing.assert_array_equal(cell["recurrent_bias"], np.concatenate([b_z, b_r, b_n]))


def test_torch_lstm_biases_are_summed():
    state = torch_state_dict("LSTM", 1, False)
    cell = import_torch_rnn(state)["layer_0"]["cell"]
    np.testing.assert_allclose(cell["bias"], state["bias_ih_l0"] + state["bias_hh_l0"], rtol=1e-7)
    np.testing.assert_array_equal(cell["recurrent_kernel"], state["weight_hh_l0"].T)


def test_torch_bias_free_state_dict_gets_zero_bias():
    state = torch_state_dict("GRU", 1, False, bias=False)
    cell = import_torch_rnn(state)["layer_0"]["cell"]
    np.testing.assert_array_equal(cell["input_bias"], np.zeros(3 * H))
    np.testing.assert_array_equal(cell["recurrent_bias"], np.zeros(3 * H))


def test_torch_prefixed_keys_and_mode_inference():
    state = {f"encoder.rnn.{k}": v for k, v in torch_state_dict("LSTM", 2, True).items()}
    state["encoder.embedding.weight"] = np.zeros((7, F), np.float32)
    config = torch_rnn_config(state, prefix="encoder.rnn.")
    assert config == {"cell": "lstm", "hidden_size": H, "num_layers": 2, "bidirectional": True, "merge": "concat"}
    params = import_torch_rnn(state, prefix="encoder.rnn.")
    assert set(params) == {"layer_0", "layer_1"}
    assert params["layer_1"]["backward_layer"]["cell"]["input_kernel"].shape == (2 * H, 4 * H)
    with pytest.raises(ValueError, match="no torch recurrent weights .* found with prefix ''"):
        import_torch_rnn(state)


def test_torch_errors_name_the_problem():
    state = torch_state_dict("LSTM", 2, False)
    with pytest.raises(ValueError, match=r"torch 'gru' has 3 gates but weight_hh_l0 shape \(12, 3\) implies 4"):
        import_torch_rnn(state, mode="GRU")
    with pytest.raises(ValueError, match="unknown torch mode 'TRANSFORMER'"):
        import_torch_rnn(state, mode="TRANSFORMER")
    bad = dict(state, weight_hh_l1=np.zeros((16, 4), np.float32))
    with pytest.raises(ValueError, match=r"weight_hh_l1: mismatched hidden size: expected shape \(12, 3\)"):
        import_torch_rnn(bad)
    bad = dict(state, weight_ih_l1=np.zeros((12, 2 * H), np.float32))
    with pytest.raises(ValueError, match=r"weight_ih_l1: expected shape \(12, 3\) \[4\*hidden, input features\]"):
        import_torch_rnn(bad)
    bad = dict(state, bias_ih_l0=np.zeros(9, np.float32))
    with pytest.raises(ValueError, match=r"bias_ih_l0: expected shape \(12,\), got \(9,\)"):
        import_torch_rnn(bad)
    missing = {k: v for k, v in state.items() if k != "weight_hh_l1"}
    with pytest.raises(ValueError, match=r"missing \['weight_hh_l1'\]"):
        import_torch_rnn(missing)
    with pytest.raises(ValueError, match="proj_size"):
        import_torch_rnn(dict(state, weight_hr_l0=np.zeros((2, H), np.float32)))
    with pytest.raises(TypeError, match="must be floating point"):
        import_torch_rnn(dict(state, weight_ih_l0=np.zeros((12, F), np.int64)))
    with pytest.raises(TypeError, match="expected a torch nn.RNN/LSTM/GRU module or its state_dict"):
        import_torch_rnn([1, 2, 3])


def test_params_compatibility_check_reports_hidden_size_mismatch():
    params = import_torch_rnn(torch_state_dict("GRU", 1, False))
    reference = jax.eval_shape(RecurrentStack("gru", hidden_size=H + 2).init, jax.random.key(0), jnp.zeros((B, T, F)))
    with pytest.raises(
        ValueError,
        match=r"/layer_0/cell/recurrent_kernel: imported shape \(3, 9\), "
        r"model expects \(5, 15\) \(mismatched hidden size: 3 vs 5\)",
    ):
        check_params_compatible(params, reference)
    reference = jax.eval_shape(RecurrentStack("lstm", hidden_size=H).init, jax.random.key(0), jnp.zeros((B, T, F)))
    with pytest.raises(
        ValueError,
        match=r"params mismatch at /layer_0/cell: missing \['bias'\], "
        r"unexpected \['input_bias', 'recurrent_bias'\]",
    ):
        check_params_compatible(params, reference)


def test_porting_module_does_not_import_torch():
    code = "import sys, seqjax.nn.porting; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


# ----------------------------------------------------------------------------- PyTorch (real modules)


def test_torch_modules_are_reproduced():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    x = inputs(seed=5)
    lengths = torch.as_tensor(LENGTHS, dtype=torch.int64)
    modules = [
        torch.nn.LSTM(F, H, num_layers=2, bidirectional=True, batch_first=True),
        torch.nn.GRU(F, H, num_layers=2, batch_first=True),
        torch.nn.RNN(F, H, nonlinearity="relu", bidirectional=True, batch_first=True),
    ]
    for module in modules:
        with torch.no_grad():
            for p in module.parameters():
                p.uniform_(-0.8, 0.8)
            packed = torch.nn.utils.rnn.pack_padded_sequence(
                torch.as_tensor(x), lengths, batch_first=True, enforce_sorted=False
            )
            out, state = module(packed)
            out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
        h_n = (state[0] if isinstance(state, tuple) else state).numpy()
        config = torch_rnn_config(module)
        model = RecurrentStack(**config, implementation="scan")
        got, carries = jax.jit(model.apply)({"params": import_torch_rnn(module)}, jnp.asarray(x), jnp.asarray(LENGTHS))
        close(got, out.numpy())
        got_h, got_c = stack_final_states(carries, config["bidirectional"])
        close(got_h, h_n)
        if isinstance(state, tuple):
            close(got_c, state[1].numpy())
    assert torch_rnn_config(modules[2])["cell"] == "relu_rnn"
    with pytest.raises(ValueError, match="proj_size=2 has no seqjax equivalent"):
        import_torch_rnn(torch.nn.LSTM(F, H, proj_size=2))
