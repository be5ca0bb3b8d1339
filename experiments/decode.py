"""Decode with a trained encoder-decoder (RNN seq2seq or Transformer): greedy
or beam search, exact match and corpus BLEU.

  python -m experiments.decode --run_dir=runs/s2s_bahdanau [--beam_size=4] [--alpha=0.6] \
      [--split=test] [--num_batches=0] [--batch_size=64]

It decodes the run's held-out `split` (synthetic tasks: `num_batches`
generated batches, 8 when 0; dataset tasks such as Multi30k: every sentence
of the split, or the first `num_batches` batches), prints a few examples,
exact match and BLEU with the sacrebleu signature, writes them to
W/decode_<split>_<greedy|beamK>.json, and prints the metrics as the last
stdout line (one JSON object). To translate your own sentences (a file,
stdin, references, alignment heatmaps), use experiments/translate.py.
"""

import json
import math
import os
import sys
import time

import numpy as np
from absl import app, flags, logging

from experiments import command
from seqjax import metrics, runs
from seqjax.tasks import translation

_RUN_DIR = command.define_run_dir("The seq2seq / vector_to_sequence run to decode with.")
_BEAM = flags.DEFINE_integer("beam_size", 0, "0 = greedy; k >= 1 = beam search with k beams.")
_ALPHA = flags.DEFINE_float("alpha", 0.6, "Beam search length-penalty exponent (GNMT).")
_SPLIT = flags.DEFINE_enum("split", "test", ["train", "eval", "test"], "Split to evaluate on.")
_NUM_BATCHES = flags.DEFINE_integer(
    "num_batches",
    0,
    "Batches to evaluate (0: the whole split of a dataset task, 8 batches of a synthetic one).",
    lower_bound=0,
)
_BATCH = flags.DEFINE_integer("batch_size", 64, "Sentences per batch.", lower_bound=1)


def check_beam_size(beam_size: int) -> None:
    if beam_size < 0:
        raise app.UsageError(f"--beam_size must be 0 (greedy) or >= 1, got {beam_size}")


def check_alpha(alpha: float) -> None:
    if not (math.isfinite(alpha) and alpha >= 0):
        raise app.UsageError(f"--alpha must be a finite number >= 0 (0 ranks by log-probability), got {alpha}")


def check_generates(run: runs.Run, run_dir: str) -> None:
    if not isinstance(run.trainer.task, translation.GenerationObjective):
        raise app.UsageError(
            f"--run_dir={run_dir} holds a run of task {run.config.task.name!r}, which does not generate "
            "sequences: decode needs an encoder-decoder run (seq2seq, vector_to_sequence, parallel text)"
        )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    check_beam_size(_BEAM.value)
    check_alpha(_ALPHA.value)
    run = runs.load_run(_RUN_DIR.value)
    check_generates(run, _RUN_DIR.value)
    started = time.monotonic()
    result = translation.evaluate_decoding(
        run.trainer.task,
        run.trainer.model,
        run.params,
        _SPLIT.value,
        num_batches=_NUM_BATCHES.value,
        batch_size=_BATCH.value,
        seed=run.config.seed,
        beam_size=_BEAM.value,
        alpha=_ALPHA.value,
    )
    search = f"beam{_BEAM.value}" if _BEAM.value else "greedy"
    for source, reference, hypothesis in result.pop("examples"):
        mark = "=" if hypothesis == reference else "x"
        print(f"{mark} {source!r} -> {hypothesis!r} (reference {reference!r})", file=sys.stderr)
    print(f"BLEU = {result['bleu']:.2f}  {result['bleu_signature']}", file=sys.stderr)
    result.update(
        step=run.step,
        split=_SPLIT.value,
        search=search,
        alpha=_ALPHA.value,
        beam_size=_BEAM.value,
        seconds=round(time.monotonic() - started, 2),
    )
    metrics.write_json_atomic(os.path.join(_RUN_DIR.value, f"decode_{_SPLIT.value}_{search}.json"), result)
    print(
        json.dumps({k: (float(v) if isinstance(v, np.floating) else v) for k, v in result.items()}, sort_keys=True),
        flush=True,
    )


def entry() -> None:
    command.start(main)


if __name__ == "__main__":
    entry()
