"""Reopen a finished (or running) training run from its run dir: the
resolved config, the task with its saved tokenizer, the model, and the
parameters of its latest (or best) checkpoint; and predict with it on raw
inputs:

    from seqjax import runs
    run = runs.load_run("runs/sst2_lstm")                 # or checkpoint="best"
    run.predict(["a gorgeous, witty film", "flat and dull"])
    # [{'label': '1', 'label_id': 1, 'probabilities': [0.03, 0.97]}, ...]

What `predict` takes and returns is the task's (`Task.encode_raw`,
`Task.describe`): texts for classifiers, sentences (token lists or
whitespace-separated strings) for taggers ({'tags': [...]}), windows of raw
values for forecasting (forecasts in the series' units), and the model's own
input arrays for the synthetic tasks (its outputs). Translation runs
translate with `experiments.translate`, language models generate with
`experiments.sample`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from seqjax import checkpoint as checkpoint_lib
from seqjax import metrics, training

CHECKPOINTS = ("latest", "best")


@dataclasses.dataclass
class Run:
    config: ml_collections.ConfigDict
    trainer: training.Trainer
    params: Any
    step: int
    model_state: dict = dataclasses.field(default_factory=dict)  # e.g. {'batch_stats': ...} for BatchNorm
    _apply: Any = dataclasses.field(default=None, repr=False)  # the jitted model, compiled on first use

    @property
    def variables(self) -> dict[str, Any]:
        """{'params': ..., plus the model's other collections}, for model.apply."""
        return {"params": self.params, **self.model_state}

    def predict(self, items: Sequence[Any], batch_size: int = 64) -> list[Any]:
        """The model's prediction for each raw input, as its task describes
        it (see the module docstring), `batch_size` inputs at a time."""
        task, model = self.trainer.task, self.trainer.model
        if getattr(model, "batch_inputs", ()):
            raise ValueError(
                f"the run trained {type(model).__name__}, an encoder-decoder: translate with experiments.translate "
                "(seqjax-translate) or decode with experiments.decode instead"
            )
        if isinstance(items, (str, bytes)) or not len(items):
            raise ValueError("predict takes a non-empty sequence of inputs (a list of texts, sentences or arrays)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if self._apply is None:
            self._apply = jax.jit(lambda variables, x, n: model.apply(variables, x, n, deterministic=True))
        described = []
        for start in range(0, len(items), batch_size):
            batch = task.encode_raw(items[start : start + batch_size])
            outputs = self._apply(self.variables, batch["inputs"], batch["lengths"])
            described += task.describe(np.asarray(jax.device_get(outputs)), batch)
        return described


def load_run(run_dir: str, checkpoint: str = "latest") -> Run:
    """The run in `run_dir` at its latest checkpoint, or with
    `checkpoint='best'` at its best by config.train.best_metric."""
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {checkpoint!r}")
    config_path = os.path.join(run_dir, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{config_path} not found: is {run_dir} the workdir of a seqjax training run?")
    with open(config_path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    trainer = training.Trainer(config, workdir=run_dir)
    if checkpoint == "best":
        state = _best_state(trainer, run_dir)
    else:
        ckpt = checkpoint_lib.Checkpointer([os.path.join(run_dir, "checkpoints")], 1, 1)
        if ckpt.latest_step() is None:
            raise FileNotFoundError(f"no checkpoint in {os.path.join(run_dir, 'checkpoints')}")
        state = trainer.restore_or_init(ckpt)
        ckpt.close()
    trainer.feeds.close()
    model_state = {} if state.batch_stats is None else {"batch_stats": state.batch_stats}
    return Run(config, trainer, state.params, trainer.batches_done(state), model_state=model_state)


def _best_state(trainer: training.Trainer, run_dir: str):
    metric = trainer.config.train.get("best_metric", "")
    directory = os.path.join(run_dir, "best_checkpoint")
    if not metric or not os.path.isdir(directory):
        raise FileNotFoundError(
            f"{run_dir} keeps no best checkpoint (config.train.best_metric={metric!r}): load the latest one, "
            "or train with config.train.best_metric set"
        )
    name = metric.removeprefix("eval_")
    best = checkpoint_lib.BestCheckpoint(
        [directory], name, metrics.metric_direction(metric, trainer.task.higher_is_better)
    )
    if best.best()[0] is None:
        raise FileNotFoundError(f"no checkpoint in {directory}")
    state = trainer.restore_best(best)
    best.close()
    return state
