"""How a process learns that it is one of several forming one run, and
joins them (`jax.distributed`). Free of jax at import, so a sweep launcher can
clean its children's environment with `LAUNCH_VARIABLES` cheaply."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


class LaunchError(ValueError):
    """The environment describes a multi-process launch only in part."""


def distributed_launch(environ: Mapping[str, str] = os.environ) -> dict[str, Any] | None:
    """The arguments of `jax.distributed.initialize` when this process is one
    of a multi-process run, else None. A launch is recognised from:

    * JAX_COORDINATOR_ADDRESS (host:port of process 0) with JAX_NUM_PROCESSES
      and JAX_PROCESS_ID (0-based), for any launcher;
    * Slurm: a task of an `srun` step of several tasks. The step's own
      variables decide (SLURM_STEP_ID, SLURM_STEP_NUM_TASKS, SLURM_PROCID):
      a batch script of an `sbatch -n 4` allocation, and everything it starts
      without `srun`, has SLURM_NTASKS=4 but no step, and is one process;
    * Open MPI (`mpirun -np N`, N > 1);
    * a Cloud TPU pod (TPU_WORKER_HOSTNAMES lists several hosts), or
      SEQJAX_DISTRIBUTED=auto for any cluster JAX detects by itself.
    """
    address = environ.get("JAX_COORDINATOR_ADDRESS", "")
    if address:
        missing = [name for name in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if not environ.get(name, "")]
        if missing:
            raise LaunchError(
                f"JAX_COORDINATOR_ADDRESS={address} is set but {' and '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not: set JAX_NUM_PROCESSES (how many processes form the "
                "run) and JAX_PROCESS_ID (this one's, 0-based) as well, or unset JAX_COORDINATOR_ADDRESS "
                "for a single-process run (docs/cluster.md)"
            )
        return {
            "coordinator_address": address,
            "num_processes": _int_variable(environ, "JAX_NUM_PROCESSES"),
            "process_id": _int_variable(environ, "JAX_PROCESS_ID"),
        }
    if "SLURM_STEP_ID" in environ and _int_variable(environ, "SLURM_STEP_NUM_TASKS", 1) > 1:
        # JAX's Slurm detection supplies the coordinator (the step's first
        # node); the count and id are the step's, never the allocation's.
        return {
            "num_processes": _int_variable(environ, "SLURM_STEP_NUM_TASKS"),
            "process_id": _int_variable(environ, "SLURM_PROCID"),
        }
    if _int_variable(environ, "OMPI_COMM_WORLD_SIZE", 1) > 1:
        return {}
    if len([h for h in environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
        return {}
    if environ.get("SEQJAX_DISTRIBUTED", "") == "auto":
        return {}
    return None


def _int_variable(environ: Mapping[str, str], name: str, default: int | None = None) -> int:
    text = environ.get(name, "")
    if not text and default is not None:
        return default
    try:
        return int(text)
    except ValueError:
        raise LaunchError(f"environment variable {name}={text!r} is not an integer") from None


# The variables `distributed_launch` reads: a process that starts independent
# runs (a local sweep) removes them from its children's environment.
LAUNCH_VARIABLES = (
    "JAX_COORDINATOR_ADDRESS",
    "JAX_NUM_PROCESSES",
    "JAX_PROCESS_ID",
    "SLURM_STEP_ID",
    "SLURM_STEP_NUM_TASKS",
    "SLURM_PROCID",
    "OMPI_COMM_WORLD_SIZE",
    "SEQJAX_DISTRIBUTED",
)


def maybe_initialize_distributed(environ: Mapping[str, str] = os.environ) -> bool:
    """Calls `jax.distributed.initialize` when `distributed_launch` finds a
    multi-process launch (before anything touches a device). On CPU the
    processes talk through Gloo, JAX's default CPU collectives. Returns
    whether it initialised."""
    launch = distributed_launch(environ)
    if launch is None:
        return False
    import jax

    jax.distributed.initialize(**launch)
    return True
