"""Synthetic tasks: the adding problem (many-to-one regression) and the copy
task (many-to-many classification)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from seqjax.data import synthetic
from seqjax.tasks.base import GeneratedTask


class AddingTask(GeneratedTask):
    """Regress the sum of the two marked values; loss is MSE.

    Config: seq_len (T), min_seq_len (0 for fixed length, else variable
    lengths in [min_seq_len, T]).
    """

    output_size = 1
    head = "last"
    config_keys = ("seq_len", "min_seq_len")

    def make_batch(self, rng, batch_size):
        min_len = self.config.get("min_seq_len", 0) or None
        return synthetic.adding_problem(rng, batch_size, self.config.seq_len, min_len)

    def metric_sums(self, predictions, batch):
        """predictions [B, 1] -> {'loss', 'mse': (Σ squared error, B)}."""
        squared = jnp.sum((predictions[:, 0] - batch["targets"]) ** 2)
        count = jnp.float32(predictions.shape[0])
        return {"loss": (squared, count), "mse": (squared, count)}


class CopyTask(GeneratedTask):
    """Reproduce `copy_len` symbols after `delay` blank steps; per-step
    cross-entropy. `copy_accuracy` counts only the steps to be recalled.

    Config: seq_len (the delay T; sequences are T + 2 * copy_len long),
    num_symbols, copy_len.
    """

    head = "per_step"
    config_keys = ("seq_len", "num_symbols", "copy_len")

    def __init__(self, config):
        super().__init__(config)
        self.num_symbols = config.get("num_symbols", 8)
        self.copy_len = config.get("copy_len", 10)
        self.vocab_size = self.num_symbols + 2  # blank + symbols + delimiter
        self.output_size = self.vocab_size

    def make_batch(self, rng, batch_size):
        batch = synthetic.copy_task(rng, batch_size, self.config.seq_len, self.num_symbols, self.copy_len)
        # Marks the steps to recall, so accuracy can be summed chunk by chunk.
        batch["recall_mask"] = np.zeros_like(batch["targets"], np.float32)
        batch["recall_mask"][:, -self.copy_len :] = 1.0
        return batch

    def step_sums(self, predictions, batch):
        """predictions [B, T, vocab] logits -> {'loss': (Σ xent, B*T), 'copy_accuracy': (Σ hits, Σ mask)}."""
        targets, recall = batch["targets"], batch["recall_mask"]
        real = batch.get("step_mask", jnp.ones(targets.shape, jnp.float32))  # 0 on chunk padding
        xent = optax.softmax_cross_entropy_with_integer_labels(predictions, targets) * real
        hits = (predictions.argmax(-1) == targets) * recall * real
        return {"loss": (xent.sum(), real.sum()), "copy_accuracy": (hits.sum(), (recall * real).sum())}

    metric_sums = step_sums
