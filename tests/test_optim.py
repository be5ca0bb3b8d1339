import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from seqjax import optim


def opt_config(**fields):
    base = {"name": "sgd", "learning_rate": 1.0, "schedule": "constant", "warmup_steps": 0}
    return ml_collections.ConfigDict({**base, **fields})


def updates_for(grads, **fields):
    tx = optim.build_optimizer(opt_config(**fields), num_steps=10)
    updates, _ = tx.update(grads, tx.init(grads), grads)
    return updates


def test_clip_by_value_clips_each_entry():
    grads = {"w": jnp.array([3.0, -0.5, -4.0])}
    np.testing.assert_allclose(updates_for(grads, clip_value=1.0)["w"], [-1.0, 0.5, 1.0])


def test_clip_by_global_norm_rescales_the_whole_tree():
    grads = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}  # global norm 5
    updates = updates_for(grads, clip_global_norm=1.0)
    np.testing.assert_allclose([updates["a"][0], updates["b"][0]], [-0.6, -0.8], rtol=1e-6)


def test_both_clips_apply_value_first_then_norm():
    grads = {"a": jnp.array([30.0, 0.0]), "b": jnp.array([4.0])}
    updates = updates_for(grads, clip_value=3.0, clip_global_norm=2.5)
    # value clip -> (3, 0, 3), norm 3*sqrt(2) -> scaled to 2.5
    scale = 2.5 / (3.0 * np.sqrt(2.0))
    np.testing.assert_allclose(updates["a"], [-3.0 * scale, 0.0], rtol=1e-5)


def test_warmup_then_cosine_schedule():
    config = opt_config(learning_rate=2.0, schedule="cosine", warmup_steps=10, end_lr_fraction=0.1)
    schedule = optim.learning_rate_schedule(config, num_steps=110)
    np.testing.assert_allclose([schedule(0), schedule(5), schedule(10)], [0.0, 1.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(schedule(60), 0.2 + 0.9 * 2.0 * 0.5, rtol=1e-5)
    np.testing.assert_allclose(schedule(110), 0.2, rtol=1e-5)


def test_linear_schedule_decays_to_end_fraction():
    schedule = optim.learning_rate_schedule(opt_config(schedule="linear", end_lr_fraction=0.0), 100)
    np.testing.assert_allclose([schedule(0), schedule(50), schedule(100)], [1.0, 0.5, 0.0], atol=1e-6)


def test_adamw_weight_decay_shrinks_weights_without_gradient():
    params = {"w": jnp.ones((2, 2))}
    tx = optim.build_optimizer(opt_config(name="adamw", learning_rate=0.1, weight_decay=0.5), 10)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.1 * 0.5 * np.ones((2, 2)), rtol=1e-6)


def test_sgd_momentum_accumulates():
    params = {"w": jnp.zeros(1)}
    tx = optim.build_optimizer(opt_config(momentum=0.9), 10)
    state = tx.init(params)
    grads = {"w": jnp.ones(1)}
    first, state = tx.update(grads, state, params)
    second, _ = tx.update(grads, state, params)
    np.testing.assert_allclose([first["w"][0], second["w"][0]], [-1.0, -1.9], rtol=1e-6)


def test_weight_penalty_skips_vectors():
    params = {"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.array([10.0])}
    np.testing.assert_allclose(optim.weight_penalty(params, l1=0.5), 1.5)
    np.testing.assert_allclose(optim.weight_penalty(params, l2=0.1), 0.5, rtol=1e-6)
    np.testing.assert_allclose(optim.weight_penalty(params), 0.0)


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match="unknown config.optimizer.name='adamm'"):
        optim.build_optimizer(opt_config(name="adamm"), 10)
