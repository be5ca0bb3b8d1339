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


# ----------------------------------------------------------------------------- Transformers


def transformer_model(variant="smoke", **model_fields):
    from configs import transformer_synthetic

    config = transformer_synthetic.get_config(variant)
    for key, value in model_fields.items():
        config.model[key] = value
    task = tasks.get(config.task)
    return models.build(config.model, task), task, config


def output_shape(model, task, config):
    """Shape of the model's predictions on a task batch (traced, not compiled)."""
    batch = task.batch("train", 0, 2, config.seed)
    inputs, lengths = jnp.asarray(batch["inputs"]), batch.get("lengths")
    variables = jax.eval_shape(model.init, jax.random.key(0), inputs, lengths)
    return jax.eval_shape(model.apply, variables, inputs, lengths).shape, inputs.shape


def test_transformer_lm_predicts_every_step_of_the_copy_task():
    model, task, config = transformer_model(num_kv_heads=1, positional="rotary", norm_position="pre")
    shape, inputs_shape = output_shape(model, task, config)
    assert shape == inputs_shape + (task.vocab_size,)
    assert model.config.num_kv_heads == 1 and model.config.positional == "rotary"


def test_transformer_classifier_maps_adding_sequences_to_one_number():
    model, task, config = transformer_model("classifier,smoke", pooling="mean", attention_implementation="xla")
    shape, inputs_shape = output_shape(model, task, config)
    assert shape == (inputs_shape[0], 1)
    assert model.pooling == "mean" and model.config.implementation == "xla"


def test_transformer_seq2seq_builds_with_its_own_decoder_depth():
    model, task, _ = transformer_model("seq2seq,smoke", num_decoder_layers=3)
    assert model.num_decoder_layers == 3 and model.target_vocab_size == task.target_vocab_size


def test_an_encoder_decoder_on_a_task_without_targets_to_generate_is_refused():
    with pytest.raises(
        ValueError,
        match=r"config.model.name='transformer_seq2seq' generates target sequences; task CopyTask has none",
    ):
        transformer_model(name="transformer_seq2seq")


def test_transformer_config_typos_and_bad_values_are_named():
    from seqjax import config as config_lib

    _, _, config = transformer_model()
    config.model.d_modle = 32
    with pytest.raises(
        config_lib.ConfigError,
        match=r"unknown config key config.model.d_modle \(did you mean "
        r"config.model.d_model\?\)",
    ):
        config_lib.validate(config)
    with pytest.raises(ValueError, match="bad config.model for transformer_lm: unknown positional='sinusodal'"):
        transformer_model(positional="sinusodal")
    with pytest.raises(
        ValueError, match="bad config.model for transformer_lm: d_model=30 is not divisible by num_heads=4"
    ):
        transformer_model(d_model=30, num_heads=4)


def test_transformer_models_refuse_tasks_of_the_wrong_shape():
    with pytest.raises(
        ValueError, match="'transformer_lm' does not fit the many-to-one task AddingTask; use transformer_classifier"
    ):
        transformer_model("classifier,smoke", name="transformer_lm")
    with pytest.raises(ValueError, match="'transformer_classifier' does not fit the per-step"):
        transformer_model(name="transformer_classifier")


def test_transformer_seq2seq_reads_decoder_inputs_from_translation_batches():
    from seqjax import steps

    model, task, config = transformer_model("seq2seq,smoke")
    batch = task.batch("train", 0, 2, config.seed)
    extra = steps.model_kwargs(model, batch)
    assert set(extra) == {"decoder_inputs"}
    inputs, lengths = jnp.asarray(batch["inputs"]), jnp.asarray(batch["lengths"])
    variables = jax.eval_shape(model.init, jax.random.key(0), inputs, lengths, **extra)
    shape = jax.eval_shape(model.apply, variables, inputs, lengths, **extra).shape
    assert shape == batch["decoder_inputs"].shape + (task.target_vocab_size,)
    config.task.teacher_forcing_ratio = 0.5
    with pytest.raises(ValueError, match="transformer_seq2seq trains with full teacher forcing"):
        models.build(config.model, tasks.get(config.task))
