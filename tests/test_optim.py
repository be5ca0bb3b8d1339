"""The optimiser chain: clipping, schedules, penalties in the gradient, the freeze
mechanism, and the unit-peak invariant vmapped replicas rely on. References are
hand-computed updates, jax.grad and plain optax chains."""

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from seqjax import optim


def run_config(train=None, model=None, **optimizer):
    base = {"name": "sgd", "learning_rate": 1.0, "schedule": "constant", "warmup_steps": 0}
    return ml_collections.ConfigDict({"optimizer": {**base, **optimizer}, "train": train or {}, "model": model or {}})


def updates_for(grads, params=None, **optimizer):
    params = grads if params is None else params
    tx = optim.build_optimizer(run_config(**optimizer), num_updates=10)
    updates, _ = tx.update(grads, tx.init(params), params)
    return updates


def params_tree(seed=0):
    """A small model-shaped tree: matrices of every kind, and vectors."""
    keys = jax.random.split(jax.random.key(seed), 4)
    return {
        "embed": {"embedding": jax.random.normal(keys[0], (5, 3))},
        "stack": {"layer_0": {"kernel": jax.random.normal(keys[1], (3, 4)), "bias": jnp.full((4,), 0.5)}},
        "output": {"kernel": jax.random.normal(keys[2], (4, 2)), "bias": jax.random.normal(keys[3], (2,))},
    }


# --- clipping and schedules ------------------------------------------------------------------


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
    config = run_config(learning_rate=2.0, schedule="cosine", warmup_steps=10, end_lr_fraction=0.1).optimizer
    schedule = optim.learning_rate_schedule(config, num_updates=110)
    np.testing.assert_allclose([schedule(0), schedule(5), schedule(10)], [0.0, 1.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(schedule(60), 0.2 + 0.9 * 2.0 * 0.5, rtol=1e-5)
    np.testing.assert_allclose(schedule(110), 0.2, rtol=1e-5)
    unit = optim.learning_rate_schedule(config, num_updates=110, peak=1.0)
    np.testing.assert_allclose([unit(5), unit(60), unit(110)], [0.5, 0.1 + 0.9 * 0.5, 0.1], rtol=1e-5)


def test_linear_schedule_decays_to_end_fraction():
    config = run_config(schedule="linear", end_lr_fraction=0.0).optimizer
    schedule = optim.learning_rate_schedule(config, 100)
    np.testing.assert_allclose([schedule(0), schedule(50), schedule(100)], [1.0, 0.5, 0.0], atol=1e-6)


def test_adamw_weight_decay_shrinks_weights_without_gradient():
    params = {"w": jnp.ones((2, 2))}
    updates = updates_for(
        jax.tree.map(jnp.zeros_like, params), params, name="adamw", learning_rate=0.1, weight_decay=0.5
    )
    np.testing.assert_allclose(updates["w"], -0.1 * 0.5 * np.ones((2, 2)), rtol=1e-6)


def test_sgd_momentum_accumulates():
    params = {"w": jnp.zeros(1)}
    tx = optim.build_optimizer(run_config(momentum=0.9), 10)
    state = tx.init(params)
    grads = {"w": jnp.ones(1)}
    first, state = tx.update(grads, state, params)
    second, _ = tx.update(grads, state, params)
    np.testing.assert_allclose([first["w"][0], second["w"][0]], [-1.0, -1.9], rtol=1e-6)


def test_unknown_optimizer_and_schedule_are_named():
    with pytest.raises(ValueError, match=re.escape("unknown config.optimizer.name='adamm'; choose one of adam, adamw")):
        optim.build_optimizer(run_config(name="adamm"), 10)
    with pytest.raises(ValueError, match=re.escape("unknown config.optimizer.schedule='step'; choose one of constant")):
        optim.build_optimizer(run_config(schedule="step"), 10)


def test_the_chain_equals_a_plain_optax_chain():
    """adamw, warm-up + cosine, both clips, l2: the same updates as optax's own
    warmup_cosine_decay_schedule inside a hand-built chain, with the penalty
    gradient 2*l2*w added by hand to the matrices."""
    opt = dict(name="adamw", learning_rate=0.01, schedule="cosine", warmup_steps=3, end_lr_fraction=0.1)
    opt.update(b1=0.8, b2=0.99, weight_decay=0.05, clip_value=0.8, clip_global_norm=1.5, l2=0.01)
    tx = optim.build_optimizer(run_config(**opt), num_updates=12)
    schedule = optax.warmup_cosine_decay_schedule(0.0, 0.01, 3, 12, end_value=0.001)
    reference = optax.chain(
        optax.clip(0.8),
        optax.clip_by_global_norm(1.5),
        optax.adamw(schedule, b1=0.8, b2=0.99, weight_decay=0.05),
    )
    params = params_tree()
    state, ref_state = tx.init(params), reference.init(params)
    for step in range(12):
        grads = jax.tree.map(lambda p: jnp.cos(p * (step + 1)), params)
        penalised = jax.tree.map(lambda g, p: g + 2 * 0.01 * p if p.ndim >= 2 else g, grads, params)
        updates, state = tx.update(grads, state, params)
        expected, ref_state = reference.update(penalised, ref_state, params)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8), updates, expected)
        params = optax.apply_updates(params, updates)


# --- penalties -------------------------------------------------------------------------------


def test_weight_penalty_skips_vectors():
    params = {"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.array([10.0])}
    np.testing.assert_allclose(optim.weight_penalty(params, l1=0.5), 1.5)
    np.testing.assert_allclose(optim.weight_penalty(params, l2=0.1), 0.5, rtol=1e-6)
    np.testing.assert_allclose(optim.weight_penalty(params), 0.0)


def test_penalty_gradient_in_the_chain_is_the_gradient_of_weight_penalty():
    params = jax.tree.map(lambda p: p + jnp.where(p >= 0, 0.1, -0.1), params_tree())  # |w| >= 0.1: away from 0
    zero = jax.tree.map(jnp.zeros_like, params)
    for l1, l2 in [(0.3, 0.0), (0.0, 0.2), (0.3, 0.2)]:
        expected = jax.grad(lambda p: optim.weight_penalty(p, l1, l2))(params)
        # SGD with lr 1 and a zero loss gradient: the update is minus the penalty gradient.
        updates = updates_for(zero, params, l1=l1, l2=l2)
        jax.tree.map(lambda u, e: np.testing.assert_allclose(-u, e, rtol=1e-6), updates, expected)
        jax.tree.map(
            lambda g, e: np.testing.assert_allclose(g, e, rtol=1e-6), optim.penalty_gradient(params, l1, l2), expected
        )
    assert not np.any(optim.penalty_gradient({"w": jnp.zeros((2, 2))}, l1=1.0)["w"])  # subgradient 0 at 0


def test_one_sgd_step_with_l2_is_hand_computed():
    w, b = jnp.array([[1.0, -2.0], [0.5, 3.0]]), jnp.array([4.0, -1.0])
    g, gb = jnp.array([[0.1, 0.2], [-0.3, 0.4]]), jnp.array([1.0, 2.0])
    lr, l2 = 0.1, 0.05
    updates = updates_for({"w": g, "b": gb}, {"w": w, "b": b}, learning_rate=lr, l2=l2)
    new = optax.apply_updates({"w": w, "b": b}, updates)
    np.testing.assert_allclose(new["w"], w - lr * (g + 2 * l2 * w), rtol=1e-6)
    np.testing.assert_allclose(new["b"], b - lr * gb, rtol=1e-6)  # vectors are not penalised


def test_penalty_gradient_is_clipped_with_the_loss_gradient():
    w, g = jnp.array([[3.0, 4.0]]), jnp.array([[0.0, 0.0]])
    updates = updates_for({"w": g}, {"w": w}, l2=0.5, clip_global_norm=1.0)
    np.testing.assert_allclose(updates["w"], [[-0.6, -0.8]], rtol=1e-6)  # 2*0.5*w = (3, 4), norm 5 -> 1


def test_penalty_needs_the_params():
    tx = optim.build_optimizer(run_config(l1=0.1), 10)
    grads = {"w": jnp.ones((2, 2))}
    with pytest.raises(ValueError, match=re.escape("the L1/L2 penalty needs the params: call tx.update(grads")):
        tx.update(grads, tx.init(grads))


# --- the freeze mechanism --------------------------------------------------------------------


def held_paths(tx, steps, params=None, grads=1.0):
    """Per update, the set of top-level module/leaf paths whose update was all zeros."""
    params = params_tree() if params is None else params
    state, held = tx.init(params), []
    for _ in range(steps):
        updates, state = jax.jit(tx.update)(jax.tree.map(lambda p: jnp.full_like(p, grads), params), state, params)
        flat = jax.tree_util.tree_flatten_with_path(updates)[0]
        held.append({jax.tree_util.keystr(k) for k, u in flat if not np.any(u)})
        params = optax.apply_updates(params, updates)
    return held


def test_freeze_rules_for_good_and_for_n_steps_combine():
    embedding = "['embed']['embedding']"
    stack = {"['stack']['layer_0']['bias']", "['stack']['layer_0']['kernel']"}
    rules = [
        optim.FreezeRule(optim.modules(["stack"]), steps=2),
        optim.FreezeRule(optim.embedding_table(), steps=None),
        optim.FreezeRule(optim.embedding_table(), steps=1),  # the for-good rule wins
    ]
    tx = optax.chain(optim.freeze(rules), optax.sgd(0.1, momentum=0.9), optim.freeze(rules))
    assert held_paths(tx, 4) == [stack | {embedding}, stack | {embedding}, {embedding}, {embedding}]


def test_a_zero_step_rule_freezes_nothing():
    tx = optax.chain(optim.freeze([optim.FreezeRule(optim.modules(["stack"]), steps=0)]), optax.sgd(0.1))
    assert held_paths(tx, 2) == [set(), set()]


def test_freeze_rule_errors():
    for steps in (-1, True, 2.0):
        with pytest.raises(
            ValueError, match=re.escape(f"cfg.x: freeze steps must be None or an int >= 0, got {steps!r}")
        ):
            optim.FreezeRule(optim.modules(["stack"]), steps, source="cfg.x")
    ghost = optim.freeze([optim.FreezeRule(lambda params: {("embed", "table")}, source="my rule")])
    with pytest.raises(ValueError, match=re.escape("my rule: selects paths that are not parameters: ['embed/table']")):
        ghost.init(params_tree())


def test_freeze_rules_from_the_config():
    assert optim.freeze_rules(run_config()) == []
    assert optim.freeze_rules(run_config(train={"freeze_steps": 0})) == []
    rules = optim.freeze_rules(run_config(train={"freeze_steps": 7}, model={"freeze_embedding_steps": 3}))
    assert [(r.steps, r.source) for r in rules] == [
        (7, "config.train.init_modules=('embed', 'stack')"),  # the default modules
        (3, "config.model.freeze_embedding_steps"),
    ]
    selected = rules[0].select(params_tree())
    assert selected == {("embed", "embedding"), ("stack", "layer_0", "kernel"), ("stack", "layer_0", "bias")}
    (rule,) = optim.freeze_rules(run_config(model={"freeze_embedding": True}))
    assert (rule.steps, rule.select(params_tree())) == (None, {("embed", "embedding")})
    both = run_config(model={"freeze_embedding": True, "freeze_embedding_steps": 5})
    message = (
        "set config.model.freeze_embedding=True (frozen for good) or "
        "config.model.freeze_embedding_steps=5 (frozen for a while), not both"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        optim.build_optimizer(both, 10)


# --- the unit-peak invariant -----------------------------------------------------------------

UNIT_PEAK_CASES = {
    "adam_warmup_cosine": dict(name="adam", schedule="cosine", warmup_steps=3, end_lr_fraction=0.1),
    "adamw_weight_decay": dict(name="adamw", schedule="linear", warmup_steps=2, weight_decay=0.1),
    "sgd_nesterov": dict(name="sgd", schedule="cosine", warmup_steps=2, momentum=0.9, nesterov=True),
}


@pytest.mark.parametrize("case", sorted(UNIT_PEAK_CASES))
def test_unit_peak_updates_times_lr_equal_the_updates_at_lr(case):
    lr = 0.03
    config = run_config(
        train={"freeze_steps": 3, "init_modules": ("stack",)},
        model={"freeze_embedding": True},
        learning_rate=lr,
        clip_value=0.9,
        clip_global_norm=1.5,
        l1=0.01,
        l2=0.02,
        **UNIT_PEAK_CASES[case],
    )
    tx, unit = optim.build_optimizer(config, 10), optim.build_optimizer(config, 10, unit_peak=True)
    params = params_tree()
    state, unit_state = tx.init(params), unit.init(params)
    for step in range(8):
        grads = jax.tree.map(lambda p: jnp.sin(3.0 * p + step), params)
        updates, state = tx.update(grads, state, params)
        unit_updates, unit_state = unit.update(grads, unit_state, params)
        jax.tree.map(lambda u, v: np.testing.assert_allclose(lr * v, u, rtol=1e-6, atol=1e-9), updates, unit_updates)
        # Not trivially equal: the chain moves the free parameters and only those
        # (from update 1: the warm-up starts at lr 0).
        assert not np.any(updates["embed"]["embedding"])
        if step > 0:
            assert np.any(updates["output"]["kernel"]) and np.any(updates["stack"]["layer_0"]["kernel"]) == (step >= 3)
        params = optax.apply_updates(params, updates)


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_the_complete_optimizer_section_of_the_configs_is_what_optim_does_with_keys_absent(name):
    # configs get every key from config.OPTIMIZER_DEFAULTS; a run must not
    # change when a config spells out a default that optim would apply anyway.
    from seqjax import config as config_lib

    minimal = ml_collections.ConfigDict({"optimizer": {"name": name, "learning_rate": 0.1}})
    complete = ml_collections.ConfigDict({"optimizer": config_lib.optimizer_section(name=name, learning_rate=0.1)})
    assert set(complete.optimizer) == set(optim.OPTIMIZER_KEYS)
    params = {"w": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array([0.5])}
    results = []
    for config in (minimal, complete):
        tx = optim.build_optimizer(config, num_updates=10)
        state, p = tx.init(params), params
        for step in range(4):
            grads = jax.tree.map(lambda x, s=step: jnp.sin(x * (s + 1)), p)
            updates, state = tx.update(grads, state, p)
            p = optax.apply_updates(p, updates)
        results.append(p)
    jax.tree.map(np.testing.assert_array_equal, *results)
