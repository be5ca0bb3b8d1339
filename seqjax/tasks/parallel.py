"""Translation on real sentence pairs: a dataset-backed sequence generation task.

Reads a translation source named in `config.data.source` (`local/parallel`
file pairs such as Multi30k or Anki TSV files, or a TFDS translation dataset
such as 'wmt14_translate/de-en'), fits one tokenizer per side on the
training split (saved in the workdir as source_tokenizer.json and
target_tokenizer.json, reused when the run resumes or is decoded), and
batches through the grain loader with the batch layout of the synthetic
translation task (seqjax.tasks.translation):

  inputs [B, S] source ids       lengths [B]          weights [B] (0: filler rows)
  decoder_inputs [B, T]  <sos> + target[:-1]          targets [B, T] target + <eos> + <pad>
  target_lengths [B] (with <eos>)                     teacher_forcing_ratio [B]

S is padded to a multiple of `config.data.pad_to_multiple`, and so is T
(both capped at the limits), so a run compiles a handful of shapes.

Special ids are seqjax's: <pad>=0, <unk>=1, <sos>=2, <eos>=3 on both sides.

config.task keys (configs/multi30k.py documents each one):
  source_language, target_language   feature names ('' = the source's
                 supervised keys, e.g. ('de', 'en'))
  max_source_len, max_target_len     token limits (targets without <eos>)
  too_long       training pairs over a limit: 'filter' (drop them),
                 'truncate' (cut them) or 'error'. Evaluation pairs are
                 never dropped: they are truncated (or raise with 'error')
  teacher_forcing_ratio, teacher_forcing_schedule, teacher_forcing_decay_steps
config.data keys: source, splits, tokenizer ('word' | 'char' | 'subword'),
  vocab_size (per side; word: most frequent words, subword: pieces),
  lower, pad_to_multiple, fixed_length, worker_count.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import grain
import ml_collections
import numpy as np
from absl import logging

from seqjax.data import loader as loader_lib
from seqjax.data import tokenizers
from seqjax.data.tokenizers.base import EOS_ID, PAD_ID, SOS_ID, SPECIAL_TOKENS, UNK_ID
from seqjax.nn import seq2seq
from seqjax.tasks.dataset import TOKENIZERS, DatasetTask, as_text
from seqjax.tasks.translation import GenerationObjective, shift_right

SIDES = ("source", "target")
TOO_LONG = ("filter", "truncate", "error")
TOKENIZER_FILES = {side: f"{side}_tokenizer.json" for side in SIDES}
# Batching keys of config.data this task does not use: the limits are per side (config.task).
UNUSED_DATA_KEYS = (
    "max_len",
    "truncate",
    "bucket_boundaries",
    "tokenizer_path",
    "seq_len",
    "text_key",
    "label_key",
    "tags_key",
)

# Word-level tokens: punctuation other than apostrophes and hyphens inside
# words becomes a token of its own ("shirt." -> "shirt ."), so the vocabulary
# does not hold "shirt", "shirt." and "shirt," separately.
_PUNCTUATION = re.compile(r"([^\w\s'\-])")
_SPACE_BEFORE = re.compile(r" ([.,!?;:)\]}])")
_SPACE_AFTER = re.compile(r"([(\[{]) ")


def split_punctuation(text: str) -> str:
    """'A man, smiling.' -> 'A man ,  smiling . ' (word tokenizers split on spaces)."""
    return _PUNCTUATION.sub(r" \1 ", text)


def join_punctuation(text: str) -> str:
    """Inverse of `split_punctuation` on the word tokenizer's output: no
    space before closing punctuation or after opening brackets."""
    return _SPACE_AFTER.sub(r"\1", _SPACE_BEFORE.sub(r"\1", text))


def encode_side(tokenizer: tokenizers.Tokenizer, text: str) -> list[int]:
    """Ids of one sentence (no <sos> / <eos>)."""
    if isinstance(tokenizer, tokenizers.WordTokenizer):
        text = split_punctuation(text)
    return tokenizer.encode(text)


def decode_side(tokenizer: tokenizers.Tokenizer, ids: Sequence[int]) -> str:
    """Text of ids up to the first <eos> (control ids dropped)."""
    ids = [int(i) for i in ids]
    if EOS_ID in ids:
        ids = ids[: ids.index(EOS_ID)]
    text = tokenizer.decode(ids)
    return join_punctuation(text) if isinstance(tokenizer, tokenizers.WordTokenizer) else text


class EncodePair:
    """Preprocess: raw pair -> {'inputs': source ids [<= S], 'targets': ids +
    <eos> padded to the longest target [max_target_len + 1], 'target_lengths'}.
    A class (not a closure) so grain worker processes can pickle it.

    `too_long`: 'truncate' cuts a side to its limit, 'error' raises; an
    empty source becomes a single <unk> (so every example is scored).
    """

    def __init__(
        self,
        source_tokenizer,
        target_tokenizer,
        languages: tuple[str, str],
        max_source_len: int,
        max_target_len: int,
        too_long: str,
    ):
        self.source_tokenizer, self.target_tokenizer = source_tokenizer, target_tokenizer
        self.languages, self.too_long = languages, too_long
        self.max_source_len, self.max_target_len = max_source_len, max_target_len

    def __call__(self, example) -> dict[str, np.ndarray]:
        source, target = (as_text(example[lang]) for lang in self.languages)
        source_ids = self._fit(encode_side(self.source_tokenizer, source), self.max_source_len, "source", source)
        target_ids = self._fit(encode_side(self.target_tokenizer, target), self.max_target_len, "target", target)
        targets = np.full(self.max_target_len + 1, PAD_ID, np.int32)
        targets[: len(target_ids)] = target_ids
        targets[len(target_ids)] = EOS_ID
        return {
            "inputs": np.asarray(source_ids or [UNK_ID], np.int32),
            "targets": targets,
            "target_lengths": np.int32(len(target_ids) + 1),
        }

    def _fit(self, ids: list[int], limit: int, side: str, text: str) -> list[int]:
        if len(ids) > limit and self.too_long == "error":
            raise ValueError(
                f"a {side} sentence has {len(ids)} tokens, more than config.task.max_{side}_len="
                f"{limit} ({text[:80]!r}); raise the limit or set config.task.too_long to "
                f"'filter' or 'truncate'"
            )
        return ids[:limit]


class FinishBatch:
    """Collated batch -> the seq2seq layout: targets cut to the batch's
    longest target (rounded up to `pad_to_multiple`), teacher-forced decoder
    inputs, and the teacher forcing ratio of batch number `count`."""

    def __init__(self, pad_to_multiple: int, target_len: int, fixed_length: bool, ratio: Callable[[int], float]):
        self.pad_to_multiple, self.target_len, self.fixed_length = pad_to_multiple, target_len, fixed_length
        self.ratio = ratio

    def __call__(self, batch: dict[str, np.ndarray], count: int) -> dict[str, np.ndarray]:
        time = self.target_len
        if not self.fixed_length:
            longest = int(batch["target_lengths"].max())
            time = min(-(-longest // self.pad_to_multiple) * self.pad_to_multiple, self.target_len)
        targets = batch["targets"][:, :time]
        rows = len(targets)
        return dict(
            batch,
            targets=targets,
            decoder_inputs=shift_right(targets),
            teacher_forcing_ratio=np.full((rows,), self.ratio(count), np.float32),
        )


class RatioSchedule:
    """count -> teacher forcing ratio of training batch `count` (picklable,
    for grain workers); `schedule=None` is ratio 1 throughout (evaluation)."""

    def __init__(self, schedule: str | None = None, final_ratio: float = 1.0, decay_steps: int = 1000):
        self.schedule, self.final_ratio, self.decay_steps = schedule, final_ratio, decay_steps

    def __call__(self, count: int) -> float:
        if self.schedule is None:
            return 1.0
        return seq2seq.teacher_forcing_ratio(count, self.schedule, self.final_ratio, self.decay_steps)


class _CountedMap(grain.IterDataset):
    """Applies fn(batch, count) to a stream of batches, where count is the
    number of batches before this one; the count is part of the iterator's
    checkpointed state, so a resumed run continues the schedule."""

    def __init__(self, parent: grain.IterDataset, fn: Callable[[dict, int], dict]):
        super().__init__(parent)
        self._fn = fn

    def __iter__(self) -> grain.DatasetIterator:
        return _CountedMapIterator(self._parent.__iter__(), self._fn)

    def __str__(self) -> str:
        return "_CountedMap"


class _CountedMapIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, fn: Callable[[dict, int], dict]):
        super().__init__(parent)
        self._fn, self._count = fn, 0

    def __next__(self):
        self._assert_not_closed()
        batch = self._fn(next(self._parent), self._count)
        self._count += 1
        return batch

    def get_state(self) -> dict[str, Any]:
        return {"parent": self._parent.get_state(), "count": self._count}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._count = state["count"]

    def __str__(self) -> str:
        return "_CountedMapIterator"


class Subset:
    """Random-access view of the examples `indices` of `source` (picklable)."""

    def __init__(self, source, indices: np.ndarray):
        self.source, self.indices = source, np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.source[int(self.indices[i])]


class ParallelTranslationTask(GenerationObjective, DatasetTask):
    """Translation between two languages of a parallel text source: masked
    cross-entropy over target tokens, token accuracy, teacher-forced exact
    match, perplexity; decoding (seqjax.tasks.translation.evaluate_decoding,
    experiments/decode.py) scores corpus BLEU on detokenised output against
    the raw reference sentences.
    """

    config_keys = GenerationObjective.config_keys + (
        "source_language",
        "target_language",
        "max_source_len",
        "max_target_len",
        "too_long",
    )

    def __init__(self, config: ml_collections.ConfigDict, data: ml_collections.ConfigDict):
        super().__init__(config, data)
        self.init_generation(config)
        for key in ("max_source_len", "max_target_len"):
            value = config.get(key, 64)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"config.task.{key} must be a positive integer, got {value!r}")
            setattr(self, key, value)
        self.too_long = config.get("too_long", "filter")
        if self.too_long not in TOO_LONG:
            raise ValueError(f"config.task.too_long must be one of {TOO_LONG}, got {self.too_long!r}")
        unused = [key for key in UNUSED_DATA_KEYS if data.get(key)]
        if unused:
            raise ValueError(
                f"config.data.{unused[0]} does not apply to translation: the length limits are "
                "config.task.max_source_len / max_target_len / too_long, and each side fits its "
                "own tokenizer (source_tokenizer.json, target_tokenizer.json in the workdir)"
            )
        kind = data.get("tokenizer", "subword")
        if kind not in TOKENIZERS:
            raise ValueError(f"config.data.tokenizer must be one of {TOKENIZERS}, got {kind!r}")
        self.source_tokenizer = self.target_tokenizer = None
        self._train_indices: np.ndarray | None = None
        self.train_report: dict[str, int] = {}  # what train_indices kept and dropped

    # --- languages and tokenizers -----------------------------------------------

    @property
    def bleu_lowercase(self) -> bool:
        """Score case-insensitively when the target side was lower-cased."""
        return bool(self.data.get("lower", False))

    def _languages(self) -> tuple[str, str]:
        source, target = self.config.get("source_language", ""), self.config.get("target_language", "")
        known = self.source_info().supervised_keys or ()
        if not (source and target):
            if len(known) != 2:
                raise ValueError(
                    f"dataset {self.data.source.name!r} names no (source, target) languages; "
                    "set config.task.source_language and target_language"
                )
            source, target = source or known[0], target or known[1]
        features = set(self.source_info().features.keys())
        for side, lang in zip(SIDES, (source, target)):
            if lang not in features:
                raise ValueError(
                    f"config.task.{side}_language={lang!r} is not a feature of dataset "
                    f"{self.data.source.name!r}; it has {sorted(features)}"
                )
        if source == target:
            raise ValueError(f"source and target language are both {source!r}")
        return source, target

    def setup(self, workdir: str | None) -> None:
        """Fits a tokenizer per side on the training split (or loads the ones
        a previous attempt of this run saved in `workdir`)."""
        self.languages = self._languages()
        loaded = {}
        for side, lang in zip(SIDES, self.languages):
            fit = lambda lang=lang: self.fit_side(self.side_texts(lang))  # noqa: E731
            if workdir is None:
                loaded[side] = fit()
            else:
                loaded[side] = tokenizers.load_or_fit(os.path.join(workdir, TOKENIZER_FILES[side]), fit)
        self.source_tokenizer, self.target_tokenizer = loaded["source"], loaded["target"]
        self._check_specials()
        self.tokenizer = self.source_tokenizer  # what DatasetTask's users read (source word index)
        self.vocab_size = self.source_tokenizer.vocab_size
        self.target_vocab_size = self.output_size = self.target_tokenizer.vocab_size

    def save_assets(self, workdir: str) -> None:
        """Both sides' tokenizers (what `setup` reloads on resume and decoding)."""
        self._require_setup()
        for side, tokenizer in zip(SIDES, (self.source_tokenizer, self.target_tokenizer)):
            path = os.path.join(workdir, TOKENIZER_FILES[side])
            if not os.path.exists(path):
                tokenizer.save(path)

    def _check_specials(self) -> None:
        want = {"unk_id": UNK_ID, "sos_id": SOS_ID, "eos_id": EOS_ID}
        for side, tokenizer in zip(SIDES, (self.source_tokenizer, self.target_tokenizer)):
            got = {name: getattr(tokenizer, name) for name in want}
            if got != want or tokenizer.pad_id != PAD_ID:
                raise ValueError(
                    f"the {side} tokenizer has special ids {got} (pad {tokenizer.pad_id}); "
                    f"translation needs pad 0 and {want}"
                )

    def side_texts(self, language: str) -> list[str]:
        source = self.source("train")
        return [as_text(source[i][language]) for i in range(len(source))]

    def fit_side(self, texts: list[str]) -> tokenizers.Tokenizer:
        """A tokenizer of config.data.tokenizer fitted on one side's training texts."""
        kind = self.data.get("tokenizer", "subword")
        vocab = self.data.get("vocab_size", 0) or None
        lower = self.data.get("lower", False)
        if kind == "word":
            words = tokenizers.WordTokenizer(
                num_words=vocab,
                lower=lower,
                filters="",
                oov_token=tokenizers.UNK,
                sos_token=tokenizers.SOS,
                eos_token=tokenizers.EOS,
            )
            return words.fit_on_texts([split_punctuation(t) for t in texts])
        if kind == "char":
            return tokenizers.CharTokenizer(lower=lower).fit(texts)
        normalization = "nmt_nfkc_cf" if lower else "nmt_nfkc"  # sentencepiece's case folding
        return tokenizers.SubwordTokenizer.train(texts, vocab_size=vocab or 8000, normalization=normalization)

    # --- batches ------------------------------------------------------------------

    def _encoder(self, too_long: str) -> EncodePair:
        return EncodePair(
            self.source_tokenizer,
            self.target_tokenizer,
            self.languages,
            self.max_source_len,
            self.max_target_len,
            too_long,
        )

    def train_indices(self) -> np.ndarray:
        """Indices of the training pairs that are kept: both sides non-empty
        and, with too_long='filter', both within the limits."""
        if self._train_indices is None:
            source = self.source("train")
            keep, empty, long = [], 0, 0
            for i in range(len(source)):
                example = source[i]
                src, tgt = (as_text(example[lang]) for lang in self.languages)
                s = encode_side(self.source_tokenizer, src)
                t = encode_side(self.target_tokenizer, tgt)
                if not s or not t:
                    empty += 1
                elif len(s) > self.max_source_len or len(t) > self.max_target_len:
                    long += 1
                    if self.too_long == "error":
                        self._encoder("error")(example)  # raises, naming the sentence
                    if self.too_long == "truncate":
                        keep.append(i)
                else:
                    keep.append(i)
            if not keep:
                raise ValueError(
                    f"no training pair is left: {empty} have an empty side and {long} are longer "
                    f"than max_source_len={self.max_source_len} / max_target_len="
                    f"{self.max_target_len}"
                )
            action = {"filter": "dropped", "truncate": "truncated", "error": "-"}[self.too_long]
            logging.info(
                "translation training pairs: %d kept of %d (%d with an empty side dropped, %d over "
                "the length limits %s)",
                len(keep),
                len(source),
                empty,
                long,
                action,
            )
            self.train_report = {"kept": len(keep), "total": len(source), "empty": empty, "too_long": long}
            self._train_indices = np.asarray(keep, np.int64)
        return self._train_indices

    def loader(
        self, split: str, batch_size: int, train: bool, seed: int, return_index: bool = False
    ) -> loader_lib.Loader:
        source = self.source(split)
        too_long = "truncate" if train else ("error" if self.too_long == "error" else "truncate")
        if split == "train":
            source = Subset(source, self.train_indices())
        multiple = self.data.get("pad_to_multiple", 8)
        fixed = bool(self.data.get("fixed_length", False))
        batching = loader_lib.Padding(pad_to_multiple=multiple, max_len=self.max_source_len, fixed_length=fixed)
        inner = loader_lib.make_loader(
            source,
            self._encoder(too_long),
            batch_size=batch_size,
            train=train,
            batching=batching,
            seed=seed,
            sequence_keys=("inputs",),
            return_index=return_index,
            worker_count=self.data.get("worker_count", 0),
        )
        ratio = RatioSchedule(self.tf_schedule, self.tf_ratio, self.tf_decay_steps) if train else RatioSchedule()
        finish = FinishBatch(multiple, self.target_len, fixed, ratio)
        return loader_lib.Loader(_CountedMap(inner.dataset, finish), inner.batch_size, inner.num_batches)

    # --- text in and out -----------------------------------------------------------

    def encode_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, int]:
        """Source sentences -> (ids [B, S], lengths [B], how many tokens were
        unknown and became <unk>). An empty sentence, or one longer than
        max_source_len tokens, raises naming it."""
        self._require_setup()
        rows = []
        for row, text in enumerate(texts):
            ids = encode_side(self.source_tokenizer, text)
            if not text.strip() or not ids:
                raise ValueError(f"source {row} is empty")
            if len(ids) > self.max_source_len:
                raise ValueError(
                    f"source {row} ({text[:60]!r}) has {len(ids)} tokens; the run allows at most "
                    f"config.task.max_source_len={self.max_source_len}"
                )
            rows.append(ids)
        multiple = self.data.get("pad_to_multiple", 8)
        time = min(-(-max(len(r) for r in rows) // multiple) * multiple, self.max_source_len)
        inputs = np.full((len(rows), time), PAD_ID, np.int32)
        for row, ids in enumerate(rows):
            inputs[row, : len(ids)] = ids
        unknown = int((inputs == UNK_ID).sum())
        return inputs, np.asarray([len(r) for r in rows], np.int32), unknown

    def detokenize(self, ids) -> list[str]:
        """Target texts of the rows of an id array [B, T] (cut at <eos>)."""
        self._require_setup()
        return [decode_side(self.target_tokenizer, row) for row in np.asarray(ids)]

    def token_strings(self, ids: Sequence[int], side: str = "source") -> list[str]:
        """One label per id (special tokens by name; a subword piece without
        its word-boundary mark), e.g. for plot axes."""
        self._require_setup()
        tokenizer = self.source_tokenizer if side == "source" else self.target_tokenizer
        return [SPECIAL_TOKENS[i] if i < len(SPECIAL_TOKENS) else tokenizer.decode([i]) for i in map(int, ids)]

    def source_texts(self, inputs) -> list[str]:
        return [decode_side(self.source_tokenizer, row) for row in np.asarray(inputs)]

    def reference_batches(self, split: str, batch_size: int, num_batches: int = 0, seed: int = 0):
        """Yields (batch, source sentences, reference sentences) over every
        example of `split` (or its first `num_batches` batches); the texts
        are the raw sentences of the dataset, for the real rows only (the
        first len(references) rows of the batch)."""
        del seed  # an evaluation pass is in file order
        self._require_setup()
        source = self.source(split)
        for number, batch in enumerate(self.loader(split, batch_size, train=False, seed=0, return_index=True)):
            if num_batches and number >= num_batches:
                break
            examples = [source[int(i)] for i in batch["index"][batch["weights"] > 0]]
            texts = [[as_text(e[lang]) for e in examples] for lang in self.languages]
            yield batch, texts[0], texts[1]

    def _require_setup(self):
        if self.source_tokenizer is None:
            raise RuntimeError(f"{type(self).__name__}.setup(workdir) must run before batches are made")
