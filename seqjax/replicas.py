"""Replicas: R runs of one model that differ only in seed and/or learning
rate, trained together as one run.

A run trains R >= 1 replicas. R = 1 is an ordinary run and its arrays have
no replica axis. For R > 1 every array of the train state, of a batch and of
the step metrics gains a leading replica axis [R, ...], and each step is one
compiled program that maps the one-replica step over that axis
(`parallel.Layout.map`).
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

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections

from seqjax import sweeps

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
