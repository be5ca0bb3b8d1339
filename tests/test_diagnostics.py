"""Gradient-flow diagnostics: per-step ‖∂L/∂h_t‖ against closed forms and
finite differences, clipping statistics, and the experiment's outputs."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from seqjax import diagnostics, models, tasks
from seqjax.nn import cells, heads, recurrent


class LinearRNNCell(cells.SimpleRNNCell):
    """h_t = x_t W_x + b + h_{t-1} W_h: no activation, so ∂h_t/∂h_{t-1} = W_h^T exactly."""

    @nn.nowrap
    def step(self, weights, carry, projected):
        h = projected + carry @ weights["recurrent_kernel"]
        return h, h


class LastStateReadout(nn.Module):
    """One recurrent layer, then L-ready predictions h_{T-1} @ v ([B, 1])."""

    hidden_size: int

    @nn.compact
    def __call__(self, inputs, lengths=None, *, deterministic=True):
        # parent=None: the cell becomes a child of its layer, as in RecurrentStack.
        cell = LinearRNNCell(self.hidden_size, parent=None)
        outputs, _ = recurrent.Recurrent(cell, name="rnn")(inputs, lengths)
        return nn.Dense(1, use_bias=False, name="readout")(outputs[:, -1])


def sum_of_predictions(predictions, batch):
    del batch
    return jnp.sum(predictions)


def linear_rnn(spectral_radius, hidden=6, features=3, seed=0):
    """(model, variables, W_h, W_x, v) with W_h rescaled to `spectral_radius`."""
    model = LastStateReadout(hidden)
    variables = model.init(jax.random.key(seed), jnp.zeros((1, 4, features)))
    rng = np.random.default_rng(seed)
    w_h = rng.normal(size=(hidden, hidden))
    w_h *= spectral_radius / np.max(np.abs(np.linalg.eigvals(w_h)))
    params = jax.tree.map(np.asarray, variables["params"])
    params["rnn"]["cell"]["recurrent_kernel"] = w_h.astype(np.float32)
    w_x = params["rnn"]["cell"]["input_kernel"].astype(np.float64)
    v = params["readout"]["kernel"][:, 0].astype(np.float64)
    return model, {"params": params}, w_h.astype(np.float32).astype(np.float64), w_x, v


@pytest.mark.parametrize("spectral_radius", [0.7, 1.3])
def test_linear_rnn_hidden_gradients_are_matrix_powers(spectral_radius):
    # Row-vector convention h_t = h_{t-1} W_h, L = h_{T-1} v, so
    # ∂L/∂h_t = W_h^{T-1-t} v (= (W^T)^{T-1-t} v for the column convention
    # h_t = W h_{t-1} with W = W_h^T) and ∂L/∂x_t = W_x W_h^{T-1-t} v.
    time = 16
    model, variables, w_h, w_x, v = linear_rnn(spectral_radius)
    batch = {"inputs": np.random.default_rng(1).normal(size=(3, time, 3)).astype(np.float32)}
    flow = diagnostics.hidden_state_gradient_norms(model, variables, batch, sum_of_predictions)

    back = [np.linalg.matrix_power(w_h, time - 1 - t) @ v for t in range(time)]
    np.testing.assert_allclose(flow.layers["rnn"], [np.linalg.norm(g) for g in back], rtol=1e-4)
    np.testing.assert_allclose(flow.hidden, flow.layers["rnn"])
    np.testing.assert_allclose(flow.inputs, [np.linalg.norm(w_x @ g) for g in back], rtol=1e-4)
    decay_over_horizon = flow.hidden[0] / flow.hidden[-1]
    if spectral_radius < 1:
        assert decay_over_horizon < 0.1  # vanishing
    else:
        assert decay_over_horizon > 10  # exploding


def adding_model(cell, hidden=5, seq_len=7):
    task = tasks.get(ml_collections.ConfigDict({"name": "adding", "seq_len": seq_len, "min_seq_len": 0}))
    config = ml_collections.ConfigDict({"name": "recurrent", "cell": cell, "hidden_size": hidden, "forget_bias": 1.0})
    model = models.build(config, task)
    batch = task.batch("test", 0, 1, seed=3)
    params = model.init(jax.random.key(2), batch["inputs"])["params"]
    return task, model, params, batch


def manual_loss(task, model, params, batch, step, delta):
    """The model's loss recomputed with a Python loop over `cells.step`, with
    `delta` added to h at `step`: an implementation independent of the probes."""
    cell = cells.make_cell(model.stack.cell, model.stack.hidden_size, **model.stack.cell_kwargs)
    inputs = jnp.asarray(batch["inputs"])
    weights = cell.apply({"params": params["stack"]["layer_0"]["cell"]}, inputs.shape[-1], method="weights")
    carry, outputs = cell.initial_carry(inputs.shape[0]), []
    for t in range(inputs.shape[1]):
        carry, h = cell.step(weights, carry, cell.project_inputs(weights, inputs[:, t]))
        h = jnp.where(t == step, h + delta, h)  # `step` may be traced
        carry = carry._replace(hidden=h) if isinstance(carry, cells.LSTMCarry) else h
        outputs.append(h)
    features = heads.pool(jnp.stack(outputs, 1), None, model.head)
    out = params["output"]
    return task.loss_and_metrics(features @ out["kernel"] + out["bias"], batch)[0]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_model_hidden_gradient_norms_match_finite_differences(cell):
    task, model, params, batch = adding_model(cell)

    def loss_fn(predictions, b):
        return task.loss_and_metrics(predictions, b)[0]

    flow = diagnostics.hidden_state_gradient_norms(model, {"params": params}, batch, loss_fn)
    assert flow.hidden.shape == (7,) and flow.inputs.shape == (7,)

    hidden, eps = model.stack.hidden_size, 1e-2
    # Central differences along every unit direction of h_t, all in one program.
    basis = np.eye(hidden, dtype=np.float32)[:, None, :]  # [H, 1, H]
    loss_at = jax.jit(
        jax.vmap(lambda step, delta: manual_loss(task, model, params, batch, step, delta), in_axes=(None, 0))
    )
    for step in (6, 3):
        fd = (loss_at(step, eps * basis) - loss_at(step, -eps * basis)) / (2 * eps)
        np.testing.assert_allclose(flow.hidden[step], np.linalg.norm(fd), rtol=2e-2)


def test_zero_probes_leave_the_loss_unchanged():
    task, model, params, batch = adding_model("gru")

    def loss_fn(predictions, b):
        return task.loss_and_metrics(predictions, b)[0]

    plain = loss_fn(model.apply({"params": params}, batch["inputs"]), batch)
    probes = {"stack/layer_0": jnp.zeros((1, 7, 5))}
    probed = diagnostics.probed_loss(model, {"params": params}, batch, loss_fn, probes)
    np.testing.assert_allclose(probed, plain, rtol=1e-6)


def test_clipped_norms_never_exceed_the_threshold_and_small_ones_pass_unchanged():
    rng = np.random.default_rng(0)
    grads = [
        {"w": rng.normal(size=(4, 3)) * scale, "b": rng.normal(size=(3,)) * scale}
        for scale in np.geomspace(0.01, 10.0, 12)
    ]
    stats = diagnostics.global_norm_statistics(grads, clip_global_norm=1.0)
    assert stats.before.shape == stats.after.shape == (12,)
    assert np.all(stats.after <= 1.0 + 1e-5)
    below = stats.before < 1.0
    assert 0 < below.sum() < 12
    np.testing.assert_allclose(stats.after[below], stats.before[below], rtol=1e-6)
    np.testing.assert_allclose(stats.after[~below], 1.0, rtol=1e-5)

    by_value = diagnostics.global_norm_statistics(grads, clip_value=0.05)
    np.testing.assert_allclose(by_value.after[0], by_value.before[0], rtol=1e-6)  # all entries < 0.05
    assert np.all(by_value.after <= 0.05 * np.sqrt(15) + 1e-6)

    hist = diagnostics.norm_histogram(stats, bins=5)
    assert sum(hist["before"]) == sum(hist["after"]) == 12 and len(hist["edges"]) == 6


def save_untrained_run(workdir, config_spec):
    """A workdir like experiments.train leaves: config.json and a checkpoint at step 5."""
    from seqjax import checkpoint, metrics, training
    from seqjax import config as config_lib

    config = config_lib.load_config(config_spec)
    state = training.Trainer(config).init_state()
    os.makedirs(workdir)
    metrics.write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())
    ckpt = checkpoint.Checkpointer([os.path.join(workdir, "checkpoints")], 1, 1)
    ckpt.save(5, [state], force=True)
    ckpt.close()


def test_experiment_writes_plots_and_numbers(tmp_path):
    from tests.conftest import import_experiment

    gradient_flow = import_experiment("gradient_flow")

    run_dir = str(tmp_path / "adding_gru")
    save_untrained_run(run_dir, gradient_flow._DEFAULT_CONFIG + ":gru,smoke")
    out = tmp_path / "flow"
    record = gradient_flow.run(
        str(out), ["lstm"], seq_len=12, hidden_size=8, batch_size=8, num_batches=3, checkpoint_dirs=[run_dir]
    )
    for name in ("gradient_flow_hidden.png", "gradient_flow_inputs.png", "grad_norm_histogram.png"):
        with open(out / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(out / "gradient_flow.json") as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(record))
    assert sorted(saved["models"]) == ["gru trained (adding_gru, step 5)", "lstm untrained"]
    lstm = saved["models"]["lstm untrained"]
    assert len(lstm["hidden"]) == len(lstm["inputs"]) == 12
    assert lstm["ratio_first_to_last"] == pytest.approx(lstm["hidden"][0] / lstm["hidden"][-1])
    assert len(lstm["global_norms"]["before"]) == 3
    assert max(lstm["global_norms"]["after"]) <= lstm["global_norms"]["clip_global_norm"] + 1e-5
    gru = saved["models"]["gru trained (adding_gru, step 5)"]
    assert gru["cell"] == "gru" and gru["seq_len"] == 20  # the run's own task (smoke: T=20)
