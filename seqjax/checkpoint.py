"""Checkpoints through `orbax.checkpoint.CheckpointManager`.

Orbax writes each checkpoint into a temporary directory and renames it into
place only once complete, so a run killed mid-save leaves the previous
checkpoint intact and the partial one is ignored on restart.

A checkpoint holds the item 'state' (the TrainState) and, for runs that read
a dataset, the item 'data': the grain iterator's position, so a resumed run
continues the same stream of batches.
"""

from __future__ import annotations

import os
from typing import TypeVar

import jax
import orbax.checkpoint as ocp

from seqjax.data import loader

State = TypeVar("State")


class Checkpointer:
    """Saves every `save_every` steps, keeps the last `keep`, restores the latest."""

    def __init__(self, directory: str, save_every: int, keep: int):
        self.save_every = save_every
        # The interval is applied here rather than by orbax, whose policy also
        # saves the very first step it sees.
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def restore_latest(self, state: State, data_iterator=None) -> State:
        """The latest saved state with `state`'s structure and shardings, or
        `state` itself when there is no checkpoint yet. A `data_iterator`
        (grain) is moved to the position saved with that state."""
        step = self._manager.latest_step()
        if step is None:
            return state
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        items = {"state": ocp.args.StandardRestore(target)}
        if data_iterator is not None:
            items["data"] = loader.checkpoint_restore_args(data_iterator)
        return self._manager.restore(step, args=ocp.args.Composite(**items)).state

    def save(self, step: int, state: State, *, force: bool = False, data_iterator=None) -> bool:
        """Saves (asynchronously) when `step` is a multiple of `save_every` or
        `force` is set, with `data_iterator`'s position when given; returns
        whether it started a save."""
        if step % self.save_every and not force:
            return False
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = loader.checkpoint_save_args(data_iterator)
        return self._manager.save(step, args=ocp.args.Composite(**items), force=True)

    def close(self) -> None:
        """Waits for pending asynchronous saves, then releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
