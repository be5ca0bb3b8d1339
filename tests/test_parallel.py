import jax
import numpy as np
import pytest

from seqjax import parallel


@pytest.mark.parametrize(
    "environ,expected",
    [
        ({}, False),
        ({"SLURM_NTASKS": "1"}, False),
        ({"SLURM_NTASKS": "4"}, True),
        ({"OMPI_COMM_WORLD_SIZE": "2"}, True),
        ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, True),
        ({"WORLD_SIZE": ""}, False),
    ],
)
def test_distributed_is_requested_only_by_multi_process_launches(environ, expected):
    assert parallel.distributed_requested(environ) is expected


def test_single_process_launch_does_not_initialize_distributed():
    assert parallel.maybe_initialize_distributed({}) is False


def test_batch_is_split_evenly_over_the_data_axis():
    mesh = parallel.make_mesh()
    batch = {"inputs": np.arange(16 * 3, dtype=np.float32).reshape(16, 3), "lengths": np.arange(16)}
    sharded = parallel.shard_batch(batch, mesh)
    assert sharded["inputs"].sharding.spec == jax.sharding.PartitionSpec("data")
    shards = sharded["inputs"].addressable_shards
    assert len(shards) == 8 and all(s.data.shape == (2, 3) for s in shards)
    np.testing.assert_array_equal(np.asarray(sharded["inputs"]), batch["inputs"])
    np.testing.assert_array_equal(np.asarray(sharded["lengths"]), batch["lengths"])


def test_mesh_over_a_subset_of_devices():
    mesh = parallel.make_mesh(jax.devices()[:2])
    assert mesh.shape == {"data": 2}
    with pytest.raises(ValueError, match="batch_size=3 must be divisible by the number of devices"):
        parallel.check_batch_size(3, mesh)
