"""One training step: the state it updates, the plain step for one replica,
and the step strategies that decide how a run's steps consume its data.

    train_step(state, batch, rng) -> (state, metrics)
        predictions = model(batch)                   seqjax.models
        loss, metrics = task.loss_and_metrics(...)   seqjax.tasks
        state = state.apply_gradients(grad(loss))    the optax chain of seqjax.optim
    eval_step(state, batch) -> ({metric: (sum, count)}, kept for corpus metrics)

`choose(config, ...)` picks a strategy, once per run, from config.train:

  Plain      whole sequences: one update per batch, backpropagation through
             every step (the two functions above). tbptt_len = 0, stateful False.
  Truncated  truncated BPTT on whole-sequence batches: each batch is cut into
             windows of tbptt_len (k1) steps, each backpropagating through
             tbptt_backprop_len (k2 >= k1) steps (`seqjax.tbptt`).
  Stateful   endless streams: each batch is the next k1 steps of every
             stream, the recurrent carry passed from batch to batch in the
             train state (config.train.stateful).

A strategy owns what differs between them: the windows it cuts, the state it
adds (the stream carry), its compiled train step and its evaluation. The
trainer (`seqjax.training`) only asks it for the next step and for metrics.
Every function is written for one replica and compiled through the run's
layout (`parallel.Layout.compile`), so the same strategy trains one run or R
vmapped replicas.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging
from flax.training import train_state

from seqjax import tasks, tbptt
from seqjax.feeds import ReplicaFeeds
from seqjax.parallel import Layout

Batch = dict[str, Any]


class TrainState(train_state.TrainState):
    """flax's TrainState (step, params, optimiser state) and what some runs add.

    Attributes:
      batch_stats: BatchNorm running statistics (the 'batch_stats'
        collection) of models that have any, updated by every train step and
        used by evaluation; None otherwise.
      stream_carry: the recurrent carry [B, ...] of stateful stream training,
        checkpointed so a resumed run continues mid-stream; None otherwise.
      lr_scale: [] this replica's learning rate, when the replicas of a run
        differ in learning rate: the optimiser is then built with peak 1
        (`optim.build_optimizer(unit_peak=True)`) and every update is scaled
        here. None otherwise; never checkpointed (it comes from the config).
    """

    batch_stats: Any = None
    stream_carry: Any = None
    lr_scale: Any = None

    def apply_gradients(self, *, grads, **kwargs):
        if self.lr_scale is None:
            return super().apply_gradients(grads=grads, **kwargs)
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        updates = jax.tree.map(lambda update: self.lr_scale * update, updates)
        params = optax.apply_updates(self.params, updates)
        return self.replace(step=self.step + 1, params=params, opt_state=opt_state, **kwargs)


def model_variables(state: TrainState, params: Any | None = None) -> dict[str, Any]:
    """The variables to apply the model with: {'params': ...}, plus
    'batch_stats' for models with BatchNorm. `params` overrides state.params
    (the differentiated copy inside a train step)."""
    variables = {"params": state.params if params is None else params}
    if state.batch_stats is not None:
        variables["batch_stats"] = state.batch_stats
    return variables


def model_inputs(batch: Batch) -> tuple[jax.Array, jax.Array | None]:
    """(inputs, lengths or None) as every seqjax model takes them."""
    return batch["inputs"], batch.get("lengths")


def model_kwargs(model, batch: Batch) -> dict[str, jax.Array]:
    """The extra batch entries a model asks for by name (its `batch_inputs`,
    e.g. an encoder-decoder's 'decoder_inputs'), as keyword arguments."""
    return {name: batch[name] for name in model.batch_inputs if name in batch}


def predict(state: TrainState, batch: Batch, model) -> jax.Array:
    """The model's predictions for `batch`, without dropout."""
    inputs, lengths = model_inputs(batch)
    return state.apply_fn(model_variables(state), inputs, lengths, deterministic=True, **model_kwargs(model, batch))


def make_train_step(task: tasks.Task, model) -> Callable:
    """train_step(state, batch, rng) -> (state, metrics), pure and jit-able.

    The dropout key is `fold_in(rng, state.step)`: a new key every step, the
    same key for the same step in a resumed run. Penalties, clipping and
    freezing are part of the optimiser (`seqjax.optim`).
    """

    def train_step(state: TrainState, batch: Batch, rng: jax.Array):
        dropout_rng = jax.random.fold_in(rng, state.step)
        inputs, lengths = model_inputs(batch)
        norm_stats = state.batch_stats is not None

        def loss_fn(params):
            # BatchNorm normalises with this batch's statistics and returns
            # updated running averages in the mutable 'batch_stats'.
            outputs = state.apply_fn(
                model_variables(state, params),
                inputs,
                lengths,
                deterministic=False,
                rngs={"dropout": dropout_rng},
                mutable=["batch_stats"] if norm_stats else False,
                **model_kwargs(model, batch),
            )
            predictions, updated = outputs if norm_stats else (outputs, {})
            loss, metrics = task.loss_and_metrics(predictions, batch)
            return loss, (metrics, updated)

        (_, (metrics, updated)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
        return state.apply_gradients(grads=grads, **updated), metrics

    return train_step


def make_eval_step(task: tasks.Task, model) -> Callable:
    """eval_step(state, batch) -> ({metric: (sum, count)}, collected): the
    task's exact sums over the batch (rows of weight 0 count nowhere), and
    what the task keeps for corpus-level metrics (`task.collect`, None for
    most tasks)."""

    def eval_step(state: TrainState, batch: Batch):
        predictions = predict(state, batch, model)
        return task.metric_sums(predictions, batch), task.collect(predictions, batch)

    return eval_step


# ---------------------------------------------------------------- step strategies

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
        self._train_step = self._compile_train(make_train_step(self.task, self.model), 0, state_shape)
        self._eval_step = self.layout.compile(
            make_eval_step(self.task, self.model), (replicated, self.layout.rows()), replicated
        )

    def prepare_state(self, state: TrainState, example: dict) -> TrainState:
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
