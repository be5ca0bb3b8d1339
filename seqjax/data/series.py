"""Time series for forecasting: splits, normalisation, sliding windows.

A series is split in time order (train, then eval, then test), the
normaliser is fitted on the train part only (so no statistic leaks from the
future), and windows of `input_len` steps predict the next `horizon` steps.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

SPLIT_ORDER = ("train", "eval", "test")


def synthetic_series(length: int, seed: int, noise: float = 0.1) -> np.ndarray:
    """[length] float32: two incommensurate sines, a slow trend and noise,
    a pure function of (length, seed)."""
    rng = np.random.default_rng([seed, 7])
    t = np.arange(length, dtype=np.float64)
    clean = np.sin(2 * np.pi * t / 24.0) + 0.5 * np.sin(2 * np.pi * t / 81.0 + 1.0) + 0.002 * t
    return (clean + noise * rng.standard_normal(length)).astype(np.float32)


def split_series(series: np.ndarray, fractions: tuple[float, float, float], context: int) -> dict[str, np.ndarray]:
    """Contiguous train/eval/test parts in time order.

    The eval and test parts start `context` steps early, so their first
    window's inputs are the end of the previous part and every one of their
    own steps can be a target.
    """
    series = np.asarray(series, np.float32)
    if series.ndim != 1:
        raise ValueError(f"a series must be 1-D, got shape {series.shape}")
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) <= 0:
        raise ValueError(f"split fractions must be three positive numbers summing to 1, got {fractions}")
    ends = np.cumsum([int(round(f * len(series))) for f in fractions[:2]])
    bounds = [(0, ends[0]), (ends[0] - context, ends[1]), (ends[1] - context, len(series))]
    return {name: series[max(start, 0) : end] for name, (start, end) in zip(SPLIT_ORDER, bounds)}


@dataclasses.dataclass(frozen=True)
class Normalizer:
    """z = (x - mean) / std, fitted on the training part and stored with the
    run so predictions can be turned back into the series' units."""

    mean: float
    std: float

    @classmethod
    def fit(cls, values: np.ndarray) -> Normalizer:
        std = float(np.std(values))
        return cls(float(np.mean(values)), std if std > 0 else 1.0)

    def normalize(self, values):
        return (values - self.mean) / self.std

    def denormalize(self, values):
        return values * self.std + self.mean

    def save(self, path: str) -> None:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(dataclasses.asdict(self), f)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> Normalizer:
        with open(path) as f:
            return cls(**json.load(f))


def windows(series: np.ndarray, input_len: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Every window of the series, stepping by one.

    Returns (inputs [N, input_len], targets [N, horizon]) with
    N = len(series) - input_len - horizon + 1; targets follow the inputs.
    """
    if input_len < 1 or horizon < 1:
        raise ValueError(f"input_len and horizon must be >= 1, got {input_len}, {horizon}")
    count = len(series) - input_len - horizon + 1
    if count < 1:
        raise ValueError(
            f"a series of {len(series)} steps is too short for windows of {input_len} inputs + {horizon} targets"
        )
    span = np.lib.stride_tricks.sliding_window_view(series, input_len + horizon)[:count]
    return span[:, :input_len].copy(), span[:, input_len:].copy()
