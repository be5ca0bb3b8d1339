"""Predict with a trained run on raw inputs: one JSON line out per input line.

  seqjax-predict --run_dir=runs/sst2_lstm < sentences.txt
  seqjax-predict --run_dir=runs/ner --input=sentences.txt --checkpoint=best
  (also python -m experiments.predict ...)

Input lines (a file, or stdin with --input=- or no --input): for a text
classifier, one text per line; for a tagger, one sentence per line, its
tokens separated by whitespace (a tagger that also reads input tags, e.g.
part-of-speech tags, takes JSON objects: {"tokens": [...], "pos": [...]});
for other tasks, one JSON value per line (a forecasting window of raw values,
a synthetic task's input array). Output
lines: {"input": the line, ...the prediction} as `seqjax.runs.Run.predict`
gives it, e.g. {"input": "...", "label": "1", "label_id": 1, "probabilities": [...]}
or {"input": "...", "tags": ["B-PER", "O"]}.
"""

import json
import sys

import numpy as np
from absl import app, flags, logging

from experiments import command
from seqjax import runs, tasks

_RUN_DIR = command.define_run_dir("The trained run to predict with.")
_INPUT = flags.DEFINE_string("input", "-", "File of inputs, one per line ('-': stdin).")
_CHECKPOINT = flags.DEFINE_enum(
    "checkpoint", "latest", list(runs.CHECKPOINTS), "Which checkpoint: the latest, or the best by best_metric."
)
_BATCH = flags.DEFINE_integer("batch_size", 64, "Inputs predicted together.", lower_bound=1)


def read_lines(path: str) -> list[str]:
    """Non-empty lines of `path` ('-': stdin), without their newlines."""
    if path == "-":
        lines = sys.stdin.read().splitlines()
    else:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as error:
            raise app.UsageError(f"--input={path}: {error.strerror}") from error
    return [line for line in lines if line.strip()]


def parse_inputs(lines: list[str], takes_text: bool) -> list:
    """Text lines as they are for text tasks; JSON values for the others."""
    if takes_text:
        return lines
    parsed = []
    for number, line in enumerate(lines, 1):
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise app.UsageError(
                f"input line {number}: not JSON ({error.msg}); this run's task takes one JSON value per line"
            ) from error
    return parsed


def as_json(value):
    return value.tolist() if isinstance(value, np.ndarray) else value


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    lines = read_lines(_INPUT.value)
    if not lines:
        raise app.UsageError("no inputs: give --input=FILE or lines on stdin")
    try:
        run = runs.load_run(_RUN_DIR.value, _CHECKPOINT.value)
    except FileNotFoundError as error:
        raise app.UsageError(str(error)) from error
    task = run.trainer.task
    reads_input_tags = isinstance(task, tasks.TaggingTask) and bool(task.input_tag_keys)
    inputs = parse_inputs(lines, takes_text=isinstance(task, tasks.DatasetTask) and not reads_input_tags)
    try:
        predictions = run.predict(inputs, batch_size=_BATCH.value)
    except (TypeError, ValueError) as error:
        raise app.UsageError(str(error)) from error
    for line, prediction in zip(lines, predictions):
        record = prediction if isinstance(prediction, dict) else {"prediction": prediction}
        print(json.dumps({"input": line, **{k: as_json(v) for k, v in record.items()}}), flush=True)


def entry() -> None:
    command.start(main)


if __name__ == "__main__":
    entry()
