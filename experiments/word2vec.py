"""Train word2vec vectors on a text corpus and evaluate them.

  python -m experiments.word2vec --config=configs/word2vec.py[:variant] --workdir=W \
      [--config.model.dim=300 ...]

Leaves in W: config.json, vocab.txt (word count), the vectors (vectors.txt:
word2vec text, vectors.bin: word2vec binary, vectors.glove.txt: GloVe text,
as config.eval.formats asks), neighbours.txt (cosine neighbours of the probe
words), analogies.json / similarity.json (when their files are set), pca.png
(when plot words are set) and metrics.json, also printed as the last stdout
line (one JSON object).
"""

import json
import logging as std_logging
import os

from absl import app, logging

from experiments import command
from seqjax import embeddings, launch, word2vec

_CONFIG = command.define_config("word2vec config file[:variant]; override a field with --config.<key>=value.")
_WORKDIR = command.define_workdir("The folder to write the vectors and reports to.")

VECTOR_FILES = {"word2vec": "vectors.txt", "word2vec_binary": "vectors.bin", "glove": "vectors.glove.txt"}


def _words(value) -> list[str]:
    return [w.strip() for w in value.split(",") if w.strip()] if isinstance(value, str) else list(value)


def neighbours_report(vectors: embeddings.WordVectors, probes: list[str], topn: int) -> str:
    lines = []
    for word in probes:
        if word not in vectors:
            lines.append(f"{word}: (not in the vocabulary)")
            continue
        near = ", ".join(f"{w} {s:.2f}" for w, s in vectors.most_similar(word, topn))
        lines.append(f"{word}: {near}")
    return "\n".join(lines) + "\n"


def evaluate(config, vectors: embeddings.WordVectors, workdir: str) -> dict:
    """Writes the neighbours report, analogy/similarity results and the PCA plot; returns their metrics."""
    metrics = {}
    report = neighbours_report(vectors, _words(config.eval.probe_words), config.eval.topn)
    with open(os.path.join(workdir, "neighbours.txt"), "w", encoding="utf-8") as f:
        f.write(report)
    print(report, end="")
    if config.eval.analogy_file:
        result = embeddings.evaluate_analogies(vectors, config.eval.analogy_file, config.eval.restrict_vocab)
        with open(os.path.join(workdir, "analogies.json"), "w") as f:
            json.dump(result.as_dict(), f, indent=1)
        print(result.table())
        metrics.update(
            analogy_accuracy=result.total.accuracy, analogy_answered=result.total.answered, analogy_oov=result.total.oov
        )
    if config.eval.similarity_file:
        result = embeddings.evaluate_similarity(vectors, config.eval.similarity_file)
        with open(os.path.join(workdir, "similarity.json"), "w") as f:
            json.dump(result.as_dict(), f, indent=1)
        metrics.update(similarity_spearman=result.spearman, similarity_pairs=result.pairs, similarity_oov=result.oov)
    plot = [w for w in _words(config.eval.plot_words) if w in vectors]
    if len(plot) >= 3:
        embeddings.plot_words(vectors, plot, os.path.join(workdir, "pca.png"))
    return metrics


def run(config, workdir: str) -> dict:
    """Trains, saves and evaluates; returns the final metrics."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json(indent=1))
    settings = word2vec.settings_from_config(config)
    formats = _words(config.eval.formats)
    for name in formats:
        if name not in VECTOR_FILES:
            raise ValueError(f"unknown config.eval.formats entry {name!r}; choose from {', '.join(VECTOR_FILES)}")
    corpus = word2vec.corpus_from_config(config.data)
    vocab = word2vec.Vocab.build(corpus, settings.min_count, settings.max_vocab)
    vocab.save(os.path.join(workdir, "vocab.txt"))
    model = word2vec.Word2Vec(vocab, settings)
    stats = model.train(corpus, progress=config.train.progress)
    vectors = model.vectors()
    for name in formats:
        vectors.save(os.path.join(workdir, VECTOR_FILES[name]), name)
    metrics = {
        "vocab_size": len(vocab),
        "corpus_words": vocab.total,
        "words": stats.words,
        "examples": stats.examples,
        "train_seconds": stats.seconds,
        "compile_seconds": stats.compile_seconds,
        "words_per_second": stats.words_per_second,
        "final_loss": stats.loss,
        "devices": model.mesh.devices.size,
    }
    metrics.update(evaluate(config, vectors, workdir))
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1, sort_keys=True)
    return metrics


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    std_logging.getLogger().setLevel(std_logging.INFO)  # words/s log lines when the bar is off
    logging.set_verbosity(logging.INFO)
    try:
        launch.maybe_initialize_distributed()
    except launch.LaunchError as error:
        raise app.UsageError(str(error)) from error
    print(json.dumps(run(command.config_value(_CONFIG, validate=False), _WORKDIR.value), sort_keys=True), flush=True)


def entry() -> None:
    command.start(main)


if __name__ == "__main__":
    entry()
