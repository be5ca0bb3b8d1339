"""Alignment heatmaps of a trained attention encoder-decoder.

  python -m experiments.attention_plot --workdir=runs/s2s_bahdanau --source="40,017" [--source=...] \
      [--beam_size=0] [--output_dir=W]
  python -m experiments.attention_plot --workdir=runs/s2s_bahdanau --num_examples=3   # held-out test sentences

Each source is decoded (greedy, or beam search with --beam_size=k), then the
decoder is run teacher-forced on its own output, which gives exactly the
attention weights α [output step, source position] the search used (the
incremental and teacher-forced decoders share one step function). One PNG per
sentence, attention_<i>.png in --output_dir (default: the workdir); rows are
output tokens (the last one <eos>), columns source characters.
"""

import os
from typing import Sequence

import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from seqjax import runs
from seqjax.data.tokenizers import EOS_ID, PAD_ID, SOS_ID
from seqjax.tasks import translation

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of a seq2seq run trained with attention.")
_SOURCES = flags.DEFINE_multi_string("source", [], "Source sentences (repeatable).")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 3, "Held-out test sentences to plot when no --source.")
_BEAM = flags.DEFINE_integer("beam_size", 0, "0 = greedy; k >= 1 = beam search.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the PNGs go (default: the workdir).")
flags.mark_flags_as_required(["workdir"])


def alignments(model, params, task: translation.TranslationTask, sources: Sequence[str], beam_size: int = 0):
    """[(source characters, output tokens up to and including '<eos>', α [outputs, sources])] per source."""
    inputs, lengths, _ = task.encode_texts(sources)
    outputs = np.asarray(translation.generate(model, params, inputs, lengths, max_len=task.target_len,
                                              beam_size=beam_size))
    decoder_inputs = np.concatenate([np.full((len(sources), 1), SOS_ID, np.int32), outputs[:, :-1]], axis=1)
    decoder_inputs = np.where(decoder_inputs == EOS_ID, PAD_ID, decoder_inputs)
    _, alpha = model.apply({"params": params}, inputs, lengths, decoder_inputs=jnp.asarray(decoder_inputs),
                           return_attention=True)
    results = []
    for row, source in enumerate(sources):
        ends = np.flatnonzero(outputs[row] == EOS_ID)
        steps = int(ends[0]) + 1 if ends.size else outputs.shape[1]  # the step that emitted <eos> attended too
        labels = [task.target_vocab.tokens[i] for i in outputs[row, :steps]]
        results.append((list(source.strip().lower()), labels, np.asarray(alpha[row, :steps, :lengths[row]])))
    return results


def save_heatmap(source: Sequence[str], outputs: Sequence[str], alpha: np.ndarray, path: str, title: str = "") -> None:
    """α [len(outputs), len(source)] as a heatmap PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(0.45 * len(source) + 2.5, 0.4 * len(outputs) + 1.5))
    image = ax.imshow(alpha, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(source)), [repr(c)[1:-1] if c != " " else "␣" for c in source])
    ax.set_yticks(range(len(outputs)), outputs)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    run = runs.load_run(_WORKDIR.value)
    task, model = run.trainer.task, run.trainer.model
    if not isinstance(task, translation.TranslationTask) or getattr(model, "attention", "none") == "none":
        raise app.UsageError(f"{_WORKDIR.value} is not a translation run with attention "
                             f"(model {run.config.model.name}, attention {run.config.model.get('attention')})")
    sources = _SOURCES.value or [s for s, _ in task.texts("test", _NUM_EXAMPLES.value, run.config.seed)]
    output_dir = _OUTPUT_DIR.value or _WORKDIR.value
    os.makedirs(output_dir, exist_ok=True)
    for i, (source, outputs, alpha) in enumerate(alignments(model, run.params, task, sources, _BEAM.value)):
        path = os.path.join(output_dir, f"attention_{i}.png")
        save_heatmap(source, outputs, alpha, path, f"{run.config.model.attention}: {''.join(source)!r}")
        print(f"{path}: {''.join(source)!r} -> {task.target_separator.join(outputs).replace('<eos>', '').strip()!r}")


if __name__ == "__main__":
    app.run(main)
