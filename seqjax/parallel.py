"""Data parallelism over a `jax.sharding.Mesh` of every device the run sees.

The batch is sharded along the mesh axis 'data' (and so is per-row state
such as the carry of stateful stream training); parameters and optimiser
state are replicated. `jax.jit` inserts the gradient all-reduce, so the same
program runs on 1 device, 8 simulated CPU devices or many hosts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"

# Environment variables whose presence means a multi-process launch.
_MULTI_PROCESS_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")
_WORLD_SIZE_ENV = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "WORLD_SIZE")


def distributed_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """True when the environment describes a multi-process launch."""
    if any(environ.get(name) for name in _MULTI_PROCESS_ENV):
        return True
    return any(int(environ.get(name, "1") or 1) > 1 for name in _WORLD_SIZE_ENV)


def maybe_initialize_distributed(environ: Mapping[str, str] = os.environ) -> bool:
    """Calls `jax.distributed.initialize()` (which reads the cluster from the
    environment: Slurm, Open MPI, TPU pods, or JAX_COORDINATOR_ADDRESS) when
    the launch is multi-process. Returns whether it did."""
    if not distributed_requested(environ):
        return False
    jax.distributed.initialize()
    return True


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis 'data' over `devices` (default: all devices)."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.array(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Shards axis `batch_axis` over 'data' (axis 1 for stacked TBPTT chunks [N, B, ...])."""
    return NamedSharding(mesh, PartitionSpec(*([None] * batch_axis), DATA_AXIS))


def tree_batch_sharded(tree: Any, mesh: Mesh, batch_axis: int = 0) -> Any:
    """`batch_sharded` for every leaf of `tree`: per-row state such as a
    stream's recurrent carry ([B, H] leaves) lives with its batch rows."""
    return jax.tree.map(lambda _: batch_sharded(mesh, batch_axis), tree)


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
    devices = mesh.devices.size
    if global_batch_size % devices:
        raise ValueError(
            f"config.train.batch_size={global_batch_size} must be divisible by the number of "
            f"devices ({devices}) so every device gets the same share"
        )


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh, batch_axis: int = 0) -> dict[str, jax.Array]:
    """Global host batch -> arrays sharded on 'data' along `batch_axis`; each
    process contributes its slice."""
    sharding = batch_sharded(mesh, batch_axis)
    count, index = jax.process_count(), jax.process_index()

    def put(array: np.ndarray) -> jax.Array:
        local = np.array_split(array, count, axis=batch_axis)[index]
        return jax.make_array_from_process_local_data(sharding, local, array.shape)

    return {name: put(np.asarray(array)) for name, array in batch.items()}
