import re

import jax
import numpy as np
import pytest

from seqjax import launch, parallel

SRUN_TASK = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "2"}


@pytest.mark.parametrize(
    "environ,expected",
    [
        ({}, None),
        # A batch script of `sbatch -n 4` (and anything it starts without srun): no step, one process.
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4", "SLURM_PROCID": "0"}, None),
        # `srun -n 1` inside that allocation: a step of one task.
        ({**SRUN_TASK, "SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0"}, None),
        ({**SRUN_TASK, "SLURM_NTASKS": "4", "SLURM_PROCID": "1"}, {"num_processes": 2, "process_id": 1}),
        ({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"}, {}),
        ({"OMPI_COMM_WORLD_SIZE": "1"}, None),
        ({"TPU_WORKER_HOSTNAMES": "t1,t2"}, {}),
        ({"TPU_WORKER_HOSTNAMES": "t1"}, None),
        ({"SEQJAX_DISTRIBUTED": "auto"}, {}),
        (
            {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"},
            {"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 0},
        ),
    ],
)
def test_a_multi_process_launch_is_recognised_from_its_own_variables_only(environ, expected):
    assert launch.distributed_launch(environ) == expected


@pytest.mark.parametrize(
    "environ,message",
    [
        (
            {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"},
            "JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 is set but JAX_NUM_PROCESSES and JAX_PROCESS_ID are not: set "
            "JAX_NUM_PROCESSES (how many processes form the run) and JAX_PROCESS_ID",
        ),
        (
            {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2"},
            "JAX_COORDINATOR_ADDRESS=h:1 is set but JAX_PROCESS_ID is not",
        ),
        (
            {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"},
            "environment variable JAX_NUM_PROCESSES='two' is not an integer",
        ),
    ],
)
def test_a_half_described_launch_is_refused_naming_the_missing_variables(environ, message):
    with pytest.raises(launch.LaunchError, match="^" + re.escape(message)):
        launch.distributed_launch(environ)


def test_single_process_launch_does_not_initialize_distributed():
    assert launch.maybe_initialize_distributed({}) is False


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
