"""Recurrent cells: Elman RNN (tanh/ReLU, IRNN), LSTM and GRU.

Every cell splits one time step into two parts so that a layer can choose
where the input matmul happens (inside the scan, or once for all steps):

  projected_t = project_inputs(weights, x_t)       # x_t @ W_x + b_x, [B, G*H]
  carry, h_t  = step(weights, carry, projected_t)  # the recurrence

`weights(in_features)` declares the parameters (the only method that touches
Flax variables), so `project_inputs` and `step` are pure functions of arrays
and can run inside `jax.lax.scan` or a `custom_vjp`.

Parameter layout follows Keras (kernels are [in, G*H] with the gates side by
side), which makes weight exchange with Keras a reshape-free copy:

  SimpleRNN  input_kernel [F, H],  recurrent_kernel [H, H],  bias [H]
  LSTM       gate order (i, f, g, o);  input_kernel [F, 4H], recurrent_kernel [H, 4H], bias [4H]
  GRU        gate order (z, r, n);     input_kernel [F, 3H], recurrent_kernel [H, 3H],
             reset_after=True:  input_bias [3H] and recurrent_bias [3H] (cuDNN / PyTorch / Keras 2+)
             reset_after=False: bias [3H] (the original Cho et al. 2014 / Keras v1 form)

Shapes: B batch, F input features, H hidden units, G gates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Initializer = Callable[..., Array]


class LSTMCarry(NamedTuple):
    """LSTM state: `hidden` is the short-term output h_t, `cell` the memory c_t."""

    hidden: Array
    cell: Array


def identity_init(scale: float = 1.0) -> Initializer:
    """Initialiser returning `scale * I` (the IRNN recurrent matrix, Le et al. 2015)."""

    def init(key, shape, dtype=jnp.float32):
        del key
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(f"identity_init needs a square 2-D shape, got {shape}")
        return scale * jnp.eye(shape[0], dtype=dtype)

    return init


def lstm_bias_init(forget_bias: float) -> Initializer:
    """Zeros everywhere except the forget-gate slice, set to `forget_bias`.

    A positive forget bias keeps c_t close to c_{t-1} early in training so
    gradients survive long spans (Gers et al. 2000; Jozefowicz et al. 2015).
    """

    def init(key, shape, dtype=jnp.float32):
        del key
        hidden = shape[0] // 4
        bias = jnp.zeros(shape, dtype)
        return bias.at[hidden : 2 * hidden].set(forget_bias)

    return init


class RecurrentCell(nn.Module):
    """Base class: subclasses define the gates, parameters and the step."""

    hidden_size: int
    kernel_init: Initializer = nn.initializers.glorot_uniform()
    recurrent_init: Initializer = nn.initializers.orthogonal()
    bias_init: Initializer = nn.initializers.zeros_init()
    dtype: Any = None  # computation dtype; None means the inputs' dtype
    param_dtype: Any = jnp.float32

    num_gates: ClassVar[int] = 1
    # False for cells whose gates read only x_t (minGRU, minLSTM).
    has_recurrent_kernel: ClassVar[bool] = True

    @nn.compact
    def weights(self, in_features: int) -> dict[str, Array]:
        """Declares (or fetches) this cell's parameters for `in_features` inputs."""
        width = self.num_gates * self.hidden_size
        params = {"input_kernel": self.param("input_kernel", self.kernel_init, (in_features, width), self.param_dtype)}
        if self.has_recurrent_kernel:
            params["recurrent_kernel"] = self.param(
                "recurrent_kernel", self.recurrent_init, (self.hidden_size, width), self.param_dtype
            )
        params.update(self._bias_params(width))
        if self.dtype is not None:
            params = jax.tree.map(lambda p: p.astype(self.dtype), params)
        return params

    @nn.nowrap
    def _bias_params(self, width: int) -> dict[str, Array]:
        return {"bias": self.param("bias", self.bias_init, (width,), self.param_dtype)}

    @nn.nowrap
    def project_inputs(self, weights: dict[str, Array], inputs: Array) -> Array:
        """[..., F] -> [..., G*H]: the input half of every gate's pre-activation."""
        return inputs @ weights["input_kernel"] + self._input_bias(weights)

    @nn.nowrap
    def _input_bias(self, weights: dict[str, Array]) -> Array:
        return weights["bias"]

    @nn.nowrap
    def step(self, weights: dict[str, Array], carry: Any, projected: Array) -> tuple[Any, Array]:
        raise NotImplementedError  # abstract: every concrete cell defines its recurrence

    @nn.nowrap
    def initial_carry(self, batch_size: int, dtype: Any = jnp.float32) -> Any:
        """The all-zeros carry for `batch_size` sequences."""
        return jnp.zeros((batch_size, self.hidden_size), dtype)

    @staticmethod
    def hidden_of(carry: Any) -> Array:
        """The hidden state h_t [B, H] held in a carry."""
        return carry

    def __call__(self, carry: Any, inputs: Array) -> tuple[Any, Array]:
        """One step on inputs [B, F]; returns (new carry, h_t [B, H])."""
        weights = self.weights(inputs.shape[-1])
        return self.step(weights, carry, self.project_inputs(weights, inputs))


class SimpleRNNCell(RecurrentCell):
    """Elman RNN: h_t = act(x_t W_x + h_{t-1} W_h + b), act = tanh or relu."""

    activation: str = "tanh"

    num_gates: ClassVar[int] = 1

    def __post_init__(self):
        if self.activation not in ("tanh", "relu"):
            raise ValueError(f"SimpleRNNCell.activation must be 'tanh' or 'relu', got {self.activation!r}")
        super().__post_init__()

    @nn.nowrap
    def step(self, weights, carry, projected):
        act = jnp.tanh if self.activation == "tanh" else jax.nn.relu
        h = act(projected + carry @ weights["recurrent_kernel"])
        return h, h


def irnn_cell(hidden_size: int, identity_scale: float = 1.0, **kwargs) -> SimpleRNNCell:
    """IRNN (Le, Jaitly & Hinton 2015): ReLU Elman RNN, W_h = scale * I, zero bias."""
    return SimpleRNNCell(
        hidden_size=hidden_size,
        activation="relu",
        recurrent_init=identity_init(identity_scale),
        bias_init=nn.initializers.zeros_init(),
        **kwargs,
    )


class LSTMCell(RecurrentCell):
    """LSTM (Hochreiter & Schmidhuber 1997 with forget gate, Gers et al. 2000).

    i = σ(·), f = σ(·), g = tanh(·), o = σ(·) from x_t W_x + h_{t-1} W_h + b;
    c_t = f ⊙ c_{t-1} + i ⊙ g;  h_t = o ⊙ tanh(c_t).
    """

    forget_bias: float = 1.0
    bias_init: Initializer | None = None  # None: zeros with the forget slice at forget_bias

    num_gates: ClassVar[int] = 4

    @nn.nowrap
    def _bias_params(self, width):
        init = self.bias_init if self.bias_init is not None else lstm_bias_init(self.forget_bias)
        return {"bias": self.param("bias", init, (width,), self.param_dtype)}

    @nn.nowrap
    def step(self, weights, carry: LSTMCarry, projected):
        gates = projected + carry.hidden @ weights["recurrent_kernel"]
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        cell = jax.nn.sigmoid(f) * carry.cell + jax.nn.sigmoid(i) * jnp.tanh(g)
        hidden = jax.nn.sigmoid(o) * jnp.tanh(cell)
        return LSTMCarry(hidden, cell), hidden

    @nn.nowrap
    def initial_carry(self, batch_size, dtype=jnp.float32):
        zeros = jnp.zeros((batch_size, self.hidden_size), dtype)
        return LSTMCarry(zeros, zeros)

    @staticmethod
    def hidden_of(carry: LSTMCarry) -> Array:
        return carry.hidden


class GRUCell(RecurrentCell):
    """GRU (Cho et al. 2014), gate order (z, r, n) as in Keras.

    z = σ(x W_xz + h W_hz + b_z), r = σ(x W_xr + h W_hr + b_r)
    reset_after=True  (cuDNN, PyTorch, Keras default):
        n = tanh(x W_xn + b_xn + r ⊙ (h W_hn + b_hn))
    reset_after=False (Cho et al. 2014, Keras v1):
        n = tanh(x W_xn + (r ⊙ h) W_hn + b_n)
    h_t = z ⊙ h_{t-1} + (1 - z) ⊙ n
    """

    reset_after: bool = True

    num_gates: ClassVar[int] = 3

    @nn.nowrap
    def _bias_params(self, width):
        if not self.reset_after:
            return {"bias": self.param("bias", self.bias_init, (width,), self.param_dtype)}
        return {
            "input_bias": self.param("input_bias", self.bias_init, (width,), self.param_dtype),
            "recurrent_bias": self.param("recurrent_bias", self.bias_init, (width,), self.param_dtype),
        }

    @nn.nowrap
    def _input_bias(self, weights):
        return weights["input_bias"] if self.reset_after else weights["bias"]

    @nn.nowrap
    def step(self, weights, carry, projected):
        x_z, x_r, x_n = jnp.split(projected, 3, axis=-1)
        w_h = weights["recurrent_kernel"]
        hidden = self.hidden_size
        if self.reset_after:
            h_proj = carry @ w_h + weights["recurrent_bias"]
            h_z, h_r, h_n = jnp.split(h_proj, 3, axis=-1)
            z = jax.nn.sigmoid(x_z + h_z)
            r = jax.nn.sigmoid(x_r + h_r)
            n = jnp.tanh(x_n + r * h_n)
        else:
            h_z, h_r = jnp.split(carry @ w_h[:, : 2 * hidden], 2, axis=-1)
            z = jax.nn.sigmoid(x_z + h_z)
            r = jax.nn.sigmoid(x_r + h_r)
            n = jnp.tanh(x_n + (r * carry) @ w_h[:, 2 * hidden :])
        h = z * carry + (1.0 - z) * n
        return h, h


CellConstructor = Callable[..., RecurrentCell]

# Cell name (`config.model.cell`) -> constructor(hidden_size, **kwargs). The
# cells of this module register below; other cell families register
# themselves where they are defined (seqjax.nn.minimal), so this module never
# imports them and the dependency points one way. Importing the package
# seqjax.nn imports every cell module, so every name is registered before any
# `seqjax.nn.*` import returns.
_CELLS: dict[str, CellConstructor] = {}


def register_cell(name: str, constructor: CellConstructor) -> None:
    """Makes `constructor(hidden_size, **kwargs)` available as cell `name`."""
    if name in _CELLS:
        raise ValueError(f"cell {name!r} is already registered")
    _CELLS[name] = constructor


def cell_names() -> tuple[str, ...]:
    """Every registered cell name, in registration order (the values of `config.model.cell`)."""
    return tuple(_CELLS)


def make_cell(name: str, hidden_size: int, **kwargs) -> RecurrentCell:
    """Cell by name, as used in configs (`config.model.cell`).

    rnn: tanh Elman; relu_rnn: ReLU Elman; irnn: ReLU Elman with identity init;
    lstm; gru (reset after the recurrent matmul, cuDNN/PyTorch/Keras default);
    gru_reset_before (reset before the matmul, Cho et al. 2014);
    mingru, minlstm (Feng et al. 2024; registered by `seqjax.nn.minimal`).
    """
    if name not in _CELLS:
        raise ValueError(f"unknown cell {name!r}; choose one of {', '.join(_CELLS)}")
    return _CELLS[name](hidden_size, **kwargs)


def _fixed(cell_class: type[RecurrentCell], **fixed) -> CellConstructor:
    """A constructor that sets `fixed` attributes; setting them again is a TypeError."""

    def construct(hidden_size: int, **kwargs) -> RecurrentCell:
        return cell_class(hidden_size, **fixed, **kwargs)

    return construct


register_cell("rnn", _fixed(SimpleRNNCell, activation="tanh"))
register_cell("relu_rnn", _fixed(SimpleRNNCell, activation="relu"))
register_cell("irnn", irnn_cell)
register_cell("lstm", LSTMCell)
register_cell("gru", _fixed(GRUCell, reset_after=True))
register_cell("gru_reset_before", _fixed(GRUCell, reset_after=False))
