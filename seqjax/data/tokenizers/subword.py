"""Subword tokenizer: a sentencepiece model (BPE or unigram) trained by seqjax.

Training fixes the special pieces to seqjax's ids (<pad>=0, <unk>=1, <sos>=2,
<eos>=3) and makes unknown pieces decode as "<unk>". Loading a sentencepiece
model with another layout is refused rather than silently remapped.

Round-trips are exact for text already in the normalizer's form: with the
default 'nmt_nfkc' normalization, runs of whitespace (newlines and tabs
included) become one space and leading/trailing space is dropped. Pass
`normalization='identity', remove_extra_whitespaces=False` to keep text as is
(newlines and tabs then need to be in the training text, or `byte_fallback=True`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from collections.abc import Iterable, Iterator, Sequence

import sentencepiece as spm

from seqjax.data.tokenizers.base import (
    EOS,
    EOS_ID,
    PAD,
    PAD_ID,
    SOS,
    SOS_ID,
    UNK,
    UNK_ID,
    Tokenizer,
    check_ids,
    check_text,
    iter_texts,
    write_text_atomic,
)

MODEL_TYPES = ("bpe", "unigram")
NORMALIZATIONS = ("nmt_nfkc", "nfkc", "nmt_nfkc_cf", "nfkc_cf", "identity")
_LAYOUT = {"pad": (PAD_ID, PAD), "unk": (UNK_ID, UNK), "bos": (SOS_ID, SOS), "eos": (EOS_ID, EOS)}


class SubwordTokenizer(Tokenizer):
    """Wraps a serialized sentencepiece model (`model_proto`, the bytes of a .model file)."""

    kind = "subword"

    def __init__(self, model_proto: bytes, training_options: dict | None = None):
        self.model_proto = bytes(model_proto)
        self.training_options = dict(training_options or {})
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        except RuntimeError as e:
            raise ValueError(f"not a sentencepiece model: {e}") from e
        for name, (want_id, want_piece) in _LAYOUT.items():
            got_id = getattr(self._sp, f"{name}_id")()
            got_piece = self._sp.id_to_piece(got_id) if 0 <= got_id < self._sp.vocab_size() else None
            if (got_id, got_piece) != (want_id, want_piece):
                raise ValueError(
                    f"sentencepiece model has {name} id {got_id} piece {got_piece!r}; seqjax needs "
                    f"id {want_id} piece {want_piece!r} (train it with SubwordTokenizer.train)"
                )

    @classmethod
    def train(
        cls,
        texts: Iterable[str] | None = None,
        *,
        files: Sequence[str] | None = None,
        vocab_size: int,
        model_type: str = "unigram",
        character_coverage: float = 1.0,
        normalization: str = "nmt_nfkc",
        remove_extra_whitespaces: bool = True,
        byte_fallback: bool = False,
        input_sentence_size: int = 1_000_000,
        max_sentence_length: int = 16384,
        seed: int = 0,
        num_threads: int = 1,
    ) -> SubwordTokenizer:
        """Trains a sentencepiece model on `texts` (one sentence each) or the lines of `files`.

        Args:
          texts: an iterable of str; or
          files: text files, one sentence per line, UTF-8, plain or .gz.
          vocab_size: number of pieces, the 4 special tokens included.
          model_type: 'bpe' or 'unigram'.
          character_coverage: share of characters the vocabulary must cover
            (1.0 for small alphabets; ~0.9995 for CJK).
          normalization: sentencepiece normalization rule, one of NORMALIZATIONS.
          remove_extra_whitespaces: collapse whitespace runs (sentencepiece's default).
          byte_fallback: encode unknown characters as UTF-8 byte pieces (needs
            vocab_size >= 260), so nothing becomes <unk>.
          input_sentence_size: at most this many sentences are sampled for training.
          max_sentence_length: longer sentences (in bytes) are skipped.
          seed: seeds sentencepiece's sampling, so training is reproducible.
          num_threads: trainer threads.
        """
        if (texts is None) == (files is None):
            raise ValueError("SubwordTokenizer.train needs exactly one of texts= or files=")
        if model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        if not isinstance(vocab_size, int) or vocab_size <= len(_LAYOUT):
            raise ValueError(f"vocab_size must be an int > {len(_LAYOUT)} (the special tokens), got {vocab_size!r}")
        options = dict(
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            normalization_rule_name=normalization,
            remove_extra_whitespaces=remove_extra_whitespaces,
            byte_fallback=byte_fallback,
            input_sentence_size=input_sentence_size,
            max_sentence_length=max_sentence_length,
            shuffle_input_sentence=True,
        )
        source = _file_lines(files) if files is not None else _checked_texts(texts)
        return cls(_train_model(source, options, seed, num_threads), training_options=options)

    @property
    def model_type(self) -> str:
        return self.training_options.get("model_type", "unknown")

    def id_to_piece(self, i: int) -> str:
        """The piece string of id `i` ('▁' marks a word start)."""
        return self._sp.id_to_piece(check_ids([i], self.vocab_size, "id_to_piece")[0])

    def encode_pieces(self, text: str) -> list[str]:
        """The piece strings `encode` would give ids for; shows how a text was split."""
        return self._sp.encode(check_text(text, "encode_pieces"), out_type=str)

    @property
    def is_fitted(self) -> bool:
        return True  # a SubwordTokenizer only exists with a trained model

    @property
    def vocab_size(self) -> int:
        return self._sp.vocab_size()

    @property
    def unk_id(self) -> int:
        return UNK_ID

    @property
    def sos_id(self) -> int:
        return SOS_ID

    @property
    def eos_id(self) -> int:
        return EOS_ID

    def _encode(self, text: str) -> list[int]:
        return self._sp.encode(text, out_type=int)

    def _decode(self, ids: list[int]) -> str:
        return self._sp.decode(ids)

    def _state(self, path: str) -> dict:
        model_path = _model_path(path)
        write_text_atomic(model_path, self.model_proto)
        return {
            "model_file": os.path.basename(model_path),
            "model_sha256": hashlib.sha256(self.model_proto).hexdigest(),
            "training_options": self.training_options,
        }

    @classmethod
    def _from_state(cls, state: dict, path: str) -> SubwordTokenizer:
        model_path = os.path.join(os.path.dirname(path), state["model_file"])
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"tokenizer {path} needs its sentencepiece model at {model_path}, which is missing")
        with open(model_path, "rb") as f:
            proto = f.read()
        if hashlib.sha256(proto).hexdigest() != state["model_sha256"]:
            raise ValueError(
                f"sentencepiece model {model_path} does not match the sha256 recorded in {path} (changed or truncated)"
            )
        return cls(proto, training_options=state["training_options"])


def _model_path(json_path: str) -> str:
    return json_path[: -len(".json")] + ".model"


def _checked_texts(texts) -> Iterator[str]:
    for i, text in iter_texts(texts, "SubwordTokenizer.train"):
        yield check_text(text, f"SubwordTokenizer.train: text {i}")


def _file_lines(files: Sequence[str]) -> Iterator[str]:
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    for path in files:  # every file is checked before training reads any
        if not os.path.isfile(path):
            raise FileNotFoundError(f"SubwordTokenizer.train: no file {path}")
    for path in files:
        opener = gzip.open if os.fspath(path).endswith(".gz") else open
        with opener(path, "rb") as f:
            for line_number, line in enumerate(f, start=1):
                try:
                    yield line.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    raise ValueError(f"{path}, line {line_number}: not UTF-8 ({e.reason} at byte {e.start})") from None


def _train_model(sentences: Iterator[str], options: dict, seed: int, num_threads: int) -> bytes:
    """Serialized model trained on `sentences`; errors from our own iterator surface unwrapped."""
    errors: list[Exception] = []
    counted = [0]

    def guarded():  # sentencepiece turns an exception in the iterator into an opaque RuntimeError
        try:
            for sentence in sentences:
                counted[0] += bool(sentence.strip())
                yield sentence
        except (TypeError, ValueError, OSError) as e:
            errors.append(e)

    model = io.BytesIO()
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=guarded(),
            model_writer=model,
            num_threads=num_threads,
            minloglevel=2,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=SOS_ID,
            eos_id=EOS_ID,
            pad_piece=PAD,
            unk_piece=UNK,
            bos_piece=SOS,
            eos_piece=EOS,
            unk_surface=UNK,
            **options,
        )
    except RuntimeError as e:
        if errors:
            raise errors[0] from None
        if counted[0] == 0:
            raise ValueError("SubwordTokenizer.train got no non-empty text") from None
        raise ValueError(f"sentencepiece training failed: {str(e).strip()}") from None
    if errors:
        raise errors[0]
    return model.getvalue()
