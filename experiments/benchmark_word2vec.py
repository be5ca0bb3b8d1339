"""Words/s and analogy accuracy of seqjax word2vec against gensim's Word2Vec, same corpus and settings.

Both train on the same token lists (seqjax's Keras-style tokenisation, so the
two vocabularies are identical), with word2vec.c's settings: window 5, 5
negatives, unigram^0.75 noise, sample 1e-3, min_count 5, learning rate 0.025
(CBOW 0.05) decaying linearly to 1e-4, input vectors uniform in +-1/dim
(gensim 4's initialisation; word2vec.c uses +-0.5/dim, which learns slower
in a run this short). words/s = epochs x in-vocabulary corpus
words / training seconds (vocabulary building excluded for both; seqjax's
compilation is timed separately and excluded, and reported). Rounds alternate
seqjax and gensim so that load from other processes hits both alike; the
median round's words/s is reported (the best in the context), and analogy
accuracy is the mean over rounds, round r using seed + r for both.

Analogy accuracy: both vector sets are scored by `seqjax.embeddings.evaluate_analogies`
(3CosAdd over the 30,000 most frequent words, question words excluded) on
the same questions-words file; gensim's own `evaluate_word_analogies` is run
on gensim's vectors too, as a check of the seqjax evaluator. No standard
analogy set is available offline, and the Google set's capital and currency
questions do not occur in the default corpus (Multi30k captions), so this
script writes its own file (`ANALOGY_SECTIONS`: gender, noun plurals, verb
-s -> -ing, base -> -ing; every ordered pair of pairs within a section, as the
Google file does).

  python -m experiments.benchmark_word2vec                      # Multi30k en, skip-gram, 5 epochs
  python -m experiments.benchmark_word2vec --architectures skipgram,cbow --rounds 3
  python -m experiments.benchmark_word2vec --write_analogies /tmp/multi30k_analogies.txt   # file only

stdout: one JSON object per measurement; stderr: a table. gensim is not a
seqjax dependency: `pip install gensim` to run this.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time

from seqjax import paths

MULTI30K_EN = paths.data_path("multi30k", "train.en.gz")

# (a, b) pairs; a questions-words section holds "a1 b1 a2 b2" for every ordered pair of pairs.
ANALOGY_SECTIONS = {
    "gender": [
        ("man", "woman"),
        ("men", "women"),
        ("boy", "girl"),
        ("boys", "girls"),
        ("he", "she"),
        ("his", "her"),
        ("male", "female"),
        ("gentleman", "lady"),
        ("father", "mother"),
        ("son", "daughter"),
        ("husband", "wife"),
        ("groom", "bride"),
        ("dad", "mom"),
        ("brother", "sister"),
    ],
    "noun-plural": [
        ("dog", "dogs"),
        ("child", "children"),
        ("person", "people"),
        ("car", "cars"),
        ("horse", "horses"),
        ("ball", "balls"),
        ("tree", "trees"),
        ("hat", "hats"),
        ("bike", "bikes"),
        ("building", "buildings"),
        ("table", "tables"),
        ("street", "streets"),
        ("player", "players"),
        ("shirt", "shirts"),
        ("hand", "hands"),
        ("rock", "rocks"),
        ("wave", "waves"),
        ("man", "men"),
        ("woman", "women"),
        ("boy", "boys"),
        ("girl", "girls"),
        ("team", "teams"),
        ("worker", "workers"),
        ("flower", "flowers"),
        ("boat", "boats"),
        ("window", "windows"),
        ("book", "books"),
        ("bird", "birds"),
        ("student", "students"),
        ("truck", "trucks"),
    ],
    "verb-s-ing": [
        ("plays", "playing"),
        ("runs", "running"),
        ("walks", "walking"),
        ("sits", "sitting"),
        ("stands", "standing"),
        ("rides", "riding"),
        ("jumps", "jumping"),
        ("swims", "swimming"),
        ("climbs", "climbing"),
        ("eats", "eating"),
        ("looks", "looking"),
        ("holds", "holding"),
        ("works", "working"),
        ("dances", "dancing"),
        ("sings", "singing"),
        ("smiles", "smiling"),
        ("talks", "talking"),
        ("reads", "reading"),
        ("watches", "watching"),
        ("wears", "wearing"),
        ("throws", "throwing"),
    ],
    "verb-base-ing": [
        ("play", "playing"),
        ("run", "running"),
        ("walk", "walking"),
        ("sit", "sitting"),
        ("stand", "standing"),
        ("ride", "riding"),
        ("jump", "jumping"),
        ("swim", "swimming"),
        ("climb", "climbing"),
        ("eat", "eating"),
        ("look", "looking"),
        ("hold", "holding"),
        ("work", "working"),
        ("dance", "dancing"),
        ("sing", "singing"),
        ("smile", "smiling"),
        ("talk", "talking"),
        ("read", "reading"),
        ("watch", "watching"),
        ("wear", "wearing"),
        ("throw", "throwing"),
    ],
}


def write_analogies(path: str) -> int:
    """Writes ANALOGY_SECTIONS as a questions-words file; returns the number of questions."""
    lines, count = [], 0
    for section, pairs in ANALOGY_SECTIONS.items():
        lines.append(f": {section}")
        for (a, b), (c, d) in itertools.permutations(pairs, 2):
            lines.append(f"{a} {b} {c} {d}")
            count += 1
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return count


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=MULTI30K_EN, help="text file(s), comma-separated; .gz ok")
    parser.add_argument("--architectures", default="skipgram", help="comma-separated: skipgram,cbow")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--negative", type=int, default=5)
    parser.add_argument("--sample", type=float, default=1e-3)
    parser.add_argument("--min_count", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=512, help="seqjax examples per SGD step")
    parser.add_argument("--steps_per_call", type=int, default=128, help="seqjax SGD steps per device call")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="gensim worker threads")
    parser.add_argument("--rounds", type=int, default=1, help="alternating timed rounds; the median is reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--analogies", default="", help="questions-words file (default: the built-in Multi30k one)")
    parser.add_argument("--restrict_vocab", type=int, default=30000)
    parser.add_argument("--write_analogies", default="", help="only write the built-in analogy file here and exit")
    return parser.parse_args(argv)


def import_gensim():
    try:
        import gensim
        from gensim.models import Word2Vec
    except ImportError:
        sys.exit(
            "benchmark_word2vec needs gensim for its baseline, which is not a seqjax dependency: pip install gensim"
        )
    return gensim.__version__, Word2Vec


def train_seqjax(sentences, vocab, args, architecture: str):
    from seqjax import word2vec

    settings = word2vec.Settings(
        architecture=architecture,
        dim=args.dim,
        window=args.window,
        negative=args.negative,
        sample=args.sample,
        min_count=args.min_count,
        epochs=args.epochs,
        batch_size=args.batch_size,
        steps_per_call=args.steps_per_call,
        init_range=1.0,
        seed=args.seed,
    )  # gensim 4 initialises in +-1/dim
    model = word2vec.Word2Vec(vocab, settings)
    stats = model.train(sentences)
    return model.vectors(), stats.seconds, stats.compile_seconds


def train_gensim(Word2Vec, sentences, args, architecture: str):
    from seqjax.embeddings import WordVectors

    model = Word2Vec(
        vector_size=args.dim,
        window=args.window,
        min_count=args.min_count,
        sg=int(architecture == "skipgram"),
        hs=0,
        negative=args.negative,
        ns_exponent=0.75,
        sample=args.sample,
        alpha=0.025 if architecture == "skipgram" else 0.05,
        min_alpha=1e-4,
        cbow_mean=1,
        workers=args.workers,
        epochs=args.epochs,
        seed=args.seed,
    )
    model.build_vocab(sentences)
    start = time.perf_counter()
    model.train(sentences, total_examples=model.corpus_count, epochs=args.epochs)
    seconds = time.perf_counter() - start
    return WordVectors(list(model.wv.index_to_key), model.wv.vectors), seconds, model


def run_round(Word2Vec, sentences, vocab, args, architecture: str, analogies: str, seed: int) -> dict:
    """One seqjax run and one gensim run with `seed`: times and analogy accuracies."""
    from seqjax import embeddings

    args = argparse.Namespace(**{**vars(args), "seed": seed})
    vectors, seconds, compile_seconds = train_seqjax(sentences, vocab, args, architecture)
    gensim_vectors, gensim_seconds, gensim_model = train_gensim(Word2Vec, sentences, args, architecture)
    if set(gensim_vectors.words) != set(vectors.words):  # the order of equal counts may differ
        print(f"note: vocabularies differ: seqjax {len(vectors)} words, gensim {len(gensim_vectors)}", file=sys.stderr)
    ours = embeddings.evaluate_analogies(vectors, analogies, args.restrict_vocab)
    theirs = embeddings.evaluate_analogies(gensim_vectors, analogies, args.restrict_vocab)
    gensim_own = gensim_model.wv.evaluate_word_analogies(analogies, restrict_vocab=args.restrict_vocab)[0]
    return {
        "seconds": seconds,
        "compile_seconds": compile_seconds,
        "gensim_seconds": gensim_seconds,
        "accuracy": ours.total.accuracy,
        "gensim_accuracy": theirs.total.accuracy,
        "gensim_own_accuracy": gensim_own,
        "answered": ours.total.answered,
        "oov": ours.total.oov,
        "sections": {s.name: [s.accuracy, t.accuracy] for s, t in zip(ours.sections, theirs.sections)},
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.write_analogies:
        print(f"wrote {write_analogies(args.write_analogies)} questions to {args.write_analogies}", file=sys.stderr)
        return
    gensim_version, Word2Vec = import_gensim()
    # Imported late, as they import jax: --write_analogies and a missing gensim need neither.
    from experiments import timing
    from seqjax import word2vec

    analogies = args.analogies
    if not analogies:
        analogies = os.path.join(tempfile.mkdtemp(), "multi30k_analogies.txt")
        write_analogies(analogies)
    sentences = list(word2vec.text_file_corpus([p for p in args.corpus.split(",") if p]))
    vocab = word2vec.Vocab.build(sentences, args.min_count)
    words = args.epochs * vocab.total
    context = {
        "corpus": args.corpus,
        "corpus_words": vocab.total,
        "vocab": len(vocab),
        "epochs": args.epochs,
        "dim": args.dim,
        "window": args.window,
        "negative": args.negative,
        "sample": args.sample,
        "batch_size": args.batch_size,
        "steps_per_call": args.steps_per_call,
        "gensim_workers": args.workers,
        "rounds": args.rounds,
    }
    baseline = f"gensim {gensim_version} Word2Vec (workers={args.workers})"
    rows = []
    for architecture in [a for a in args.architectures.split(",") if a]:
        rounds = [
            run_round(Word2Vec, sentences, vocab, args, architecture, analogies, args.seed + r)
            for r in range(args.rounds)
        ]
        ours, theirs = [r["seconds"] for r in rounds], [r["gensim_seconds"] for r in rounds]
        speed, gensim_speed = words / statistics.median(ours), words / statistics.median(theirs)
        rows.append(
            timing.measurement(
                "word2vec",
                f"{architecture}_words_per_second",
                speed,
                "words/s",
                baseline,
                gensim_speed,
                best_value=words / min(ours),
                best_baseline_value=words / min(theirs),
                compile_seconds=max(r["compile_seconds"] for r in rounds),
                **context,
            )
        )
        accuracy = statistics.mean(r["accuracy"] for r in rounds)
        gensim_accuracy = statistics.mean(r["gensim_accuracy"] for r in rounds)
        rows.append(
            timing.measurement(
                "word2vec",
                f"{architecture}_analogy_accuracy",
                accuracy,
                "accuracy",
                baseline,
                gensim_accuracy,
                difference_points=100 * (accuracy - gensim_accuracy),
                per_round=[[r["accuracy"], r["gensim_accuracy"]] for r in rounds],
                baseline_by_gensim_evaluator=[r["gensim_own_accuracy"] for r in rounds],
                answered=rounds[0]["answered"],
                oov=rounds[0]["oov"],
                sections=rounds[0]["sections"],
                analogy_file=analogies,
                restrict_vocab=args.restrict_vocab,
                **context,
            )
        )
    for row in rows:
        timing.emit(row)
    device = timing.describe_device()
    print(
        f"\n{'case':<32} {'seqjax':>12} {'gensim':>12} {'ratio':>7}   ({device}, {args.epochs} epochs of "
        f"{vocab.total} words)",
        file=sys.stderr,
    )
    for row in rows:
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.3f}"  # None: gensim scored 0
        print(f"{row['case']:<32} {row['value']:>12.4g} {row['baseline_value']:>12.4g} {ratio:>7}", file=sys.stderr)


if __name__ == "__main__":
    main()
