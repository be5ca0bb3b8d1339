"""Transfer learning (the ULMFiT recipe): start a model from another run.

A classifier takes its embedding and recurrent encoder from a language
model trained first (`config.train.init_from = <LM workdir>`,
`config.train.init_modules = ('embed', 'stack')`), uses the LM's tokenizer
(`config.data.tokenizer_path`), and may keep the transferred weights frozen
for the first `config.train.freeze_steps` updates so the new head settles
before the pretrained features move (gradual unfreezing, in one step). That
freeze is a rule of the optimiser chain (`optim.freeze_rules`); this module
only copies the weights.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import traverse_util


def latest_params(workdir: str) -> dict:
    """The parameters of the latest checkpoint under `workdir/checkpoints`."""
    directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    manager = ocp.CheckpointManager(directory) if os.path.isdir(directory) else None
    step = manager.latest_step() if manager else None
    if step is None:
        raise FileNotFoundError(
            f"no checkpoint to transfer from: expected {directory}/<step>/ written by "
            "a seqjax training run (config.train.init_from)"
        )
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    manager.close()
    return restored.state["params"]


def transfer(target: dict, source: dict, modules: Sequence[str]) -> dict:
    """`target` params with the top-level `modules` copied from `source`.

    Every copied leaf must exist in both trees with the same shape; the error
    names the first one that does not (e.g. a different hidden size).
    """
    target_flat = traverse_util.flatten_dict(target, sep="/")
    source_flat = traverse_util.flatten_dict(source, sep="/")
    for module in modules:
        names = [k for k in target_flat if k == module or k.startswith(module + "/")]
        if not names:
            raise ValueError(
                f"module {module!r} is not in the model (its top-level modules: "
                f"{sorted({k.split('/')[0] for k in target_flat})})"
            )
        for name in names:
            if name not in source_flat:
                raise ValueError(f"parameter {name} is not in the pretrained model")
            if source_flat[name].shape != target_flat[name].shape:
                raise ValueError(
                    f"parameter {name}: pretrained shape {tuple(source_flat[name].shape)} != "
                    f"model shape {tuple(target_flat[name].shape)}"
                )
            target_flat[name] = jnp.asarray(source_flat[name], target_flat[name].dtype)
    return traverse_util.unflatten_dict(target_flat, sep="/")


def count_params(tree: Any) -> int:
    return sum(x.size for x in jax.tree.leaves(tree))
