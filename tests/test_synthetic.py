import ml_collections
import numpy as np
import pytest

from seqjax import tasks
from seqjax.data import synthetic


def test_adding_target_is_sum_of_the_two_marked_values():
    batch = synthetic.adding_problem(np.random.default_rng(0), 16, 30)
    values, markers = batch["inputs"][..., 0], batch["inputs"][..., 1]
    assert batch["inputs"].shape == (16, 30, 2)
    np.testing.assert_array_equal(markers.sum(1), 2)
    np.testing.assert_allclose(batch["targets"], (values * markers).sum(1), rtol=1e-6)


def test_adding_markers_fall_one_in_each_half_of_the_valid_part():
    batch = synthetic.adding_problem(np.random.default_rng(1), 64, 40, min_seq_len=10)
    lengths = batch["lengths"]
    assert lengths.min() >= 10 and lengths.max() <= 40 and len(set(lengths.tolist())) > 5
    for row, length in enumerate(lengths):
        first, second = np.flatnonzero(batch["inputs"][row, :, 1])
        assert first < length // 2 <= second < length
        assert not batch["inputs"][row, length:].any()  # padding is all zeros


def test_adding_mean_predictor_has_mse_one_sixth():
    batch = synthetic.adding_problem(np.random.default_rng(2), 20000, 10)
    mse = np.mean((batch["targets"] - 1.0) ** 2)
    assert abs(mse - synthetic.ADDING_MEAN_BASELINE_MSE) < 0.01


def test_copy_task_layout():
    batch = synthetic.copy_task(np.random.default_rng(0), 4, delay=7, num_symbols=8, copy_len=3)
    inputs, targets = batch["inputs"], batch["targets"]
    assert inputs.shape == targets.shape == (4, 7 + 6)
    np.testing.assert_array_equal(targets[:, -3:], inputs[:, :3])
    assert (inputs[:, :3] >= 1).all() and (inputs[:, :3] <= 8).all()
    np.testing.assert_array_equal(inputs[:, 3 + 7 - 1], 9)  # delimiter right before recall
    assert not targets[:, :-3].any() and not inputs[:, 3 : 3 + 6].any() and not inputs[:, -3:].any()


def test_task_batches_are_a_pure_function_of_seed_split_and_index():
    task = tasks.get(ml_collections.ConfigDict({"name": "adding", "seq_len": 12}))
    a = task.batch("train", 5, 4, seed=3)
    np.testing.assert_array_equal(a["inputs"], task.batch("train", 5, 4, seed=3)["inputs"])
    assert not np.array_equal(a["inputs"], task.batch("train", 6, 4, seed=3)["inputs"])
    assert not np.array_equal(a["inputs"], task.batch("eval", 5, 4, seed=3)["inputs"])
    assert not np.array_equal(a["inputs"], task.batch("train", 5, 4, seed=4)["inputs"])


def test_out_of_range_token_ids_are_rejected_with_the_ids():
    task = tasks.get(ml_collections.ConfigDict({"name": "copy", "seq_len": 5, "num_symbols": 8, "copy_len": 2}))
    batch = task.batch("train", 0, 2, seed=0)
    batch["inputs"][0, 0] = 10
    with pytest.raises(ValueError, match=r"token id out of range \[0, 10\): found \[10\]"):
        task.validate_batch(batch)
    batch["inputs"] = batch["inputs"].astype(np.float32)
    with pytest.raises(TypeError, match="expects integer token ids"):
        task.validate_batch(batch)


def test_lengths_longer_than_the_sequence_are_rejected():
    task = tasks.get(ml_collections.ConfigDict({"name": "adding", "seq_len": 6}))
    batch = task.batch("train", 0, 2, seed=0)
    batch["lengths"] = np.array([6, 7], np.int32)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T=6\]"):
        task.validate_batch(batch)


def test_unknown_task_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match="unknown task config.task.name='addding'; registered: adding, .*copy"):
        tasks.get(ml_collections.ConfigDict({"name": "addding"}))
