import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default
from seqjax import parallel, tasks, training


def stream_config(**train):
    config = default.get_config("copy,smoke")
    config.task.seq_len, config.task.copy_len = 5, 3  # episodes of 11 steps
    config.model.hidden_size, config.model.num_layers = 8, 2
    config.optimizer.schedule, config.optimizer.warmup_steps = "constant", 0
    config.train.tbptt_len, config.train.stateful = 4, True
    config.train.eval_batches = 4  # 16 steps: reaches the recall steps 8-10 of the first episode
    for key, value in train.items():
        config.train[key] = value
    return config


def test_stream_segments_continue_each_other_and_mark_episode_starts():
    task = tasks.get(ml_collections.ConfigDict({"name": "copy", "seq_len": 5, "num_symbols": 8, "copy_len": 3}))
    parts = [task.stream_batch("train", i, 3, 4, seed=0) for i in range(6)]
    whole = task.stream_batch("train", 0, 3, 24, seed=0)
    for name in ("inputs", "targets", "resets"):
        np.testing.assert_array_equal(np.concatenate([p[name] for p in parts], axis=1), whole[name])
    np.testing.assert_array_equal(np.flatnonzero(whole["resets"][0]), [0, 11, 22])
    assert not np.array_equal(whole["inputs"][0], whole["inputs"][1])  # rows are different streams


def test_carry_crosses_segments_exactly_and_resets_restart_it():
    config = stream_config()
    trainer = training.Trainer(config, parallel.make_mesh(jax.devices()[:1]))
    state = trainer.init_state()

    def apply(x, carry, resets):
        return trainer.model.apply({"params": state.params}, x, initial_carry=carry, return_carry=True, resets=resets)

    whole = trainer.task.stream_batch("train", 0, 2, 20, config.seed)
    expected, _ = apply(whole["inputs"], None, whole["resets"])
    carry, pieces = None, []
    for index in range(5):
        segment = trainer.task.stream_batch("train", index, 2, 4, config.seed)
        logits, carry = apply(segment["inputs"], carry, segment["resets"])
        pieces.append(logits)
    np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), expected, rtol=1e-5, atol=1e-6)
    # The second episode starts at step 11: from there on, the output is that of a fresh start.
    fresh, _ = apply(whole["inputs"][:, 11:], None, whole["resets"][:, 11:])
    np.testing.assert_allclose(expected[:, 11:], fresh, rtol=1e-5, atol=1e-6)
    no_reset, _ = apply(whole["inputs"], None, np.zeros_like(whole["resets"]))
    assert not np.allclose(no_reset[:, 11:], fresh, atol=1e-4)


def test_stateful_training_resumes_mid_stream_from_its_checkpoint(tmp_path):
    def run(workdir, num_steps):
        config = stream_config(num_steps=num_steps, log_every=2, eval_every=2, checkpoint_every=2)
        return training.train_and_evaluate(config, str(workdir), parallel.make_mesh(jax.devices()[:1]))

    straight = run(tmp_path / "straight", 6)
    run(tmp_path / "resumed", 2)
    resumed = run(tmp_path / "resumed", 6)
    assert resumed == straight

    def losses(d):
        return [r["train_loss"] for r in map(json.loads, open(d / "metrics.jsonl")) if "train_loss" in r]

    np.testing.assert_allclose(losses(tmp_path / "resumed")[-2:], losses(tmp_path / "straight")[-2:], rtol=1e-6)


def test_stateful_needs_a_segment_length():
    config = stream_config(tbptt_len=0)
    with pytest.raises(ValueError, match="stateful=True trains on stream segments .* set config.train.tbptt_len > 0"):
        training.Trainer(config)


def test_streams_refuse_variable_length_episodes():
    task = tasks.get(ml_collections.ConfigDict({"name": "adding", "seq_len": 6, "min_seq_len": 3}))
    with pytest.raises(ValueError, match="variable-length episodes; streams need fixed-length ones"):
        task.stream_batch("train", 0, 2, 4, seed=0)


def run_stream_steps(config, devices, num_steps):
    trainer = training.Trainer(config, parallel.make_mesh(devices))
    state, losses = trainer.init_state(), []
    for _ in range(num_steps):
        state, step_metrics = trainer.step(state)
        losses.append(float(step_metrics["loss"]))
    return losses, state


@pytest.mark.parametrize("backprop_len", [0, 6])
def test_stream_carry_is_sharded_with_the_batch_and_eight_devices_match_one(backprop_len):
    assert jax.device_count() == 8, "tests/conftest.py asks XLA for 8 CPU devices"
    config = stream_config(batch_size=8, tbptt_backprop_len=backprop_len)
    one_losses, one_state = run_stream_steps(config, jax.devices()[:1], 3)
    eight_losses, eight_state = run_stream_steps(config, jax.devices(), 3)
    np.testing.assert_allclose(one_losses, eight_losses, rtol=1e-5)
    for leaf in jax.tree.leaves(eight_state.stream_carry):
        assert leaf.sharding.spec == jax.sharding.PartitionSpec("data")
        assert {shard.data.shape for shard in leaf.addressable_shards} == {(1, config.model.hidden_size)}
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        jax.device_get(one_state.stream_carry),
        jax.device_get(eight_state.stream_carry),
    )
    assert all(leaf.sharding.spec == jax.sharding.PartitionSpec() for leaf in jax.tree.leaves(eight_state.params))
