import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default
from seqjax import models, tasks


def build(variant=None, **model_fields):
    config = default.get_config(variant)
    for key, value in model_fields.items():
        config.model[key] = value
    task = tasks.get(config.task)
    return models.build(config.model, task), task


def init_apply(model, inputs, lengths=None):
    variables = model.init(jax.random.key(0), inputs, lengths)
    return variables, model.apply(variables, inputs, lengths)


def test_adding_model_maps_sequences_to_one_number():
    model, _ = build(hidden_size=8)
    _, out = init_apply(model, jnp.ones((3, 7, 2)), jnp.array([7, 4, 1]))
    assert out.shape == (3, 1)


def test_copy_model_embeds_tokens_and_predicts_every_step():
    model, task = build("copy", hidden_size=8)
    tokens = jnp.array(task.batch("train", 0, 2, seed=0)["inputs"])
    variables, out = init_apply(model, tokens)
    assert out.shape == (2, tokens.shape[1], task.vocab_size)
    assert variables["params"]["embed"]["embedding"].shape == (task.vocab_size, 32)


def test_bidirectional_last_head_reads_each_direction_where_it_ends():
    model, _ = build(hidden_size=4, bidirectional=True, head="last")
    x = jax.random.normal(jax.random.key(1), (2, 6, 2))
    lengths = jnp.array([6, 3])
    variables = model.init(jax.random.key(0), x, lengths)
    out, state = model.apply(variables, x, lengths, capture_intermediates=True)
    stack_out = state["intermediates"]["stack"]["__call__"][0][0]  # [B, T, 2H]
    forward_last = stack_out[jnp.arange(2), lengths - 1, :4]
    backward_first = stack_out[:, 0, 4:]
    dense = variables["params"]["output"]
    expected = jnp.concatenate([forward_last, backward_first], -1) @ dense["kernel"] + dense["bias"]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("head", ["mean", "max", "last"])
def test_pooling_heads_ignore_padding(head):
    model, _ = build(hidden_size=4, head=head)
    x = jax.random.normal(jax.random.key(1), (2, 6, 2))
    lengths = jnp.array([6, 3])
    variables, out = init_apply(model, x, lengths)
    noisy = x.at[1, 3:].set(100.0)
    np.testing.assert_allclose(model.apply(variables, noisy, lengths), out, rtol=1e-6)


def test_token_inputs_must_be_two_dimensional():
    model, _ = build("copy", hidden_size=4)
    with pytest.raises(ValueError, match=r"token-id inputs must be \[batch, time\], got shape \(2, 5, 1\)"):
        model.init(jax.random.key(0), jnp.zeros((2, 5, 1), jnp.int32))


def test_unknown_model_name_lists_the_registry():
    with pytest.raises(ValueError, match="unknown model config.model.name='transformerr'; registered: recurrent"):
        models.build(ml_collections.ConfigDict({"name": "transformerr"}), None)
