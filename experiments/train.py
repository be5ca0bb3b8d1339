"""Train and evaluate one run.

  python -m experiments.train --config=configs/default.py[:variant] --workdir=W \
      [--config.model.hidden_size=256 ...]

Leaves config.json, metrics.jsonl, TensorBoard events, checkpoints and
final_metrics.json in W; the final metrics are also the last stdout line.
Re-running with the same W resumes from its latest checkpoint; a finished run
prints its stored result; a config that would change the run's numbers, or a
second run while W is in use, is refused (docs/training.md, "What a run refuses").
SIGTERM or SIGUSR2 (a scheduler's preemption or time-limit signal) stops the
run at its next logging step with a checkpoint saved, and it exits with status
75 (docs/cluster.md); running the same command again resumes.
"""

import json
import sys

from absl import app, flags, logging

from experiments import command
from seqjax import launch, parallel

_CONFIG = command.define_config()
_WORKDIR = command.define_workdir()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    try:
        launch.maybe_initialize_distributed()
    except launch.LaunchError as error:
        raise app.UsageError(str(error)) from error
    from seqjax import training  # after distributed init: it touches devices

    config = command.config_value(_CONFIG)
    try:
        final = training.train_and_evaluate(config, _WORKDIR.value)
    except training.Preempted as stopped:
        logging.warning("%s", stopped)
        sys.exit(training.PREEMPTED_EXIT_CODE)
    if parallel.is_writer():  # (one line for a run of several processes too)
        print(json.dumps(final, sort_keys=True), flush=True)


def entry() -> None:
    command.start(main)


if __name__ == "__main__":
    entry()
