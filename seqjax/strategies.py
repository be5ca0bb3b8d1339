"""Step strategies: how a run's optimisation steps consume its data.

`choose(config, ...)` picks one, once per run, from config.train:

  Plain      whole sequences: one update per batch, backpropagation through
             every step (`seqjax.steps`). tbptt_len = 0, stateful False.
  Truncated  truncated BPTT on whole-sequence batches: each batch is cut into
             windows of tbptt_len (k1) steps, each backpropagating through
             tbptt_backprop_len (k2 >= k1) steps (`seqjax.tbptt`).
  Stateful   endless streams: each batch is the next k1 steps of every
             stream, the recurrent carry passed from batch to batch in the
             train state (config.train.stateful).

A strategy owns what differs between them: the windows it cuts, the state it
adds (the stream carry), its compiled train step and its evaluation. The
trainer only asks it for the next step and for metrics.

Every function is written for one replica and compiled through the run's
layout (`replicas.Layout.compile`), so the same strategy trains one run or R
vmapped replicas.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from seqjax import steps, tasks, tbptt
from seqjax.feeds import ReplicaFeeds
from seqjax.replicas import Layout

# config.train.tbptt_update values: how the chunk gradients of one batch are used.
TBPTT_UPDATES = tbptt.UPDATES

Metrics = dict[str, float]


class Plain:
    """Whole sequences, full backpropagation through time."""

    updates_per_batch = 1

    def __init__(self, task: tasks.Task, model, layout: Layout, feeds: ReplicaFeeds):
        self.task, self.model, self.layout, self.feeds = task, model, layout, feeds
        self._train_step = self._eval_step = None  # `compile` sets them

    def compile(self, state_shape: Any) -> None:
        """Compiles the steps for states shaped like `state_shape` (one replica)."""
        replicated = self.layout.replicated()
        self._train_step = self._compile_train(steps.make_train_step(self.task, self.model), 0, state_shape)
        self._eval_step = self.layout.compile(
            steps.make_eval_step(self.task, self.model), (replicated, self.layout.rows()), replicated
        )

    def prepare_state(self, state: steps.TrainState, example: dict) -> steps.TrainState:
        """Adds what this strategy keeps in the state (one replica, inside jit)."""
        del example
        return state

    def state_shardings(self, state: Any, layout: Layout | None = None) -> Any:
        """Shardings of every leaf of `state` (arrays or shape structs) in
        `layout` (default: the run's): all replicated."""
        return jax.tree.map(lambda _: (layout or self.layout).replicated(), state)

    def _compile_train(self, step_fn, batch_axis: int, state_shape: Any):
        state = self.state_shardings(state_shape)
        replicated = self.layout.replicated()
        return self.layout.compile(
            step_fn,
            in_shardings=(state, self.layout.rows(batch_axis), replicated),
            out_shardings=(state, replicated),
            donate_argnums=0,
        )

    def train_step(self, state, index: int, rngs: jax.Array):
        """Trains on training batch `index` (0-based); -> (state, metrics)."""
        return self._train_step(state, self.feeds.put(self.feeds.train(index)), rngs)

    def evaluate(self, state, split: str) -> list[Metrics]:
        """Per replica, metrics of `split` from exact totals over its
        evaluation pass (not means of per-batch means), plus the task's
        corpus metrics, before `task.finalize_metrics`."""
        totals, collected = None, []
        for hosts in self.feeds.eval_batches(split):
            sums, kept = self._eval_step(state, self.feeds.put(hosts))
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
            if kept is not None:
                collected.append(kept)
        results = [means(t) for t in self.layout.unstack(jax.device_get(totals))]
        if collected:
            per_replica = zip(*[self.layout.unstack(jax.device_get(kept)) for kept in collected])
            for result, kept in zip(results, per_replica):
                result.update(self.task.corpus_metrics(list(kept)))
        return results


class Truncated(Plain):
    """Truncated BPTT(k1, k2) on whole-sequence batches (`seqjax.tbptt`)."""

    def __init__(self, task, model, layout, feeds, chunk_len: int, backprop_len: int, update: str, seq_len: int):
        tbptt.check_truncatable(model, task)
        self.chunk_len, self.backprop_len = chunk_len, backprop_len
        self.updates_per_batch = tbptt.updates_per_batch(update, seq_len, chunk_len)
        self.update = update
        super().__init__(task, model, layout, feeds)

    def compile(self, state_shape):
        super().compile(state_shape)
        step = tbptt.make_train_step(self.task, self.update, self.chunk_len)
        self._train_step = self._compile_train(step, 1, state_shape)  # windows [N, B, k2]: rows on axis 1

    def train_step(self, state, index, rngs):
        windows = [tbptt.split_into_chunks(h, self.chunk_len, self.backprop_len) for h in self.feeds.train(index)]
        return self._train_step(state, self.feeds.put(windows, batch_axis=1), rngs)


class Stateful(Plain):
    """Stateful training on endless streams, the carry in the train state."""

    def __init__(self, task, model, layout, feeds, chunk_len: int, backprop_len: int, batch_size: int):
        tbptt.check_truncatable(model, task)
        super().__init__(task, model, layout, feeds)
        self.chunk_len, self.backprop_len, self.batch_size = chunk_len, backprop_len, batch_size

    def compile(self, state_shape):
        self._train_step = self._compile_train(tbptt.make_stream_step(self.task, self.chunk_len), 0, state_shape)
        rows, replicated = self.layout.rows(), self.layout.replicated()  # rows: a prefix of every carry tree
        self._eval_step = self.layout.compile(
            tbptt.make_stream_eval_step(self.task), (self.state_shardings(state_shape), rows, rows), (rows, replicated)
        )

    def prepare_state(self, state, example):
        carry = tbptt.zero_carry(self.model, state.params, self.batch_size, example["inputs"])
        return state.replace(stream_carry=carry)

    def state_shardings(self, state, layout=None):
        """Replicated, but the stream carry [B, ...] is split on 'data' like
        the batch rows it belongs to."""
        layout = layout or self.layout
        shardings = super().state_shardings(state, layout)
        return shardings.replace(stream_carry=layout.tree_rows(state.stream_carry))

    def train_step(self, state, index, rngs):
        if self.backprop_len == self.chunk_len:
            hosts = self.feeds.stream_segment("train", index, self.chunk_len)
        else:  # TBPTT(k1, k2 > k1): the segment with the k2 - k1 steps before it
            hosts = self.feeds.stream_window(index, self.chunk_len, self.backprop_len)
        return self._train_step(state, self.feeds.put(hosts), rngs)

    def evaluate(self, state, split):
        """Consecutive stream segments of `split`, the carry passed along
        from a fresh (zero) start; exact per-step totals."""
        carry, totals = jax.tree.map(jnp.zeros_like, state.stream_carry), None
        for hosts in self.feeds.eval_streams(split, self.chunk_len):
            carry, sums = self._eval_step(state, carry, self.feeds.put(hosts))
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        return [means(t) for t in self.layout.unstack(jax.device_get(totals))]


def means(totals: dict[str, tuple]) -> Metrics:
    """{metric: (sum, count)} -> {metric: sum / count} as Python floats. A
    metric that counted nothing (e.g. copy accuracy on segments without a
    recall step) is left out with a warning rather than reported as NaN."""
    results = {}
    for name, (total, count) in totals.items():
        if count > 0:
            results[name] = float(total / count)
        else:
            logging.warning("metric %s counted no items in this evaluation; it is not reported", name)
    return results


def choose(
    config: ml_collections.ConfigDict,
    task: tasks.Task,
    model,
    layout: Layout,
    feeds: ReplicaFeeds,
    example: dict,
) -> Plain:
    """The strategy config.train asks for (tbptt_len, tbptt_backprop_len,
    tbptt_update, stateful)."""
    train = config.train
    chunk_len = train.get("tbptt_len", 0)
    backprop_len = train.get("tbptt_backprop_len", 0) or chunk_len
    if train.get("stateful", False):
        if not chunk_len:
            raise ValueError(
                "config.train.stateful=True trains on stream segments of config.train.tbptt_len "
                "steps; set config.train.tbptt_len > 0"
            )
        return Stateful(task, model, layout, feeds, chunk_len, backprop_len, train.batch_size)
    if chunk_len:
        update = train.get("tbptt_update", "accumulate")
        seq_len = example["inputs"].shape[1]
        return Truncated(task, model, layout, feeds, chunk_len, backprop_len, update, seq_len)
    return Plain(task, model, layout, feeds)


def stream_length(config: ml_collections.ConfigDict) -> int:
    """Segment length the feeds must cut streams into (0: not a stream run)."""
    return config.train.get("tbptt_len", 0) if config.train.get("stateful", False) else 0
