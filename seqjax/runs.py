"""Reopen a finished (or running) training run from its workdir: the
resolved config, the task with its saved tokenizer, the model, and the
parameters of the latest checkpoint. Used by sampling and decoding scripts.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import ml_collections

from seqjax import checkpoint, training


@dataclasses.dataclass
class Run:
    config: ml_collections.ConfigDict
    trainer: training.Trainer
    params: Any
    step: int
    model_state: dict = dataclasses.field(default_factory=dict)  # e.g. {'batch_stats': ...} for BatchNorm

    @property
    def variables(self) -> dict[str, Any]:
        """{'params': ..., plus the model's other collections}, for model.apply."""
        return {"params": self.params, **self.model_state}


def load_run(workdir: str) -> Run:
    """The run in `workdir` at its latest checkpoint."""
    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{config_path} not found: is {workdir} the workdir of a seqjax training run?")
    with open(config_path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    trainer = training.Trainer(config, workdir=workdir)
    ckpt = checkpoint.Checkpointer([os.path.join(workdir, "checkpoints")], 1, 1)
    step = ckpt.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}")
    state = trainer.restore_or_init(ckpt)
    ckpt.close()
    trainer.feeds.close()
    model_state = {} if state.batch_stats is None else {"batch_stats": state.batch_stats}
    return Run(config, trainer, state.params, step, model_state=model_state)
