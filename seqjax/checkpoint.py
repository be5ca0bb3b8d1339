"""Checkpoints through `orbax.checkpoint.CheckpointManager`.

Orbax writes each checkpoint into a temporary directory and renames it into
place only once complete, so a run killed mid-save leaves the previous
checkpoint intact and the partial one is ignored on restart.
"""

from __future__ import annotations

import os
from typing import TypeVar

import jax
import orbax.checkpoint as ocp

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

    def restore_latest(self, state: State) -> State:
        """The latest saved state with `state`'s structure and shardings, or
        `state` itself when there is no checkpoint yet."""
        step = self._manager.latest_step()
        if step is None:
            return state
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        return self._manager.restore(step, args=ocp.args.StandardRestore(target))

    def save(self, step: int, state: State, *, force: bool = False) -> bool:
        """Saves (asynchronously) when `step` is a multiple of `save_every` or
        `force` is set; returns whether it started a save."""
        if step % self.save_every and not force:
            return False
        return self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def close(self) -> None:
        """Waits for pending asynchronous saves, then releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
