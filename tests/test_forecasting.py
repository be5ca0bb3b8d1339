"""Forecasting: windows, splits without leakage, weighted eval, naive baseline."""

import ml_collections
import numpy as np
import pytest

from seqjax.data import series as series_lib
from seqjax.tasks.forecasting import ForecastTask


def task_config(**overrides):
    config = ml_collections.ConfigDict(
        dict(
            name="forecast",
            series="synthetic",
            series_len=300,
            input_len=12,
            horizon=3,
            mode="many_to_one",
            split=(0.6, 0.2, 0.2),
        )
    )
    config.update(overrides)
    return config


def test_windows_follow_the_series():
    inputs, targets = series_lib.windows(np.arange(10.0), 4, 2)
    assert inputs.shape == (5, 4) and targets.shape == (5, 2)
    np.testing.assert_array_equal(inputs[2], [2, 3, 4, 5])
    np.testing.assert_array_equal(targets[2], [6, 7])
    with pytest.raises(ValueError, match="too short for windows of 8 inputs"):
        series_lib.windows(np.arange(5.0), 8, 1)


def test_splits_are_in_time_order_and_eval_starts_with_context():
    parts = series_lib.split_series(np.arange(100.0), (0.7, 0.15, 0.15), context=5)
    assert parts["train"][-1] == 69 and parts["eval"][0] == 65 and parts["eval"][-1] == 84
    assert parts["test"][0] == 80 and parts["test"][-1] == 99


def test_normalizer_is_fitted_on_train_only_and_round_trips(tmp_path):
    task = ForecastTask(task_config())
    raw = series_lib.synthetic_series(300, 0, 0.1)
    np.testing.assert_allclose(task.normalizer.mean, raw[:180].mean(), rtol=1e-6)
    task.save_assets(str(tmp_path))
    assert series_lib.Normalizer.load(str(tmp_path / "normalizer.json")) == task.normalizer


def test_eval_covers_every_window_once_with_weights():
    task = ForecastTask(task_config())
    batches = list(task.eval_batches("eval", 16, seed=0))
    assert sum(b["weights"].sum() for b in batches) == task.num_examples("eval")
    firsts = np.concatenate([b["inputs"][b["weights"] > 0, 0, 0] for b in batches])
    assert len(np.unique(firsts)) == len(firsts)  # distinct windows (the series is noisy)


def test_perfect_forecast_scores_zero_and_naive_baseline_matches_numpy():
    task = ForecastTask(task_config())
    batch = next(task.eval_batches("test", 32, seed=0))
    _, means = task.loss_and_metrics(batch["targets"], batch)
    metrics = task.finalize_metrics({name: float(value) for name, value in means.items()})
    assert float(metrics["mae"]) == pytest.approx(0.0, abs=1e-6)
    real = batch["weights"] > 0
    naive = np.repeat(batch["inputs"][real, -1:, 0], 3, axis=1)
    expected = np.abs(naive - batch["targets"][real]).mean() * task.normalizer.std
    assert float(metrics["naive_mae"]) == pytest.approx(expected, rel=1e-5)
    assert float(metrics["naive_rmse"]) >= float(metrics["naive_mae"])


def test_many_to_many_targets_are_the_next_values():
    task = ForecastTask(task_config(mode="many_to_many"))
    batch = task.batch("train", 0, 4, seed=0)
    assert batch["inputs"].shape == (4, 12, 1) and batch["targets"].shape == (4, 12)
    np.testing.assert_array_equal(batch["targets"][:, :-1], batch["inputs"][:, 1:, 0])
    assert task.head == "per_step" and task.output_size == 1


def test_bad_mode_raises():
    with pytest.raises(ValueError, match="config.task.mode must be one of"):
        ForecastTask(task_config(mode="sideways"))
