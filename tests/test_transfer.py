"""Transfer learning: copied modules, shape errors, freezing for N steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seqjax import transfer


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


def test_freeze_for_holds_modules_still_then_releases_them():
    tx = optax.chain(transfer.freeze_for(2, ("embed",)), optax.sgd(1.0))
    p = params()
    state = tx.init(p)
    grads = jax.tree.map(jnp.ones_like, p)
    history = []
    for _ in range(3):
        updates, state = tx.update(grads, state, p)
        history.append(
            (float(jnp.abs(updates["embed"]["embedding"]).sum()), float(jnp.abs(updates["output"]["kernel"]).sum()))
        )
    assert history[0][0] == 0.0 and history[1][0] == 0.0 and history[2][0] > 0.0
    assert all(out > 0 for _, out in history)


def test_latest_params_names_the_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint to transfer from"):
        transfer.latest_params(str(tmp_path))


def test_frozen_modules_do_not_move_under_weight_decay():
    tx = transfer.frozen(optax.adamw(0.1, weight_decay=0.5), 3, ("embed",))
    p = params()
    state = tx.init(p)
    for step in range(4):
        updates, state = tx.update(jax.tree.map(jnp.ones_like, p), state, p)
        new = optax.apply_updates(p, updates)
        moved = not np.array_equal(new["embed"]["embedding"], p["embed"]["embedding"])
        assert moved == (step >= 3)
        p = new
