"""word2vec: CBOW and skip-gram (Mikolov et al. 2013), batched, jit-compiled, data-parallel.

    corpus (re-iterable token lists) -> Vocab (min_count, most frequent first)
    per chunk of ~chunk_words words, on the host, vectorised numpy:
        ids -> frequent-word subsampling -> dynamic-window examples -> shuffle
    per call, on the devices: `steps_per_call` SGD steps of `batch_size`
        examples (lax.scan), negatives drawn on the device from unigram^0.75

The settings follow word2vec.c (and gensim): window size drawn per centre
word from [1, window], subsampled words removed before windowing, input
vectors uniform in +-0.5/dim (`init_range`; gensim 4 uses +-1/dim, which
learns faster in short runs: about +1 to +2 analogy points on Multi30k),
output vectors zero, plain SGD whose rate decays
linearly with the words processed from `learning_rate` to
`min_learning_rate`, a negative equal to the positive target skipped, and in
CBOW the mean of the context vectors as the hidden layer with every context
word receiving the hidden layer's full gradient (word2vec.c's update, not the
exact gradient of the mean, which would divide it by the context size).

Frequent-word subsampling keeps a word of corpus frequency f with probability
`(sqrt(f / t) + 1) * t / f` (capped at 1), the formula of word2vec.c and
gensim, by default; `subsample_formula='paper'` gives the paper's
`sqrt(t / f)` (it discards with probability 1 - sqrt(t / f)).

Batching: one step applies the summed gradient of `batch_size` examples with
the per-example learning rate, the batched analogue of word2vec.c's one-pair
updates (whose threads also apply updates computed from stale values). A
frequent word's row then moves by the sum of all its occurrences in the batch
at once, so batches must stay small: on Multi30k, CBOW (rate 0.05) diverges
at 4096 and matches gensim's analogy accuracy at 512; a NaN loss stops
training with that advice. Small batches cost little because `steps_per_call`
steps run inside one device call. The sigmoid is exact (word2vec.c clips its
table at |x| = 6).

Data parallelism: the batch is sharded on the mesh axis 'data', parameters
are replicated (a word2vec table fits on one device), and XLA turns the
scatter-add of every device's updates into one all-reduce per step. With
`jax_threefry_partitionable` (the default) the negatives do not depend on the
device count, so 1 and N devices train the same vectors up to float rounding.
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import heapq
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from seqjax import parallel
from seqjax.data.tokenizers.word import DEFAULT_FILTERS, text_to_word_sequence

ARCHITECTURES = ("skipgram", "cbow")
OBJECTIVES = ("negative_sampling", "hierarchical_softmax")
SUBSAMPLE_FORMULAS = ("code", "paper")
Sentence = Sequence[str]


# --- corpora ---------------------------------------------------------------------------------


class Corpus:
    """A re-iterable stream of tokenised sentences (one pass per epoch).

    Args:
      texts: a callable returning a fresh iterator of raw texts, where every line
        of a text is one sentence, or of lists of tokens, each one sentence
        whose tokens are its words as they are (lower-cased with `lower`, never
        split or filtered: a tagged corpus's "U.S." stays one word, as its
        tagger sees it).
      lower, filters: tokenisation of texts, as `WordTokenizer` (Keras
        `text_to_word_sequence`), so the words match a WordTokenizer fitted with
        the same settings.
    """

    def __init__(
        self, texts: Callable[[], Iterable[str | list[str]]], lower: bool = True, filters: str = DEFAULT_FILTERS
    ):
        self._texts = texts
        self.lower = lower
        self.filters = filters

    def __iter__(self) -> Iterator[list[str]]:
        for text in self._texts():
            if not isinstance(text, str):
                if len(text):
                    yield [token.lower() for token in text] if self.lower else list(text)
                continue
            for line in text.splitlines():
                words = text_to_word_sequence(line, self.filters, self.lower)
                if words:
                    yield words


def text_file_corpus(paths: str | Sequence[str], **kwargs) -> Corpus:
    """Lines of plain-text (or .gz) files, read lazily, UTF-8."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    if not paths:
        raise ValueError("text_file_corpus needs at least one file")

    def texts():
        for path in paths:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rb") as f:
                for number, line in enumerate(f, start=1):
                    try:
                        yield line.decode("utf-8")
                    except UnicodeDecodeError as error:
                        raise ValueError(
                            f"{path}: line {number} is not valid UTF-8 ({error.reason} at byte {error.start}); "
                            "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
                        ) from None

    return Corpus(texts, **kwargs)


def _as_text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def source_corpus(source, feature: str = "text", read_size: int = 1024, **kwargs) -> Corpus:
    """Texts of a random-access source of feature dicts (`seqjax.data.sources.load_source`):
    `source[i][feature]`, read `read_size` examples at a time. A text (UTF-8 bytes or
    str) is tokenised by the corpus; a sequence of tokens (e.g. `local/conll`'s
    'tokens') is one sentence of exactly those words."""

    def texts():
        for start in range(0, len(source), read_size):
            indices = range(start, min(start + read_size, len(source)))
            getitems = getattr(source, "__getitems__", None)
            records = getitems(list(indices)) if getitems else [source[i] for i in indices]
            for record in records:
                if feature not in record:
                    raise KeyError(f"source example has no feature {feature!r}; features: {sorted(record)}")
                value = record[feature]
                if isinstance(value, (list, tuple, np.ndarray)):
                    yield [_as_text(token) for token in value]
                else:
                    yield _as_text(value)

    return Corpus(texts, **kwargs)


# --- vocabulary, subsampling, noise, Huffman codes -------------------------------------------


@dataclasses.dataclass(frozen=True)
class Vocab:
    """Words kept for training, most frequent first (ties: first appearance)."""

    words: tuple[str, ...]
    counts: np.ndarray  # [V] int64 corpus counts
    index: dict[str, int] = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_counts(cls, counts: dict[str, int], min_count: int = 5, max_size: int = 0) -> Vocab:
        """Words with count >= min_count; the `max_size` most frequent when > 0."""
        ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: -counts[w])
        if max_size > 0:
            ranked = ranked[:max_size]
        if not ranked:
            raise ValueError(f"no word occurs at least min_count={min_count} times ({len(counts)} distinct words seen)")
        return cls(tuple(ranked), np.array([counts[w] for w in ranked], np.int64), {w: i for i, w in enumerate(ranked)})

    @classmethod
    def build(cls, corpus: Iterable[Sentence], min_count: int = 5, max_size: int = 0) -> Vocab:
        counts: collections.Counter = collections.Counter()
        for sentence in corpus:
            counts.update(sentence)
        return cls.from_counts(counts, min_count, max_size)

    def __len__(self) -> int:
        return len(self.words)

    @property
    def total(self) -> int:
        """Number of in-vocabulary words in the corpus (one epoch)."""
        return int(self.counts.sum())

    def encode(self, sentence: Sentence) -> np.ndarray:
        """Ids of the in-vocabulary words (others dropped, as word2vec.c does)."""
        get = self.index.get
        ids = [i for i in (get(w) for w in sentence) if i is not None]
        return np.asarray(ids, np.int32)

    def save(self, path: str) -> None:
        """`word count` lines, the format of word2vec.c's -save-vocab."""
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(f"{w} {c}\n" for w, c in zip(self.words, self.counts))


def keep_probabilities(counts: np.ndarray, sample: float, formula: str = "code") -> np.ndarray:
    """[V] probability of keeping each occurrence of a word under subsampling.

    With f = count / total: 'code' (word2vec.c, gensim) keeps with
    (sqrt(f / t) + 1) * t / f, 'paper' with sqrt(t / f); both capped at 1.
    `sample` = t <= 0 keeps everything.
    """
    if formula not in SUBSAMPLE_FORMULAS:
        raise ValueError(f"unknown subsample formula {formula!r}; choose one of {SUBSAMPLE_FORMULAS}")
    counts = np.asarray(counts, np.float64)
    if sample <= 0:
        return np.ones(len(counts))
    f = counts / counts.sum()
    keep = (np.sqrt(f / sample) + 1) * sample / f if formula == "code" else np.sqrt(sample / f)
    return np.minimum(keep, 1.0)


def noise_distribution(counts: np.ndarray, exponent: float = 0.75) -> np.ndarray:
    """[V] negative-sampling distribution: count^exponent, normalised."""
    weights = np.asarray(counts, np.float64) ** exponent
    return weights / weights.sum()


def sample_negatives(key: jax.Array, cdf: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Word ids drawn from the distribution whose cumulative sums are `cdf` [V]
    (inverse-CDF sampling: exact, unlike word2vec.c's quantised table)."""
    uniform = jax.random.uniform(key, shape, cdf.dtype) * cdf[-1]
    return jnp.minimum(jnp.searchsorted(cdf, uniform, side="right"), cdf.shape[0] - 1).astype(jnp.int32)


def huffman_codes(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Huffman tree of the vocabulary for hierarchical softmax.

    Returns (points [V, L] int32: inner-node rows of the output table on the
    root-to-leaf path; codes [V, L] int32: the branch bit at each of them;
    lengths [V]), padded to the longest code L. The V - 1 inner nodes are
    rows 0..V-2 of the output table; the root is row V-2.
    """
    counts = np.asarray(counts)
    size = len(counts)
    if size < 2:
        raise ValueError("hierarchical softmax needs a vocabulary of at least 2 words")
    # Heap entries (count, tie-breaker, node); leaves are 0..V-1, inner nodes V..2V-2.
    heap = [(int(c), i, i) for i, c in enumerate(counts)]
    heapq.heapify(heap)
    parent = np.zeros(2 * size - 1, np.int64)
    bit = np.zeros(2 * size - 1, np.int32)
    for node in range(size, 2 * size - 1):
        c1, _, n1 = heapq.heappop(heap)
        c2, _, n2 = heapq.heappop(heap)
        parent[n1], parent[n2], bit[n2] = node, node, 1
        heapq.heappush(heap, (c1 + c2, node, node))
    root = 2 * size - 2
    paths = []
    for leaf in range(size):
        nodes, bits, node = [], [], leaf
        while node != root:
            nodes.append(parent[node] - size)
            bits.append(bit[node])
            node = parent[node]
        paths.append((nodes[::-1], bits[::-1]))
    lengths = np.array([len(p) for p, _ in paths], np.int32)
    points = np.zeros((size, lengths.max()), np.int32)
    codes = np.zeros((size, lengths.max()), np.int32)
    for i, (nodes, bits) in enumerate(paths):
        points[i, : len(nodes)], codes[i, : len(bits)] = nodes, bits
    return points, codes, lengths


# --- training examples (host, vectorised) ----------------------------------------------------


def subsample(ids: np.ndarray, keep: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[N] bool: which occurrences survive subsampling."""
    return rng.random(len(ids)) < keep[ids]


def skipgram_examples(
    ids: np.ndarray, sentence: np.ndarray, window: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """(centre, context) pairs of a flat id stream.

    Args:
      ids: [N] word ids; sentence: [N] sentence number of each (no pair crosses one).
      window: maximum distance; each centre word draws its own reach from [1, window].

    Returns:
      {'center': [P], 'context': [P]} int32, grouped by distance (shuffle before batching).
    """
    reach = rng.integers(1, window + 1, size=len(ids))
    centers, contexts = [], []
    for d in range(1, window + 1):
        same = sentence[d:] == sentence[:-d]  # positions (i, i + d) in one sentence
        forward = same & (reach[:-d] >= d)  # centre i sees i + d
        backward = same & (reach[d:] >= d)  # centre i + d sees i
        centers += [ids[:-d][forward], ids[d:][backward]]
        contexts += [ids[d:][forward], ids[:-d][backward]]
    return {"center": np.concatenate(centers).astype(np.int32), "context": np.concatenate(contexts).astype(np.int32)}


def cbow_examples(
    ids: np.ndarray, sentence: np.ndarray, window: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """One example per centre word that has at least one context word.

    Returns:
      {'center': [N], 'context': [N, 2 * window] ids (left context in columns
      window-1..0 by distance, right context in window..2*window-1),
      'mask': [N, 2 * window] float32, 1 where the context slot is used}.
    """
    n = len(ids)
    reach = rng.integers(1, window + 1, size=n)
    context = np.zeros((n, 2 * window), np.int32)
    mask = np.zeros((n, 2 * window), np.float32)
    for d in range(1, window + 1):
        same = sentence[d:] == sentence[:-d]
        left, right = window - d, window + d - 1
        context[d:, left], mask[d:, left] = ids[:-d], same & (reach[d:] >= d)
        context[:-d, right], mask[:-d, right] = ids[d:], same & (reach[:-d] >= d)
    keep = mask.any(axis=1)
    return {"center": ids[keep].astype(np.int32), "context": context[keep], "mask": mask[keep]}


# --- loss and the SGD step (device) ----------------------------------------------------------


def logistic_loss(hidden: jax.Array, outputs: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
    """Summed binary logistic loss of word2vec's output layer.

    Args:
      hidden: [B, D] input-side vectors (skip-gram: the centre word; CBOW: the context mean).
      outputs: [B, M, D] output vectors of the M targets of each example (negative
        sampling: the true word then K negatives; hierarchical softmax: the path's nodes).
      labels: [B, M], 1 for a target to score high, 0 to score low.
      weights: [B, M], 0 masks a target out.

    Returns:
      sum over b, m of weights * -log sigmoid(+-outputs . hidden).
    """
    scores = jnp.einsum("bd,bmd->bm", hidden, outputs)
    return jnp.sum(weights * jax.nn.softplus(jnp.where(labels > 0, -scores, scores)))


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every word2vec hyper-parameter (configs/word2vec.py documents each)."""

    architecture: str = "skipgram"
    dim: int = 100
    window: int = 5
    objective: str = "negative_sampling"
    negative: int = 5
    ns_exponent: float = 0.75
    sample: float = 1e-3
    subsample_formula: str = "code"
    min_count: int = 5
    max_vocab: int = 0
    init_range: float = 0.5  # input vectors uniform in +-init_range/dim (word2vec.c 0.5, gensim 4 1.0)
    learning_rate: float = 0.0  # 0: 0.025 for skip-gram, 0.05 for CBOW (word2vec.c)
    min_learning_rate: float = 1e-4
    epochs: int = 5
    batch_size: int = 512
    steps_per_call: int = 128
    chunk_words: int = 200_000
    max_sentence_length: int = 10_000
    cache_corpus: bool = True
    seed: int = 0

    def __post_init__(self):
        checks = [
            (self.architecture in ARCHITECTURES, "architecture", f"one of {ARCHITECTURES}"),
            (self.objective in OBJECTIVES, "objective", f"one of {OBJECTIVES}"),
            (self.subsample_formula in SUBSAMPLE_FORMULAS, "subsample_formula", f"one of {SUBSAMPLE_FORMULAS}"),
            (self.objective != "negative_sampling" or self.negative > 0, "negative", "> 0 with negative sampling"),
            (self.ns_exponent >= 0, "ns_exponent", ">= 0"),
            (self.sample >= 0, "sample", ">= 0 (0 turns subsampling off)"),
            (self.learning_rate >= 0 and self.min_learning_rate >= 0, "learning_rate", ">= 0"),
            (self.init_range > 0, "init_range", "> 0"),
        ]
        for name in (
            "dim",
            "window",
            "min_count",
            "epochs",
            "batch_size",
            "steps_per_call",
            "chunk_words",
            "max_sentence_length",
        ):
            value = getattr(self, name)
            checks.append(
                (isinstance(value, int) and not isinstance(value, bool) and value > 0, name, "a positive integer")
            )
        for ok, name, expected in checks:
            if not ok:
                raise ValueError(f"bad word2vec setting {name}={getattr(self, name)!r}: must be {expected}")

    @property
    def initial_learning_rate(self) -> float:
        return self.learning_rate or (0.025 if self.architecture == "skipgram" else 0.05)


def init_params(vocab_size: int, settings: Settings) -> dict[str, np.ndarray]:
    """{'embed': [V, D] uniform in +-init_range/D, 'output': [V, D] (hierarchical softmax: [V-1, D]) zeros}."""
    rng = np.random.default_rng(settings.seed)
    embed = (2 * rng.random((vocab_size, settings.dim)) - 1) * settings.init_range / settings.dim
    embed = embed.astype(np.float32)
    rows = vocab_size - 1 if settings.objective == "hierarchical_softmax" else vocab_size
    return {"embed": embed, "output": np.zeros((rows, settings.dim), np.float32)}


def output_targets(
    key: jax.Array, predicted: jax.Array, tables: dict[str, jax.Array], settings: Settings
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(targets [B, M] rows of the output table, labels [B, M], weights [B, M]) for predicting `predicted` [B]."""
    if settings.objective == "hierarchical_softmax":
        lengths = tables["lengths"][predicted]
        weights = (jnp.arange(tables["points"].shape[1]) < lengths[:, None]).astype(jnp.float32)
        # word2vec.c trains node j towards 1 - code_j.
        return tables["points"][predicted], 1 - tables["codes"][predicted], weights
    negatives = sample_negatives(key, tables["cdf"], (predicted.shape[0], settings.negative))
    targets = jnp.concatenate([predicted[:, None], negatives], axis=1)
    labels = jnp.zeros(targets.shape, jnp.int32).at[:, 0].set(1)
    # As word2vec.c: a negative that is the true word is skipped.
    weights = jnp.concatenate([jnp.ones_like(predicted[:, None]), negatives != predicted[:, None]], 1)
    return targets, labels, weights.astype(jnp.float32)


# Ids come from the vocabulary (host-checked), so gathers and scatters skip bounds handling.
_IN_BOUNDS = "promise_in_bounds"


def _rows(table: jax.Array, ids: jax.Array) -> jax.Array:
    return table.at[ids].get(mode=_IN_BOUNDS)


def sgd_step(
    params: dict[str, jax.Array],
    batch: dict[str, jax.Array],
    learning_rate: jax.Array,
    key: jax.Array,
    tables: dict[str, jax.Array],
    settings: Settings,
):
    """One SGD step on a batch of B examples; returns (params, summed loss).

    batch: 'center' [B], 'weight' [B] (0 for padding) and, for skip-gram,
    'context' [B]; for CBOW, 'context' [B, C] and 'mask' [B, C].
    """
    embed, output = params["embed"], params["output"]
    cbow = settings.architecture == "cbow"
    predicted = batch["center"] if cbow else batch["context"]
    targets, labels, weights = output_targets(key, predicted, tables, settings)
    weights = weights * batch["weight"][:, None]
    if cbow:
        mask = batch["mask"]
        count = jnp.maximum(mask.sum(axis=1, keepdims=True), 1.0)
        hidden = jnp.einsum("bcd,bc->bd", _rows(embed, batch["context"]), mask) / count
    else:
        hidden = _rows(embed, batch["center"])
    loss, (grad_hidden, grad_outputs) = jax.value_and_grad(logistic_loss, (0, 1))(
        hidden, _rows(output, targets), labels, weights
    )
    output = output.at[targets].add(-learning_rate * grad_outputs, mode=_IN_BOUNDS)
    if cbow:  # every context word gets the hidden layer's full gradient (word2vec.c)
        embed = embed.at[batch["context"]].add(
            -learning_rate * grad_hidden[:, None, :] * mask[..., None], mode=_IN_BOUNDS
        )
    else:
        embed = embed.at[batch["center"]].add(-learning_rate * grad_hidden, mode=_IN_BOUNDS)
    return {"embed": embed, "output": output}, loss


def make_train_call(settings: Settings) -> Callable:
    """call(params, batches [S, B, ...], learning_rates [S], key, first_step, tables)
    -> (params, summed loss): S SGD steps scanned on the device."""

    def call(params, batches, learning_rates, key, first_step, tables):
        def body(params, inputs):
            batch, learning_rate, step = inputs
            return sgd_step(params, batch, learning_rate, jax.random.fold_in(key, step), tables, settings)

        steps = first_step + jnp.arange(learning_rates.shape[0])
        params, losses = jax.lax.scan(body, params, (batches, learning_rates, steps))
        return params, losses.sum()

    return call


# --- the trainer -----------------------------------------------------------------------------


@dataclasses.dataclass
class TrainStats:
    words: int = 0  # in-vocabulary corpus words processed (all epochs, before subsampling)
    examples: int = 0  # training examples (pairs for skip-gram, centre words for CBOW)
    seconds: float = 0.0  # training wall time, compilation excluded
    compile_seconds: float = 0.0
    loss: float = float("nan")  # mean loss per example over the last epoch

    @property
    def words_per_second(self) -> float:
        return self.words / self.seconds if self.seconds else 0.0


_COMPILED: dict[tuple, Any] = {}  # compiled training calls by Word2Vec._program()


class Word2Vec:
    """Trains word vectors for a fixed vocabulary.

    vocab = Vocab.build(corpus, min_count=5)
    model = Word2Vec(vocab, Settings(architecture='skipgram'))
    stats = model.train(corpus)
    vectors = model.vectors()          # seqjax.embeddings.WordVectors
    """

    def __init__(self, vocab: Vocab, settings: Settings = Settings(), mesh: jax.sharding.Mesh | None = None):
        self.vocab = vocab
        self.settings = settings
        self.mesh = mesh or parallel.make_mesh()
        parallel.check_batch_size(settings.batch_size, self.mesh)
        self.keep = keep_probabilities(vocab.counts, settings.sample, settings.subsample_formula)
        replicated = parallel.replicated(self.mesh)
        self.params = jax.device_put(init_params(len(vocab), settings), replicated)
        self.tables = jax.device_put(self._tables(), replicated)
        self.step = 0
        self._rng = np.random.default_rng(settings.seed)
        self._key = jax.random.key(settings.seed)
        self._cache: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._compiled = None

    def _tables(self) -> dict[str, np.ndarray]:
        if self.settings.objective == "hierarchical_softmax":
            points, codes, lengths = huffman_codes(self.vocab.counts)
            return {"points": points, "codes": codes, "lengths": lengths}
        noise = noise_distribution(self.vocab.counts, self.settings.ns_exponent)
        return {"cdf": np.cumsum(noise).astype(np.float32)}

    # -- host side --
    def chunks(self, corpus: Iterable[Sentence]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids [N], sentence number [N]) of ~chunk_words words at a time; long
        sentences are cut at max_sentence_length words."""
        limit, ids, lengths, words = self.settings.max_sentence_length, [], [], 0
        for sentence in corpus:
            encoded = self.vocab.encode(sentence)
            for start in range(0, len(encoded), limit):
                piece = encoded[start : start + limit]
                ids.append(piece)
                lengths.append(len(piece))
                words += len(piece)
            if words >= self.settings.chunk_words:
                yield _flatten(ids, lengths)
                ids, lengths, words = [], [], 0
        if words:
            yield _flatten(ids, lengths)

    def examples(self, ids: np.ndarray, sentence: np.ndarray) -> dict[str, np.ndarray]:
        """Subsampled, windowed and shuffled training examples of one chunk."""
        kept = subsample(ids, self.keep, self._rng)
        make = skipgram_examples if self.settings.architecture == "skipgram" else cbow_examples
        examples = make(ids[kept], sentence[kept], self.settings.window, self._rng)
        order = self._rng.permutation(len(examples["center"]))
        examples = {name: array[order] for name, array in examples.items()}
        examples["weight"] = np.ones(len(order), np.float32)
        return examples

    def _epoch_chunks(self, corpus: Iterable[Sentence], epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The corpus as id chunks; with cache_corpus the first epoch keeps them
        so later epochs skip tokenising (4 bytes per word per array)."""
        if not self.settings.cache_corpus:
            yield from self.chunks(corpus)
        elif epoch == 0 or self._cache is None:
            self._cache = []
            for chunk in self.chunks(corpus):
                self._cache.append(chunk)
                yield chunk
        else:
            yield from self._cache

    # -- device side --
    def _batch_shapes(self) -> dict[str, jax.ShapeDtypeStruct]:
        s, b, c = self.settings.steps_per_call, self.settings.batch_size, 2 * self.settings.window
        sharded = parallel.batch_sharded(self.mesh, batch_axis=1)
        shapes = {"center": ((s, b), jnp.int32), "weight": ((s, b), jnp.float32)}
        if self.settings.architecture == "cbow":
            shapes.update(context=((s, b, c), jnp.int32), mask=((s, b, c), jnp.float32))
        else:
            shapes["context"] = ((s, b), jnp.int32)
        return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharded) for k, (shape, dtype) in shapes.items()}

    def _program(self) -> tuple:
        """What the compiled training call depends on: the settings that shape
        the computation, the array shapes and the devices."""
        s = self.settings
        shapes = jax.tree.map(lambda x: (x.shape, str(x.dtype)), (self.params, self.tables))
        return (
            s.architecture,
            s.objective,
            s.negative,
            s.window,
            s.batch_size,
            s.steps_per_call,
            str(shapes),
            tuple(d.id for d in self.mesh.devices.flat),
            self.mesh.axis_names,
        )

    def compile(self) -> float:
        """Compiles the training call ahead of time (once per process for the
        same program, see `_program`); returns the seconds it took."""
        if self._compiled is not None:
            return 0.0
        start = time.perf_counter()
        key = self._program()
        if key not in _COMPILED:
            replicated = parallel.replicated(self.mesh)
            sharded = parallel.batch_sharded(self.mesh, batch_axis=1)
            jitted = jax.jit(
                make_train_call(self.settings),
                donate_argnums=0,
                in_shardings=(
                    replicated,
                    {k: sharded for k in self._batch_shapes()},
                    replicated,
                    replicated,
                    replicated,
                    replicated,
                ),
                out_shardings=(replicated, replicated),
            )

            def spec(tree):
                return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), tree)

            _COMPILED[key] = jitted.lower(
                spec(self.params),
                self._batch_shapes(),
                jax.ShapeDtypeStruct((self.settings.steps_per_call,), jnp.float32, sharding=replicated),
                jax.ShapeDtypeStruct((), self._key.dtype, sharding=replicated),
                jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated),
                spec(self.tables),
            ).compile()
        self._compiled = _COMPILED[key]
        return time.perf_counter() - start

    def _run(self, group: dict[str, np.ndarray], learning_rates: np.ndarray) -> jax.Array:
        s, b = self.settings.steps_per_call, self.settings.batch_size
        host = {k: v.reshape((s, b) + v.shape[1:]) for k, v in group.items()}
        batches = parallel.shard_batch(host, self.mesh, batch_axis=1)
        self.params, loss = self._compiled(
            self.params, batches, learning_rates.astype(np.float32), self._key, np.int32(self.step), self.tables
        )
        self.step += s
        return loss

    def learning_rate(self, progress: np.ndarray) -> np.ndarray:
        """Linear decay with the fraction of all epochs' words processed."""
        start, end = self.settings.initial_learning_rate, self.settings.min_learning_rate
        return np.maximum(start - (start - end) * np.clip(progress, 0.0, 1.0), end)

    def train(self, corpus: Iterable[Sentence], progress: bool = False, log_every_s: float = 30.0) -> TrainStats:
        """Trains `settings.epochs` passes over `corpus`; shows words/s (tqdm,
        or a log line every `log_every_s` seconds when progress is off)."""
        settings, stats = self.settings, TrainStats()
        stats.compile_seconds = self.compile()
        group_size = settings.steps_per_call * settings.batch_size
        total = settings.epochs * self.vocab.total
        buffer = _ExampleBuffer(group_size)
        bar = tqdm.tqdm(total=total, unit="word", unit_scale=True, disable=not progress, smoothing=0.1)
        start = last_log = time.perf_counter()
        losses = []
        for epoch in range(settings.epochs):
            losses, epoch_examples = [], 0
            for ids, sentence in self._epoch_chunks(corpus, epoch):
                examples = self.examples(ids, sentence)
                epoch_examples += len(examples["center"])
                buffer.add(examples)
                groups = buffer.full_groups()
                before, stats.words = stats.words, stats.words + len(ids)
                for j, group in enumerate(groups):
                    fraction = (
                        before
                        + (stats.words - before)
                        * (j + np.arange(settings.steps_per_call) / settings.steps_per_call)
                        / len(groups)
                    ) / total
                    losses.append(self._run(group, self.learning_rate(fraction)))
                bar.update(len(ids))
                now = time.perf_counter()
                if not progress and now - last_log >= log_every_s:
                    last_log = now
                    logging.info(
                        "word2vec epoch %d: %d/%d words, %.0f words/s",
                        epoch + 1,
                        stats.words,
                        total,
                        stats.words / (now - start),
                    )
            if epoch == settings.epochs - 1:
                tail = buffer.flush()
                if tail is not None:
                    losses.append(self._run(tail, self.learning_rate(np.ones(settings.steps_per_call))))
            stats.examples += epoch_examples
            stats.loss = float(sum(jax.device_get(losses))) / max(epoch_examples, 1)
            if not np.isfinite(stats.loss):
                raise FloatingPointError(
                    f"word2vec diverged in epoch {epoch + 1} (loss {stats.loss}): a batch sums the updates of "
                    f"every occurrence of a word, which overshoots for frequent words when batches are large; "
                    f"lower batch_size (now {settings.batch_size}) or the learning rate"
                )
        jax.block_until_ready(self.params)
        stats.seconds = time.perf_counter() - start
        bar.close()
        logging.info(
            "word2vec: %d words in %.1f s, %.0f words/s (compile %.1f s)",
            stats.words,
            stats.seconds,
            stats.words_per_second,
            stats.compile_seconds,
        )
        return stats

    def vectors(self, which: str = "embed"):
        """The trained input vectors ('embed', what word2vec exports) as `seqjax.embeddings.WordVectors`."""
        from seqjax.embeddings import WordVectors

        return WordVectors(
            list(self.vocab.words), np.asarray(jax.device_get(self.params[which])), counts=self.vocab.counts
        )


def _flatten(ids: list[np.ndarray], lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate(ids), np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)


class _ExampleBuffer:
    """Collects examples and hands them out in groups of exactly `size`
    (leftovers wait for the next chunk; the last group is padded with weight 0)."""

    def __init__(self, size: int):
        self.size = size
        self.pending: list[dict[str, np.ndarray]] = []
        self.count = 0

    def add(self, examples: dict[str, np.ndarray]) -> None:
        self.pending.append(examples)
        self.count += len(examples["weight"])

    def full_groups(self) -> list[dict[str, np.ndarray]]:
        if self.count < self.size:
            return []
        merged = {k: np.concatenate([p[k] for p in self.pending]) for k in self.pending[0]}
        n = self.count // self.size * self.size
        groups = [{k: v[i : i + self.size] for k, v in merged.items()} for i in range(0, n, self.size)]
        rest = {k: v[n:] for k, v in merged.items()}
        self.pending, self.count = [rest], self.count - n
        return groups

    def flush(self) -> dict[str, np.ndarray] | None:
        if not self.count:
            return None
        merged = {k: np.concatenate([p[k] for p in self.pending]) for k in self.pending[0]}
        pad = self.size - self.count
        padded = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) for k, v in merged.items()}
        self.pending, self.count = [], 0
        return padded


def train(
    corpus: Iterable[Sentence], settings: Settings = Settings(), mesh: Any = None, progress: bool = False
) -> tuple[Word2Vec, TrainStats]:
    """Builds the vocabulary from `corpus` and trains; returns (model, stats)."""
    vocab = Vocab.build(corpus, settings.min_count, settings.max_vocab)
    model = Word2Vec(vocab, settings, mesh)
    return model, model.train(corpus, progress=progress)


# --- config ----------------------------------------------------------------------------------

MODEL_KEYS = (
    "architecture",
    "dim",
    "window",
    "objective",
    "negative",
    "ns_exponent",
    "sample",
    "subsample_formula",
    "min_count",
    "max_vocab",
    "init_range",
)
TRAIN_KEYS = (
    "epochs",
    "batch_size",
    "steps_per_call",
    "learning_rate",
    "min_learning_rate",
    "chunk_words",
    "max_sentence_length",
    "cache_corpus",
    "progress",
)
DATA_KEYS = ("files", "source", "split", "feature", "lower")


def _check_section(section, where: str, allowed: Sequence[str]) -> None:
    unknown = sorted(set(section.keys()) - set(allowed))
    if unknown:
        raise ValueError(f"unknown config key {where}.{unknown[0]}; known keys: {', '.join(allowed)}")


def settings_from_config(config) -> Settings:
    """Settings from `config.model`, `config.train` and `config.seed` (configs/word2vec.py)."""
    _check_section(config.model, "config.model", MODEL_KEYS)
    _check_section(config.train, "config.train", TRAIN_KEYS)
    fields = {k: config.model[k] for k in MODEL_KEYS if k in config.model}
    fields.update({k: config.train[k] for k in TRAIN_KEYS if k in config.train and k != "progress"})
    return Settings(seed=config.get("seed", 0), **fields)


def corpus_from_config(data) -> Corpus:
    """The corpus `config.data` describes: `files` (plain or .gz text, a list
    or comma-separated), else `source` (`seqjax.data.sources.load_source`
    keywords: a TFDS catalog name or a local kind) read at `split`, text in `feature`."""
    _check_section(data, "config.data", DATA_KEYS)
    tokenize = {"lower": data.get("lower", True)}
    files = data.get("files", "")
    if isinstance(files, str):
        files = [f.strip() for f in files.split(",") if f.strip()]
    if files:
        return text_file_corpus(list(files), **tokenize)
    source = data.get("source")
    if not source or not source.get("name"):
        raise ValueError("config.data needs files (text files) or source.name (a dataset for load_source)")
    from seqjax.data.sources import load_source

    options = {k: v for k, v in dict(source).items() if v not in ("", None)}
    return source_corpus(
        load_source(split=data.get("split", "train"), **options), data.get("feature", "text"), **tokenize
    )


# --- vectors for a training run ---------------------------------------------------------------

# config.model.pretrained_embeddings of a run whose embedding starts from word2vec
# vectors trained on its own training words (seqjax.training).
FROM_TRAINING_WORDS = "word2vec"
RUN_KEYS = tuple(k for k in MODEL_KEYS + TRAIN_KEYS if k not in ("dim", "progress"))


def settings_for_run(model_config, seed: int) -> Settings:
    """The word2vec settings of a run with pretrained_embeddings='word2vec':
    `config.model.word2vec` (any key of RUN_KEYS; the rest keep Settings'
    defaults), dim = config.model.embed_size and the run's seed."""
    section = model_config.get("word2vec") or {}
    unknown = sorted(set(section.keys()) - set(RUN_KEYS))
    if unknown:
        raise ValueError(
            f"unknown config key config.model.word2vec.{unknown[0]}; known keys: {', '.join(RUN_KEYS)} "
            "(the vector size is config.model.embed_size, the seed config.seed)"
        )
    return Settings(dim=model_config.get("embed_size", 64), seed=seed, **dict(section))


def vectors_for_run(sentences: Callable[[], Sequence[Sentence]], settings: Settings, path: str | None):
    """Word vectors trained on `sentences()` (a run's training words), kept
    in `path` (word2vec binary: float32, exact). A later start of the run
    that finds `path` reads it instead of training again, so a run killed
    before its first checkpoint starts from the same vectors. Trains on one
    local device: the corpus of a tagging or classification run is small,
    and any batch size fits. Returns `seqjax.embeddings.WordVectors`."""
    from seqjax.embeddings import load_vectors

    if path is not None and os.path.exists(path):
        logging.info("word2vec: the vectors an earlier start of this run trained, %s", path)
        return load_vectors(path, "word2vec_binary")
    corpus = sentences()
    model, stats = train(corpus, settings, mesh=parallel.make_mesh(jax.local_devices()[:1]))
    logging.info("word2vec: %d words, vocabulary %d, trained in %.1f s", stats.words, len(model.vocab), stats.seconds)
    vectors = model.vectors()
    if path is not None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        vectors.save(path, "word2vec_binary")  # atomic: a killed write is never read as vectors
    return vectors
