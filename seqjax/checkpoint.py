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

A checkpoint damaged after it was written (a truncated or deleted file) is
skipped on restore with a warning naming its step, and the previous one is
used; the writer then moves the damaged one to `damaged_checkpoints/`.

With `config.train.best_metric`, `BestCheckpoint` also keeps each replica's
best state by that evaluation metric in `<run dir>/best_checkpoint/`, through
orbax's own best-keeping (`best_fn`, `best_mode`, `max_to_keep=1`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from typing import TypeVar

import jax
import orbax.checkpoint as ocp
from absl import logging

from seqjax import parallel
from seqjax.data import loader

State = TypeVar("State")


class CheckpointError(RuntimeError):
    """Checkpoints exist but none can be restored."""


class Checkpointer:
    """Saves every `save_every` steps, keeps the last `keep`, restores the
    newest step all `directories` (one per replica) have."""

    def __init__(self, directories: Sequence[str], save_every: int, keep: int):
        self.save_every, self.keep = save_every, keep
        self._saved = False  # only a writer prunes: reading a run (runs.load_run) deletes nothing
        # The interval is applied here rather than by orbax, whose policy also
        # saves the very first step it sees; pruning is ours too (see `_prune`).
        options = ocp.CheckpointManagerOptions(max_to_keep=None, create=True)
        self.directories = [os.path.abspath(d) for d in directories]
        self._managers = [ocp.CheckpointManager(d, options=options) for d in self.directories]
        self.unusable: list[int] = []  # steps restore_latest had to skip

    def latest_step(self) -> int | None:
        """The newest step saved by every replica, or None."""
        common = self.common_steps()
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
        """Each replica's state at the newest step every replica can restore,
        with `template`'s structure and shardings (one replica's state, or
        shape structs), or None when there is no checkpoint yet. Each of
        `data_iterators` (grain; None entries for generated data) is moved to
        the position saved with its replica's state.

        A checkpoint that fails to restore (a truncated or missing file) is
        skipped with a warning naming its step and the error, and the
        previous one is tried; its step is listed in `self.unusable` (see
        `set_aside_unusable`). Raises CheckpointError when checkpoints
        exist but none restores."""
        steps = self.common_steps()
        if not steps:
            return None
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        iterators = data_iterators or [None] * len(self._managers)
        failures = []
        for step in sorted(steps, reverse=True):
            try:
                return [self._restore(m, step, target, it) for m, it in zip(self._managers, iterators)]
            except Exception as error:  # orbax/tensorstore raise many types for damaged files
                reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
                logging.warning("checkpoint step %d of %s is unusable (%s); trying an older one", step,
                                self.directories, reason[:300])  # fmt: skip
                failures.append(f"step {step} ({reason[:300]})")
                self.unusable.append(step)
        raise CheckpointError(
            f"no checkpoint in {', '.join(self.directories)} can be restored: {'; '.join(failures)}. "
            "Restore the damaged files, or move the checkpoints directory away to train the run from the start."
        )

    @staticmethod
    def _restore(manager, step: int, target, iterator):
        items = {"state": ocp.args.StandardRestore(target)}
        if iterator is not None:
            items["data"] = loader.checkpoint_restore_args(iterator)
        return manager.restore(step, args=ocp.args.Composite(**items)).state

    def common_steps(self) -> set[int]:
        """The steps saved by every replica."""
        return set.intersection(*[set(m.all_steps()) for m in self._managers])

    def set_aside_unusable(self) -> None:
        """Moves the checkpoints `restore_latest` could not restore to
        `<run dir>/damaged_checkpoints/<step>` (for inspection; training
        saves those steps again when it reaches them). In a multi-process
        run the writing process moves them and the others wait for it."""
        for directory in self.directories:
            for step in self.unusable if parallel.is_writer() else ():
                source = os.path.join(directory, str(step))
                if os.path.isdir(source):
                    target = os.path.join(os.path.dirname(directory), "damaged_checkpoints", str(step))
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    if os.path.exists(target):
                        shutil.rmtree(target)
                    os.replace(source, target)
                    logging.warning("moved unusable checkpoint %s to %s", source, target)
        parallel.barrier("damaged checkpoints set aside")
        for manager in self._managers:
            manager.reload()
        self.unusable = []

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

    def wait(self) -> None:
        """Waits until every replica's pending save is committed."""
        for manager in self._managers:
            manager.wait_until_finished()

    def _prune(self) -> None:
        """Waits until every replica has committed its pending save, then
        deletes all but the newest `keep` checkpoints of each: all replicas
        then hold the same steps, and a kill during the next save leaves
        each of them at least the newest of those."""
        self.wait()
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


class BestCheckpoint:
    """Each replica's best state by an evaluation metric, one orbax manager
    per replica keeping one checkpoint (the best by `best_fn`/`best_mode`)
    together with the metric's value, which survives restarts."""

    def __init__(self, directories: Sequence[str], metric: str, mode: str):
        self.metric, self.mode = metric, mode
        options = ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda values: values[metric], best_mode=mode, create=True
        )
        self.directories = [os.path.abspath(d) for d in directories]
        self._managers = [ocp.CheckpointManager(d, options=options) for d in self.directories]
        self._best = self._stored_best()

    def best(self) -> list[tuple[int, float] | None]:
        """Per replica, (step, value) of its best checkpoint, or None before the first."""
        return list(self._best)

    def _stored_best(self) -> list[tuple[int, float] | None]:
        """What the managers hold (read once: a pending save's metrics are not readable yet)."""
        found = []
        for manager in self._managers:
            step = manager.best_step()
            found.append(None if step is None else (step, float(manager.metrics(step)[self.metric])))
        return found

    def improves(self, value: float, best: tuple[int, float] | None) -> bool:
        """Whether `value` is strictly better than `best` (a tie keeps the earlier checkpoint)."""
        if best is None:
            return True
        return value > best[1] if self.mode == "max" else value < best[1]

    def offer(self, step: int, states: Sequence[State], values: Sequence[float]) -> list[bool]:
        """Saves replica r's state at `step` if values[r] improves on its best
        (a step already saved, by an attempt killed later, is kept as it is:
        training is deterministic); returns which replicas improved."""
        improved = []
        for r, (manager, state, value) in enumerate(zip(self._managers, states, values)):
            best = self._best[r]
            better = self.improves(value, best) or (best is not None and best[0] == step)
            if better and step not in manager.all_steps():
                items = {"state": ocp.args.StandardSave(state)}
                manager.save(step, args=ocp.args.Composite(**items), metrics={self.metric: value}, force=True)
            if better:
                self._best[r] = (step, float(value))
            improved.append(better)
        return improved

    def restore(self, template: State) -> list[State]:
        """Each replica's best state (with `template`'s structure and shardings)."""
        self.wait()
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        return [Checkpointer._restore(m, best[0], target, None) for m, best in zip(self._managers, self._best)]

    def wait(self) -> None:
        for manager in self._managers:
            manager.wait_until_finished()

    def close(self) -> None:
        for manager in self._managers:
            manager.close()
