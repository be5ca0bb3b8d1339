"""Checkpoints through `orbax.checkpoint.CheckpointManager`, one per replica.

Orbax writes each checkpoint into a temporary directory and renames it into
place only once complete, so a run killed mid-save leaves the previous
checkpoint intact and the partial one is ignored on restart.

A checkpoint holds the item 'state' (one replica's TrainState) and, for runs
that read a dataset, the item 'data': the grain iterator's position, so a
resumed run continues the same stream of batches.

A run with R replicas keeps R checkpoint directories, one in each replica's
run dir, so a replica's run dir is the same whether it was trained alone or
in a group. Saves are asynchronous; a kill can therefore leave some replicas
one save ahead of others. Restoring takes the newest step that every replica
has, and old checkpoints are deleted only once every replica has committed
the newer ones, so such a step always exists; a writer discards the newer,
partial saves (`discard_unshared`) before it resumes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypeVar

import jax
import orbax.checkpoint as ocp
from absl import logging

from seqjax.data import loader

State = TypeVar("State")


class Checkpointer:
    """Saves every `save_every` steps, keeps the last `keep`, restores the
    newest step all `directories` (one per replica) have."""

    def __init__(self, directories: Sequence[str], save_every: int, keep: int):
        self.save_every, self.keep = save_every, keep
        self._saved = False  # only a writer prunes: reading a run (runs.load_run) deletes nothing
        # The interval is applied here rather than by orbax, whose policy also
        # saves the very first step it sees; pruning is ours too (see `_prune`).
        options = ocp.CheckpointManagerOptions(max_to_keep=None, create=True)
        self._managers = [ocp.CheckpointManager(os.path.abspath(d), options=options) for d in directories]

    def latest_step(self) -> int | None:
        """The newest step saved by every replica, or None."""
        common = set.intersection(*[set(m.all_steps()) for m in self._managers])
        return max(common) if common else None

    def discard_unshared(self) -> None:
        """Deletes checkpoints newer than `latest_step()`: the saves of a
        group killed before every replica had committed them. Training
        writes them again when it reaches their steps."""
        latest = self.latest_step()
        for manager in self._managers:
            for step in manager.all_steps():
                if latest is None or step > latest:
                    logging.warning("deleting checkpoint %d of %s: not every replica saved it", step, manager.directory)
                    manager.delete(step)

    def restore_latest(self, template: State, data_iterators: Sequence | None = None) -> list[State] | None:
        """Each replica's state at `latest_step()`, with `template`'s
        structure and shardings (one replica's state, or shape structs), or
        None when there is no checkpoint yet. Each of `data_iterators`
        (grain; None entries for generated data) is moved to the position
        saved with its replica's state."""
        step = self.latest_step()
        if step is None:
            return None
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        iterators = data_iterators or [None] * len(self._managers)
        states = []
        for manager, iterator in zip(self._managers, iterators):
            items = {"state": ocp.args.StandardRestore(target)}
            if iterator is not None:
                items["data"] = loader.checkpoint_restore_args(iterator)
            states.append(manager.restore(step, args=ocp.args.Composite(**items)).state)
        return states

    def save(self, step: int, states: Sequence[State], *, force: bool = False, data_iterators=None) -> bool:
        """Saves every replica's state (asynchronously) when `step` is a
        multiple of `save_every` or `force` is set, with each data iterator's
        position when given; returns whether it started a save."""
        if step % self.save_every and not force:
            return False
        self._prune()
        iterators = data_iterators or [None] * len(self._managers)
        for manager, state, iterator in zip(self._managers, states, iterators):
            items = {"state": ocp.args.StandardSave(state)}
            if iterator is not None:
                items["data"] = loader.checkpoint_save_args(iterator)
            manager.save(step, args=ocp.args.Composite(**items), force=True)
        self._saved = True
        return True

    def _prune(self) -> None:
        """Waits until every replica has committed its pending save, then
        deletes all but the newest `keep` checkpoints of each: all replicas
        then hold the same steps, and a kill during the next save leaves
        each of them at least the newest of those."""
        for manager in self._managers:
            manager.wait_until_finished()
        for manager in self._managers:
            for old in sorted(manager.all_steps())[: -self.keep]:
                manager.delete(old)

    def close(self) -> None:
        """Waits for pending asynchronous saves, prunes (if this run saved),
        releases the managers."""
        if self._saved:
            self._prune()
        for manager in self._managers:
            manager.close()
