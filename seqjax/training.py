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
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state

from seqjax import checkpoint, config as config_lib, metrics, models, optim, parallel, provenance, tasks, tbptt

Batch = dict[str, Any]
TrainState = train_state.TrainState


class StreamTrainState(TrainState):
    """TrainState that also holds the recurrent carry of stateful stream
    training, so it is checkpointed with the parameters."""

    stream_carry: Any = None


def model_inputs(batch: Batch) -> tuple[jax.Array, jax.Array | None]:
    """(inputs, lengths or None) as every seqjax model takes them."""
    return batch["inputs"], batch.get("lengths")


def make_train_step(task: tasks.Task, l1: float = 0.0, l2: float = 0.0) -> Callable:
    """train_step(state, batch, rng) -> (state, metrics), pure and jit-able.

    The dropout key is `fold_in(rng, state.step)`: a new key every step, the
    same key for the same step in a resumed run.
    """

    def train_step(state: TrainState, batch: Batch, rng: jax.Array):
        dropout_rng = jax.random.fold_in(rng, state.step)
        inputs, lengths = model_inputs(batch)

        def objective(params):
            predictions = state.apply_fn({"params": params}, inputs, lengths, deterministic=False,
                                         rngs={"dropout": dropout_rng})
            loss, step_metrics = task.loss_and_metrics(predictions, batch)
            return loss + optim.weight_penalty(params, l1, l2), step_metrics

        (objective_value, step_metrics), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        step_metrics = dict(step_metrics, objective=objective_value,
                            grad_norm=optax.global_norm(grads))
        return state.apply_gradients(grads=grads), step_metrics

    return train_step


def make_eval_step(task: tasks.Task) -> Callable:
    """eval_step(params, apply_fn-less) -> metrics for one batch (no dropout)."""

    def eval_step(state: TrainState, batch: Batch):
        inputs, lengths = model_inputs(batch)
        predictions = state.apply_fn({"params": state.params}, inputs, lengths, deterministic=True)
        return task.loss_and_metrics(predictions, batch)[1]

    return eval_step


def create_train_state(model: nn.Module, task: tasks.Task, tx, config: ml_collections.ConfigDict,
                       mesh: jax.sharding.Mesh) -> TrainState:
    """Freshly initialised parameters and optimiser state, replicated over
    `mesh` (plus a zero stream carry when `config.train.stateful`)."""
    example = task.batch("train", 0, 2, config.seed)
    inputs, lengths = model_inputs(example)
    stateful = config.train.get("stateful", False)

    def init(rng):
        params = model.init(rng, inputs, lengths)["params"]
        if not stateful:
            return TrainState.create(apply_fn=model.apply, params=params, tx=tx)
        carry = tbptt.zero_carry(model, params, config.train.batch_size, inputs)
        return StreamTrainState.create(apply_fn=model.apply, params=params, tx=tx, stream_carry=carry)

    init_rng = jax.random.fold_in(jax.random.key(config.seed), 0)
    return jax.jit(init, out_shardings=parallel.replicated(mesh))(init_rng)


class Trainer:
    """Holds what one run needs: the task, the model, the compiled steps."""

    def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None):
        config_lib.validate(config)
        self.config = config
        self.mesh = mesh or parallel.make_mesh()
        parallel.check_batch_size(config.train.batch_size, self.mesh)
        self.task = tasks.get(config.task)
        self.model = models.build(config.model, self.task)
        self.chunk_len = config.train.get("tbptt_len", 0)
        self.stateful = config.train.get("stateful", False)
        update = config.train.get("tbptt_update", "accumulate")
        self.updates_per_batch = 1
        if self.stateful and not self.chunk_len:
            raise ValueError("config.train.stateful=True trains on stream segments of config.train.tbptt_len "
                             "steps; set config.train.tbptt_len > 0")
        if self.stateful:
            tbptt.check_truncatable(self.model, self.task)
        elif self.chunk_len:
            tbptt.check_truncatable(self.model, self.task)
            seq_len = self.task.batch("train", 0, 1, config.seed)["inputs"].shape[1]
            self.updates_per_batch = tbptt.updates_per_batch(update, seq_len, self.chunk_len)
        self.tx = optim.build_optimizer(config.optimizer, config.train.num_steps * self.updates_per_batch)
        self.dropout_rng = jax.random.fold_in(jax.random.key(config.seed), 1)
        self.train_step = self._compile_train_step(update)
        self.eval_step = jax.jit(make_eval_step(self.task),
                                 in_shardings=(parallel.replicated(self.mesh), parallel.batch_sharded(self.mesh)),
                                 out_shardings=parallel.replicated(self.mesh))

    def _compile_train_step(self, update: str) -> Callable:
        """jit(train_step) with replicated state and the batch sharded on 'data'
        (axis 1 of the stacked chunks under TBPTT)."""
        l1, l2 = self.config.optimizer.get("l1", 0.0), self.config.optimizer.get("l2", 0.0)
        if self.stateful:
            step, batch_axis = tbptt.make_stream_step(self.task, l1, l2), 0
        elif self.chunk_len:
            step, batch_axis = tbptt.make_train_step(self.task, update, l1, l2), 1
        else:
            step, batch_axis = make_train_step(self.task, l1, l2), 0
        replicated = parallel.replicated(self.mesh)
        return jax.jit(step, in_shardings=(replicated, parallel.batch_sharded(self.mesh, batch_axis), replicated),
                       out_shardings=(replicated, replicated), donate_argnums=0)

    def init_state(self) -> TrainState:
        return create_train_state(self.model, self.task, self.tx, self.config, self.mesh)

    def batch(self, split: str, index: int) -> dict[str, jax.Array]:
        host = self.task.batch(split, index, self.config.train.batch_size, self.config.seed)
        return parallel.shard_batch(host, self.mesh)

    def batches_done(self, state: TrainState) -> int:
        return int(state.step) // self.updates_per_batch

    def step(self, state: TrainState) -> tuple[TrainState, dict]:
        """Trains on the next batch: one update, or one per chunk under per-chunk TBPTT."""
        index = self.batches_done(state)
        if self.stateful:
            return self.train_step(state, self.stream_segment("train", index), self.dropout_rng)
        if not self.chunk_len:
            return self.train_step(state, self.batch("train", index), self.dropout_rng)
        host = self.task.batch("train", index, self.config.train.batch_size, self.config.seed)
        chunks = parallel.shard_batch(tbptt.split_into_chunks(host, self.chunk_len), self.mesh, batch_axis=1)
        return self.train_step(state, chunks, self.dropout_rng)

    def stream_segment(self, split: str, index: int) -> dict[str, jax.Array]:
        host = self.task.stream_batch(split, index, self.config.train.batch_size, self.chunk_len,
                                      self.config.seed)
        return parallel.shard_batch(host, self.mesh)

    def evaluate(self, state: TrainState, split: str) -> dict[str, float]:
        """Metrics averaged over `config.train.eval_batches` batches of `split`
        (for stateful runs: over that many consecutive stream segments, the
        carry passed along from a fresh start)."""
        if self.stateful:
            return self._evaluate_stream(state, split)
        per_batch = [self.eval_step(state, self.batch(split, i))
                     for i in range(self.config.train.eval_batches)]
        return {k: float(np.mean([m[k] for m in per_batch])) for k in per_batch[0]}


    def _evaluate_stream(self, state: TrainState, split: str) -> dict[str, float]:
        if not hasattr(self, "_stream_eval_step"):
            self._stream_eval_step = jax.jit(tbptt.make_stream_eval_step(self.task))
        carry, totals = jax.tree.map(jnp.zeros_like, state.stream_carry), None
        for index in range(self.config.train.eval_batches):
            carry, sums = self._stream_eval_step(state, carry, self.stream_segment(split, index))
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        return {name: float(total / count) for name, (total, count) in totals.items()}


def _mean_metrics(window: list[dict]) -> dict[str, float]:
    stacked = jax.device_get(window)
    return {k: float(np.mean([m[k] for m in stacked])) for k in stacked[0]}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       mesh: jax.sharding.Mesh | None = None) -> dict[str, float]:
    """Trains (resuming from `workdir` if it holds checkpoints) and returns the
    final test metrics, also written to `workdir/final_metrics.json`."""
    started = time.monotonic()
    trainer = Trainer(config, mesh)
    os.makedirs(workdir, exist_ok=True)
    metrics.write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())
    run_info = RunInfo(workdir)
    train = config.train
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), train.checkpoint_every,
                                   train.keep_checkpoints)
    state = ckpt.restore_latest(trainer.init_state())
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
        ckpt.save(step, state, force=step == train.num_steps)
    progress.close()
    final = {"step": trainer.batches_done(state), **{f"test_{k}": v for k, v in trainer.evaluate(state, "test").items()}}
    writer.write(final["step"], final)
    writer.close()
    ckpt.close()
    metrics.write_json_atomic(os.path.join(workdir, "final_metrics.json"), final)
    run_info.end(time.monotonic() - started)
    return final


class RunInfo:
    """`W/run_info.json`: provenance of every (re)start of the run and its wall time."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, "run_info.json")
        previous = metrics.read_json(self.path) or {}
        self.info = {"attempts": previous.get("attempts", []),
                     "wall_time_s": previous.get("wall_time_s", 0.0), "status": "running"}

    def begin(self, seed: int, start_step: int) -> None:
        self.info.update(seed=seed, **provenance.collect())
        self.info["attempts"].append({"start_step": start_step, "started_at": time.time()})
        metrics.write_json_atomic(self.path, self.info)

    def end(self, seconds: float) -> None:
        self.info["wall_time_s"] += seconds
        self.info["attempts"][-1]["wall_time_s"] = seconds
        self.info["status"] = "finished"
        metrics.write_json_atomic(self.path, self.info)
