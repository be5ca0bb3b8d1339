"""The training loop: pure jit-compiled steps, data-parallel, checkpointed.

    state  = init or restore from W/checkpoints
    loop:  batch -> jit(train_step)(state, batch, rng) -> metrics -> writers
           every eval_every steps: evaluate; every checkpoint_every: save
    end:   evaluate on the test split -> W/final_metrics.json

Batches are a pure function of (seed, split, step) and dropout keys a pure
function of (seed, step), so a run restored from step s continues exactly as
the uninterrupted run would.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax.training import train_state

from seqjax import (
    checkpoint,
    embeddings,
    feeds,
    metrics,
    models,
    optim,
    parallel,
    provenance,
    tasks,
    tbptt,
    transfer,
)
from seqjax import (
    config as config_lib,
)

Batch = dict[str, Any]
TrainState = train_state.TrainState


class StreamTrainState(TrainState):
    """TrainState that also holds the recurrent carry of stateful stream
    training, so it is checkpointed with the parameters."""

    stream_carry: Any = None


class NormStatsTrainState(TrainState):
    """TrainState of a model with BatchNorm: also holds the running
    statistics (the 'batch_stats' collection), updated by every train step
    and used by evaluation, and checkpointed with the parameters."""

    batch_stats: Any = None


def model_variables(state: TrainState, params: Any | None = None) -> dict[str, Any]:
    """The variables to apply the model with: {'params': ...}, plus
    'batch_stats' for models with BatchNorm. `params` overrides state.params
    (the differentiated copy inside a train step)."""
    variables = {"params": state.params if params is None else params}
    if isinstance(state, NormStatsTrainState):
        variables["batch_stats"] = state.batch_stats
    return variables


def model_inputs(batch: Batch) -> tuple[jax.Array, jax.Array | None]:
    """(inputs, lengths or None) as every seqjax model takes them."""
    return batch["inputs"], batch.get("lengths")


def model_kwargs(apply_fn: Callable, batch: Batch) -> dict[str, jax.Array]:
    """The extra batch entries a model asks for by name (its `batch_inputs`,
    e.g. an encoder-decoder's 'decoder_inputs'), as keyword arguments."""
    names = getattr(getattr(apply_fn, "__self__", None), "batch_inputs", ())
    return {name: batch[name] for name in names if name in batch}


def make_train_step(task: tasks.Task, l1: float = 0.0, l2: float = 0.0) -> Callable:
    """train_step(state, batch, rng) -> (state, metrics), pure and jit-able.

    The dropout key is `fold_in(rng, state.step)`: a new key every step, the
    same key for the same step in a resumed run.
    """

    def train_step(state: TrainState, batch: Batch, rng: jax.Array):
        dropout_rng = jax.random.fold_in(rng, state.step)
        inputs, lengths = model_inputs(batch)

        norm_stats = isinstance(state, NormStatsTrainState)

        def objective(params):
            # BatchNorm normalises with this batch's statistics and returns
            # updated running averages in the mutable 'batch_stats'.
            outputs = state.apply_fn(
                model_variables(state, params),
                inputs,
                lengths,
                deterministic=False,
                rngs={"dropout": dropout_rng},
                mutable=["batch_stats"] if norm_stats else False,
                **model_kwargs(state.apply_fn, batch),
            )
            predictions, updated = outputs if norm_stats else (outputs, {})
            loss, step_metrics = task.loss_and_metrics(predictions, batch)
            return loss + optim.weight_penalty(params, l1, l2), (step_metrics, updated)

        (objective_value, (step_metrics, updated)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        step_metrics = dict(step_metrics, objective=objective_value, grad_norm=optax.tree.norm(grads))
        return state.apply_gradients(grads=grads, **updated), step_metrics

    return train_step


def _predict(state: TrainState, batch: Batch) -> jax.Array:
    inputs, lengths = model_inputs(batch)
    return state.apply_fn(
        model_variables(state), inputs, lengths, deterministic=True, **model_kwargs(state.apply_fn, batch)
    )


def make_eval_step(task: tasks.Task) -> Callable:
    """eval_step(state, batch) -> metrics for one batch (no dropout)."""

    def eval_step(state: TrainState, batch: Batch):
        return task.loss_and_metrics(_predict(state, batch), batch)[1]

    return eval_step


def make_sums_step(task: tasks.Task) -> Callable:
    """sums_step(state, batch) -> ({metric: (sum, count)}, collected): for
    tasks with `metric_sums`, so an evaluation pass adds up exactly over
    examples (filler rows weigh 0); `collected` is what the task keeps for
    corpus-level metrics (`task.collect`), or None."""

    def sums_step(state: TrainState, batch: Batch):
        predictions = _predict(state, batch)
        collected = task.collect(predictions, batch) if hasattr(task, "collect") else None
        return task.metric_sums(predictions, batch), collected

    return sums_step


def state_initializer(
    model: nn.Module, task: tasks.Task, tx, config: ml_collections.ConfigDict, example: Batch | None = None
) -> tuple[Callable, jax.Array]:
    """(init(rng) -> fresh TrainState, the rng it is called with). The state
    holds a zero stream carry [B, ...] when `config.train.stateful`, and the
    BatchNorm running statistics when the model has any.
    `example` is a small batch for shapes (default: the task's train batch 0)."""
    example = task.batch("train", 0, 2, config.seed) if example is None else example
    inputs, lengths = model_inputs(example)
    extra = model_kwargs(model.apply, example)
    stateful = config.train.get("stateful", False)

    def init(rng):
        variables = model.init(rng, inputs, lengths, **extra)
        params = variables["params"]
        if "batch_stats" in variables:
            if stateful:
                raise ValueError(
                    "config.train.stateful=True is not supported for models with BatchNorm (config.model.norm='batch')"
                )
            return NormStatsTrainState.create(
                apply_fn=model.apply, params=params, tx=tx, batch_stats=variables["batch_stats"]
            )
        if not stateful:
            return TrainState.create(apply_fn=model.apply, params=params, tx=tx)
        carry = tbptt.zero_carry(model, params, config.train.batch_size, inputs)
        return StreamTrainState.create(apply_fn=model.apply, params=params, tx=tx, stream_carry=carry)

    return init, jax.random.fold_in(jax.random.key(config.seed), 0)


def state_shardings(state: TrainState, mesh: jax.sharding.Mesh) -> Any:
    """Shardings for every leaf of `state` (arrays or shape structs):
    parameters and optimiser state replicated, the stream carry [B, ...]
    split along 'data' like the batch rows it belongs to."""
    shardings = jax.tree.map(lambda _: parallel.replicated(mesh), state)
    if isinstance(state, StreamTrainState):
        shardings = shardings.replace(stream_carry=parallel.tree_batch_sharded(state.stream_carry, mesh))
    return shardings


def create_train_state(
    model: nn.Module,
    task: tasks.Task,
    tx,
    config: ml_collections.ConfigDict,
    mesh: jax.sharding.Mesh,
    example: Batch | None = None,
) -> TrainState:
    """Freshly initialised parameters and optimiser state, replicated over
    `mesh` (plus a zero stream carry, sharded on 'data', when
    `config.train.stateful`)."""
    init, rng = state_initializer(model, task, tx, config, example)
    shardings = state_shardings(jax.eval_shape(init, rng), mesh)
    return jax.jit(init, out_shardings=shardings)(rng)


class Trainer:
    """Holds what one run needs: the task, the model, the compiled steps."""

    def __init__(
        self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None, workdir: str | None = None
    ):
        config_lib.validate(config)
        self.config = config
        self.mesh = mesh or parallel.make_mesh()
        parallel.check_batch_size(config.train.batch_size, self.mesh)
        self.task = tasks.get(config.task, config.get("data"))
        if hasattr(self.task, "setup"):  # dataset tasks: tokenizer fitted or loaded from the workdir
            self.task.setup(workdir)
        self.model = models.build(config.model, self.task)
        self.chunk_len = config.train.get("tbptt_len", 0)
        self.backprop_len = config.train.get("tbptt_backprop_len", 0) or self.chunk_len
        self.stateful = config.train.get("stateful", False)
        self.feed = feeds.make_feed(self.task, config, self.chunk_len if self.stateful else 0)
        if isinstance(self.feed, feeds.LoaderFeed) and self.stateful and self.backprop_len != self.chunk_len:
            raise ValueError(
                "config.train.tbptt_backprop_len > tbptt_len is not supported for stateful training "
                "on a dataset; use tbptt_backprop_len = 0"
            )
        self.example = self.feed.example()
        update = config.train.get("tbptt_update", "accumulate")
        self.updates_per_batch = 1
        if self.stateful and not self.chunk_len:
            raise ValueError(
                "config.train.stateful=True trains on stream segments of config.train.tbptt_len "
                "steps; set config.train.tbptt_len > 0"
            )
        if self.stateful:
            tbptt.check_truncatable(self.model, self.task)
        elif self.chunk_len:
            tbptt.check_truncatable(self.model, self.task)
            seq_len = self.example["inputs"].shape[1]
            self.updates_per_batch = tbptt.updates_per_batch(update, seq_len, self.chunk_len)
        self.tx = optim.build_optimizer(config.optimizer, config.train.num_steps * self.updates_per_batch)
        if config.train.get("freeze_steps", 0):
            self.tx = transfer.frozen(self.tx, config.train.freeze_steps, self._init_modules())
        self.tx = embeddings.optimizer_from_config(config.model, self.tx)  # freeze_embedding(_steps)
        self.dropout_rng = jax.random.fold_in(jax.random.key(config.seed), 1)
        self.train_step = self._compile_train_step(update)
        self.eval_step = jax.jit(
            make_eval_step(self.task),
            in_shardings=(parallel.replicated(self.mesh), parallel.batch_sharded(self.mesh)),
            out_shardings=parallel.replicated(self.mesh),
        )

    def _compile_train_step(self, update: str) -> Callable:
        """jit(train_step) with the state sharded as `state_shardings` says and
        the batch sharded on 'data' (axis 1 of the stacked chunks under TBPTT)."""
        l1, l2 = self.config.optimizer.get("l1", 0.0), self.config.optimizer.get("l2", 0.0)
        if self.stateful:
            step, batch_axis = tbptt.make_stream_step(self.task, l1, l2, self.chunk_len), 0
        elif self.chunk_len:
            step, batch_axis = tbptt.make_train_step(self.task, update, l1, l2, self.chunk_len), 1
        else:
            step, batch_axis = make_train_step(self.task, l1, l2), 0
        replicated = parallel.replicated(self.mesh)
        state = replicated
        if self.stateful:  # the carry is split over devices; the state's sharding is a tree
            init, rng = state_initializer(self.model, self.task, self.tx, self.config, self.example)
            state = state_shardings(jax.eval_shape(init, rng), self.mesh)
        return jax.jit(
            step,
            in_shardings=(state, parallel.batch_sharded(self.mesh, batch_axis), replicated),
            out_shardings=(state, replicated),
            donate_argnums=0,
        )

    def _init_modules(self) -> tuple[str, ...]:
        return tuple(self.config.train.get("init_modules", ("embed", "stack")))

    def init_state(self) -> TrainState:
        """Fresh parameters, with `config.train.init_modules` copied from the
        run in `config.train.init_from` when it is set (transfer learning)."""
        state = create_train_state(self.model, self.task, self.tx, self.config, self.mesh, self.example)
        if self.config.train.get("init_from", ""):
            pretrained = transfer.latest_params(self.config.train.init_from)
            params = transfer.transfer(state.params, pretrained, self._init_modules())
            state = state.replace(params=jax.device_put(params, parallel.replicated(self.mesh)))
        word_index = getattr(getattr(self.task, "tokenizer", None), "word_index", None)
        if self.config.model.get("pretrained_embeddings", ""):
            if word_index is None:
                raise ValueError(
                    "config.model.pretrained_embeddings needs a task with a word tokenizer "
                    "(config.data.tokenizer='word')"
                )
            params, report = embeddings.init_from_config(
                self.config.model, state.params, word_index, seed=self.config.seed
            )
            logging.info("pretrained embeddings: %s", report.summary())
            state = state.replace(params=jax.device_put(params, parallel.replicated(self.mesh)))
        return state

    def to_device(self, host: Batch, batch_axis: int = 0) -> dict[str, jax.Array]:
        """Host batch -> sharded arrays: a generated batch is global (each host
        takes its slice); a loader batch is already this host's rows."""
        if isinstance(self.feed, feeds.LoaderFeed):
            return feeds.to_device(host, self.mesh, batch_axis)
        return parallel.shard_batch(host, self.mesh, batch_axis)

    def batch(self, split: str, index: int) -> dict[str, jax.Array]:
        return self.to_device(self.task.batch(split, index, self.config.train.batch_size, self.config.seed))

    def batches_done(self, state: TrainState) -> int:
        return int(state.step) // self.updates_per_batch

    def step(self, state: TrainState) -> tuple[TrainState, dict]:
        """Trains on the next batch: one update, or one per chunk under per-chunk TBPTT."""
        index = self.batches_done(state)
        if self.stateful:
            return self.train_step(state, self.stream_window("train", index), self.dropout_rng)
        host = self.feed.train(index)
        if not self.chunk_len:
            return self.train_step(state, self.to_device(host), self.dropout_rng)
        windows = tbptt.split_into_chunks(host, self.chunk_len, self.backprop_len)
        return self.train_step(state, self.to_device(windows, batch_axis=1), self.dropout_rng)

    def stream_window(self, split: str, index: int) -> dict[str, jax.Array]:
        """The next training segment of the streams; under TBPTT(k1, k2 > k1)
        preceded by the k2 - k1 steps its gradient reaches back into."""
        if self.backprop_len == self.chunk_len:
            return self.stream_segment(split, index)
        host = tbptt.stream_window(
            self.task, split, index, self.config.train.batch_size, self.chunk_len, self.backprop_len, self.config.seed
        )
        return parallel.shard_batch(host, self.mesh)

    def stream_segment(self, split: str, index: int) -> dict[str, jax.Array]:
        return self.to_device(self.feed.stream_segment(split, index, self.chunk_len))

    def evaluate(self, state: TrainState, split: str) -> dict[str, float]:
        """Metrics of `split`. Tasks with `metric_sums` add up exact totals
        over their evaluation pass (every example once; dataset tasks read the
        whole split unless `config.train.eval_batches` > 0 limits it); other
        tasks average `config.train.eval_batches` batches. Stateful runs
        evaluate consecutive stream segments, the carry passed along from a
        fresh start."""
        if self.stateful:
            return self._finalize(self._evaluate_stream(state, split))
        batches = (self.to_device(host) for host in self.feed.eval_batches(split))
        if not hasattr(self.task, "metric_sums"):
            per_batch = [self.eval_step(state, batch) for batch in batches]
            return {k: float(np.mean([m[k] for m in per_batch])) for k in per_batch[0]}
        if not hasattr(self, "_sums_step"):
            self._sums_step = jax.jit(make_sums_step(self.task))
        totals, collected = None, []
        for batch in batches:
            sums, kept = self._sums_step(state, batch)
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
            if kept is not None:
                collected.append(kept)
        results = {name: float(total / count) for name, (total, count) in jax.device_get(totals).items()}
        if collected:
            results.update(self.task.corpus_metrics(collected))
        return self._finalize(results)

    def final_metrics(self, state: TrainState) -> dict[str, float]:
        """What the task measures once at the end, beyond its test evaluation
        (e.g. BLEU of decoded output; `task.final_metrics`), else {}."""
        if not hasattr(self.task, "final_metrics"):
            return {}
        train = self.config.train
        return self.task.final_metrics(
            self.model,
            state.params,
            batch_size=train.batch_size,
            num_batches=train.get("eval_batches", 0),
            seed=self.config.seed,
        )

    def _finalize(self, results: dict[str, float]) -> dict[str, float]:
        """Metrics computed from the totals (RMSE, perplexity), if the task has any."""
        if hasattr(self.task, "finalize_metrics"):
            results = {k: float(v) for k, v in self.task.finalize_metrics(results).items()}
        return results

    def _evaluate_stream(self, state: TrainState, split: str) -> dict[str, float]:
        if not hasattr(self, "_stream_eval_step"):
            self._stream_eval_step = jax.jit(tbptt.make_stream_eval_step(self.task))
        carry, totals = jax.tree.map(jnp.zeros_like, state.stream_carry), None
        for host in self.feed.eval_streams(split, self.chunk_len):
            carry, sums = self._stream_eval_step(state, carry, self.to_device(host))
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        return {name: float(total / count) for name, (total, count) in totals.items()}


def _mean_metrics(window: list[dict]) -> dict[str, float]:
    stacked = jax.device_get(window)
    return {k: float(np.mean([m[k] for m in stacked])) for k in stacked[0]}


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh | None = None
) -> dict[str, float]:
    """Trains (resuming from `workdir` if it holds checkpoints) and returns the
    final test metrics, also written to `workdir/final_metrics.json`."""
    started = time.monotonic()
    os.makedirs(workdir, exist_ok=True)
    trainer = Trainer(config, mesh, workdir)
    if hasattr(trainer.task, "save_assets"):
        trainer.task.save_assets(workdir)
    metrics.write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())
    run_info = RunInfo(workdir)
    train = config.train
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), train.checkpoint_every, train.keep_checkpoints)
    state = ckpt.restore_latest(trainer.init_state(), trainer.feed.iterator)
    start = trainer.batches_done(state)
    run_info.begin(config.seed, start)
    writer = metrics.MetricsWriter(workdir, resume_step=start)
    progress = metrics.Progress(start, train.num_steps, enabled=train.get("progress", True))
    window, window_start = [], time.monotonic()
    for step in range(start + 1, train.num_steps + 1):
        state, step_metrics = trainer.step(state)
        window.append(step_metrics)
        if step % train.log_every == 0 or step == train.num_steps:
            logged = _mean_metrics(window)
            logged["steps_per_second"] = len(window) / (time.monotonic() - window_start)
            writer.write(step, logged, prefix="train_")
            progress.update(step, {"loss": logged["loss"]})
            window, window_start = [], time.monotonic()
        if step % train.eval_every == 0 and step != train.num_steps:
            writer.write(step, trainer.evaluate(state, "eval"), prefix="eval_")
        ckpt.save(step, state, force=step == train.num_steps, data_iterator=trainer.feed.iterator)
    progress.close()
    final = {
        "step": trainer.batches_done(state),
        **{f"test_{k}": v for k, v in trainer.evaluate(state, "test").items()},
    }
    final.update({f"test_{k}": v for k, v in trainer.final_metrics(state).items()})
    writer.write(final["step"], final)
    writer.close()
    ckpt.close()
    trainer.feed.close()
    metrics.write_json_atomic(os.path.join(workdir, "final_metrics.json"), final)
    run_info.end(time.monotonic() - started)
    return final


class RunInfo:
    """`W/run_info.json`: provenance of every (re)start of the run and its wall time."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, "run_info.json")
        previous = metrics.read_json(self.path) or {}
        self.info = {
            "attempts": previous.get("attempts", []),
            "wall_time_s": previous.get("wall_time_s", 0.0),
            "status": "running",
        }

    def begin(self, seed: int, start_step: int) -> None:
        self.info.update(seed=seed, **provenance.collect())
        self.info["attempts"].append({"start_step": start_step, "started_at": time.time()})
        metrics.write_json_atomic(self.path, self.info)

    def end(self, seconds: float) -> None:
        self.info["wall_time_s"] += seconds
        self.info["attempts"][-1]["wall_time_s"] = seconds
        self.info["status"] = "finished"
        metrics.write_json_atomic(self.path, self.info)
