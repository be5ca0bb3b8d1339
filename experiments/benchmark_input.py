"""Input throughput: the loader alone vs what a jit-compiled LSTM train step consumes.

For each batching mode of `seqjax.data.loader` the script measures

  loader      examples/s and tokens/s of the iterator alone (preprocessing
              included), after `--warmup` batches;
  train_step  examples/s and tokens/s of a jit-compiled seqjax LSTM train
              step (forward, backward, Adam) on batches of the same shapes,
              every shape compiled beforehand;
  ratio       loader / train_step: above 1, the loader keeps up;
  end_to_end  the two together (the loader prefetching in its thread while
              the step runs): padded tokens/s (B * T, what the step's cost
              follows) as a fraction of the train step alone on pre-loaded
              batches; 1.0 means the input pipeline costs nothing.

Cases (synthetic data generated here, so the script needs no files):
  padding    100k word sequences, lengths ~ lognormal (median 33, max 128),
             split on spaces and looked up in a 10k-word vocabulary;
             Padding(pad_to_multiple=16, max_len=128, truncate=True);
             many-to-one LSTM classifier.
  bucketing  the same with Bucketing((16, 32, 64, 128), truncate=True).
  packing    a 1M-character stream (one document, like tiny_shakespeare),
             bytes as ids, lm_loader windows of T=128; per-step LSTM LM.
  tf_data    (with --tf-data) tf.data.Dataset.from_generator over the same
             preprocessing + padded_batch, as the alternative to grain.

  python -m experiments.benchmark_input                 # all cases, CPU
  python -m experiments.benchmark_input --cases packing --hidden 512 --workers 2

stdout: one JSON object per measurement; stderr: a table.

Measured with `python -m experiments.benchmark_input --tf-data` on the
project's 2-core CPU machine (AMD EPYC, XLA:CPU) while other jobs ran (load
average 6-7), default flags (B=64, LSTM 256, embed 64, worker_count=0):

  case        loader ex/s  loader tok/s  step ex/s  step tok/s  ratio  end-to-end
  padding            5537        216154        104        4103   53.3       0.850
  bucketing          5707        222400        170        6641   33.5       0.879
  packing           17310       2215641         56        7204  307.6       1.210
  tf_data            2995        117809                                 (grain 1.85x faster)

  --workers 2 on the same two cores: padding 3357 ex/s, packing 21537 ex/s
  (the process hand-off costs about what it parallelises there).

End-to-end spreads 0.85-1.21 from run to run on the shared machine: noise,
plus the loader's thread competing with XLA for two cores. No GPU was
available; an accelerator step ~100x faster than XLA:CPU's would need
worker_count >= (its examples/s) / ~5k.
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import timing
from seqjax import models
from seqjax.data import loader

CASES = ("padding", "bucketing", "packing")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of " + ",".join(CASES))
    parser.add_argument("--examples", type=int, default=100_000, help="sequences in the synthetic text source")
    parser.add_argument("--chars", type=int, default=1_000_000, help="characters in the synthetic LM stream")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=128, help="longest sequence; also the LM window T")
    parser.add_argument("--hidden", type=int, default=256, help="LSTM units of the train step")
    parser.add_argument("--embed", type=int, default=64, help="embedding width of the train step")
    parser.add_argument("--loader-batches", type=int, default=300, help="batches timed for the loader alone")
    parser.add_argument("--step-batches", type=int, default=30, help="batches timed for the train step")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches before each timing")
    parser.add_argument("--workers", type=int, default=0, help="loader worker processes (grain worker_count)")
    parser.add_argument("--read-threads", type=int, default=0, help="loader read threads per process")
    parser.add_argument("--prefetch", type=int, default=2, help="batches prefetched by the loader's thread")
    parser.add_argument("--tf-data", action="store_true", help="also time a tf.data pipeline (padding case)")
    return parser.parse_args(argv)


# --- synthetic data ------------------------------------------------------------


def word_vocabulary(size: int = 10_000) -> list[str]:
    """Distinct pseudo-words: 'w0', 'w1', ..."""
    return [f"w{i}" for i in range(size)]


def zipf_words(rng: np.random.Generator, count: int, vocabulary: list[str]) -> np.ndarray:
    """`count` word indices with Zipf-like frequencies (p ~ 1 / rank)."""
    ranks = np.arange(1, len(vocabulary) + 1)
    probabilities = (1.0 / ranks) / np.sum(1.0 / ranks)
    return rng.choice(len(vocabulary), size=count, p=probabilities)


def text_source(size: int, max_len: int, seed: int = 0) -> list[dict]:
    """[{'text': str, 'label': int}]: lognormal word counts in [1, max_len]."""
    rng = np.random.default_rng(seed)
    vocabulary = np.array(word_vocabulary())
    lengths = np.clip(np.round(rng.lognormal(np.log(33), 0.6, size)), 1, max_len).astype(int)
    words = vocabulary[zipf_words(rng, int(lengths.sum()), list(vocabulary))]
    cuts = np.cumsum(lengths)[:-1]
    labels = rng.integers(0, 2, size)
    return [{"text": " ".join(piece), "label": int(label)} for piece, label in zip(np.split(words, cuts), labels)]


def char_stream_source(chars: int, seed: int = 1) -> list[dict]:
    """One document of `chars` characters: words, spaces and line breaks."""
    rng = np.random.default_rng(seed)
    words = np.array(word_vocabulary())[zipf_words(rng, chars // 4, word_vocabulary())]
    breaks = np.where(rng.random(len(words)) < 0.1, "\n", " ")
    text = "".join(np.char.add(words, breaks))[:chars]
    return [{"text": text}]


class WordIds:
    """text -> {'inputs': word ids (1 = unknown), 'label'}: split and look up,
    as a word tokenizer does."""

    def __init__(self, vocabulary: list[str]):
        self.index = {word: i + 2 for i, word in enumerate(vocabulary)}  # 0 = pad, 1 = unknown

    def __call__(self, raw: dict) -> dict:
        ids = [self.index.get(word, 1) for word in raw["text"].split()]
        return {"inputs": np.array(ids, np.int32), "label": raw["label"]}


def byte_ids(raw: dict) -> np.ndarray:
    return np.frombuffer(raw["text"].encode(), np.uint8)


# --- train steps -------------------------------------------------------------------


def make_train_step(vocab_size: int, output_size: int, head: str, args) -> tuple[Callable, Callable]:
    """(step(batch) -> None, running one Adam update and blocking; the keys
    of `batch` the step reads) for a seqjax LSTM with an embedding."""
    config = ml_collections.ConfigDict(
        {"name": "recurrent", "cell": "lstm", "hidden_size": args.hidden, "embed_size": args.embed, "head": head}
    )
    task_shape = types.SimpleNamespace(output_size=output_size, vocab_size=vocab_size, head=head)
    model = models.build(config, task_shape)
    per_step = head == "per_step"
    keys = ("inputs", "targets", "resets", "step_mask") if per_step else ("inputs", "lengths", "label")

    def loss_fn(params, batch):
        if per_step:
            logits = model.apply({"params": params}, batch["inputs"], None, resets=batch["resets"])
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
            return (losses * batch["step_mask"]).sum() / jnp.maximum(batch["step_mask"].sum(), 1.0)
        logits = model.apply({"params": params}, batch["inputs"], batch["lengths"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    tx = optax.adam(1e-3)
    example = jnp.zeros((args.batch, 8), jnp.int32)
    params = model.init(jax.random.key(0), example, jnp.full((args.batch,), 8))["params"]
    state = {"params": params, "opt": tx.init(params)}

    @jax.jit
    def update(state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], batch)
        updates, opt = tx.update(grads, state["opt"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt": opt}, loss

    def step(batch):
        nonlocal state
        state, loss = update(state, {k: batch[k] for k in keys})
        jax.block_until_ready(loss)

    return step, keys


# --- measurements ------------------------------------------------------------------------


def batch_tokens(batch: dict) -> int:
    """Real tokens in a batch: lengths of real rows, or LM steps with a target."""
    if "step_mask" in batch:
        return int(batch["step_mask"].sum())
    return int(batch["lengths"][batch["weights"] > 0].sum())


def time_loader(iterator: Iterator[dict], args) -> tuple[float, float]:
    """(examples/s, tokens/s) of the iterator alone."""
    for _ in range(args.warmup):
        next(iterator)
    examples = tokens = 0
    start = time.perf_counter()
    for _ in range(args.loader_batches):
        batch = next(iterator)
        examples += len(batch["weights"])
        tokens += batch_tokens(batch)
    seconds = time.perf_counter() - start
    return examples / seconds, tokens / seconds


def compile_shapes(step: Callable, template: dict, widths: list[int]) -> None:
    """Runs `step` once for every time length the loader can produce."""
    for width in widths:
        batch = {}
        for key, value in template.items():
            if value.ndim >= 2:
                value = np.resize(value, (value.shape[0], width) + value.shape[2:])
            batch[key] = value
        step(batch)


def time_train_step(step: Callable, batches: list[dict]) -> tuple[float, float, float]:
    """(examples/s, tokens/s, padded tokens/s) the train step consumes on
    pre-loaded batches; padded tokens (B * T) are what the step's cost
    follows."""
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    seconds = time.perf_counter() - start
    return (
        sum(len(b["weights"]) for b in batches) / seconds,
        sum(batch_tokens(b) for b in batches) / seconds,
        sum(b["inputs"].size for b in batches) / seconds,
    )


def time_end_to_end(step: Callable, iterator: Iterator[dict], count: int) -> float:
    """Padded tokens/s of `count` steps fed from the iterator."""
    padded = 0
    start = time.perf_counter()
    for _ in range(count):
        batch = next(iterator)
        padded += batch["inputs"].size
        step(batch)
    return padded / (time.perf_counter() - start)


def measure_case(name: str, data: loader.Loader, step: Callable, widths: list[int], args) -> dict:
    iterator = data.iterator()
    loader_rate = time_loader(iterator, args)
    batches = [next(iterator) for _ in range(args.step_batches)]
    compile_shapes(step, batches[0], widths)
    step_rate = time_train_step(step, batches)
    fed_rate = time_end_to_end(step, iterator, args.step_batches)
    iterator.close()
    return {"case": name, "loader": loader_rate, "train_step": step_rate[:2], "end_to_end": fed_rate / step_rate[2]}


def text_cases(args) -> dict[str, tuple[loader.Loader, Callable, list[int]]]:
    source = text_source(args.examples, args.max_len)
    preprocess = WordIds(word_vocabulary())
    common = dict(
        batch_size=args.batch,
        train=True,
        seed=0,
        worker_count=args.workers,
        read_threads=args.read_threads,
        prefetch=args.prefetch,
        process_index=0,
        process_count=1,
    )
    step, _ = make_train_step(len(word_vocabulary()) + 2, 2, "last", args)
    cases, wanted = {}, args.cases.split(",")
    if "padding" in wanted:
        padding = loader.Padding(pad_to_multiple=16, max_len=args.max_len, truncate=True)
        widths = list(range(16, args.max_len + 1, 16))
        cases["padding"] = (loader.make_loader(source, preprocess, batching=padding, **common), step, widths)
    if "bucketing" in wanted:
        boundaries = tuple(b for b in (16, 32, 64, 128, 256, 512) if b < args.max_len) + (args.max_len,)
        bucketing = loader.Bucketing(boundaries, truncate=True)
        cases["bucketing"] = (
            loader.make_loader(source, preprocess, batching=bucketing, **common),
            step,
            list(boundaries),
        )
    return cases


def packing_case(args) -> dict[str, tuple[loader.Loader, Callable, list[int]]]:
    source = char_stream_source(args.chars)
    data = loader.lm_loader(
        source,
        byte_ids,
        batch_size=args.batch,
        seq_len=args.max_len,
        train=True,
        worker_count=args.workers,
        prefetch=args.prefetch,
        process_index=0,
        process_count=1,
    )
    step, _ = make_train_step(256, 256, "per_step", args)
    return {"packing": (data, step, [args.max_len])}


def tf_data_rate(args) -> tuple[float, float] | None:
    """(examples/s, tokens/s) of tf.data over the same source and
    preprocessing: from_generator -> padded_batch (T padded to the batch's
    longest, like Padding), with a shuffled order and prefetch."""
    try:
        import tensorflow as tf
    except ImportError:
        return None
    source = text_source(args.examples, args.max_len)
    preprocess = WordIds(word_vocabulary())
    order = np.random.default_rng(0).permutation(len(source))

    def generate():
        for i in order:
            example = preprocess(source[i])
            yield (
                example["inputs"][: args.max_len],
                np.int32(example["label"]),
                np.int32(min(len(example["inputs"]), args.max_len)),
            )

    signature = (tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32))
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature).repeat()
    dataset = dataset.padded_batch(args.batch, drop_remainder=True).prefetch(args.prefetch or 1)

    def batches():
        for inputs, label, lengths in dataset.as_numpy_iterator():
            yield {"inputs": inputs, "label": label, "lengths": lengths, "weights": np.ones(len(label), np.float32)}

    return time_loader(batches(), args)


def report(results: list[dict], tf_rate, args) -> None:
    common = {
        "batch": args.batch,
        "max_len": args.max_len,
        "hidden": args.hidden,
        "embed": args.embed,
        "workers": args.workers,
        "read_threads": args.read_threads,
        "prefetch": args.prefetch,
    }
    for result in results:
        case, fraction = f"loader_{result['case']}", round(result["end_to_end"], 3)
        (examples, tokens), (step_examples, step_tokens) = result["loader"], result["train_step"]
        for unit, value, base in (("examples/s", examples, step_examples), ("tokens/s", tokens, step_tokens)):
            record = timing.measurement(
                "input", case, value, unit, "lstm_train_step", base, end_to_end_fraction=fraction, **common
            )
            timing.emit(record)
    padding = next((r for r in results if r["case"] == "padding"), None)
    if tf_rate and padding:
        loader_rate = padding["loader"][0]
        timing.emit(
            timing.measurement(
                "input", "loader_padding", loader_rate, "examples/s", "tf_data_padded_batch", tf_rate[0], **common
            )
        )
    print(
        f"{'case':<12}{'loader ex/s':>13}{'loader tok/s':>14}{'step ex/s':>11}{'step tok/s':>12}"
        f"{'ratio':>8}{'end-to-end':>12}",
        file=sys.stderr,
    )
    for r in results:
        print(
            f"{r['case']:<12}{r['loader'][0]:>13.0f}{r['loader'][1]:>14.0f}{r['train_step'][0]:>11.0f}"
            f"{r['train_step'][1]:>12.0f}{r['loader'][0] / r['train_step'][0]:>8.2f}{r['end_to_end']:>12.3f}",
            file=sys.stderr,
        )
    if tf_rate:
        print(f"{'tf_data':<12}{tf_rate[0]:>13.0f}{tf_rate[1]:>14.0f}", file=sys.stderr)


def main(argv=None) -> None:
    args = parse_args(argv)
    unknown = set(args.cases.split(",")) - set(CASES)
    if unknown:
        raise SystemExit(f"unknown cases {sorted(unknown)}; choose from {', '.join(CASES)}")
    wanted = set(args.cases.split(","))
    cases = text_cases(args) if {"padding", "bucketing"} & wanted else {}
    if "packing" in wanted:
        cases.update(packing_case(args))
    results = [measure_case(name, *case, args) for name, case in cases.items()]
    tf_rate = tf_data_rate(args) if args.tf_data else None
    report(results, tf_rate, args)


if __name__ == "__main__":
    main()
