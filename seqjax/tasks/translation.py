"""Sequence generation tasks that need no data: synthetic translation and
synthetic captioning, with exact match and corpus BLEU.

  translation  kind='numbers': digits -> English words
                   "40,017" -> "forty thousand seventeen"
               kind='dates':   a date in one of several formats -> ISO 8601
                   "thursday, march 3, 1994" / "03/03/1994" -> "1994-03-03"
  captioning   a feature vector describing a scene of coloured shapes -> a
               caption ("two red circles and one blue star"); the
               one-to-many, image-captioning shape

Every example is a pure function of (seed, split, index). Train and
evaluation examples come from disjoint pools (a hash of the target string
picks the pool; numbers below 100, the vocabulary itself, are in both), so
eval/test measure generalisation to numbers, dates and scenes never seen in
training. Sources are characters; targets are words (numbers, captions) or
characters (dates).

Batches: {'inputs': source ids [B, S] (or features [B, F] for captioning),
'lengths' [B], 'decoder_inputs' [B, T] (<sos> + target[:-1]), 'targets'
[B, T] (target + <eos>, then <pad>), 'target_lengths' [B] (tokens including
<eos>), 'teacher_forcing_ratio' [B] (scheduled sampling, see
seqjax.nn.seq2seq.teacher_forcing_ratio; always 1 outside the train split)}.

Special ids follow seqjax.data.tokenizers: <pad>=0, <unk>=1, <sos>=2, <eos>=3.
"""

from __future__ import annotations

import abc
import datetime
import zlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from seqjax.data.tokenizers.base import EOS_ID, PAD_ID, SOS_ID, SPECIAL_TOKENS, UNK_ID
from seqjax.nn import seq2seq
from seqjax.nn.encoder_decoder import EncoderDecoder
from seqjax.tasks.base import SPLITS, GeneratedTask

Batch = dict[str, np.ndarray]
HELD_OUT_BUCKETS = 10  # 1 in 10 sentences is held out for eval/test

ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
SCALES = ["", "thousand", "million", "billion"]
MONTHS = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
]
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
DATE_FORMATS = ("d month yyyy", "month d, yyyy", "mon d yyyy", "dd.mm.yyyy", "mm/dd/yyyy", "weekday, month d, yyyy")
FIRST_DATE, NUM_DAYS = datetime.date(1950, 1, 1), 36525  # 1950-01-01 .. 2049-12-31
SOURCE_CHARS = "0123456789abcdefghijklmnopqrstuvwxyz ,./-"
COLORS = ["red", "green", "blue", "yellow"]
SHAPES = ["circle", "square", "triangle", "star"]
KINDS = ("numbers", "dates")


# ----------------------------------------------------------------------------- text generators


def number_to_words(n: int) -> str:
    """American English words for 0 <= n < 10**12, without 'and' or hyphens
    ("forty thousand seventeen")."""
    if not 0 <= n < 10**12:
        raise ValueError(f"number_to_words covers 0 <= n < 10**12, got {n}")
    if n == 0:
        return "zero"
    words = []
    for scale in range(len(SCALES) - 1, -1, -1):
        group = n // 1000**scale % 1000
        if group:
            words += _hundreds(group) + ([SCALES[scale]] if scale else [])
    return " ".join(words)


def _hundreds(n: int) -> list[str]:
    """Words for 1 <= n <= 999."""
    words = [ONES[n // 100], "hundred"] if n >= 100 else []
    rest = n % 100
    if rest >= 20:
        words += [TENS[rest // 10]] + ([ONES[rest % 10]] if rest % 10 else [])
    elif rest:
        words.append(ONES[rest])
    return words


def write_number(n: int, commas: bool) -> str:
    return f"{n:,}" if commas else str(n)


def write_date(date: datetime.date, style: str) -> str:
    """`date` in one of DATE_FORMATS (lower case, English names)."""
    month, day, year = MONTHS[date.month - 1], date.day, date.year
    renderings = {
        "d month yyyy": f"{day} {month} {year}",
        "month d, yyyy": f"{month} {day}, {year}",
        "mon d yyyy": f"{month[:3]} {day} {year}",
        "dd.mm.yyyy": f"{day:02d}.{date.month:02d}.{year}",
        "mm/dd/yyyy": f"{date.month:02d}/{day:02d}/{year}",
        "weekday, month d, yyyy": f"{WEEKDAYS[date.weekday()]}, {month} {day}, {year}",
    }
    return renderings[style]


def describe_scene(groups: Sequence[tuple[int, int, int]]) -> str:
    """Caption of (count, color, shape) groups, listed by shape then color."""
    phrases = []
    for count, color, shape in sorted(groups, key=lambda g: (g[2], g[1])):
        phrases.append(f"{ONES[count]} {COLORS[color]} {SHAPES[shape]}{'s' if count > 1 else ''}")
    return " and ".join(phrases)


def is_held_out(text: str) -> bool:
    """Whether `text` belongs to the eval/test pool (never trained on)."""
    return zlib.crc32(text.encode()) % HELD_OUT_BUCKETS == 0


# ----------------------------------------------------------------------------- vocabularies and BLEU


class Vocabulary:
    """A fixed token list behind the special tokens <pad> <unk> <sos> <eos> (ids 0-3)."""

    def __init__(self, tokens: Sequence[str]):
        self.tokens = list(SPECIAL_TOKENS) + list(tokens)
        self.index = {token: i for i, token in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise ValueError("vocabulary tokens must be distinct")

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Sequence[str]) -> tuple[list[int], int]:
        """(ids, how many tokens were unknown and became <unk>)."""
        ids = [self.index.get(token, UNK_ID) for token in tokens]
        return ids, sum(i == UNK_ID for i in ids)

    def decode(self, ids: Sequence[int]) -> list[str]:
        """Tokens up to the first <eos>; <pad> and <sos> are dropped."""
        tokens = []
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            if not 0 <= i < len(self.tokens):
                raise ValueError(f"id {i} is outside the vocabulary [0, {len(self.tokens)})")
            if i not in (PAD_ID, SOS_ID):
                tokens.append(self.tokens[i])
        return tokens


def corpus_bleu(
    hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "13a", lowercase: bool = False
) -> tuple[float, str]:
    """(corpus BLEU, sacrebleu signature) of detokenised hypotheses against
    one reference each; `lowercase` scores case-insensitively (the signature
    then says case:lc)."""
    from sacrebleu.metrics import BLEU

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    bleu = BLEU(tokenize=tokenize, lowercase=lowercase)
    score = bleu.corpus_score(list(hypotheses), [list(references)])
    return float(score.score), str(bleu.get_signature())


# ----------------------------------------------------------------------------- tasks


def shift_right(targets: np.ndarray) -> np.ndarray:
    """Teacher-forced decoder inputs [B, T] of targets [B, T] (ids + <eos> +
    <pad>): <sos> + targets[:, :-1], with <eos> (the last valid target,
    which the decoder never reads as input) replaced by <pad>."""
    targets = np.asarray(targets, np.int32)
    shifted = np.concatenate([np.full((len(targets), 1), SOS_ID, np.int32), targets[:, :-1]], axis=1)
    return np.where(shifted == EOS_ID, PAD_ID, shifted)


class GenerationObjective(abc.ABC):
    """The target side every sequence generation task shares (a mixin for
    `Task` subclasses, placed before them): teacher forcing configuration,
    masked cross-entropy, token accuracy, teacher-forced exact match,
    perplexity, and decoding at the end of training.

    Subclasses set `target_vocab_size`, `max_target_len` (tokens without
    <eos>), `bleu_tokenize` / `bleu_lowercase` (how sacrebleu scores their
    detokenised text), call `init_generation(config)`, and implement
    `detokenize` and `reference_batches` (what `evaluate_decoding` decodes).
    Batches may carry 'weights' [B] (0 for a loader's filler rows).
    """

    head = "per_step"
    bleu_tokenize = "13a"
    bleu_lowercase = False
    target_vocab_size: int  # decoder output size (models.py builds decoders with it)
    max_target_len: int  # target tokens without <eos>
    tf_ratio: float = 1.0  # teacher forcing ratio (< 1: scheduled sampling, RNN decoders only)
    config_keys = ("teacher_forcing_ratio", "teacher_forcing_schedule", "teacher_forcing_decay_steps", "decode_test")

    def init_generation(self, config) -> None:
        """Reads the config keys every generation task shares: teacher forcing,
        and `decode_test` (greedy-decode the test split at the end of training)."""
        self.tf_ratio = config.get("teacher_forcing_ratio", 1.0)
        self.tf_schedule = config.get("teacher_forcing_schedule", "constant")
        self.tf_decay_steps = config.get("teacher_forcing_decay_steps", 1000)
        seq2seq.teacher_forcing_ratio(0, self.tf_schedule, self.tf_ratio, self.tf_decay_steps)  # validates
        self.decode_test = config.get("decode_test", False)
        if not isinstance(self.decode_test, bool):
            raise ValueError(f"config.task.decode_test must be True or False, got {self.decode_test!r}")

    def final_metrics(self, model, params, *, batch_size: int, num_batches: int, seed: int) -> dict[str, float]:
        """With config.task.decode_test: {'bleu', 'greedy_exact_match'} of
        greedy decoding on the test split (the batches the test evaluation
        reads), which the trainer adds to final_metrics.json as test_*;
        else {}. Unlike the teacher-forced metrics, these score the model's
        own output, so sweeps can tabulate BLEU."""
        if not self.decode_test:
            return {}
        result = evaluate_decoding(
            self, model, params, "test", num_batches=num_batches, batch_size=batch_size, seed=seed
        )
        return {"bleu": result["bleu"], "greedy_exact_match": result["exact_match"]}

    @property
    def target_len(self) -> int:
        """T, the longest padded target (room for <eos>); also how many
        tokens decoding generates."""
        return self.max_target_len + 1

    def tf_ratio_at(self, step: int) -> float:
        return seq2seq.teacher_forcing_ratio(step, self.tf_schedule, self.tf_ratio, self.tf_decay_steps)

    def metric_sums(self, predictions, batch) -> dict[str, tuple]:
        """{name: (sum, count)} over valid target steps (loss, token accuracy)
        and rows (exact match); predictions [B, T, V] logits. Rows with
        weight 0 count nowhere. `exact_match` is the fraction of rows whose
        every teacher-forced argmax is right, which is exactly the fraction
        that greedy decoding reproduces (by induction over the steps, greedy
        then reads the true prefix)."""
        targets = batch["targets"]
        rows = batch["weights"] > 0 if "weights" in batch else jnp.ones(targets.shape[:1], bool)
        valid = (jnp.arange(targets.shape[1])[None, :] < batch["target_lengths"][:, None]) & rows[:, None]
        xent = optax.softmax_cross_entropy_with_integer_labels(predictions.astype(jnp.float32), targets)
        correct = (predictions.argmax(-1) == targets) | ~valid
        tokens = valid.sum()
        return {
            "loss": ((xent * valid).sum(), tokens),
            "token_accuracy": ((correct & valid).sum(), tokens),
            "exact_match": ((correct.all(axis=1) & rows).sum(), rows.sum()),
        }

    def finalize_metrics(self, metrics):
        return dict(metrics, perplexity=float(np.exp(metrics["loss"])))

    @abc.abstractmethod
    def detokenize(self, ids) -> list[str]:
        """Target-side texts of the rows of an id array [B, T] (cut at <eos>)."""

    @abc.abstractmethod
    def reference_batches(self, split: str, batch_size: int, num_batches: int = 0, seed: int = 0):
        """Yields (batch, source texts, reference texts) of `split` for
        decoding; the texts cover the batch's real rows (its first rows)."""


class SequenceGenerationTask(GenerationObjective, GeneratedTask):
    """Generated (source, target text) pairs: batches as a pure function of
    (seed, split, index), target vocabulary, detokenisation.

    Subclasses set `target_vocab`, `target_separator` (how target tokens join
    into text), `bleu_tokenize`, `max_source_len`, `max_target_len` (tokens
    without <eos>) and implement `sample(rng, held_out) -> (source, target)`
    and `encode_sources(sources) -> (inputs, lengths)`.
    """

    target_separator = " "

    def __init__(self, config):
        super().__init__(config)
        self.target_vocab_size = self.output_size = len(self.target_vocab)
        self.init_generation(config)

    def sample(self, rng: np.random.Generator, held_out: bool) -> tuple[Any, str]:
        raise NotImplementedError  # abstract: each task draws its own (source, target) pairs

    def encode_sources(self, sources: Sequence[Any]) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError  # abstract: token ids or features, per task

    def source_texts(self, inputs: np.ndarray) -> list[str]:
        """Printable sources of a batch's inputs (for decoding reports)."""
        return ["<features>"] * len(inputs)

    def pairs(self, rng: np.random.Generator, count: int, held_out: bool) -> list[tuple[Any, str]]:
        return [self.sample(rng, held_out) for _ in range(count)]

    def make_batch(self, rng, batch_size):
        """A training batch (the train pool, teacher forcing ratio of step 0)."""
        return self.encode_pairs(self.pairs(rng, batch_size, held_out=False), self.tf_ratio_at(0))

    def batch(self, split: str, index: int, batch_size: int, seed: int) -> Batch:
        """Batch `index` of `split`; eval and test draw from the held-out pool
        and carry teacher forcing ratio 1."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        rng = np.random.default_rng([seed, zlib.crc32(split.encode()), index])
        train = split == "train"
        batch = self.encode_pairs(
            self.pairs(rng, batch_size, held_out=not train), self.tf_ratio_at(index) if train else 1.0
        )
        self.validate_batch(batch)
        return batch

    def reference_batches(self, split: str, batch_size: int, num_batches: int = 0, seed: int = 0):
        """Yields (batch, source texts, reference texts) for `num_batches`
        (0: 8) generated batches of `split`."""
        for index in range(num_batches or 8):
            batch = self.batch(split, index, batch_size, seed)
            yield batch, self.source_texts(batch["inputs"]), self.detokenize(batch["targets"])

    def encode_pairs(self, pairs: Sequence[tuple[Any, str]], ratio: float) -> Batch:
        inputs, lengths = self.encode_sources([source for source, _ in pairs])
        targets, target_lengths = self.encode_targets([target for _, target in pairs])
        batch = {
            "inputs": inputs,
            "decoder_inputs": shift_right(targets),
            "targets": targets,
            "target_lengths": target_lengths,
            "teacher_forcing_ratio": np.full((len(pairs),), ratio, np.float32),
        }
        if lengths is not None:
            batch["lengths"] = lengths
        return batch

    def encode_targets(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Target texts -> (ids + <eos> padded to [B, T], lengths [B] including <eos>)."""
        targets = np.full((len(texts), self.target_len), PAD_ID, np.int32)
        lengths = np.zeros(len(texts), np.int32)
        for row, text in enumerate(texts):
            ids, unknown = self.target_vocab.encode(self.split_target(text))
            if unknown or len(ids) > self.max_target_len:
                raise ValueError(f"target {text!r} does not fit the target vocabulary / length {self.max_target_len}")
            targets[row, : len(ids)] = ids
            targets[row, len(ids)] = EOS_ID
            lengths[row] = len(ids) + 1
        return targets, lengths

    def split_target(self, text: str) -> list[str]:
        return text.split(self.target_separator) if self.target_separator else list(text)

    def detokenize(self, ids) -> list[str]:
        """Target-side texts of the rows of an id array [B, T] (cut at <eos>)."""
        return [self.target_separator.join(self.target_vocab.decode(row)) for row in np.asarray(ids)]

    def validate_batch(self, batch):
        super().validate_batch(batch)
        for name in ("decoder_inputs", "targets"):
            ids = batch[name]
            if ids.min(initial=0) < 0 or ids.max(initial=0) >= self.target_vocab_size:
                raise ValueError(f"{name}: token id out of range [0, {self.target_vocab_size})")

    def texts(self, split: str, count: int, seed: int) -> list[tuple[Any, str]]:
        """`count` (source, target) pairs of `split`, as in its batches."""
        rng = np.random.default_rng([seed, zlib.crc32(split.encode()), 0])
        return self.pairs(rng, count, held_out=split != "train")


class TranslationTask(SequenceGenerationTask):
    """Synthetic translation: kind 'numbers' (digits -> words) or 'dates'
    (any of DATE_FORMATS -> yyyy-mm-dd), character-level sources.

    Config: kind, max_digits (numbers: 1 .. 12), plus the teacher forcing
    keys of SequenceGenerationTask.
    """

    config_keys = SequenceGenerationTask.config_keys + ("kind", "max_digits")

    def __init__(self, config):
        self.kind = config.get("kind", "numbers")
        if self.kind not in KINDS:
            raise ValueError(f"config.task.kind must be one of {KINDS}, got {self.kind!r}")
        self.source_vocab = Vocabulary(SOURCE_CHARS)
        self.vocab_size = len(self.source_vocab)
        if self.kind == "numbers":
            self.max_digits = config.get("max_digits", 6)
            if not 1 <= self.max_digits <= 12:
                raise ValueError(f"config.task.max_digits must lie in [1, 12], got {self.max_digits}")
            self.target_vocab = Vocabulary(ONES + TENS[2:] + ["hundred"] + SCALES[1:])
            largest = 10**self.max_digits - 1  # the most words and characters
            self.max_target_len = len(number_to_words(largest).split())
            self.max_source_len = len(write_number(largest, commas=True))
        else:
            self.target_vocab = Vocabulary("0123456789-")
            self.target_separator, self.bleu_tokenize = "", "char"
            self.max_target_len = len("yyyy-mm-dd")
            longest = (FIRST_DATE + datetime.timedelta(days=d) for d in range(366 * 4))
            self.max_source_len = max(len(write_date(date, style)) for date in longest for style in DATE_FORMATS)
        super().__init__(config)

    def sample(self, rng, held_out):
        """One (source, target) pair from the train or the held-out pool.
        Numbers below 100 are in both: they are the vocabulary itself (a
        held-out "zero" would be a word never seen in training)."""
        while True:
            source, target = self._draw(rng)
            shared = self.kind == "numbers" and int(source.replace(",", "")) < 100
            if shared or is_held_out(target) == held_out:
                return source, target

    def _draw(self, rng) -> tuple[str, str]:
        if self.kind == "numbers":
            digits = int(rng.integers(1, self.max_digits + 1))
            n = int(rng.integers(0 if digits == 1 else 10 ** (digits - 1), 10**digits))
            return write_number(n, commas=bool(rng.integers(2))), number_to_words(n)
        date = FIRST_DATE + datetime.timedelta(days=int(rng.integers(NUM_DAYS)))
        return write_date(date, DATE_FORMATS[int(rng.integers(len(DATE_FORMATS)))]), date.isoformat()

    def encode_sources(self, sources: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        inputs, lengths, _ = self.encode_texts(sources)
        return inputs, lengths

    def token_strings(self, ids: Sequence[int], side: str = "source") -> list[str]:
        """One label per id (special tokens by name), e.g. for plot axes."""
        vocab = self.source_vocab if side == "source" else self.target_vocab
        return [vocab.tokens[int(i)] for i in ids]

    def source_texts(self, inputs):
        return ["".join(self.source_vocab.decode(row)) for row in np.asarray(inputs)]

    def encode_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, int]:
        """Source texts -> (ids [B, max_source_len], lengths [B], how many
        characters were unknown and became <unk>). Texts are lower-cased and
        stripped; an empty or too long text raises."""
        inputs = np.full((len(texts), self.max_source_len), PAD_ID, np.int32)
        lengths = np.zeros(len(texts), np.int32)
        unknown = 0
        for row, text in enumerate(texts):
            chars = list(text.strip().lower())
            if not chars:
                raise ValueError(f"source {row} is empty")
            if len(chars) > self.max_source_len:
                raise ValueError(
                    f"source {row} ({text!r}) has {len(chars)} characters; the task allows at most "
                    f"{self.max_source_len}"
                )
            ids, unknown_here = self.source_vocab.encode(chars)
            inputs[row, : len(ids)], lengths[row] = ids, len(ids)
            unknown += unknown_here
        return inputs, lengths, unknown


class CaptioningTask(SequenceGenerationTask):
    """One-to-many: describe a synthetic scene from a feature vector.

    A scene holds one or two groups of 1-4 identical shapes (4 colours x 4
    shapes). Its features [F] are a fixed random projection of the 16
    per-(colour, shape) counts plus Gaussian noise, a stand-in for an image
    encoder's output; the caption lists the groups ("two red circles and one
    blue star"). Held-out captions never appear in training, so eval/test
    measure compositional generalisation.

    Config: feature_size (F), noise (std of the added noise), plus the
    teacher forcing keys of SequenceGenerationTask.
    """

    vocab_size = 0
    config_keys = SequenceGenerationTask.config_keys + ("feature_size", "noise")

    def __init__(self, config):
        self.feature_size = config.get("feature_size", 32)
        self.noise = config.get("noise", 0.05)
        plural = [shape + "s" for shape in SHAPES]
        self.target_vocab = Vocabulary(ONES[1:5] + COLORS + SHAPES + plural + ["and"])
        self.max_target_len = 7  # "n color shapes and n color shapes"
        # Fixed across seeds and runs: the "image encoder" is part of the task.
        self.projection = np.random.default_rng(1234).normal(
            0, 1 / np.sqrt(len(COLORS) * len(SHAPES)), (len(COLORS) * len(SHAPES), self.feature_size)
        )
        super().__init__(config)

    def sample(self, rng, held_out):
        while True:
            groups = self._draw(rng)
            caption = describe_scene(groups)
            if is_held_out(caption) == held_out:
                counts = np.zeros((len(COLORS), len(SHAPES)), np.float32)
                for count, color, shape in groups:
                    counts[color, shape] = count
                features = counts.reshape(-1) @ self.projection + rng.normal(0, self.noise, self.feature_size)
                return features.astype(np.float32), caption

    def _draw(self, rng) -> list[tuple[int, int, int]]:
        kinds = rng.choice(len(COLORS) * len(SHAPES), size=int(rng.integers(1, 3)), replace=False)
        return [(int(rng.integers(1, 5)), int(k) // len(SHAPES), int(k) % len(SHAPES)) for k in kinds]

    def encode_sources(self, sources):
        return np.stack(sources).astype(np.float32), None


# ----------------------------------------------------------------------------- decoding evaluation


def generate(
    model: EncoderDecoder, params, inputs, lengths=None, *, max_len: int, beam_size: int = 0, alpha: float = 0.6
):
    """Token ids [B, max_len] from an encoder-decoder `model` (Seq2Seq,
    VectorToSequence, TransformerSeq2Seq, ...: its `incremental_decoder`):
    greedy when beam_size == 0, else the best beam-search hypothesis. Rows
    end with <eos> and <pad> after it (or are cut at max_len). jit-able."""
    from seqjax import decoding

    if beam_size < 0:
        raise ValueError(f"beam_size must be 0 (greedy) or >= 1, got {beam_size}")
    _check_encoder_decoder(model)
    start, tokens_to_logits = model.incremental_decoder({"params": params}, max_len)
    cache = start(inputs, lengths)
    first = jnp.full((jnp.shape(inputs)[0],), SOS_ID, jnp.int32)
    if beam_size == 0:
        tokens, _ = decoding.decode(tokens_to_logits, cache, first, max_len, eos_id=EOS_ID, pad_id=PAD_ID)
        return tokens
    result = decoding.beam_search(
        tokens_to_logits, cache, first, max_len, beam_size, eos_id=EOS_ID, pad_id=PAD_ID, alpha=alpha
    )
    return result.tokens[:, 0]


def _check_encoder_decoder(model) -> None:
    """A clear TypeError for a model without the decoding interface (say, a TransformerLM)."""
    if not isinstance(model, EncoderDecoder):
        raise TypeError(
            f"generation needs an encoder-decoder model (a seqjax.nn.encoder_decoder.EncoderDecoder), "
            f"got {type(model).__name__}"
        )


def evaluate_decoding(
    task: GenerationObjective,
    model,
    params,
    split: str = "test",
    *,
    num_batches: int = 0,
    batch_size: int = 64,
    seed: int = 0,
    beam_size: int = 0,
    alpha: float = 0.6,
) -> dict:
    """Decodes `split` (greedy or beam search) and scores it against the
    references. Generated tasks decode `num_batches` batches (0: 8); dataset
    tasks every example of the split (or the first `num_batches` batches).

    Returns {'exact_match', 'bleu', 'bleu_signature', 'sentences',
    'examples': [(source, reference, hypothesis), ...] (the first 5)}.
    """
    run = jax.jit(lambda p, x, n: generate(model, p, x, n, max_len=task.target_len, beam_size=beam_size, alpha=alpha))
    hypotheses, references, sources = [], [], []
    for batch, batch_sources, batch_references in task.reference_batches(split, batch_size, num_batches, seed):
        tokens = run(params, batch["inputs"], batch.get("lengths"))
        hypotheses += task.detokenize(jax.device_get(tokens))[: len(batch_references)]
        references += batch_references
        sources += batch_sources
    bleu, signature = corpus_bleu(hypotheses, references, task.bleu_tokenize, task.bleu_lowercase)
    exact = float(np.mean([h == r for h, r in zip(hypotheses, references)]))
    return {
        "exact_match": exact,
        "bleu": bleu,
        "bleu_signature": signature,
        "sentences": len(hypotheses),
        "examples": list(zip(sources, references, hypotheses))[:5],
    }


def source_attention(model: EncoderDecoder, params, inputs, lengths, outputs) -> jax.Array:
    """α [B, T, S]: how each output step attended over the source positions
    when the decoder emitted `outputs` [B, T] (e.g. `generate`'s tokens).

    The decoder is run teacher-forced on its own output, which reproduces the
    weights the search used (incremental and teacher-forced decoding share
    one step). RNN models give their attention α (Bahdanau / Luong); a
    TransformerSeq2Seq gives the cross-attention of its last decoder layer,
    averaged over heads (`model.source_attention`). Rows sum to 1 over each
    row's valid source; padded source positions get 0. A model without
    attention raises ValueError.
    """
    _check_encoder_decoder(model)
    decoder_inputs = jnp.asarray(shift_right(np.asarray(outputs)))
    return model.source_attention({"params": params}, inputs, lengths, decoder_inputs)
