"""Forecasting (regression on a time series), many-to-one and many-to-many.

- many_to_one: `input_len` past values -> the next `horizon` values, read
  from the final hidden state (head 'last', output_size = horizon).
- many_to_many: at every step predict the next value (head 'per_step',
  output_size = 1), the synchronous form of the same problem.

The loss is MSE on normalised values; MAE and RMSE are reported in the
series' own units next to the naive last-value forecast ("tomorrow equals
today"), the baseline a forecaster has to beat (`*_vs_naive` < 1).
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np

from seqjax.data import series as series_lib
from seqjax.tasks.base import SPLITS, GeneratedTask

MODES = ("many_to_one", "many_to_many")


class ForecastTask(GeneratedTask):
    """Config: series ('synthetic' or a path to a CSV file), column (CSV
    column to forecast), data_dir (where the CSV is prepared as a TFDS
    dataset), series_len, series_seed and noise (synthetic only), input_len,
    horizon (many_to_one), mode, split (train/eval/test fractions)."""

    vocab_size = 0
    config_keys = (
        "series",
        "column",
        "data_dir",
        "series_len",
        "series_seed",
        "noise",
        "input_len",
        "horizon",
        "mode",
        "split",
    )

    def __init__(self, config):
        super().__init__(config)
        self.mode = config.get("mode", "many_to_one")
        if self.mode not in MODES:
            raise ValueError(f"config.task.mode must be one of {MODES}, got {self.mode!r}")
        self.input_len = config.get("input_len", 24)
        self.horizon = config.get("horizon", 1) if self.mode == "many_to_one" else 1
        self.head = "last" if self.mode == "many_to_one" else "per_step"
        self.output_size = self.horizon if self.mode == "many_to_one" else 1
        raw = self._load_series()
        parts = series_lib.split_series(raw, tuple(config.get("split", (0.7, 0.15, 0.15))), self.input_len)
        self.normalizer = series_lib.Normalizer.fit(parts["train"])
        self._windows = {}
        for split in SPLITS:
            normalized = self.normalizer.normalize(parts[split])
            self._windows[split] = series_lib.windows(normalized, self.input_len, self.horizon)

    def _load_series(self) -> np.ndarray:
        source = self.config.get("series", "synthetic")
        if source == "synthetic":
            return series_lib.synthetic_series(
                self.config.get("series_len", 2000), self.config.get("series_seed", 0), self.config.get("noise", 0.1)
            )
        from seqjax.data import sources  # local builders: only needed for real files

        return sources.load_time_series(
            source, self.config.get("column", ""), data_dir=self.config.get("data_dir", "") or None
        )

    def num_examples(self, split: str) -> int:
        return len(self._windows[split][0])

    def make_batch(self, rng, batch_size):
        """Training batches: windows of the train part drawn uniformly."""
        picks = rng.integers(0, self.num_examples("train"), batch_size)
        return self._gather("train", picks, np.ones(batch_size, np.float32))

    def eval_batches(self, split, batch_size, seed, num_batches=0):
        """Every window of `split` once, in time order (or the first
        `num_batches` batches when > 0); the last batch is padded with copies
        of window 0 and weight 0. The pass does not depend on the seed."""
        del seed
        count = self.num_examples(split)
        starts = range(0, count, batch_size)
        for start in starts[:num_batches] if num_batches else starts:
            picks = np.arange(start, start + batch_size)
            weights = (picks < count).astype(np.float32)
            yield self._gather(split, np.where(picks < count, picks, 0), weights)

    def _gather(self, split: str, picks: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
        inputs, targets = (part[picks] for part in self._windows[split])
        if self.mode == "many_to_many":
            # Step t sees values 0..t and predicts value t + 1.
            targets = np.concatenate([inputs[:, 1:], targets], axis=1)
        return {
            "inputs": inputs[..., None].astype(np.float32),
            "targets": targets.astype(np.float32),
            "weights": weights,
        }

    def encode_raw(self, items):
        """Windows of raw series values, each [input_len], normalised as in training."""
        windows = np.asarray(items, np.float64)
        if windows.ndim != 2 or windows.shape[1] != self.input_len or not np.isfinite(windows).all():
            raise ValueError(
                f"give windows of {self.input_len} finite series values each ([N, {self.input_len}], "
                f"config.task.input_len), got shape {windows.shape}"
            )
        inputs = self.normalizer.normalize(windows)[..., None].astype(np.float32)
        return {"inputs": inputs, "lengths": np.full(len(windows), self.input_len, np.int32)}

    def describe(self, outputs, batch):
        """Per window, the forecasts in the series' units: the next `horizon`
        values (many_to_one), or the next value after each step (many_to_many)."""
        values = self.normalizer.denormalize(outputs.reshape(len(outputs), -1).astype(np.float64))
        return [row for row in values]

    def _naive(self, batch):
        """Last-value forecast, the same shape as the targets."""
        values = batch["inputs"][..., 0]
        if self.mode == "many_to_many":
            return values
        return jnp.repeat(values[:, -1:], self.horizon, axis=1)

    def metric_sums(self, predictions, batch):
        """{name: (weighted sum, weighted count)} over targets; `predictions`
        [B, horizon] (many_to_one) or [B, T, 1] (many_to_many)."""
        predictions = predictions.reshape(batch["targets"].shape)
        weights = jnp.broadcast_to(batch["weights"][:, None], batch["targets"].shape)
        count = weights.sum()
        error = (predictions - batch["targets"]) * self.normalizer.std
        naive_error = (self._naive(batch) - batch["targets"]) * self.normalizer.std
        normalized_mse = ((predictions - batch["targets"]) ** 2 * weights).sum()
        return {
            "loss": (normalized_mse, count),
            "mae": ((jnp.abs(error) * weights).sum(), count),
            "mse": ((error**2 * weights).sum(), count),
            "naive_mae": ((jnp.abs(naive_error) * weights).sum(), count),
            "naive_mse": ((naive_error**2 * weights).sum(), count),
        }

    def finalize_metrics(self, metrics):
        """Adds RMSE (after averaging squared errors, never before) and the
        ratios to the naive forecast."""
        metrics = dict(metrics)
        metrics["rmse"] = metrics["mse"] ** 0.5
        metrics["naive_rmse"] = metrics["naive_mse"] ** 0.5
        metrics["mae_vs_naive"] = metrics["mae"] / metrics["naive_mae"]
        metrics["rmse_vs_naive"] = metrics["rmse"] / metrics["naive_rmse"]
        return metrics

    def save_assets(self, workdir: str) -> None:
        """The normaliser, so predictions of a restored model can be read in
        the series' units."""
        self.normalizer.save(os.path.join(workdir, "normalizer.json"))
