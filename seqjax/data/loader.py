"""Batches from random-access sources through grain: shuffled, padded or
bucketed, packed for language modelling, sharded per host, resumable.

    source: len() + [i] -> raw example     tfds.data_source(...), ArrayRecord, a list of dicts
      -> shuffle(seed), repeat            train only; a new permutation every epoch
      -> [process_index::process_count]   this host's disjoint share of the stream
      -> preprocess(raw) -> {'inputs': [L], ...}     in `worker_count` processes
      -> pad or bucket into batches       main process; {'inputs': [B, T], 'lengths': [B], 'weights': [B]}
      -> thread prefetch                  batching overlaps the train step

    lm_loader: every document's ids concatenated into one token stream, cut
    into shuffled windows of T + 1 tokens or into B contiguous streams
    -> {'inputs', 'targets', 'resets', 'step_mask': [B, T], 'weights': [B]}

B is the per-host batch (`batch_size // process_count`: `batch_size` is the
global batch, as in `config.train.batch_size`), T the padded time length.

Why grain's dataset API (`grain.MapDataset` -> `grain.IterDataset`) and not
`grain.DataLoader` with a sampler: every stage before batching stays a
`MapDataset`, i.e. random access by stream position, so

  * shuffling is an index permutation per epoch (`ShuffleMapDataset` folds
    the epoch into the seed) and per-host sharding is a slice of the
    shuffled stream - no shuffle buffer, nothing to checkpoint;
  * the bucketing stage, which holds examples between batches, checkpoints
    those examples as stream positions and re-reads them on restore, so its
    state is a few integers instead of pickled arrays; `DataLoader` runs its
    operations inside the workers and its state is the last sampler index
    each worker reached, so an example waiting in a bucket at save time
    would be lost on resume;
  * the LM loader is a pure `MapDataset` of batches: batch k is a function
    of k, and the iterator state is grain's own `next_index`.

Worker processes (`worker_count`) come from `IterDataset.mp_prefetch`, which
slices the stream over workers and interleaves them back in order, so the
batches do not depend on the number of workers. `DataLoader` is itself built
on this API in grain 0.2.x.

Every iterator is a `grain.DatasetIterator`: `get_state()` is a JSON-able dict
and `set_state(state)` continues the same stream; `checkpoint_save_args` /
`checkpoint_restore_args` store it with orbax beside the model (one file per
host, named by `jax.process_index()`).
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grain
import numpy as np
from absl import flags

Batch = dict[str, np.ndarray]
Preprocess = Callable[[Any], Mapping[str, Any]]
RESERVED_KEYS = ("lengths", "weights", "index")
# Mixed into the user's seed so that seeds s and s + 1 do not share epochs
# (grain reshuffles epoch e with seed + e).
_SHUFFLE_SALT = 0x5EC1A


@dataclasses.dataclass(frozen=True)
class Padding:
    """Pad each batch to its longest sequence rounded up to `pad_to_multiple`.

    Attributes:
      pad_to_multiple: T is a multiple of this (fewer distinct shapes, so
        fewer compilations), capped at `max_len`.
      max_len: longest allowed sequence; None for no limit.
      truncate: cut sequences longer than `max_len` instead of raising.
      fixed_length: every batch has T = max_len (a single compiled shape).
    """

    pad_to_multiple: int = 8
    max_len: int | None = None
    truncate: bool = False
    fixed_length: bool = False

    def __post_init__(self):
        _check_positive("pad_to_multiple", self.pad_to_multiple)
        if self.max_len is not None:
            _check_positive("max_len", self.max_len)
        if (self.truncate or self.fixed_length) and self.max_len is None:
            raise ValueError("Padding(truncate=True) and Padding(fixed_length=True) need max_len")

    @property
    def limit(self) -> int | None:
        return self.max_len

    @property
    def num_buckets(self) -> int:
        return 1

    def bucket_of(self, length: int) -> int:
        return 0

    def time_steps(self, bucket: int, longest: int) -> int:
        if self.fixed_length:
            return self.max_len
        padded = -(-max(longest, 1) // self.pad_to_multiple) * self.pad_to_multiple
        return padded if self.max_len is None else min(padded, self.max_len)


@dataclasses.dataclass(frozen=True)
class Bucketing:
    """Batch together sequences of similar length.

    Bucket i holds lengths in (boundaries[i-1], boundaries[i]] and its batches
    are padded to exactly boundaries[i], so there are len(boundaries)
    compiled shapes and no batch mixes lengths beyond its bucket.

    Attributes:
      boundaries: strictly increasing upper bounds; the last is the longest
        allowed sequence.
      truncate: cut longer sequences to the last boundary instead of raising.
    """

    boundaries: tuple[int, ...]
    truncate: bool = False

    def __post_init__(self):
        bounds = tuple(self.boundaries)
        if not bounds:
            raise ValueError("Bucketing needs at least one bucket boundary")
        for bound in bounds:
            _check_positive("bucket boundary", bound)
        if any(b <= a for a, b in zip(bounds, bounds[1:])):
            raise ValueError(f"bucket boundaries must be strictly increasing, got {list(bounds)}")
        object.__setattr__(self, "boundaries", bounds)

    @property
    def limit(self) -> int:
        return self.boundaries[-1]

    @property
    def num_buckets(self) -> int:
        return len(self.boundaries)

    def bucket_of(self, length: int) -> int:
        return bisect.bisect_left(self.boundaries, length)

    def time_steps(self, bucket: int, longest: int) -> int:
        return self.boundaries[bucket]


Batching = Padding | Bucketing


class Loader:
    """A stream of batches; each `iterator()` starts it from the beginning.

    Attributes:
      dataset: the grain `IterDataset` of batches.
      batch_size: rows per batch on this host (B).
      num_batches: batches per host in one pass (eval) or in a finite run;
        None when endless or bucketed (buckets fill at their own pace).
    """

    def __init__(self, dataset: grain.IterDataset, batch_size: int, num_batches: int | None):
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_batches = num_batches

    def iterator(self) -> grain.DatasetIterator:
        """A fresh iterator with `get_state()` / `set_state(state)`."""
        return iter(self.dataset)

    def __iter__(self) -> Iterator[Batch]:
        """One pass (`for batch in loader`), closing the iterator's threads
        and worker processes when the loop ends."""
        iterator = self.iterator()
        try:
            yield from iterator
        finally:
            iterator.close()


def make_loader(
    source: Sequence,
    preprocess: Preprocess,
    *,
    batch_size: int,
    train: bool,
    batching: Batching | None = None,
    seed: int = 0,
    num_epochs: int | None = None,
    sequence_keys: Sequence[str] = ("inputs", "targets"),
    pad_values: Mapping[str, Any] | None = None,
    return_index: bool = False,
    process_index: int | None = None,
    process_count: int | None = None,
    worker_count: int = 0,
    read_threads: int = 0,
    prefetch: int = 2,
) -> Loader:
    """Batches of preprocessed examples from a random-access `source`.

    `preprocess(source[i])` returns a dict of arrays; 'inputs' [L, ...] is
    required and sets the example's length. Features named in
    `sequence_keys` are padded along their first axis to the batch's T (with
    `pad_values[key]`, default 0); other features are stacked and must have
    one shape. Integer features become int32 and floats float32.

    Batches: every feature [B, ...], plus 'lengths' [B] int32 (real steps),
    'weights' [B] float32 (1 for a real example, 0 for a filler row) and,
    with `return_index`, 'index' [B] int32 (source index, -1 for fillers).

    Args:
      train: True: shuffled with `seed`, reshuffled every epoch, repeated
        `num_epochs` times (None: forever), final partial batch dropped.
        False: one pass in source order; the last batches are filled up
        with weight-0 copies of a real example (copies rather than zeros,
        so no row has length 0), every host yields the same number of
        batches, and each example appears exactly once on exactly one host.
      batching: Padding(...) (the default) or Bucketing(...).
      batch_size: global batch size, divided evenly over `process_count` hosts.
      process_index, process_count: this host and the number of hosts
        (default: jax.process_index(), jax.process_count()).
      worker_count: processes that read and preprocess (0: in this process).
      read_threads: threads that read and preprocess in each process (0: none;
        threads help sources whose reads release the GIL, e.g. ArrayRecord).
      prefetch: batches prepared ahead in a background thread (0: none).
    """
    batching = Padding() if batching is None else batching
    process_index, process_count = _host(process_index, process_count)
    rows = _rows_per_host(batch_size, process_count)
    size = _check_source(source)
    _check_loader_args(batching, train, num_epochs, process_count, size, worker_count, read_threads, prefetch)
    sequence_keys = ("inputs",) + tuple(k for k in sequence_keys if k != "inputs")

    # Shuffling, repeating and sharding act on source indices; the source is
    # read inside _Prepare, which skips grain's per-read metrics (a third of
    # the loader's time when measured).
    order = grain.MapDataset.range(size)
    if train:
        order = order.shuffle(_mixed_seed(seed)).repeat(num_epochs)
    shard = order[process_index::process_count]
    examples = shard.map_with_index(_Prepare(source, preprocess, sequence_keys, batching))
    stream = examples.to_iter_dataset(
        grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=max(read_threads, 1) * 16)
    )
    stream = _in_workers(stream, worker_count)
    total = size if not train else None if num_epochs is None else size * num_epochs
    # Hosts step together: eval passes are filled up to the largest shard's
    # batch count, finite training stops at the smallest one.
    min_batches = 0 if train else _ceil_div(_ceil_div(size, process_count), rows)
    max_batches = total // (rows * process_count) if train and total is not None else None
    collate = _Collate(rows, sequence_keys, dict(pad_values or {}), batching, return_index)
    batches = _BatchIterDataset(
        stream, examples, collate, batching, rows, pad_final=not train, min_batches=min_batches, max_batches=max_batches
    )
    # Buckets fill at their own pace, so only padded passes have a known length.
    num_batches = (min_batches or max_batches) if isinstance(batching, Padding) else None
    return Loader(_with_prefetch(batches, prefetch), rows, num_batches)


def _check_loader_args(
    batching: Batching,
    train: bool,
    num_epochs: int | None,
    process_count: int,
    size: int,
    worker_count: int,
    read_threads: int,
    prefetch: int,
) -> None:
    if worker_count < 0 or read_threads < 0 or prefetch < 0:
        raise ValueError(
            f"worker_count, read_threads and prefetch must be >= 0, got {worker_count}, {read_threads}, {prefetch}"
        )
    if num_epochs is not None and num_epochs <= 0:
        raise ValueError(f"num_epochs must be positive or None (forever), got {num_epochs}")
    if process_count > 1 and not (isinstance(batching, Padding) and batching.fixed_length):
        # Each host would pick T from its own examples, and a global array
        # needs one shape on every host.
        raise ValueError(
            f"with {process_count} hosts every host must build batches of the same shape; "
            f"{batching} picks T per host. Use Padding(max_len=..., fixed_length=True)"
        )
    if not train and size < process_count:
        raise ValueError(f"the source has {size} examples, fewer than the {process_count} hosts sharing it")


def lm_loader(
    source: Sequence,
    preprocess: Callable[[Any], Any],
    *,
    batch_size: int,
    seq_len: int,
    train: bool,
    layout: str = "windows",
    seed: int = 0,
    num_epochs: int | None = None,
    pad_id: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
    worker_count: int = 0,
    prefetch: int = 2,
) -> Loader:
    """Language-modelling batches: all documents' ids as one token stream.

    `preprocess(source[i])` returns one document's token ids [L]. They are
    read once (on every host, so all hosts agree on the stream) and
    concatenated; document d+1 follows document d. Batches [B, T], T=seq_len:

      inputs    tokens t .. t+T-1           targets  tokens t+1 .. t+T
      resets    True where inputs[t] starts a document (and at a row's first
                step when nothing before it is context), so a recurrent model
                restarts its carry there
      step_mask 1.0 for a target to learn; 0.0 past the end of the stream, on
                filler rows, and where the target is the first token of the
                next document (nothing in this one predicts it)
      weights   [B] 1.0 for real rows

    Layouts:
      'windows' - row = an independent window of T+1 tokens (consecutive
        windows overlap by one token, so each target appears once); train
        shuffles the windows every epoch, eval reads them in order with the
        last window and batch padded.
      'streams' - the stream is split into B * process_count contiguous
        streams and row b of batch k continues row b of batch k-1 (stateful
        training with a carried state, `config.train.stateful`); not
        shuffled; every epoch starts with resets[:, 0] = True.
    """
    if layout not in ("windows", "streams"):
        raise ValueError(f"unknown LM layout {layout!r}; choose 'windows' or 'streams'")
    _check_positive("seq_len", seq_len)
    process_index, process_count = _host(process_index, process_count)
    rows = _rows_per_host(batch_size, process_count)
    _check_source(source)
    if num_epochs is not None and num_epochs <= 0:
        raise ValueError(f"num_epochs must be positive or None (forever), got {num_epochs}")
    tokens, starts = token_stream(source, preprocess, worker_count)
    stream = _TokenStream(tokens, starts, seq_len, pad_id)
    if layout == "windows":
        batches, num_batches = _window_batches(stream, rows, train, seed, num_epochs, process_index, process_count)
    else:
        batches, num_batches = _stream_batches(stream, rows, train, num_epochs, process_index, process_count)
    dataset = batches.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=1))
    dataset = _in_workers(dataset, worker_count)
    return Loader(_with_prefetch(dataset, prefetch), rows, num_batches)


def token_stream(
    source: Sequence, preprocess: Callable[[Any], Any], worker_count: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [N] int32, starts [N] bool): every document's ids in source
    order, back to back; starts is True at each document's first token."""
    docs = grain.MapDataset.source(source).map_with_index(_DocumentIds(preprocess))
    reader = docs.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=1))
    iterator = _in_workers(reader, worker_count).__iter__()
    try:
        pieces = [ids for ids in iterator if len(ids)]
    finally:
        iterator.close()  # ends the worker processes
    if not pieces:
        raise ValueError("every document in the LM source is empty after preprocessing")
    starts = np.zeros(sum(len(p) for p in pieces), bool)
    starts[np.cumsum([0] + [len(p) for p in pieces[:-1]])] = True
    return np.concatenate(pieces).astype(np.int32), starts


def checkpoint_save_args(iterator: grain.DatasetIterator):
    """Orbax args that save `iterator`'s state (one JSON file per host), e.g.
    `manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(s),
    data=checkpoint_save_args(it)))`."""
    return grain.checkpoint.CheckpointSave(iterator)


def checkpoint_restore_args(iterator: grain.DatasetIterator):
    """Orbax args that restore a saved state into `iterator` (a fresh one from
    the same loader); the restored item is `iterator` itself, ready to continue."""
    return grain.checkpoint.CheckpointRestore(iterator)


def batching_from_config(data_config) -> Batching:
    """Padding or Bucketing from a config section: `bucket_boundaries` (a
    non-empty list selects bucketing), `pad_to_multiple`, `max_len` (0: none),
    `truncate`, `fixed_length`."""
    boundaries = tuple(data_config.get("bucket_boundaries", None) or ())
    truncate = bool(data_config.get("truncate", False))
    if boundaries:
        return Bucketing(boundaries, truncate=truncate)
    return Padding(
        pad_to_multiple=data_config.get("pad_to_multiple", 8),
        max_len=data_config.get("max_len", 0) or None,
        truncate=truncate,
        fixed_length=bool(data_config.get("fixed_length", False)),
    )


# --- checks and small helpers -------------------------------------------------


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_source(source) -> int:
    if not (hasattr(source, "__len__") and hasattr(source, "__getitem__")):
        raise TypeError(f"a source needs random access (__len__ and __getitem__), got {type(source).__name__}")
    if len(source) == 0:
        raise ValueError("the source is empty: it has no examples to batch")
    return len(source)


def _host(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax  # only when the caller leaves the host to jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    _check_positive("process_count", process_count)
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index must lie in [0, {process_count}), got {process_index}")
    return int(process_index), int(process_count)


def _rows_per_host(batch_size: int, process_count: int) -> int:
    _check_positive("batch_size", batch_size)
    if batch_size % process_count:
        raise ValueError(f"batch_size {batch_size} does not split evenly over {process_count} hosts")
    return batch_size // process_count


def _mixed_seed(seed: int) -> int:
    return int(np.random.SeedSequence([int(seed), _SHUFFLE_SALT]).generate_state(1)[0])


def _in_workers(dataset: grain.IterDataset, worker_count: int) -> grain.IterDataset:
    if not worker_count:
        return dataset
    if not flags.FLAGS.is_parsed():
        # grain's worker processes read its absl flags; outside an absl app
        # (pytest, a notebook) their defaults are taken as given.
        flags.FLAGS.mark_as_parsed()
    return dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))


def _with_prefetch(dataset: grain.IterDataset, prefetch: int) -> grain.IterDataset:
    if not prefetch:
        return dataset
    return grain.experimental.ThreadPrefetchIterDataset(dataset, prefetch_buffer_size=prefetch)


def _as_array(value, where: str) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind in "USV":
        raise TypeError(f"{where} is not numeric (dtype {array.dtype}); preprocess must turn text into ids")
    if array.dtype.kind in "iu" and array.dtype != np.int32:
        return array.astype(np.int32)
    if array.dtype.kind == "f" and array.dtype != np.float32:
        return array.astype(np.float32)
    return array


# --- examples -> padded / bucketed batches -----------------------------------


@dataclasses.dataclass
class _Example:
    """One preprocessed example and where it came from."""

    position: int  # in this host's example stream, to re-read it on restore
    source_index: int
    features: dict[str, np.ndarray]
    length: int


class _Prepare:
    """(stream position, source index) -> _Example: read, preprocess, turn
    into arrays, check lengths against the batching limit."""

    def __init__(self, source: Sequence, preprocess: Preprocess, sequence_keys: tuple[str, ...], batching: Batching):
        self.source, self.preprocess = source, preprocess
        self.sequence_keys = sequence_keys
        self.limit, self.truncate = batching.limit, batching.truncate
        self.limit_name = "max_len" if isinstance(batching, Padding) else "the last bucket boundary"

    def __call__(self, position: int, index: int) -> _Example:
        features = self.preprocess(self.source[index])
        if not isinstance(features, Mapping) or "inputs" not in features:
            raise ValueError(
                f"preprocess must return a dict with an 'inputs' entry; for example {index} "
                f"it returned {type(features).__name__}"
            )
        features = {key: _as_array(value, f"feature {key!r} of example {index}") for key, value in features.items()}
        clash = sorted(set(features) & set(RESERVED_KEYS))
        if clash:
            raise ValueError(f"preprocess returned {clash}, which the loader adds itself; rename them")
        length = self._length(features, index)
        if self.limit is not None and length > self.limit:
            if not self.truncate:
                raise ValueError(
                    f"example {index} has length {length}, longer than {self.limit_name} "
                    f"{self.limit}; raise the limit or set truncate=True"
                )
            features = {k: v[: self.limit] if k in self.sequence_keys else v for k, v in features.items()}
            length = self.limit
        return _Example(position, index, features, length)

    def _length(self, features: dict[str, np.ndarray], index: int) -> int:
        if features["inputs"].ndim == 0:
            raise ValueError(f"'inputs' of example {index} is a scalar; it must be a sequence [L, ...]")
        length = len(features["inputs"])
        for key in self.sequence_keys:
            if key in features and (features[key].ndim == 0 or len(features[key]) != length):
                raise ValueError(
                    f"sequence feature {key!r} of example {index} has shape {features[key].shape}, "
                    f"but 'inputs' has length {length}; leave it out of sequence_keys if it is "
                    f"not per step"
                )
        return length


class _Collate:
    """List of _Example (at most B) -> one batch of B rows padded to T."""

    def __init__(
        self,
        rows: int,
        sequence_keys: tuple[str, ...],
        pad_values: dict[str, Any],
        batching: Batching,
        return_index: bool,
    ):
        self.rows, self.sequence_keys, self.pad_values = rows, sequence_keys, pad_values
        self.batching, self.return_index = batching, return_index

    def __call__(self, examples: list[_Example], bucket: int, real: int) -> Batch:
        """`real` of the examples are real; the batch is filled up to B rows
        with weight-0 copies of the first one."""
        chosen = examples[:real] if real else examples[:1]
        time = self.batching.time_steps(bucket, max(e.length for e in chosen))
        filled = chosen + [chosen[0]] * (self.rows - len(chosen))
        keys = list(filled[0].features)
        batch = {}
        for key in keys:
            values = [self._feature(e, key, keys) for e in filled]
            if key in self.sequence_keys:
                batch[key] = self._pad(values, time, self.pad_values.get(key, 0))
            else:
                batch[key] = self._stack(values, key)
        batch["lengths"] = np.array([e.length for e in filled], np.int32)
        batch["weights"] = (np.arange(self.rows) < real).astype(np.float32)
        if self.return_index:
            batch["index"] = np.where(batch["weights"] > 0, [e.source_index for e in filled], -1).astype(np.int32)
        return batch

    @staticmethod
    def _feature(example: _Example, key: str, keys: list[str]) -> np.ndarray:
        if list(example.features) != keys:
            raise ValueError(
                f"example {example.source_index} has features {sorted(example.features)}, "
                f"others have {sorted(keys)}; preprocess must return the same keys every time"
            )
        return example.features[key]

    @staticmethod
    def _pad(values: list[np.ndarray], time: int, pad_value) -> np.ndarray:
        """[L_b, ...] each -> [B, time, ...]."""
        out = np.full((len(values), time) + values[0].shape[1:], pad_value, values[0].dtype)
        for row, value in enumerate(values):
            out[row, : len(value)] = value
        return out

    @staticmethod
    def _stack(values: list[np.ndarray], key: str) -> np.ndarray:
        shapes = {v.shape for v in values}
        if len(shapes) > 1:
            raise ValueError(
                f"feature {key!r} has shapes {sorted(shapes)} across a batch; list it in "
                f"sequence_keys if it is per step, or give it one shape"
            )
        return np.stack(values)


class _BatchIterDataset(grain.IterDataset):
    """Groups a stream of _Example into batches, one buffer per bucket."""

    def __init__(
        self,
        parent: grain.IterDataset,
        examples: grain.MapDataset,
        collate: _Collate,
        batching: Batching,
        rows: int,
        *,
        pad_final: bool,
        min_batches: int,
        max_batches: int | None,
    ):
        super().__init__(parent)
        self._examples, self._collate, self._batching = examples, collate, batching
        self._rows, self._pad_final = rows, pad_final
        self._min_batches, self._max_batches = min_batches, max_batches

    def __iter__(self) -> grain.DatasetIterator:
        return _BatchIterator(
            self._parent.__iter__(),
            self._examples,
            self._collate,
            self._batching,
            self._rows,
            self._pad_final,
            self._min_batches,
            self._max_batches,
        )

    def __str__(self) -> str:
        return f"_BatchIterDataset(rows={self._rows}, batching={self._batching})"


class _BatchIterator(grain.DatasetIterator):
    """Emits a bucket's batch as soon as it holds B examples; at the end of a
    finite stream (eval) flushes the partial buckets and adds filler
    batches up to `min_batches`, or drops them (train with num_epochs);
    never emits more than `max_batches`.

    State: the parent's state, the stream positions of the examples waiting
    in each bucket (re-read on restore), and the number of batches emitted.
    """

    def __init__(
        self,
        parent: grain.DatasetIterator,
        examples: grain.MapDataset,
        collate: _Collate,
        batching: Batching,
        rows: int,
        pad_final: bool,
        min_batches: int,
        max_batches: int | None,
    ):
        super().__init__(parent)
        self._examples, self._collate, self._batching = examples, collate, batching
        self._rows, self._pad_final = rows, pad_final
        self._min_batches, self._max_batches = min_batches, max_batches
        self._pending: list[list[_Example]] = [[] for _ in range(batching.num_buckets)]
        self._emitted = 0

    def __next__(self) -> Batch:
        self._assert_not_closed()
        if self._emitted == self._max_batches:
            raise StopIteration
        for example in self._parent:
            bucket = self._batching.bucket_of(example.length)
            self._pending[bucket].append(example)
            if len(self._pending[bucket]) == self._rows:
                return self._emit(bucket)
        if self._pad_final:
            for bucket, waiting in enumerate(self._pending):
                if waiting:
                    return self._emit(bucket)
            if self._emitted < self._min_batches:
                self._emitted += 1
                # A batch of nothing but weight-0 rows keeps this host in step
                # with hosts whose shard is one example longer.
                return self._collate([self._examples[0]], 0, real=0)
        raise StopIteration

    def _emit(self, bucket: int) -> Batch:
        examples, self._pending[bucket] = self._pending[bucket], []
        self._emitted += 1
        return self._collate(examples, bucket, real=len(examples))

    def get_state(self) -> dict[str, Any]:
        return {
            "parent": self._parent.get_state(),
            "emitted": self._emitted,
            "pending": [[e.position for e in waiting] for waiting in self._pending],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        if len(state["pending"]) != self._batching.num_buckets:
            raise ValueError(
                f"the saved loader state has {len(state['pending'])} buckets, this loader "
                f"{self._batching.num_buckets}; restore with the batching it was saved with"
            )
        self._parent.set_state(state["parent"])
        self._emitted = state["emitted"]
        self._pending = [[self._examples[p] for p in positions] for positions in state["pending"]]

    def __str__(self) -> str:
        return f"_BatchIterator(rows={self._rows})"


# --- language modelling ---------------------------------------------------------


class _DocumentIds:
    def __init__(self, preprocess: Callable[[Any], Any]):
        self.preprocess = preprocess

    def __call__(self, index: int, raw: Any) -> np.ndarray:
        ids = _as_array(self.preprocess(raw), f"the ids of document {index}")
        if ids.shape == (0,):  # an empty document ([] is float to numpy)
            return ids.astype(np.int32)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise ValueError(
                f"LM preprocess must return 1-D integer ids; document {index} gave {ids.dtype} of shape {ids.shape}"
            )
        return ids


class _TokenStream:
    """Gathers [B, T] LM rows from a token stream by their start positions."""

    def __init__(self, tokens: np.ndarray, starts: np.ndarray, seq_len: int, pad_id: int):
        self.size, self.seq_len = len(tokens), seq_len
        # T + 1 trailing pad entries let every row gather T + 1 tokens.
        self.tokens = np.concatenate([tokens, np.full(seq_len + 1, pad_id, np.int32)])
        self.starts = np.concatenate([starts, np.zeros(seq_len + 1, bool)])

    def rows(self, begins: np.ndarray, real: np.ndarray, first_resets: np.ndarray) -> Batch:
        """begins [B] token positions, real [B] bool, first_resets [B] bool."""
        steps = begins[:, None] + np.arange(self.seq_len)
        has_target = (steps + 1 < self.size) & real[:, None]
        resets = self.starts[steps].copy()
        resets[:, 0] |= first_resets
        return {
            "inputs": self.tokens[steps],
            "targets": self.tokens[steps + 1],
            "resets": resets,
            "step_mask": (has_target & ~self.starts[steps + 1]).astype(np.float32),
            "weights": real.astype(np.float32),
        }


class _WindowRows:
    """Batch of window numbers [B] (-1 = filler) -> LM batch."""

    def __init__(self, stream: _TokenStream):
        self.stream = stream

    def __call__(self, windows: Sequence[int]) -> Batch:
        windows = np.asarray(windows)
        real = windows >= 0
        begins = np.where(real, windows, 0) * self.stream.seq_len
        return self.stream.rows(begins, real, np.ones(len(windows), bool))


class _EvalWindows:
    """Eval batch k -> window numbers of this host's rows, -1 past its share."""

    def __init__(self, num_windows: int, rows: int, process_index: int, process_count: int):
        self.num_windows, self.rows = num_windows, rows
        self.process_index, self.process_count = process_index, process_count

    def __call__(self, k: int) -> np.ndarray:
        local = np.arange(k * self.rows, (k + 1) * self.rows)
        windows = self.process_index + local * self.process_count
        return np.where(windows < self.num_windows, windows, -1)


def _window_batches(
    stream: _TokenStream,
    rows: int,
    train: bool,
    seed: int,
    num_epochs: int | None,
    process_index: int,
    process_count: int,
) -> tuple[grain.MapDataset, int | None]:
    """Shuffled windows (train) or all windows in order, padded (eval)."""
    targets = stream.size - 1
    if train:
        num_windows = targets // stream.seq_len
        if num_windows < process_count * rows:
            raise ValueError(
                f"the token stream has {stream.size} tokens: {num_windows} full windows of "
                f"seq_len={stream.seq_len} + 1, fewer than one global batch of "
                f"{process_count * rows}; lower seq_len or batch_size"
            )
        windows = grain.MapDataset.range(num_windows).shuffle(_mixed_seed(seed)).repeat(num_epochs)
        batches = windows[process_index::process_count].batch(rows, drop_remainder=True, batch_fn=_WindowRows(stream))
        if num_epochs is None:
            return batches, None
        # Every host stops after the same number of batches.
        num_batches = num_epochs * num_windows // (rows * process_count)
        return batches[:num_batches], num_batches
    num_windows = -(-targets // stream.seq_len)
    if num_windows == 0:
        raise ValueError("the token stream has a single token, so there is nothing to predict")
    num_batches = _ceil_div(_ceil_div(num_windows, process_count), rows)
    pick = _EvalWindows(num_windows, rows, process_index, process_count)
    return grain.MapDataset.range(num_batches).map(pick).map(_WindowRows(stream)), num_batches


class _StreamRows:
    """Segment k -> rows b: steps [k T, (k+1) T) of this host's streams."""

    def __init__(self, stream: _TokenStream, stream_len: int, first_stream: int, rows: int):
        self.stream, self.stream_len = stream, stream_len
        self.stream_ids = first_stream + np.arange(rows)

    def __call__(self, k: int) -> Batch:
        offset = k * self.stream.seq_len
        begins = self.stream_ids * self.stream_len + offset
        real = np.ones(len(begins), bool)
        batch = self.stream.rows(begins, real, np.full(len(begins), k == 0))
        # Steps past the stream's own share belong to the next stream.
        own = offset + np.arange(self.stream.seq_len) < self.stream_len
        batch["step_mask"] *= own[None, :]
        return batch


def _stream_batches(
    stream: _TokenStream, rows: int, train: bool, num_epochs: int | None, process_index: int, process_count: int
) -> tuple[grain.MapDataset, int | None]:
    """B * process_count contiguous streams; batch k = segment k of each."""
    streams, targets = rows * process_count, stream.size - 1
    if train:
        stream_len = targets // streams
        segments = stream_len // stream.seq_len
        stream_len = segments * stream.seq_len
    else:
        stream_len = -(-targets // streams)
        segments = -(-stream_len // stream.seq_len)
    if segments == 0:
        raise ValueError(
            f"the token stream has {stream.size} tokens, too few for {streams} streams of "
            f"at least seq_len={stream.seq_len} steps; lower seq_len or batch_size"
        )
    make = _StreamRows(stream, stream_len, process_index * rows, rows)
    batches = grain.MapDataset.range(segments).map(make)
    if not train:
        return batches, segments
    # The streams are fixed, so every epoch reads them in the same order.
    return batches.repeat(num_epochs), None if num_epochs is None else segments * num_epochs
