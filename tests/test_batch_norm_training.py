"""BatchNorm (config.model.norm='batch') through the Trainer: the running
statistics are trained, sharded like parameters, used by evaluation,
checkpointed and reloaded."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import transformer_synthetic
from seqjax import checkpoint, optim, parallel, runs, steps, training


def batch_norm_config():
    config = transformer_synthetic.get_config("classifier,smoke")
    config.model.norm = "batch"
    config.model.dropout_rate = 0.0
    return config


def reference_steps(trainer, num_steps):
    """The same updates written out by hand on one device: apply with the
    mutable 'batch_stats', optax update, next batch."""
    model, task, config = trainer.model, trainer.task, trainer.config
    example = task.batch("train", 0, 2, config.seed)
    variables = model.init(
        jax.random.fold_in(jax.random.key(config.seed), 0), example["inputs"], example.get("lengths")
    )
    params, stats = variables["params"], variables["batch_stats"]
    tx = optim.build_optimizer(config, config.train.num_steps)
    opt_state = tx.init(params)
    for index in range(num_steps):
        batch = task.batch("train", index, config.train.batch_size, config.seed)

        def loss_fn(p):
            predictions, updated = model.apply(
                {"params": p, "batch_stats": stats},
                batch["inputs"],
                batch.get("lengths"),
                deterministic=False,
                mutable=["batch_stats"],
            )
            return task.loss_and_metrics(predictions, batch)[0], updated["batch_stats"]

        (_, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params, stats = optax.apply_updates(params, updates), new_stats
    return params, stats


def test_trainer_updates_running_statistics_like_a_hand_written_loop():
    config = batch_norm_config()
    # Small steps (3 of a 100-step warm-up): 8-device and one-device
    # reductions differ in the last bits, which large updates would amplify.
    config.train.num_steps, config.optimizer.warmup_steps = 101, 100
    trainer = training.Trainer(config)  # 8 simulated devices: statistics over the global batch
    state = trainer.init_state()
    assert state.batch_stats is not None
    initial_means = [np.asarray(x) for x in jax.tree.leaves(state.batch_stats) if np.all(np.asarray(x) == 0)]
    assert initial_means, "BatchNorm running means start at zero"
    for _ in range(3):
        state, _ = trainer.step(state)
    params, stats = reference_steps(trainer, 3)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5), jax.device_get(state.batch_stats), stats
    )
    # atol: biases feeding a BatchNorm get ~0 gradients, which Adam turns into
    # O(lr) steps of reduction-order noise; real parameters are O(0.1).
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-4), jax.device_get(state.params), params
    )
    moved = [np.abs(np.asarray(x)).max() for x in jax.tree.leaves(state.batch_stats)]
    assert min(moved) > 0, "every running statistic moved away from its initial value"


def test_evaluation_uses_the_running_statistics():
    trainer = training.Trainer(batch_norm_config())
    state = trainer.init_state()
    for _ in range(3):
        state, _ = trainer.step(state)
    batch = trainer.task.batch("eval", 0, trainer.config.train.batch_size, trainer.config.seed)
    predict = jax.jit(lambda state, batch: steps.predict(state, batch, trainer.model))
    full = np.asarray(predict(state, batch))
    # Running averages make each row's prediction independent of the others:
    # the first half of the batch, padded with copies of row 0, predicts the same.
    half = {k: jnp.concatenate([v[:4], jnp.repeat(v[:1], 4, axis=0)]) for k, v in batch.items()}
    np.testing.assert_allclose(np.asarray(predict(state, half))[:4], full[:4], rtol=1e-5, atol=1e-6)
    shifted = state.replace(batch_stats=jax.tree.map(lambda x: x + 1.0, state.batch_stats))
    assert not np.allclose(np.asarray(predict(shifted, batch)), full, atol=1e-4)


def test_running_statistics_are_checkpointed_and_reloaded(tmp_path):
    config = batch_norm_config()
    config.train.update(num_steps=4, log_every=2, eval_every=4, checkpoint_every=4)
    config.optimizer.warmup_steps = 3
    training.train_and_evaluate(config, str(tmp_path))
    run = runs.load_run(str(tmp_path))
    assert set(run.variables) == {"params", "batch_stats"}
    ckpt = checkpoint.Checkpointer([str(tmp_path / "checkpoints")], 1, 1)
    [saved] = ckpt.restore_latest(run.trainer.init_state())
    ckpt.close()
    jax.tree.map(
        np.testing.assert_array_equal, jax.device_get(saved.batch_stats), jax.device_get(run.model_state["batch_stats"])
    )
    assert max(np.abs(np.asarray(x)).max() for x in jax.tree.leaves(run.model_state["batch_stats"])) > 0


def test_stateful_training_of_a_transformer_is_refused():
    # Stateful streams carry a recurrent state; BatchNorm models are Transformers.
    config = batch_norm_config()
    config.train.update(stateful=True, tbptt_len=4)
    with pytest.raises(ValueError, match=r"TBPTT needs a recurrent model \(config.model.name='recurrent'\); got "):
        training.Trainer(config, parallel.make_mesh(jax.devices()[:1]))
