"""Translate text with a trained encoder-decoder (RNN seq2seq or Transformer):
greedy or beam search, corpus BLEU against references, alignment heatmaps.

  python -m experiments.translate --run_dir=runs/multi30k_transformer --input=de.txt --output=en.txt \
      [--references=ref.en] [--beam_size=4] [--alpha=0.6] [--batch_size=64] [--plot=0,5]
  echo "Ein Hund läuft im Park." | python -m experiments.translate --run_dir=runs/multi30k_transformer
  python -m experiments.translate --run_dir=runs/s2s_bahdanau --source="40,017" --plot=0

Sources come from --source (repeatable) or --input (one per line; '-' or
nothing: stdin). Hypotheses go one per line to --output (default stdout).
Source tokens the run's vocabulary does not know become <unk>; their count
is reported on stderr. An empty source, or one longer than the run allows,
stops the command naming its line.

--references (one per line, as many as sources): corpus BLEU with sacrebleu
(scored as the run's evaluation scores it) and exact match on stderr, and,
when the hypotheses go to a file, as one JSON line on stdout.

--plot=i,j: for those sources (0-based), a heatmap of how each output token
attended over the source (attention RNNs: α; Transformers: the last decoder
layer's cross-attention, averaged over heads), alignment_<i>.png in
--plot_dir (default <run_dir>/alignments).

To score a run's own held-out split instead, use experiments/decode.py.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import numpy as np
from absl import app, flags, logging

from experiments import command
from seqjax import runs, tasks
from seqjax.tasks import translation

_RUN_DIR = command.define_run_dir("The translation run to translate with.")
_SOURCES = flags.DEFINE_multi_string("source", [], "A source sentence (repeatable).")
_INPUT = flags.DEFINE_string(
    "input", None, "File of source sentences, one per line ('-': stdin, the default without --source)."
)
_OUTPUT = flags.DEFINE_string("output", None, "Where the hypotheses go, one per line (default: stdout).")
_REFERENCES = flags.DEFINE_string("references", None, "Reference translations, one per line, for BLEU.")
_BEAM = flags.DEFINE_integer("beam_size", 0, "0 = greedy; k >= 1 = beam search with k beams.")
_ALPHA = flags.DEFINE_float("alpha", 0.6, "Beam search length-penalty exponent (GNMT).")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Sentences decoded together.")
_PLOT = flags.DEFINE_list("plot", [], "0-based indices of sources whose alignment heatmap is saved.")
_PLOT_DIR = flags.DEFINE_string("plot_dir", None, "Where the heatmaps go (default: <run_dir>/alignments).")


def read_lines(path: str) -> list[str]:
    """Lines of a file ('-': stdin) without their newlines."""
    if path == "-":
        return [line.rstrip("\n") for line in sys.stdin]
    if not os.path.exists(path):
        raise app.UsageError(f"{path} does not exist")
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def encode(task, sources: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(ids [N, S], lengths [N]) of every source; reports unknown tokens on stderr."""
    if not isinstance(task, tasks.TEXT_SOURCE_TASKS):
        raise app.UsageError(f"{_RUN_DIR.value} trained {type(task).__name__}, not a translation task")
    try:
        inputs, lengths, unknown = task.encode_texts(sources)
    except ValueError as error:  # empty or too long: the message names the source's line
        raise app.UsageError(str(error)) from error
    unit = "character" if isinstance(task, translation.TranslationTask) else "token"
    print(f"{unknown} source {unit}(s) outside the run's vocabulary became <unk>", file=sys.stderr)
    return inputs, lengths


def score(task, hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """Corpus BLEU (with its sacrebleu signature) and exact match."""
    bleu, signature = translation.corpus_bleu(hypotheses, references, task.bleu_tokenize, task.bleu_lowercase)
    exact = float(np.mean([h == r for h, r in zip(hypotheses, references)]))
    return {"bleu": bleu, "bleu_signature": signature, "exact_match": exact, "sentences": len(hypotheses)}


def plot_alignments(
    run: runs.Run, inputs: np.ndarray, lengths: np.ndarray, outputs: np.ndarray, indices: Sequence[int], plot_dir: str
) -> list[str]:
    """alignment_<i>.png for each source index; returns the paths."""
    task, model = run.trainer.task, run.trainer.model
    try:
        alpha = np.asarray(
            translation.source_attention(model, run.params, inputs[indices], lengths[indices], outputs[indices])
        )
    except ValueError as error:  # a model without attention
        raise app.UsageError(str(error)) from error
    os.makedirs(plot_dir, exist_ok=True)
    attention = run.config.model.get("attention")
    model_label = f"{run.config.model.name} ({attention})" if attention else run.config.model.name
    paths = []
    for row, index in enumerate(indices):
        steps = emitted_steps(outputs[index])
        source = task.token_strings(inputs[index, : lengths[index]], "source")
        emitted = task.token_strings(outputs[index, :steps], "target")
        path = os.path.join(plot_dir, f"alignment_{index}.png")
        save_heatmap(source, emitted, alpha[row, :steps, : lengths[index]], path, f"{model_label}: source {index}")
        paths.append(path)
    return paths


def emitted_steps(output: np.ndarray) -> int:
    """Output steps up to and including the first <eos> (the step that
    emitted <eos> attended too), or all of them."""
    ends = np.flatnonzero(output == translation.EOS_ID)
    return int(ends[0]) + 1 if ends.size else len(output)


def save_heatmap(source: Sequence[str], outputs: Sequence[str], alpha: np.ndarray, path: str, title: str = "") -> None:
    """α [len(outputs), len(source)] as a heatmap PNG: outputs down, source across."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(0.45 * len(source) + 2.5, 0.4 * len(outputs) + 1.5))
    image = ax.imshow(alpha, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(source)), ["␣" if token == " " else token for token in source], rotation=90)
    ax.set_yticks(range(len(outputs)), outputs)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_indices(count: int) -> list[int]:
    indices = []
    for text in _PLOT.value:
        if not text.strip().isdigit() or int(text) >= count:
            raise app.UsageError(f"--plot={text!r}: give 0-based source indices below {count}")
        indices.append(int(text))
    return indices


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    if _BEAM.value < 0:
        raise app.UsageError(f"--beam_size must be 0 (greedy) or >= 1, got {_BEAM.value}")
    if _BATCH.value < 1:
        raise app.UsageError(f"--batch_size must be >= 1, got {_BATCH.value}")
    sources = list(_SOURCES.value)
    if _INPUT.value or not sources:
        sources += read_lines(_INPUT.value or "-")
    if not sources:
        raise app.UsageError("no source sentences: give --source, --input, or lines on stdin")
    references = read_lines(_REFERENCES.value) if _REFERENCES.value else None
    if references is not None and len(references) != len(sources):
        raise app.UsageError(f"{len(references)} references for {len(sources)} sources: give one per source")
    indices = plot_indices(len(sources))
    run = runs.load_run(_RUN_DIR.value)
    task = run.trainer.task
    inputs, lengths = encode(task, sources)
    outputs = run.decode_ids(inputs, lengths, _BEAM.value, _ALPHA.value, _BATCH.value)
    hypotheses = task.detokenize(outputs)
    text = "".join(h + "\n" for h in hypotheses)
    if _OUTPUT.value:
        with open(_OUTPUT.value, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    if indices:
        plot_dir = _PLOT_DIR.value or os.path.join(_RUN_DIR.value, "alignments")
        for path in plot_alignments(run, inputs, lengths, outputs, indices, plot_dir):
            print(f"alignment heatmap: {path}", file=sys.stderr)
    if references is not None:
        result = score(task, hypotheses, references)
        print(
            f"BLEU = {result['bleu']:.2f}  {result['bleu_signature']}  exact match {result['exact_match']:.4f}",
            file=sys.stderr,
        )
        if _OUTPUT.value:
            print(json.dumps(result, sort_keys=True), flush=True)


def entry() -> None:
    command.start(main)


if __name__ == "__main__":
    entry()
