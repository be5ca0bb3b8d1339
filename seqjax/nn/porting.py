"""Import recurrent-layer weights from Keras and PyTorch into seqjax params.

seqjax cells use the Keras parameter layout (see `seqjax.nn.cells`), so Keras
weights copy over unchanged; PyTorch weights are transposed, GRU gates are
reordered from PyTorch's (r, z, n) to (z, r, n), and the two LSTM / RNN biases
are summed. The results are plain nested dicts of `jnp` arrays that slot into
`{'params': ...}`:

  Recurrent layer       {'cell': {'input_kernel', 'recurrent_kernel', bias...}}
  Bidirectional layer   {'forward_layer': {'cell': ...}, 'backward_layer': {'cell': ...}}
  RecurrentStack        {'layer_0': <layer>, 'layer_1': <layer>, ...}

Keras:
  import_keras_layer(layer_or_weights)      -> Recurrent / Bidirectional params
  import_keras_stack(layers)                -> RecurrentStack params
  keras_layer_config(layer), keras_stack_config(layers)
                                            -> the seqjax attributes that match
PyTorch (`torch` is never imported; tensors or numpy arrays both work):
  import_torch_rnn(module_or_state_dict)    -> RecurrentStack params
  torch_rnn_config(module_or_state_dict)    -> RecurrentStack attributes
Both:
  check_params_compatible(imported, reference) -> clear error on any mismatch

Typical use:

  config = torch_rnn_config(torch_lstm)           # {'cell': 'lstm', 'hidden_size': ...}
  model = RecurrentStack(**config)
  params = import_torch_rnn(torch_lstm)
  outputs, carries = model.apply({'params': params}, inputs, lengths)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "check_params_compatible",
    "import_keras_layer",
    "import_keras_stack",
    "import_torch_rnn",
    "keras_layer_config",
    "keras_stack_config",
    "torch_rnn_config",
]

# Number of gates per cell name (seqjax.nn.cells.CELL_NAMES).
_GATES = {"rnn": 1, "relu_rnn": 1, "irnn": 1, "lstm": 4, "gru": 3, "gru_reset_before": 3}
_KERAS_KINDS = {
    "SimpleRNN": "rnn",
    "LSTM": "lstm",
    "GRU": "gru",
    "SimpleRNNCell": "rnn",
    "LSTMCell": "lstm",
    "GRUCell": "gru",
}


# ----------------------------------------------------------------------------- helpers


def _to_numpy(x: Any, what: str) -> np.ndarray:
    """numpy copy of an array, a torch tensor (any device, bf16 included) or a tf variable."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if str(getattr(x, "dtype", "")) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    elif hasattr(x, "numpy") and not isinstance(x, np.ndarray):  # tf.Variable / EagerTensor
        x = x.numpy()
    try:
        array = np.asarray(x)
    except Exception as error:  # pragma: no cover - exotic inputs
        raise TypeError(f"{what}: cannot convert {type(x).__name__} to an array") from error
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"{what}: weights must be floating point, got dtype {array.dtype}")
    return array


def _check_cell_name(cell: str | None) -> None:
    if cell is not None and cell not in _GATES:
        raise ValueError(f"unknown cell {cell!r}; choose one of {', '.join(_GATES)}")


def _gates_of(cell: str) -> int:
    return _GATES[cell]


def _jnp(tree, dtype):
    return jax.tree.map(lambda a: jnp.asarray(a, dtype=dtype or a.dtype), tree)


def _fn_name(fn: Any) -> str:
    return getattr(fn, "__name__", str(fn))


# ----------------------------------------------------------------------------- Keras


def _keras_class(layer: Any) -> str:
    return type(layer).__name__


def _is_keras_bidirectional(layer: Any) -> bool:
    return _keras_class(layer) == "Bidirectional" and hasattr(layer, "forward_layer")


def _keras_kind(layer: Any) -> str:
    """seqjax cell name for a Keras SimpleRNN / LSTM / GRU layer (activations checked)."""
    name = _keras_class(layer)
    if name not in _KERAS_KINDS:
        raise TypeError(
            f"unsupported Keras layer type {name!r}; expected SimpleRNN, LSTM, GRU "
            "or a Bidirectional wrapper around one of them"
        )
    kind = _KERAS_KINDS[name]
    cell = getattr(layer, "cell", layer)
    activation = _fn_name(getattr(cell, "activation", None))
    if kind == "rnn":
        if activation not in ("tanh", "relu"):
            raise ValueError(
                f"Keras {name} {layer.name!r} uses activation {activation!r}; "
                "seqjax SimpleRNNCell supports only 'tanh' and 'relu'"
            )
        return "rnn" if activation == "tanh" else "relu_rnn"
    recurrent_activation = _fn_name(getattr(cell, "recurrent_activation", None))
    if activation != "tanh" or recurrent_activation != "sigmoid":
        raise ValueError(
            f"Keras {name} {layer.name!r} uses activation={activation!r}, "
            f"recurrent_activation={recurrent_activation!r}; seqjax cells need 'tanh' and 'sigmoid'"
        )
    if kind == "gru" and not getattr(cell, "reset_after", True):
        return "gru_reset_before"
    return kind


def _keras_weights(layer: Any) -> list[np.ndarray]:
    if not getattr(layer, "built", True) or not layer.get_weights():
        raise ValueError(
            f"Keras layer {getattr(layer, 'name', layer)!r} has no weights yet; "
            "build it (call it on an input) before importing"
        )
    return [_to_numpy(w, f"Keras layer {layer.name!r}") for w in layer.get_weights()]


def _keras_cell_from_weights(weights: Sequence[Any], cell: str | None, where: str) -> tuple[dict, str]:
    """Keras [kernel, recurrent_kernel(, bias)] -> (seqjax cell params, cell name)."""
    if len(weights) not in (2, 3):
        raise ValueError(
            f"{where}: expected [kernel, recurrent_kernel, bias] (or without bias), got {len(weights)} arrays"
        )
    arrays = [_to_numpy(w, where) for w in weights]
    kernel, recurrent = arrays[0], arrays[1]
    bias = arrays[2] if len(arrays) == 3 else None
    if kernel.ndim != 2 or recurrent.ndim != 2:
        raise ValueError(
            f"{where}: kernel and recurrent_kernel must be 2-D, got shapes {kernel.shape} and {recurrent.shape}"
        )
    hidden, width = recurrent.shape
    if hidden == 0 or width % hidden:
        raise ValueError(f"{where}: recurrent_kernel shape {recurrent.shape} is not [H, G*H]")
    gates = width // hidden
    if cell is None:
        by_gates = {1: "rnn", 4: "lstm", 3: "gru"}
        if gates not in by_gates:
            raise ValueError(
                f"{where}: recurrent_kernel shape {recurrent.shape} has {gates} gates; "
                "expected 1 (SimpleRNN), 3 (GRU) or 4 (LSTM)"
            )
        cell = by_gates[gates]
        if cell == "gru":
            if bias is None:
                raise ValueError(
                    f"{where}: a GRU without bias is ambiguous; pass cell='gru' "
                    "(reset_after=True) or cell='gru_reset_before'"
                )
            cell = "gru" if bias.ndim == 2 else "gru_reset_before"
    elif _gates_of(cell) != gates:
        raise ValueError(
            f"{where}: cell {cell!r} has {_gates_of(cell)} gates but recurrent_kernel "
            f"shape {recurrent.shape} implies {gates} (hidden size {hidden})"
        )
    if kernel.shape[1] != width:
        raise ValueError(
            f"{where}: mismatched hidden size: kernel shape {kernel.shape} has "
            f"{kernel.shape[1]} columns but recurrent_kernel {recurrent.shape} has {width}"
        )
    params = {"input_kernel": kernel, "recurrent_kernel": recurrent}
    if cell == "gru":
        if bias is None:
            bias = np.zeros((2, width), kernel.dtype)
        if bias.shape != (2, width):
            raise ValueError(
                f"{where}: GRU (reset_after=True) bias must have shape (2, {width}) "
                f"[input bias; recurrent bias], got {bias.shape}"
            )
        params["input_bias"], params["recurrent_bias"] = bias[0], bias[1]
    else:
        if bias is None:
            bias = np.zeros((width,), kernel.dtype)
        if bias.shape != (width,):
            hint = (
                " (a [2, 3H] bias belongs to a reset_after=True GRU)"
                if cell == "gru_reset_before" and bias.shape == (2, width)
                else ""
            )
            raise ValueError(f"{where}: bias must have shape ({width},), got {bias.shape}{hint}")
        params["bias"] = bias
    return params, cell


def _keras_layer(layer_or_weights: Any, cell: str | None, where: str) -> tuple[dict, dict]:
    """(params, config) for one Keras layer object or weights list."""
    if isinstance(layer_or_weights, (list, tuple)):
        weights = list(layer_or_weights)
        if len(weights) in (4, 6):  # Bidirectional: forward weights then backward weights
            half = len(weights) // 2
            forward, kind = _keras_cell_from_weights(weights[:half], cell, f"{where} (forward)")
            backward, kind_b = _keras_cell_from_weights(weights[half:], cell, f"{where} (backward)")
            _check_same(kind, kind_b, forward, backward, where)
            config = {
                "cell": kind,
                "hidden_size": forward["recurrent_kernel"].shape[0],
                "bidirectional": True,
                "merge": "concat",
                "reverse": False,
                "input_size": forward["input_kernel"].shape[0],
            }
            return {"forward_layer": {"cell": forward}, "backward_layer": {"cell": backward}}, config
        params, kind = _keras_cell_from_weights(weights, cell, where)
        config = {
            "cell": kind,
            "hidden_size": params["recurrent_kernel"].shape[0],
            "bidirectional": False,
            "merge": "concat",
            "reverse": False,
            "input_size": params["input_kernel"].shape[0],
        }
        return {"cell": params}, config

    layer = layer_or_weights
    if _is_keras_bidirectional(layer):
        merge = layer.merge_mode
        if merge not in ("concat", "sum"):
            raise ValueError(
                f"Keras Bidirectional {layer.name!r} has merge_mode={merge!r}; "
                "seqjax Bidirectional supports only 'concat' and 'sum'"
            )
        fw_layer, bw_layer = layer.forward_layer, layer.backward_layer
        if getattr(fw_layer, "go_backwards", False) or not getattr(bw_layer, "go_backwards", True):
            raise ValueError(
                f"Keras Bidirectional {layer.name!r}: expected a forward layer with "
                "go_backwards=False and a backward layer with go_backwards=True"
            )
        kind_f, kind_b = _keras_kind(fw_layer), _keras_kind(bw_layer)
        forward, kind_f = _keras_cell_from_weights(
            _keras_weights(fw_layer), cell or kind_f, f"{where} forward layer {fw_layer.name!r}"
        )
        backward, kind_b = _keras_cell_from_weights(
            _keras_weights(bw_layer), cell or kind_b, f"{where} backward layer {bw_layer.name!r}"
        )
        _check_same(kind_f, kind_b, forward, backward, where)
        config = {
            "cell": kind_f,
            "hidden_size": forward["recurrent_kernel"].shape[0],
            "bidirectional": True,
            "merge": merge,
            "reverse": False,
            "input_size": forward["input_kernel"].shape[0],
        }
        return {"forward_layer": {"cell": forward}, "backward_layer": {"cell": backward}}, config

    kind = _keras_kind(layer)  # raises TypeError for unknown layer types
    params, kind = _keras_cell_from_weights(
        _keras_weights(layer), cell or kind, f"{where} {_keras_class(layer)} {layer.name!r}"
    )
    config = {
        "cell": kind,
        "hidden_size": params["recurrent_kernel"].shape[0],
        "bidirectional": False,
        "merge": "concat",
        "reverse": bool(getattr(layer, "go_backwards", False)),
        "input_size": params["input_kernel"].shape[0],
    }
    return {"cell": params}, config


def _check_same(kind_f, kind_b, forward, backward, where):
    if kind_f != kind_b:
        raise ValueError(f"{where}: forward cell is {kind_f!r} but backward cell is {kind_b!r}")
    for name in forward:
        if forward[name].shape != backward[name].shape:
            raise ValueError(
                f"{where}: mismatched hidden size between directions: forward "
                f"{name} {forward[name].shape} vs backward {backward[name].shape}"
            )


def import_keras_layer(layer_or_weights: Any, *, cell: str | None = None, dtype: Any = jnp.float32) -> dict:
    """Params for a seqjax `Recurrent` (or `Bidirectional`) from one Keras layer.

    Args:
      layer_or_weights: a built Keras (3 or tf.keras) `SimpleRNN`, `LSTM`, `GRU`
        or `Bidirectional` layer, or its `get_weights()` list
        ([kernel, recurrent_kernel, bias], twice for Bidirectional).
      cell: seqjax cell name ('rnn', 'relu_rnn', 'lstm', 'gru',
        'gru_reset_before'); inferred when None. Needed for a bias-free GRU
        weights list; an activation is never visible in a weights list, so
        'rnn' and 'relu_rnn' share one params layout.
      dtype: dtype of the returned arrays (None keeps the source dtype).

    Returns {'cell': {...}} or {'forward_layer': {'cell': ...}, 'backward_layer': {'cell': ...}}.
    A single layer with go_backwards=True maps to `Recurrent(reverse=True)`
    (see `keras_layer_config`).
    """
    _check_cell_name(cell)
    params, _ = _keras_layer(layer_or_weights, cell, "Keras layer")
    return _jnp(params, dtype)


def keras_layer_config(layer_or_weights: Any, *, cell: str | None = None) -> dict:
    """The seqjax attributes matching one Keras layer.

    Returns {'cell', 'hidden_size', 'bidirectional', 'merge', 'reverse', 'input_size'}.
    """
    _check_cell_name(cell)
    return _keras_layer(layer_or_weights, cell, "Keras layer")[1]


def _keras_layer_list(layers: Any) -> list:
    if hasattr(layers, "layers") and not isinstance(layers, (list, tuple)):  # Sequential / Model
        return [
            layer for layer in layers.layers if _keras_class(layer) in _KERAS_KINDS or _is_keras_bidirectional(layer)
        ]
    return list(layers)


def _keras_stack(layers: Any, cell: str | None) -> tuple[dict, dict]:
    _check_cell_name(cell)
    layer_list = _keras_layer_list(layers)
    if not layer_list:
        raise ValueError("import_keras_stack needs at least one recurrent layer")
    params, configs = {}, []
    for depth, layer in enumerate(layer_list):
        layer_params, config = _keras_layer(layer, cell, f"Keras stack layer {depth}")
        if config["reverse"]:
            raise ValueError(
                f"Keras stack layer {depth} has go_backwards=True; RecurrentStack runs "
                "every layer forward (import it alone with import_keras_layer)"
            )
        params[f"layer_{depth}"] = layer_params
        configs.append(config)
    first = configs[0]
    for depth, config in enumerate(configs[1:], start=1):
        for key in ("cell", "hidden_size", "bidirectional", "merge"):
            if config[key] != first[key]:
                label = "mismatched hidden size" if key == "hidden_size" else f"mismatched {key}"
                raise ValueError(
                    f"Keras stack: {label}: layer 0 has {key}={first[key]!r} but layer "
                    f"{depth} has {key}={config[key]!r}; RecurrentStack layers must agree"
                )
        previous = configs[depth - 1]
        expected = previous["hidden_size"] * (2 if previous["bidirectional"] and previous["merge"] == "concat" else 1)
        if config["input_size"] != expected:
            raise ValueError(
                f"Keras stack: layer {depth} expects {config['input_size']} input features "
                f"but layer {depth - 1} outputs {expected}"
            )
    stack_config = {
        "cell": first["cell"],
        "hidden_size": first["hidden_size"],
        "num_layers": len(configs),
        "bidirectional": first["bidirectional"],
        "merge": first["merge"],
    }
    return params, stack_config


def import_keras_stack(layers: Any, *, cell: str | None = None, dtype: Any = jnp.float32) -> dict:
    """RecurrentStack params from stacked Keras recurrent layers.

    `layers` is a list of built Keras layers (or of their `get_weights()`
    lists), or a Sequential/Model whose recurrent layers are taken in order.
    All layers must share cell type, hidden size and bidirectional/merge
    settings, and each must consume the previous one's outputs.
    Returns {'layer_0': ..., 'layer_1': ...}.
    """
    return _jnp(_keras_stack(layers, cell)[0], dtype)


def keras_stack_config(layers: Any, *, cell: str | None = None) -> dict:
    """RecurrentStack attributes {'cell', 'hidden_size', 'num_layers', 'bidirectional', 'merge'}."""
    return _keras_stack(layers, cell)[1]


# ----------------------------------------------------------------------------- PyTorch

_TORCH_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?$")
_TORCH_MODES = {
    "RNN_TANH": "rnn",
    "RNN_RELU": "relu_rnn",
    "LSTM": "lstm",
    "GRU": "gru",
    "rnn": "rnn",
    "rnn_tanh": "rnn",
    "rnn_relu": "relu_rnn",
    "relu_rnn": "relu_rnn",
    "lstm": "lstm",
    "gru": "gru",
}


def _torch_state(module_or_state_dict: Any, prefix: str) -> tuple[dict[str, np.ndarray], str | None]:
    """({weight name without prefix: array}, cell name from the module or None)."""
    mode = None
    state = module_or_state_dict
    if hasattr(state, "state_dict") and callable(state.state_dict):  # an nn.RNN / LSTM / GRU
        module = state
        name = type(module).__name__
        if getattr(module, "proj_size", 0):
            raise ValueError(f"torch {name} with proj_size={module.proj_size} has no seqjax equivalent")
        mode = getattr(module, "mode", None)
        if mode is None:
            raise TypeError(f"unsupported torch module type {name!r}; expected nn.RNN, nn.LSTM or nn.GRU")
        if mode not in _TORCH_MODES:
            raise ValueError(f"unsupported torch recurrent mode {mode!r}")
        mode = _TORCH_MODES[mode]
        state = module.state_dict()
    if not isinstance(state, Mapping):
        raise TypeError(f"expected a torch nn.RNN/LSTM/GRU module or its state_dict, got {type(state).__name__}")
    out = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if _TORCH_KEY.match(name):
            out[name] = _to_numpy(value, f"torch state_dict[{key!r}]")
    if not out:
        raise ValueError(
            f"no torch recurrent weights (weight_ih_l0, ...) found with prefix {prefix!r}; keys: {sorted(state)[:8]}"
        )
    if any(k.startswith("weight_hr") for k in out):
        raise ValueError("torch LSTM with proj_size (weight_hr_l*) has no seqjax equivalent")
    return out, mode


def _torch_layout(state: dict[str, np.ndarray], mode: str | None) -> tuple[str, int, bool, int]:
    """(cell, num_layers, bidirectional, hidden_size) read off the weight names and shapes."""
    layers = sorted({int(_TORCH_KEY.match(k).group(2)) for k in state})
    if layers != list(range(len(layers))):
        raise ValueError(f"torch state_dict layers must be numbered 0..L-1, got {layers}")
    bidirectional = any(k.endswith("_reverse") for k in state)
    if "weight_hh_l0" not in state or "weight_ih_l0" not in state:
        raise ValueError("torch state_dict lacks weight_ih_l0 / weight_hh_l0")
    w_hh = state["weight_hh_l0"]
    if w_hh.ndim != 2 or w_hh.shape[1] == 0 or w_hh.shape[0] % w_hh.shape[1]:
        raise ValueError(f"torch weight_hh_l0 must have shape [G*H, H], got {w_hh.shape}")
    hidden = w_hh.shape[1]
    gates = w_hh.shape[0] // hidden
    if mode is None:
        by_gates = {1: "rnn", 3: "gru", 4: "lstm"}
        if gates not in by_gates:
            raise ValueError(
                f"torch weight_hh_l0 shape {w_hh.shape} has {gates} gates; expected 1 (RNN), 3 (GRU) or 4 (LSTM)"
            )
        mode = by_gates[gates]
    elif _gates_of(mode) != gates:
        raise ValueError(
            f"torch {mode!r} has {_gates_of(mode)} gates but weight_hh_l0 shape "
            f"{w_hh.shape} implies {gates} (hidden size {hidden})"
        )
    return mode, len(layers), bidirectional, hidden


def _torch_cell(state, suffix: str, cell: str, hidden: int, input_size: int) -> dict:
    """One direction of one torch layer -> seqjax cell params (Keras layout)."""
    gates = _gates_of(cell)
    width = gates * hidden
    w_ih = state.get(f"weight_ih{suffix}")
    w_hh = state.get(f"weight_hh{suffix}")
    if w_ih is None or w_hh is None:
        raise ValueError(f"torch state_dict lacks weight_ih{suffix} / weight_hh{suffix}")
    if w_hh.shape != (width, hidden):
        raise ValueError(
            f"torch weight_hh{suffix}: mismatched hidden size: expected shape "
            f"({width}, {hidden}) for {cell} with hidden size {hidden}, got {w_hh.shape}"
        )
    if w_ih.shape != (width, input_size):
        raise ValueError(
            f"torch weight_ih{suffix}: expected shape ({width}, {input_size}) "
            f"[{gates}*hidden, input features], got {w_ih.shape}"
        )
    biases = []
    for name in (f"bias_ih{suffix}", f"bias_hh{suffix}"):
        b = state.get(name)
        if b is None:
            b = np.zeros((width,), w_ih.dtype)
        elif b.shape != (width,):
            raise ValueError(f"torch {name}: expected shape ({width},), got {b.shape}")
        biases.append(b)
    b_ih, b_hh = biases
    if cell == "gru":
        # torch (r, z, n) -> seqjax/Keras (z, r, n); the n-gate biases stay separate (reset_after).
        order = np.concatenate([np.arange(hidden, 2 * hidden), np.arange(hidden), np.arange(2 * hidden, 3 * hidden)])
        return {
            "input_kernel": w_ih[order].T,
            "recurrent_kernel": w_hh[order].T,
            "input_bias": b_ih[order],
            "recurrent_bias": b_hh[order],
        }
    # LSTM (i, f, g, o) already matches; RNN has one gate. Both biases just add.
    return {"input_kernel": w_ih.T, "recurrent_kernel": w_hh.T, "bias": b_ih + b_hh}


def _torch_stack(module_or_state_dict, mode, prefix):
    state, module_mode = _torch_state(module_or_state_dict, prefix)
    if mode is not None:
        if mode not in _TORCH_MODES:
            raise ValueError(f"unknown torch mode {mode!r}; choose one of RNN_TANH, RNN_RELU, LSTM, GRU")
        mode = _TORCH_MODES[mode]
    mode = mode or module_mode
    cell, num_layers, bidirectional, hidden = _torch_layout(state, mode)
    expected = {
        f"{w}_l{k}{s}"
        for k in range(num_layers)
        for w in ("weight_ih", "weight_hh")
        for s in (("", "_reverse") if bidirectional else ("",))
    }
    missing = sorted(expected - set(state))
    if missing:
        raise ValueError(f"torch state_dict is missing {missing}")
    params = {}
    input_size = state["weight_ih_l0"].shape[1]
    for depth in range(num_layers):
        directions = {}
        for label, suffix in (("forward_layer", ""), ("backward_layer", "_reverse")):
            if suffix and not bidirectional:
                continue
            directions[label] = {"cell": _torch_cell(state, f"_l{depth}{suffix}", cell, hidden, input_size)}
        params[f"layer_{depth}"] = directions if bidirectional else directions["forward_layer"]
        input_size = hidden * (2 if bidirectional else 1)
    config = {
        "cell": cell,
        "hidden_size": hidden,
        "num_layers": num_layers,
        "bidirectional": bidirectional,
        "merge": "concat",
    }
    return params, config


def import_torch_rnn(
    module_or_state_dict: Any, *, mode: str | None = None, prefix: str = "", dtype: Any = jnp.float32
) -> dict:
    """RecurrentStack params from a PyTorch nn.RNN / nn.LSTM / nn.GRU or its state_dict.

    Args:
      module_or_state_dict: the module, or a mapping with weight_ih_l{k},
        weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k} (and `_reverse` twins for
        bidirectional), as torch tensors or numpy arrays.
      mode: 'RNN_TANH', 'RNN_RELU', 'LSTM' or 'GRU' (or 'rnn', 'lstm',
        'gru'); inferred from the module or from the gate count when None.
      prefix: stripped from the state_dict keys (e.g. 'encoder.rnn.').
      dtype: dtype of the returned arrays (None keeps the source dtype).

    PyTorch kernels [G*H, F] are transposed to [F, G*H]; LSTM gates (i, f, g,
    o) already match; GRU gates (r, z, n) are reordered to (z, r, n) and map to
    `GRUCell(reset_after=True)` with input_bias=b_ih, recurrent_bias=b_hh;
    LSTM and RNN biases b_ih + b_hh are summed. A bidirectional module maps to
    `RecurrentStack(bidirectional=True, merge='concat')`.
    """
    return _jnp(_torch_stack(module_or_state_dict, mode, prefix)[0], dtype)


def torch_rnn_config(module_or_state_dict: Any, *, mode: str | None = None, prefix: str = "") -> dict:
    """RecurrentStack attributes {'cell', 'hidden_size', 'num_layers', 'bidirectional', 'merge'}.

    From a state_dict alone an RNN's nonlinearity is unknown; pass
    mode='RNN_RELU' for ReLU RNNs (the module itself carries it).
    """
    return _torch_stack(module_or_state_dict, mode, prefix)[1]


# ----------------------------------------------------------------------------- checking


def check_params_compatible(imported: Any, reference: Any) -> None:
    """Raises ValueError naming the first path where `imported` and `reference` differ.

    `reference` is a seqjax params tree (e.g. `model.init(...)['params']`, or
    the whole variables dict); initial-carry params present only in the
    reference are allowed (imported layers start from zeros). Checks the tree
    structure and every array shape, e.g. a hidden-size mismatch.
    """
    if isinstance(reference, Mapping) and "params" in reference and "params" not in imported:
        reference = reference["params"]

    def walk(a, b, path):
        if isinstance(b, Mapping):
            if not isinstance(a, Mapping):
                raise ValueError(f"params mismatch at {path or '<root>'}: expected a dict, got {type(a).__name__}")
            extra = sorted(set(a) - set(b))
            missing = sorted(k for k in set(b) - set(a) if not str(k).startswith("initial_carry"))
            if extra or missing:
                raise ValueError(f"params mismatch at {path or '<root>'}: missing {missing}, unexpected {extra}")
            # Kernels first: a hidden-size mismatch is then reported as one.
            order = {"recurrent_kernel": 0, "input_kernel": 1}
            for key in sorted(b, key=lambda k: (order.get(k, 2), str(k))):
                if key in a:
                    walk(a[key], b[key], f"{path}/{key}")
            return
        a_shape, b_shape = np.shape(a), np.shape(b)
        if a_shape != b_shape:
            hint = ""
            if path.endswith("recurrent_kernel"):
                hint = (
                    f" (mismatched hidden size: {a_shape[0] if a_shape else '?'} vs {b_shape[0] if b_shape else '?'})"
                )
            elif path.endswith("input_kernel") and len(a_shape) == len(b_shape) == 2 and a_shape[0] != b_shape[0]:
                hint = f" (input features {a_shape[0]} vs {b_shape[0]})"
            raise ValueError(f"params mismatch at {path}: imported shape {a_shape}, model expects {b_shape}{hint}")

    walk(imported, reference, "")
