"""Replicas: R runs of one model that differ only in seed and/or learning
rate, trained together as one run.

A run trains R >= 1 replicas. R = 1 is an ordinary run and its arrays have
no replica axis. For R > 1 every array of the train state, of a batch and of
the step metrics gains a leading replica axis [R, ...], and each step is one
compiled program that maps the one-replica step over that axis (`Layout.map`).
Everything else is the ordinary run's: the trainer, the loop, the step
strategies, the feeds, evaluation and checkpoints (one per replica, in its own
run dir). Each replica sees what its sequential run would see:

  init       params from fold_in(key(seed), 0)
  batches    its own feed (generated from its seed, or its own shuffled loader)
  dropout    fold_in(fold_in(key(seed), 1), step)
  lr         its own (see `steps.TrainState.lr_scale`)

so its metrics match its sequential run's up to float rounding.

What a group may vary is `VMAPPABLE_KEYS`: keys that change neither shapes
nor the traced program. `group_runs` splits a sweep accordingly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding

from seqjax import parallel, sweeps

# Config keys whose values may differ between the replicas of one run.
VMAPPABLE_KEYS = frozenset({"seed", "optimizer.learning_rate"})


# ---------------------------------------------------------------- grouping a sweep


def _shared_overrides(overrides: sweeps.Overrides) -> tuple:
    """The overrides a group must agree on, as a hashable key."""
    return tuple(sorted((k, repr(v)) for k, v in overrides.items() if k not in VMAPPABLE_KEYS))


def group_runs(runs: Sequence[sweeps.Run], max_group_size: int | None = None) -> list[list[sweeps.Run]]:
    """Runs whose overrides differ only in `VMAPPABLE_KEYS`, grouped.

    Groups come in order of first appearance and keep the sweep order inside;
    with `max_group_size`, a larger group is cut into consecutive chunks (to
    bound memory). Runs that set a shape key to the base config's value and
    runs that leave it unset land in different groups: grouping looks at
    overrides only, so it never merges runs that might differ.
    """
    groups: dict[tuple, list[sweeps.Run]] = {}
    for run in runs:
        groups.setdefault(_shared_overrides(run.overrides), []).append(run)
    size = max_group_size or max((len(g) for g in groups.values()), default=1)
    return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]


def _without_vmappable(config: ml_collections.ConfigDict) -> dict:
    resolved = config.to_dict()
    for key in VMAPPABLE_KEYS:
        *path, leaf = key.split(".")
        section = resolved
        for part in path:
            section = section[part]
        section.pop(leaf, None)
    return resolved


def check_compatible(configs: Sequence[ml_collections.ConfigDict], names: Sequence[str]) -> None:
    """Raises ValueError naming the first config that differs from the first
    one in a key outside `VMAPPABLE_KEYS` (such runs cannot be replicas)."""
    shared = _without_vmappable(configs[0])
    for name, config in zip(names[1:], configs[1:]):
        if _without_vmappable(config) != shared:
            raise ValueError(
                f"run {name} differs from run {names[0]} in a key outside {sorted(VMAPPABLE_KEYS)}; "
                "it cannot be a replica of the same run (group sweeps with replicas.group_runs)"
            )


def learning_rate_scales(configs: Sequence[ml_collections.ConfigDict]) -> jax.Array | None:
    """[R] the replicas' learning rates when they differ (the optimiser is
    then built with peak 1 and updates are scaled per replica), else None."""
    rates = [c.optimizer.learning_rate for c in configs]
    return jnp.asarray(rates, jnp.float32) if len(set(rates)) > 1 else None


def default_chunk_size() -> int | None:
    """Replicas per vmapped chunk (None: all of them at once).

    On XLA:CPU a batched matmul costs what its slices cost one by one, so
    vmap saves per-step overhead there, not arithmetic; and vmapping 16 small
    LSTMs (hidden 32, T=50, batch 32) at once measured ~2.5x slower per
    replica than 1-2 at a time (16x larger activations fall out of cache).
    So on CPU chunks of 2 replicas are vmapped and a loop inside the same
    compiled program walks over the chunks. Accelerators, where a batched
    matmul does amortise, take the whole group in one vmap.
    """
    return 2 if jax.default_backend() == "cpu" else None


# ---------------------------------------------------------------- array layout


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a run's arrays lie: batch rows split over the mesh axis 'data'
    (data parallelism), and for R > 1 replicas a leading replica axis on
    every array.

    Attributes:
      mesh: the devices of the run.
      replicas: R.
      chunk_size: replicas vmapped together (None: all; see `default_chunk_size`).
    """

    mesh: Mesh
    replicas: int = 1
    chunk_size: int | None = None

    @property
    def stacked(self) -> bool:
        """Whether arrays carry a leading replica axis (R > 1)."""
        return self.replicas > 1

    def axis(self, axis: int) -> int:
        """A one-replica array's `axis`, where it lies in this layout."""
        return axis + 1 if self.stacked else axis

    def replicated(self) -> NamedSharding:
        return parallel.replicated(self.mesh)

    def rows(self, batch_axis: int = 0) -> NamedSharding:
        """Sharding of arrays whose one-replica `batch_axis` holds batch rows."""
        return parallel.batch_sharded(self.mesh, self.axis(batch_axis))

    def tree_rows(self, tree: Any, batch_axis: int = 0) -> Any:
        return jax.tree.map(lambda _: self.rows(batch_axis), tree)

    def map(self, fn: Callable) -> Callable:
        """`fn` of one replica -> of all: every argument and result gains the
        replica axis; `chunk_size` replicas at a time are vmapped and a loop
        inside the same program walks over the chunks. R = 1: `fn` itself."""
        if not self.stacked:
            return fn
        chunk = self.chunk_size

        def over_replicas(*args):
            if chunk is None or chunk >= self.replicas:
                return jax.vmap(fn)(*args)
            return jax.lax.map(lambda a: fn(*a), args, batch_size=chunk)

        return over_replicas

    def compile(self, fn: Callable, in_shardings, out_shardings, donate_argnums=()) -> Callable:
        """jit(`map(fn)`) with the given shardings (of this layout)."""
        return jax.jit(
            self.map(fn), in_shardings=in_shardings, out_shardings=out_shardings, donate_argnums=donate_argnums
        )

    def stack(self, trees: Sequence[Any]) -> Any:
        """One tree per replica -> the run's tree (leaves [R, ...]; R = 1: the tree)."""
        if not self.stacked:
            return trees[0]
        return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)

    def stack_shapes(self, tree: Any) -> Any:
        """Shape structs of one replica -> of the run (leaves [R, ...])."""
        if not self.stacked:
            return tree
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct((self.replicas, *s.shape), s.dtype), tree)

    def unstack(self, tree: Any) -> list[Any]:
        """The run's tree -> one tree per replica (R = 1: [tree])."""
        if not self.stacked:
            return [tree]
        return [jax.tree.map(lambda leaf, r=r: leaf[r], tree) for r in range(self.replicas)]

    def stack_host(self, batches: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """One host batch per replica -> [R, ...] arrays. Where replicas'
        batches differ in a padded length (their own shuffles batch different
        examples), shorter ones are zero-padded to the longest: zero is the
        pad id, mask and weight, so the padding is masked like any other."""
        if not self.stacked:
            return batches[0]
        return {name: _stack_padded([b[name] for b in batches]) for name in batches[0]}


def _stack_padded(arrays: Sequence[np.ndarray]) -> np.ndarray:
    arrays = [np.asarray(a) for a in arrays]
    shape = np.max([a.shape for a in arrays], axis=0)
    padded = [np.pad(a, [(0, int(n) - m) for n, m in zip(shape, a.shape)]) for a in arrays]
    return np.stack(padded)
