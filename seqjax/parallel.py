"""Where a run's arrays lie: data parallelism over a `jax.sharding.Mesh` of
every device the run sees, and the replica axis of a run of R > 1 replicas.

The batch is sharded along the mesh axis 'data' (and so is per-row state
such as the carry of stateful stream training); parameters and optimiser
state are replicated. `jax.jit` inserts the gradient all-reduce, so the same
program runs on 1 device, 8 simulated CPU devices or many hosts. `Layout`
adds the leading replica axis of runs that train several replicas together
(`seqjax.replicas`) and maps one-replica functions over it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def is_writer() -> bool:
    """Whether this process writes a run's files: process 0 of a
    multi-process run (every process computes the same numbers)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process of the run reaches `name` (no-op for one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"seqjax: {name}")


def writer_first(fn: Callable[[], Any], name: str) -> Any:
    """fn() on the writing process, then on the others once it returned
    (e.g. fit and save a tokenizer, then load the saved one)."""
    result = fn() if is_writer() else None
    barrier(name)
    return result if is_writer() else fn()


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


# ---------------------------------------------------------------- replicas


def default_chunk_size() -> int | None:
    """Replicas vmapped together (None: all of them at once; 1: none, a loop).

    On XLA:CPU a batched matmul costs what its slices cost one by one, so
    vmap saves no arithmetic there; 16 small LSTMs (hidden 32, T=50, batch
    32) cost 1.87 ms per replica-step looped one at a time, 1.99 in vmapped
    pairs and 3.2 all vmapped at once (larger activations fall out of
    cache), against 2.0 for a run alone. So on CPU the compiled program loops
    over the replicas with the one-replica step as its body, which also makes
    every replica bitwise equal to its run trained alone. Accelerators, where
    a batched matmul amortises, take the whole group in one vmap (equal to
    the runs alone up to float rounding).
    """
    return 1 if jax.default_backend() == "cpu" else None


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
        return replicated(self.mesh)

    def rows(self, batch_axis: int = 0) -> NamedSharding:
        """Sharding of arrays whose one-replica `batch_axis` holds batch rows."""
        return batch_sharded(self.mesh, self.axis(batch_axis))

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
            if chunk == 1:  # a loop whose body is `fn` itself, unbatched
                return jax.lax.map(lambda a: fn(*a), args)
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
