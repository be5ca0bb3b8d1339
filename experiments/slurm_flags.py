"""The Slurm flags of experiments.sweep (--mode=slurm) and experiments.submit."""

from absl import flags

from seqjax import slurm

_PARTITION = flags.DEFINE_string("slurm_partition", "", "Slurm partition ('' = the cluster's default).")
_TIME = flags.DEFINE_integer("slurm_time_min", 60, "Time limit per job in minutes.", lower_bound=1)
_NODES = flags.DEFINE_integer("slurm_nodes", 1, "Nodes per run.", lower_bound=1)
_TASKS = flags.DEFINE_integer(
    "slurm_tasks_per_node", 1, "Processes per node; several form one jax.distributed run.", lower_bound=1
)
_CPUS = flags.DEFINE_integer("slurm_cpus_per_task", 1, "CPUs per process.", lower_bound=1)
_GPUS = flags.DEFINE_integer("slurm_gpus_per_node", 0, "GPUs per node.", lower_bound=0)
_ARRAY = flags.DEFINE_integer("slurm_array_parallelism", 64, "Runs of a sweep running at once.", lower_bound=1)
_SIGNAL = flags.DEFINE_integer(
    "slurm_signal_delay_s", 90, "SIGUSR2 this many seconds before the time limit (checkpoint + requeue).", lower_bound=1
)
_SBATCH = flags.DEFINE_multi_string("sbatch", [], "More sbatch options as option=value, e.g. --sbatch=qos=high.")
WAIT = flags.DEFINE_boolean("wait", False, "Wait until the submitted jobs have ended (then summarise).")


def options() -> slurm.SlurmOptions:
    return slurm.SlurmOptions(
        partition=_PARTITION.value,
        time_min=_TIME.value,
        nodes=_NODES.value,
        tasks_per_node=_TASKS.value,
        cpus_per_task=_CPUS.value,
        gpus_per_node=_GPUS.value,
        array_parallelism=_ARRAY.value,
        signal_delay_s=_SIGNAL.value,
        extra=slurm.parse_extra(_SBATCH.value),
    )
