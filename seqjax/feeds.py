"""Where a run's batches come from.

Two kinds of task feed a run (`make_feed` picks one from the task's class):

- generated tasks (`tasks.GeneratedTask`: synthetic adding/copy, forecasting
  windows, synthetic translation): batch k of a split is a pure function of
  (seed, split, k), so the step count alone says where a resumed run
  continues;
- dataset tasks (`tasks.DatasetTask`): batches come from a grain iterator
  whose position is saved in the checkpoint beside the model (`iterator`),
  so a resumed run continues the same stream.

Both give host batches (numpy) for one replica. `ReplicaFeeds` holds one
feed per replica of a run and lays their batches out on the devices in the
run's layout (`seqjax.parallel.Layout`): stacked on a leading replica axis
when R > 1, rows split over the mesh axis 'data'.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from seqjax import parallel, tasks, tbptt
from seqjax.parallel import Layout

Batch = dict[str, np.ndarray]


class GeneratedFeed:
    """Batches of a task that generates them from (seed, split, index)."""

    iterator = None  # nothing to checkpoint: the step count is the position

    def __init__(self, task: tasks.GeneratedTask, config: ml_collections.ConfigDict):
        self.task, self.config = task, config
        self.batch_size, self.seed = config.train.batch_size, config.seed

    def example(self) -> Batch:
        return self.task.batch("train", 0, 2, self.seed)

    def train(self, index: int) -> Batch:
        return self.task.batch("train", index, self.batch_size, self.seed)

    def stream_segment(self, split: str, index: int, length: int) -> Batch:
        return self.task.stream_batch(split, index, self.batch_size, length, self.seed)

    def stream_window(self, index: int, chunk_len: int, backprop_len: int) -> Batch:
        """Training window `index` of TBPTT(k1, k2 > k1) on the streams."""
        return tbptt.stream_window(self.task, "train", index, self.batch_size, chunk_len, backprop_len, self.seed)

    def eval_batches(self, split: str) -> Iterator[Batch]:
        return self.task.eval_batches(split, self.batch_size, self.seed, self.config.train.get("eval_batches", 0))

    def eval_streams(self, split: str, length: int) -> Iterator[Batch]:
        for index in range(self.config.train.get("eval_batches", 0) or 8):
            yield self.stream_segment(split, index, length)

    @staticmethod
    def to_device(host: Batch, mesh: jax.sharding.Mesh, batch_axis: int) -> dict[str, jax.Array]:
        """A generated batch is global: every host generates all of it and keeps its slice."""
        return parallel.shard_batch(host, mesh, batch_axis)

    def close(self) -> None:
        pass


class LoaderFeed:
    """Batches of a dataset task, read through its grain loaders.

    `iterator` is the training iterator: its state goes into checkpoints.
    """

    def __init__(self, task: tasks.DatasetTask, config: ml_collections.ConfigDict, stream_len: int = 0):
        self.task, self.config = task, config
        self.batch_size = config.train.batch_size
        if stream_len:
            self.iterator = task.stream_loader("train", self.batch_size, stream_len).iterator()
        else:
            self.iterator = task.train_loader(self.batch_size, config.seed).iterator()

    def example(self) -> Batch:
        return self.task.example_batch(self.config.seed)

    def train(self, index: int) -> Batch:
        del index  # the iterator knows its position (restored with the checkpoint)
        return next(self.iterator)

    def stream_segment(self, split: str, index: int, length: int) -> Batch:
        del split, index, length  # the stream iterator was opened for its segment length
        return next(self.iterator)

    def stream_window(self, index: int, chunk_len: int, backprop_len: int) -> Batch:
        raise ValueError(
            "config.train.tbptt_backprop_len > tbptt_len is not supported for stateful training "
            "on a dataset; use tbptt_backprop_len = 0"
        )

    def eval_batches(self, split: str) -> Iterator[Batch]:
        """Every example of `split` once (or the first
        `config.train.eval_batches` batches when that is > 0)."""
        return _limited(self.task.eval_loader(split, self.batch_size), self.config.train.get("eval_batches", 0))

    def eval_streams(self, split: str, length: int) -> Iterator[Batch]:
        loader = self.task.stream_loader(split, self.batch_size, length)
        return _limited(loader, self.config.train.get("eval_batches", 0))

    @staticmethod
    def to_device(host: Batch, mesh: jax.sharding.Mesh, batch_axis: int) -> dict[str, jax.Array]:
        """A loader batch holds this host's rows; the global array joins every host's."""
        sharding = parallel.batch_sharded(mesh, batch_axis)
        count = jax.process_count()

        def put(array):
            array = np.asarray(array)
            shape = list(array.shape)
            shape[batch_axis] *= count
            return jax.make_array_from_process_local_data(sharding, array, tuple(shape))

        return {name: put(value) for name, value in host.items()}

    def close(self) -> None:
        self.iterator.close()


def _limited(batches, limit: int) -> Iterator[Batch]:
    for number, batch in enumerate(batches):
        if limit and number >= limit:
            return
        yield batch


def make_feed(task: tasks.Task, config: ml_collections.ConfigDict, stream_len: int = 0) -> GeneratedFeed | LoaderFeed:
    """The feed of one replica: a loader for dataset tasks, else generated
    batches. `stream_len` > 0: contiguous streams of that segment length
    (stateful training)."""
    if isinstance(task, tasks.DatasetTask):
        return LoaderFeed(task, config, stream_len)
    return GeneratedFeed(task, config)


class ReplicaFeeds:
    """One feed per replica of a run; their batches as device arrays in the
    run's layout (batch rows sharded on 'data', stacked over replicas).

    Methods that read data return host batches, one per replica; `put` lays
    them out on the devices.
    """

    def __init__(
        self, task: tasks.Task, configs: Sequence[ml_collections.ConfigDict], layout: Layout, stream_len: int = 0
    ):
        self.feeds = [make_feed(task, config, stream_len) for config in configs]
        self.layout = layout

    @property
    def iterators(self) -> list[Any]:
        """Each replica's checkpointable data iterator (None for generated batches)."""
        return [feed.iterator for feed in self.feeds]

    def example(self) -> Batch:
        """A small training batch of replica 0, for shapes at initialisation."""
        return self.feeds[0].example()

    def train(self, index: int) -> list[Batch]:
        return [feed.train(index) for feed in self.feeds]

    def stream_segment(self, split: str, index: int, length: int) -> list[Batch]:
        return [feed.stream_segment(split, index, length) for feed in self.feeds]

    def stream_window(self, index: int, chunk_len: int, backprop_len: int) -> list[Batch]:
        return [feed.stream_window(index, chunk_len, backprop_len) for feed in self.feeds]

    def eval_batches(self, split: str) -> Iterator[list[Batch]]:
        """The evaluation pass of `split`, each replica's batches side by side."""
        return zip(*[feed.eval_batches(split) for feed in self.feeds])

    def eval_streams(self, split: str, length: int) -> Iterator[list[Batch]]:
        return zip(*[feed.eval_streams(split, length) for feed in self.feeds])

    def put(self, hosts: Sequence[Batch], batch_axis: int = 0) -> dict[str, jax.Array]:
        """Host batches (one per replica, rows on `batch_axis`) -> device arrays."""
        return self.feeds[0].to_device(self.layout.stack_host(hosts), self.layout.mesh, self.layout.axis(batch_axis))

    def close(self) -> None:
        for feed in self.feeds:
            feed.close()
