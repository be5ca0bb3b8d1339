"""What a task is: where batches come from, the model's output shape, the loss.

The training loop talks to every task through this interface, so adding a
task never touches the trainer (`seqjax.tasks.register`).
"""

from __future__ import annotations

import zlib
from typing import Any

import jax
import ml_collections
import numpy as np

Batch = dict[str, np.ndarray]
SPLITS = ("train", "eval", "test")


class Task:
    """Base class. Subclasses set `output_size`, `vocab_size`, `head` and
    implement `make_batch` and `loss_and_metrics`.

    Attributes:
      output_size: size of the model's last dimension.
      vocab_size: input vocabulary size for token-id inputs; 0 for real-valued inputs.
      head: 'last' / 'mean' / 'max' (many-to-one) or 'per_step' (many-to-many).
      higher_is_better: {metric name: bool} for the metrics worth tracking as "best".
    """

    output_size: int
    vocab_size: int = 0
    head: str = "last"

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    def batch(self, split: str, index: int, batch_size: int, seed: int) -> Batch:
        """Batch number `index` of `split`: a pure function of its arguments."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        rng = np.random.default_rng([seed, zlib.crc32(split.encode()), index])
        batch = self.make_batch(rng, batch_size)
        self.validate_batch(batch)
        return batch

    def stream_batch(self, split: str, index: int, batch_size: int, length: int, seed: int) -> Batch:
        """Segment `index` of `batch_size` endless streams: steps
        [index * length, (index + 1) * length) of each.

        A stream is this task's episodes (single sequences from `make_batch`)
        back to back; `resets` [B, L] is True where an episode starts, so a
        stateful model can restart its carry there. Row b of every segment
        continues stream b. Needs fixed-length, per-step episodes.
        """
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        rows = [self._stream_segment(split, stream, index * length, length, seed) for stream in range(batch_size)]
        batch = {name: np.stack([row[name] for row in rows]) for name in rows[0]}
        batch["step_mask"] = np.ones(batch["resets"].shape, np.float32)
        self.validate_batch(batch)
        return batch

    def _stream_segment(self, split: str, stream: int, start: int, length: int, seed: int) -> Batch:
        """Steps [start, start + length) of one stream, as {name: [length, ...]}."""
        episodes = []
        episode_length = self._episode_length(split, seed)
        number = start // episode_length
        covered = first_step = number * episode_length
        while covered < start + length:
            rng = np.random.default_rng([seed, zlib.crc32(split.encode()), stream, number, 1])
            episode = {k: v[0] for k, v in self.make_batch(rng, 1).items()}
            episode["resets"] = np.arange(len(episode["inputs"])) == 0
            episodes.append(episode)
            covered += len(episode["inputs"])
            number += 1
        offset = start - first_step
        return {name: np.concatenate([e[name] for e in episodes])[offset : offset + length] for name in episodes[0]}

    def _episode_length(self, split: str, seed: int) -> int:
        example = self.make_batch(np.random.default_rng([seed, zlib.crc32(split.encode())]), 1)
        if "lengths" in example:
            raise ValueError(f"{type(self).__name__} has variable-length episodes; streams need fixed-length ones")
        return example["inputs"].shape[1]

    def make_batch(self, rng: np.random.Generator, batch_size: int) -> Batch:
        raise NotImplementedError  # abstract: each task generates or reads its batches

    def loss_and_metrics(self, predictions: jax.Array, batch: dict[str, Any]) -> tuple[jax.Array, dict]:
        """(scalar loss to minimise, {metric name: scalar}); jit-able."""
        raise NotImplementedError  # abstract: each task defines its objective

    def step_sums(self, predictions: jax.Array, batch: dict[str, Any]) -> dict[str, tuple]:
        """Per-step tasks only: {metric: (sum over steps, count)} for the steps
        in `batch`. Sums over time chunks add up to the whole sequence's, so
        truncated BPTT (seqjax.tbptt) computes exactly the full loss; the
        'loss' entry is what is minimised (sum / total count)."""
        raise NotImplementedError(f"{type(self).__name__} has no per-step loss (head {self.head!r})")

    def validate_batch(self, batch: Batch) -> None:
        """Host-side checks that give a clear error instead of wrong numbers."""
        inputs = batch["inputs"]
        if self.vocab_size:
            if not np.issubdtype(inputs.dtype, np.integer):
                raise TypeError(f"{type(self).__name__} expects integer token ids, got dtype {inputs.dtype}")
            bad = (inputs < 0) | (inputs >= self.vocab_size)
            if bad.any():
                raise ValueError(f"token id out of range [0, {self.vocab_size}): found {inputs[bad][:5].tolist()}")
        elif not np.issubdtype(inputs.dtype, np.floating):
            raise TypeError(f"{type(self).__name__} expects float features, got dtype {inputs.dtype}")
        lengths = batch.get("lengths")
        if lengths is not None:
            time = inputs.shape[1]
            if lengths.min(initial=0) < 0 or lengths.max(initial=0) > time:
                raise ValueError(f"lengths must lie in [0, T={time}], got min {lengths.min()} max {lengths.max()}")
