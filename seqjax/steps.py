"""One training step, for one replica: the state it updates and the pure,
jit-able functions that train and evaluate on whole sequences.

    train_step(state, batch, rng) -> (state, metrics)
        predictions = model(batch)                 seqjax.models
        loss, metrics = task.loss_and_metrics(...)   seqjax.tasks
        state = state.apply_gradients(grad(loss))    the optax chain of seqjax.optim
    eval_step(state, batch) -> ({metric: (sum, count)}, kept for corpus metrics)

This is the plain strategy of `seqjax.strategies`; truncated BPTT and
stateful streams (`seqjax.tbptt`) train with the same state and task hooks.
The trainer runs these functions under `jax.jit`, vmapped over replicas when
a run trains several (`seqjax.replicas`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax
from flax.training import train_state

from seqjax import tasks

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
