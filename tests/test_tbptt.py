import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from seqjax import parallel, tbptt, training


def copy_config(cell="lstm", seq_len=5, **train):
    config = default.get_config("copy,smoke")
    config.task.seq_len, config.task.copy_len = seq_len, 3   # T = seq_len + 6
    config.model.cell, config.model.hidden_size, config.model.num_layers = cell, 8, 2
    config.optimizer.name, config.optimizer.schedule, config.optimizer.warmup_steps = "sgd", "constant", 0
    config.optimizer.clip_global_norm, config.optimizer.momentum = 0.0, 0.0
    config.optimizer.learning_rate = 1.0  # so (before - after) / lr recovers the gradient precisely
    for key, value in train.items():
        config.train[key] = value
    return config


def one_step(config):
    trainer = training.Trainer(config, parallel.make_mesh(jax.devices()[:1]))
    state = trainer.init_state()
    before = jax.device_get(state.params)
    state, metrics = trainer.step(state)
    grads = jax.tree.map(lambda a, b: (a - b) / config.optimizer.learning_rate, before, jax.device_get(state.params))
    return grads, jax.device_get(metrics), trainer, before


def test_split_pads_the_ragged_last_chunk_and_masks_it():
    batch = {"inputs": np.arange(2 * 7).reshape(2, 7), "targets": np.ones((2, 7)), "lengths": np.array([7, 4])}
    chunks = tbptt.split_into_chunks(batch, 3)
    assert chunks["inputs"].shape == (3, 2, 3)
    np.testing.assert_array_equal(chunks["inputs"][2, 0], [6, 0, 0])
    np.testing.assert_array_equal(chunks["lengths"], [[3, 3], [3, 1], [1, 0]])
    np.testing.assert_array_equal(chunks["step_mask"][1], [[1, 1, 1], [1, 0, 0]])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_one_chunk_of_the_whole_sequence_is_full_bptt(cell):
    full_grads, full_metrics, _, _ = one_step(copy_config(cell))
    chunk_grads, chunk_metrics, _, _ = one_step(copy_config(cell, tbptt_len=11))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6), full_grads, chunk_grads)
    np.testing.assert_allclose(chunk_metrics["loss"], full_metrics["loss"], rtol=1e-6)


def hand_truncated_gradient(trainer, params, batch, chunk_len):
    """Σ_c ∂(loss of chunk c)/∂θ with the carry entering chunk c held constant, by a Python loop."""
    model = trainer.model
    time = batch["inputs"].shape[1]
    total = float(batch["targets"].size)
    carry, grads = None, jax.tree.map(jnp.zeros_like, params)
    for start in range(0, time, chunk_len):
        piece = {k: jnp.asarray(v[:, start:start + chunk_len]) for k, v in batch.items()}

        def chunk_loss(p, carry=carry, piece=piece):
            logits, new_carry = model.apply({"params": p}, piece["inputs"], initial_carry=carry, return_carry=True)
            log_probs = jax.nn.log_softmax(logits)
            xent = -jnp.take_along_axis(log_probs, piece["targets"][..., None], axis=-1)
            return xent.sum() / total, new_carry

        (_, carry), chunk_grads = jax.value_and_grad(chunk_loss, has_aux=True)(params)
        grads = jax.tree.map(jnp.add, grads, chunk_grads)
    return grads


@pytest.mark.parametrize("chunk_len", [3, 4])
def test_truncated_gradient_equals_the_hand_built_one(chunk_len):
    config = copy_config(tbptt_len=chunk_len)
    grads, _, trainer, params = one_step(config)
    batch = trainer.task.batch("train", 0, config.train.batch_size, config.seed)
    expected = hand_truncated_gradient(trainer, params, batch, chunk_len)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6), grads, expected)
    full, _, _, _ = one_step(copy_config())
    differs = jax.tree.map(lambda a, b: not np.allclose(a, b, rtol=1e-3, atol=1e-6), grads, full)
    assert any(jax.tree.leaves(differs)), "truncation must cut some gradient paths"


def test_carry_crosses_chunks_so_chunked_forward_equals_full_forward():
    config = copy_config()
    trainer = training.Trainer(config, parallel.make_mesh(jax.devices()[:1]))
    params = trainer.init_state().params
    batch = trainer.task.batch("train", 0, 4, config.seed)
    full = trainer.model.apply({"params": params}, batch["inputs"])
    chunks = tbptt.split_into_chunks(batch, 4)
    carry, pieces = None, []
    for c in range(chunks["inputs"].shape[0]):
        logits, carry = trainer.model.apply({"params": params}, chunks["inputs"][c], chunks["lengths"][c],
                                            initial_carry=carry, return_carry=True)
        pieces.append(logits)
    chunked = jnp.concatenate(pieces, axis=1)[:, :full.shape[1]]
    np.testing.assert_allclose(chunked, full, rtol=1e-5, atol=1e-6)


def test_per_chunk_updates_step_once_per_chunk_and_train_end_to_end(tmp_path):
    config = copy_config(tbptt_len=4, tbptt_update="per_chunk")
    config.optimizer.name, config.optimizer.learning_rate = "adam", 1e-2
    final = training.train_and_evaluate(config, str(tmp_path), parallel.make_mesh(jax.devices()[:1]))
    assert final["step"] == config.train.num_steps and np.isfinite(final["test_loss"])
    trainer = training.Trainer(config, parallel.make_mesh(jax.devices()[:1]))
    state, _ = trainer.step(trainer.init_state())
    assert int(state.step) == 3 and trainer.batches_done(state) == 1  # T=11, K=4 -> 3 chunks


def test_bidirectional_and_many_to_one_models_are_refused():
    config = copy_config(tbptt_len=4)
    config.model.bidirectional = True
    with pytest.raises(ValueError, match="bidirectional layers .* cannot be truncated causally"):
        training.Trainer(config)
    adding = default.get_config("smoke")
    adding.train.tbptt_len = 5
    with pytest.raises(ValueError, match="TBPTT needs a per-step loss, but the model head is 'last'"):
        training.Trainer(adding)
