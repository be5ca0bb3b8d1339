"""What a task is: where batches come from, the model's output shape, the loss.

The trainer, the step strategies and the decoders talk to every task through
the hooks declared here, each with a default and a docstring, so a new task
author sees everything they may implement, and adding a task never touches
the trainer (`seqjax.tasks.register`). Two kinds of task feed a run:

  GeneratedTask  batches are a pure function of (seed, split, index):
                 implement `make_batch` (synthetic tasks, forecasting windows)
  DatasetTask    batches come from a dataset through grain loaders
                 (seqjax.tasks.dataset): implement `loader`

Every task implements `metric_sums`; sequence generation tasks also mix in
`seqjax.tasks.translation.GenerationObjective`.
"""

from __future__ import annotations

import abc
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from seqjax.data import sequence as sequence_lib

Batch = dict[str, np.ndarray]
Sums = dict[str, tuple[Any, Any]]
SPLITS = ("train", "eval", "test")


class Task(abc.ABC):
    """Base class of every task.

    Attributes the model is built from (set by the class or in `setup`):
      output_size: size of the model's last dimension.
      vocab_size: input vocabulary size for token-id inputs; 0 for real-valued inputs.
      head: 'last' / 'mean' / 'max' (many-to-one) or 'per_step' (many-to-many).
    Declared by the class:
      config_keys: the `config.task` keys it reads (the config validator
        refuses others).
      higher_is_better: {metric name: bool} for the metrics worth tracking as "best".
    """

    output_size: int
    vocab_size: int = 0
    head: str = "last"
    config_keys: ClassVar[tuple[str, ...]] = ()
    higher_is_better: ClassVar[dict[str, bool]] = {}

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    # --- lifecycle ---------------------------------------------------------------

    def setup(self, workdir: str | None) -> None:
        """Prepares what batches need before the model is built (e.g. fits a
        tokenizer, or loads the one an earlier attempt of the run saved in
        `workdir`; None: keep nothing). Default: nothing to prepare."""
        del workdir

    def save_assets(self, workdir: str) -> None:
        """Writes into a run dir what reading the trained model back needs
        (tokenizers, normalisers). Default: nothing."""
        del workdir

    def word_index(self) -> Mapping[str, int] | None:
        """{word: input id} of a word-level input vocabulary, for pretrained
        embeddings (config.model.pretrained_embeddings); None if the inputs
        are not words (the default)."""
        return None

    def training_words(self) -> list[list[str]] | None:
        """The training split as lists of the input vocabulary's words, each
        spelled as `word_index` spells it, for word vectors trained on the
        run's own data (config.model.pretrained_embeddings='word2vec'); None
        if the inputs are not words (the default)."""
        return None

    # --- the objective -------------------------------------------------------------

    @abc.abstractmethod
    def metric_sums(self, predictions: jax.Array, batch: dict[str, Any]) -> Sums:
        """{metric: (sum, count)} over the batch; jit-able. Evaluation adds
        sums and counts over every batch and divides once, so metrics are
        exact over a split whatever the batch sizes; rows of weight 0 (a
        loader's filler rows) must count nowhere. The 'loss' entry is what
        training minimises (sum / count)."""

    def loss_and_metrics(self, predictions: jax.Array, batch: dict[str, Any]) -> tuple[jax.Array, dict]:
        """(scalar loss to minimise, {metric: mean over the batch}); jit-able.
        Default: the means of `metric_sums`."""
        sums = self.metric_sums(predictions, batch)
        metrics = {name: total / jnp.maximum(count, 1) for name, (total, count) in sums.items()}
        return metrics["loss"], metrics

    def step_sums(self, predictions: jax.Array, batch: dict[str, Any]) -> Sums:
        """Per-step tasks only: {metric: (sum over steps, count)} for the steps
        in `batch` whose `step_mask` is 1. Sums over time chunks add up to the
        whole sequence's, so truncated BPTT (seqjax.tbptt) computes exactly
        the full loss. Default: refused (the task has no per-step loss)."""
        raise ValueError(
            f"{type(self).__name__} has no per-step loss (head {self.head!r}): truncated BPTT and stateful "
            "training need one; use config.train.tbptt_len=0"
        )

    def finalize_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Metrics derived from the means (RMSE from MSE, perplexity from the
        loss), added on the host after evaluation and to logged train means.
        Default: none."""
        return metrics

    def collect(self, predictions: jax.Array, batch: dict[str, Any]) -> Any:
        """What evaluation keeps of each batch for `corpus_metrics` (jit-able
        pytree). Default: None, nothing kept."""
        del predictions, batch
        return None

    def corpus_metrics(self, collected: list[Any]) -> dict[str, float]:
        """Metrics over the whole split from what `collect` kept (e.g. entity
        F1), on the host. Default: none."""
        del collected
        return {}

    def final_metrics(self, model, params, *, batch_size: int, num_batches: int, seed: int) -> dict[str, float]:
        """What the task measures once at the end of training beyond its test
        evaluation (e.g. BLEU of decoded output), reported as test_*.
        Default: nothing."""
        del model, params, batch_size, num_batches, seed
        return {}

    # --- predictions on raw inputs (seqjax.runs.Run.predict) -----------------------

    def encode_raw(self, items: Sequence[Any]) -> Batch:
        """{'inputs', 'lengths'} of raw inputs for `Run.predict`. Default: the
        model's own inputs, each a sequence [T_i, F] of real values (or [T_i]
        token ids for a task with a vocabulary), padded after the last step."""
        sequences = [np.asarray(item) for item in items]
        ndim = 1 if self.vocab_size else 2
        for index, sequence in enumerate(sequences):
            if sequence.ndim != ndim or not len(sequence):
                shape = "[T] token ids" if ndim == 1 else "[T, features] values"
                raise ValueError(
                    f"input {index} has shape {sequence.shape}; {type(self).__name__} takes {shape}, T >= 1"
                )
        dtype = "int32" if self.vocab_size else "float32"
        inputs = sequence_lib.pad_sequences(sequences, dtype=dtype, padding="post")
        return {"inputs": inputs, "lengths": np.asarray([len(s) for s in sequences], np.int32)}

    def describe(self, outputs: np.ndarray, batch: Batch) -> list[Any]:
        """Per input of `batch`, what `Run.predict` returns: by default the
        model's output for it ([output_size] per sequence, or
        [T_i, output_size] per step)."""
        if self.head == "per_step":
            return [outputs[i, :length] for i, length in enumerate(batch["lengths"])]
        return list(outputs)

    # --- batch checks --------------------------------------------------------------

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


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")


class GeneratedTask(Task):
    """A task whose batches are generated: batch k of a split is a pure
    function of (seed, split, k), so a resumed run needs only its step count."""

    @abc.abstractmethod
    def make_batch(self, rng: np.random.Generator, batch_size: int) -> Batch:
        """A batch of `batch_size` examples drawn with `rng`."""

    def batch(self, split: str, index: int, batch_size: int, seed: int) -> Batch:
        """Batch number `index` of `split`: a pure function of its arguments."""
        _check_split(split)
        rng = np.random.default_rng([seed, zlib.crc32(split.encode()), index])
        batch = self.make_batch(rng, batch_size)
        self.validate_batch(batch)
        return batch

    def eval_batches(self, split: str, batch_size: int, seed: int, num_batches: int = 0) -> Iterator[Batch]:
        """The evaluation pass over `split`: `num_batches` (0: 8) generated
        batches. Tasks with a finite split override it with an exact pass
        (every example once, filler rows of weight 0)."""
        for index in range(num_batches or 8):
            yield self.batch(split, index, batch_size, seed)

    def stream_batch(self, split: str, index: int, batch_size: int, length: int, seed: int) -> Batch:
        """Segment `index` of `batch_size` endless streams: steps
        [index * length, (index + 1) * length) of each.

        A stream is this task's episodes (single sequences from `make_batch`)
        back to back; `resets` [B, L] is True where an episode starts, so a
        stateful model can restart its carry there. Row b of every segment
        continues stream b. Needs fixed-length, per-step episodes.
        """
        _check_split(split)
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
