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

from absl import app

from experiments import command, slurm_flags
from seqjax import metrics, slurm

_CONFIG = command.define_config()
_WORKDIR = command.define_workdir()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = command.config_value(_CONFIG)
    try:
        options = slurm_flags.options()
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    job_id = slurm.submit_run(config, _WORKDIR.value, options)
    print(f"submitted Slurm job {job_id}; its log: {os.path.join(_WORKDIR.value, 'slurm', job_id)}", file=sys.stderr)
    if not slurm_flags.WAIT.value:
        print(job_id, flush=True)
        return
    slurm.wait([job_id], report=lambda line: print(line, file=sys.stderr, flush=True))
    final = metrics.read_json(os.path.join(_WORKDIR.value, "final_metrics.json"))
    if final is None:
        sys.exit(f"job {job_id} ended without final metrics; see {os.path.join(_WORKDIR.value, 'slurm', job_id)}")
    print(json.dumps(final, sort_keys=True), flush=True)


def entry() -> None:
    command.start(main)


if __name__ == "__main__":
    entry()
