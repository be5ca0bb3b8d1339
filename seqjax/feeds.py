"""Where the Trainer's batches come from.

Two kinds of task feed a run:

- generated tasks (synthetic adding/copy, forecasting windows): batch k of a
  split is a pure function of (seed, split, k), so the step count alone says
  where a resumed run continues;
- dataset tasks (seqjax.tasks.text): batches come from a grain iterator whose
  position is saved in the checkpoint beside the model (`iterator`), so a
  resumed run continues the same stream.

Both give host batches (numpy); `to_device` lays them out on the mesh.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import numpy as np

from seqjax import parallel, tasks

Batch = dict[str, np.ndarray]


def to_device(host: Batch, mesh: jax.sharding.Mesh, batch_axis: int = 0) -> dict[str, jax.Array]:
    """This host's rows -> global arrays sharded on 'data' along `batch_axis`
    (every host contributes its own rows, as the grain loader shards them)."""
    sharding = parallel.batch_sharded(mesh, batch_axis)
    count = jax.process_count()

    def put(array):
        array = np.asarray(array)
        shape = list(array.shape)
        shape[batch_axis] *= count
        return jax.make_array_from_process_local_data(sharding, array, tuple(shape))

    return {name: put(value) for name, value in host.items()}


class GeneratedFeed:
    """Batches of a task that generates them from (seed, split, index)."""

    iterator = None  # nothing to checkpoint: the step count is the position

    def __init__(self, task: tasks.Task, config: ml_collections.ConfigDict):
        self.task, self.config = task, config

    def example(self) -> Batch:
        return self.task.batch("train", 0, 2, self.config.seed)

    def train(self, index: int) -> Batch:
        return self.task.batch("train", index, self.config.train.batch_size, self.config.seed)

    def stream_segment(self, split: str, index: int, length: int) -> Batch:
        return self.task.stream_batch(split, index, self.config.train.batch_size, length, self.config.seed)

    def eval_batches(self, split: str) -> Iterator[Batch]:
        """A task's own exact pass (`task.eval_batches`) if it has one, else
        `config.train.eval_batches` generated batches."""
        batch_size = self.config.train.batch_size
        if hasattr(self.task, "eval_batches"):
            yield from self.task.eval_batches(split, batch_size)
            return
        for index in range(self.config.train.eval_batches or 8):
            yield self.task.batch(split, index, batch_size, self.config.seed)

    def eval_streams(self, split: str, length: int) -> Iterator[Batch]:
        for index in range(self.config.train.eval_batches or 8):
            yield self.stream_segment(split, index, length)

    def close(self) -> None:
        pass


class LoaderFeed:
    """Batches of a dataset task, read through its grain loaders.

    `iterator` is the training iterator: its state goes into checkpoints.
    """

    def __init__(self, task, config: ml_collections.ConfigDict, stream_len: int = 0):
        self.task, self.config = task, config
        batch_size = config.train.batch_size
        if stream_len:
            if not hasattr(task, "stream_loader"):
                raise ValueError(
                    f"config.train.stateful needs a task with contiguous streams; {type(task).__name__} has none"
                )
            self.iterator = task.stream_loader("train", batch_size, stream_len).iterator()
        else:
            self.iterator = task.train_loader(batch_size, config.seed).iterator()
        self.stream_len = stream_len

    def example(self) -> Batch:
        return self.task.example_batch(self.config.seed)

    def train(self, index: int) -> Batch:
        del index  # the iterator knows its position (restored with the checkpoint)
        return next(self.iterator)

    def stream_segment(self, split: str, index: int, length: int) -> Batch:
        del split, index, length
        return next(self.iterator)

    def eval_batches(self, split: str) -> Iterator[Batch]:
        """Every example of `split` once (or the first
        `config.train.eval_batches` batches when that is > 0)."""
        limit = self.config.train.get("eval_batches", 0)
        for number, batch in enumerate(self.task.eval_loader(split, self.config.train.batch_size)):
            if limit and number >= limit:
                break
            yield batch

    def eval_streams(self, split: str, length: int) -> Iterator[Batch]:
        limit = self.config.train.get("eval_batches", 0)
        loader = self.task.stream_loader(split, self.config.train.batch_size, length)
        for number, batch in enumerate(loader):
            if limit and number >= limit:
                break
            yield batch

    def close(self) -> None:
        self.iterator.close()


def make_feed(task: tasks.Task, config: ml_collections.ConfigDict, stream_len: int = 0) -> Any:
    if getattr(task, "needs_data", False):
        return LoaderFeed(task, config, stream_len)
    return GeneratedFeed(task, config)
