"""Transfer learning: copied modules, shape errors, and the transferred modules frozen for
N updates by the optimiser chain (config.train.freeze_steps, config.train.init_modules)."""

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from seqjax import optim, transfer


def params(hidden=4, seed=0):
    keys = jax.random.split(jax.random.key(seed), 3)
    return {
        "embed": {"embedding": jax.random.normal(keys[0], (10, 3))},
        "stack": {"layer_0": {"kernel": jax.random.normal(keys[1], (3, hidden))}},
        "output": {"kernel": jax.random.normal(keys[2], (hidden, 2))},
    }


def test_transfer_copies_only_the_named_modules():
    target, source = params(seed=0), params(seed=1)
    merged = transfer.transfer(target, source, ("embed", "stack"))
    np.testing.assert_array_equal(merged["embed"]["embedding"], source["embed"]["embedding"])
    np.testing.assert_array_equal(merged["stack"]["layer_0"]["kernel"], source["stack"]["layer_0"]["kernel"])
    np.testing.assert_array_equal(merged["output"]["kernel"], target["output"]["kernel"])


def test_transfer_names_the_mismatch():
    with pytest.raises(ValueError, match=r"stack/layer_0/kernel: pretrained shape \(3, 8\) != model shape \(3, 4\)"):
        transfer.transfer(params(4), params(8), ("stack",))
    with pytest.raises(ValueError, match="module 'encoder' is not in the model"):
        transfer.transfer(params(), params(), ("encoder",))


def test_latest_params_names_the_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint to transfer from"):
        transfer.latest_params(str(tmp_path))


def finetune_optimizer(freeze_steps=3, init_modules=("embed",), **optimizer):
    config = ml_collections.ConfigDict(
        {
            "optimizer": {"name": "adamw", "learning_rate": 0.1, "weight_decay": 0.5, **optimizer},
            "train": {"freeze_steps": freeze_steps, "init_modules": init_modules},
            "model": {},
        }
    )
    return optim.build_optimizer(config, num_updates=10)


def train(tx, updates, p=None):
    """(params after each update, optimiser state after each update) under all-ones gradients."""
    p = params() if p is None else p
    state, history = tx.init(p), []
    for _ in range(updates):
        step, state = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, p), state, p)
        p = optax.apply_updates(p, step)
        history.append((p, state))
    return history


def test_frozen_modules_do_not_move_under_weight_decay_then_train():
    start = params()
    history = train(finetune_optimizer(), 4, start)
    for step, (p, state) in enumerate(history, start=1):
        moved = not np.array_equal(p["embed"]["embedding"], start["embed"]["embedding"])
        assert moved == (step > 3), step  # held for updates 1..3, weight decay included
        assert not np.array_equal(p["output"]["kernel"], start["output"]["kernel"])
        mu, nu = optax.tree_utils.tree_get(state, "mu"), optax.tree_utils.tree_get(state, "nu")
        frozen_moments = [mu["embed"]["embedding"], nu["embed"]["embedding"]]
        assert (not any(np.any(m) for m in frozen_moments)) == (step <= 3), step  # zero while frozen
        assert np.all(mu["output"]["kernel"] != 0)


def test_momentum_of_frozen_modules_starts_from_zero_when_released():
    """SGD with momentum 0.9 and all-ones gradients: a free parameter's update n
    is -lr * (1 + 0.9 + ... + 0.9^(n-1)); a module released after 2 updates starts
    that sum afresh, as if it had never seen the frozen gradients."""
    tx = finetune_optimizer(freeze_steps=2, init_modules=("embed", "stack"), name="sgd", momentum=0.9)
    history = train(tx, 4)
    delta = [params()] + [p for p, _ in history]
    moves = [float(delta[i + 1]["embed"]["embedding"][0, 0] - delta[i]["embed"]["embedding"][0, 0]) for i in range(4)]
    free = [float(delta[i + 1]["output"]["kernel"][0, 0] - delta[i]["output"]["kernel"][0, 0]) for i in range(4)]
    np.testing.assert_allclose(moves, [0.0, 0.0, -0.1, -0.19], rtol=1e-5)
    np.testing.assert_allclose(free, [-0.1, -0.19, -0.271, -0.3439], rtol=1e-5)
    np.testing.assert_array_equal(delta[2]["stack"]["layer_0"]["kernel"], params()["stack"]["layer_0"]["kernel"])


def test_frozen_gradients_do_not_count_in_global_norm_clipping():
    tx = finetune_optimizer(init_modules=("embed", "stack"), name="sgd", learning_rate=1.0, clip_global_norm=1.0)
    p = params()
    grads = {"embed": {"embedding": jnp.full((10, 3), 100.0)}, "stack": {"layer_0": {"kernel": jnp.full((3, 4), 50.0)}}}
    grads["output"] = {"kernel": jnp.full((4, 2), 0.1)}  # norm sqrt(8) * 0.1 < 1: not clipped
    updates, _ = tx.update(grads, tx.init(p), p)
    np.testing.assert_allclose(updates["output"]["kernel"], -0.1, rtol=1e-6)


def test_a_module_missing_from_the_model_fails_at_init():
    tx = finetune_optimizer(init_modules=("embed", "encoder"))  # building is fine: no params yet
    message = (
        "config.train.init_modules=('embed', 'encoder'): module 'encoder' is not in the model "
        "(its top-level modules: ['embed', 'output', 'stack'])"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        tx.init(params())
