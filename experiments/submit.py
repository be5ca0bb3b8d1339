"""Submit one run to Slurm through submitit.

  python -m experiments.submit --config=configs/default.py[:variant] --workdir=W \
      [--config.model.hidden_size=256 ...] [--slurm_nodes=2 --slurm_tasks_per_node=4 --slurm_gpus_per_node=4] \
      [--slurm_partition=P --slurm_time_min=240 --sbatch=qos=high] [--wait]

The job's nodes x tasks_per_node processes form one `jax.distributed` run
(each process sees its node's devices; only process 0 writes W). On
preemption or near its time limit the run saves a checkpoint and the job is
requeued; it resumes from W (docs/cluster.md). Prints the Slurm job id; with
--wait, waits and prints the final metrics line, as experiments.train does.
"""

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import slurm_flags
from seqjax import config as config_lib
from seqjax import metrics, slurm

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:variant].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and outputs.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        config_lib.validate(_CONFIG.value)
        options = slurm_flags.options()
    except (config_lib.ConfigError, ValueError) as error:
        raise app.UsageError(str(error)) from error
    job_id = slurm.submit_run(_CONFIG.value, _WORKDIR.value, options)
    print(f"submitted Slurm job {job_id}; its log: {os.path.join(_WORKDIR.value, 'slurm', job_id)}", file=sys.stderr)
    if not slurm_flags.WAIT.value:
        print(job_id, flush=True)
        return
    slurm.wait([job_id], report=lambda line: print(line, file=sys.stderr, flush=True))
    final = metrics.read_json(os.path.join(_WORKDIR.value, "final_metrics.json"))
    if final is None:
        sys.exit(f"job {job_id} ended without final metrics; see {os.path.join(_WORKDIR.value, 'slurm', job_id)}")
    print(json.dumps(final, sort_keys=True), flush=True)


if __name__ == "__main__":
    app.run(main)
