"""The interface every seqjax tokenizer shares, special tokens, and the file format.

Special tokens (fixed; the ids a model and a decoder can rely on):

    token    id   CharTokenizer, SubwordTokenizer   WordTokenizer (Keras layout)
    <pad>    0    always                            always 0 (reserved for padding, no string)
    <unk>    1    always                            `oov_token` when set (id 1), else unknowns are dropped
    <sos>    2    always                            `sos_token` when set
    <eos>    3    always                            `eos_token` when set

WordTokenizer numbers the reserved tokens it was given from 1 in the order
oov, sos, eos (so oov, sos, eos all set gives 1, 2, 3 as above; sos and eos
alone give 1, 2), then the words by frequency.

`decode` drops the control ids (<pad>, <sos>, <eos>) and renders <unk> as its
string; ids outside [0, vocab_size) raise.

A tokenizer is saved as one JSON file `{"kind": ..., "format_version": 1, ...}`
(a sentencepiece tokenizer adds its `.model` file beside it) and loaded back
with `load(path)`, which dispatches on "kind".
"""

from __future__ import annotations

import abc
import json
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

import numpy as np

PAD, UNK, SOS, EOS = "<pad>", "<unk>", "<sos>", "<eos>"
PAD_ID, UNK_ID, SOS_ID, EOS_ID = 0, 1, 2, 3
SPECIAL_TOKENS = (PAD, UNK, SOS, EOS)  # position in the tuple == id
FORMAT_VERSION = 1

_KINDS: dict[str, type[Tokenizer]] = {}


class NotFittedError(RuntimeError):
    """A tokenizer was used before it was fitted (or trained)."""


def check_text(text, where: str) -> str:
    """`text` if it is a str; a TypeError that says what it was otherwise."""
    if isinstance(text, str):
        return text
    if isinstance(text, (bytes, bytearray)):
        raise TypeError(f"{where}: expected str, got bytes; decode it first, e.g. text.decode('utf-8')")
    raise TypeError(f"{where}: expected str, got {type(text).__name__}: {text!r:.60}")


def iter_texts(texts: Iterable, where: str) -> Iterator[tuple[int, Any]]:
    """Enumerates a collection of texts, refusing a lone string (whose items would be characters)."""
    if isinstance(texts, (str, bytes, bytearray)):
        raise TypeError(
            f"{where}: expected a collection of texts, got a single {type(texts).__name__}; wrap it in a list"
        )
    try:
        iterator = iter(texts)
    except TypeError:
        raise TypeError(f"{where}: expected a collection of texts, got {type(texts).__name__}") from None
    return enumerate(iterator)


def check_ids(ids, vocab_size: int, where: str) -> list[int]:
    """A 1-D sequence of ids as Python ints, each checked to lie in [0, vocab_size)."""
    array = np.asarray(ids)
    if array.ndim != 1:
        raise ValueError(f"{where}: expected a 1-D sequence of ids, got shape {array.shape}")
    if array.size == 0:
        return []
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{where}: ids must be integers, got dtype {array.dtype}")
    bad = np.flatnonzero((array < 0) | (array >= vocab_size))
    if bad.size:
        raise ValueError(
            f"{where}: id {array[bad[0]]} at position {bad[0]} is outside the vocabulary [0, {vocab_size})"
        )
    return array.tolist()


def write_text_atomic(path: str, data: str | bytes) -> None:
    """Writes via a temporary file and rename, so a reader never sees half a file."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)


class Tokenizer(abc.ABC):
    """Text <-> ids. Subclasses set `kind` and implement the underscored hooks."""

    kind: ClassVar[str]
    pad_id: ClassVar[int] = PAD_ID

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            _KINDS[cls.kind] = cls

    # --- what a subclass provides ---------------------------------------------------------
    @property
    @abc.abstractmethod
    def is_fitted(self) -> bool:
        """Whether the vocabulary exists (fit / train was called, or it was loaded)."""

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids `encode` can produce: every id is in [0, vocab_size)."""

    @property
    @abc.abstractmethod
    def unk_id(self) -> int | None:
        """Id of unknown tokens; None when unknown tokens are dropped."""

    @property
    @abc.abstractmethod
    def sos_id(self) -> int | None:
        """Id of the start-of-sequence token, None if this tokenizer has none."""

    @property
    @abc.abstractmethod
    def eos_id(self) -> int | None:
        """Id of the end-of-sequence token, None if this tokenizer has none."""

    @abc.abstractmethod
    def _encode(self, text) -> list[int]:
        """Ids of a validated text (no sos/eos)."""

    @abc.abstractmethod
    def _decode(self, ids: list[int]) -> str:
        """Text of in-range ids with the control ids already removed."""

    @abc.abstractmethod
    def _state(self, path: str) -> dict:
        """JSON-able state; may write companion files next to `path`."""

    @classmethod
    @abc.abstractmethod
    def _from_state(cls, state: dict, path: str) -> Tokenizer:
        """Inverse of `_state`."""

    def _check_text(self, text, where: str):
        return check_text(text, where)

    # --- the shared interface -------------------------------------------------------------
    @property
    def control_ids(self) -> frozenset[int]:
        """Ids that carry no text (<pad>, <sos>, <eos>); `decode` drops them."""
        return frozenset(i for i in (self.pad_id, self.sos_id, self.eos_id) if i is not None)

    def encode(self, text, *, add_sos: bool = False, add_eos: bool = False) -> list[int]:
        """Ids of one text, optionally framed by <sos> ... <eos>."""
        name = type(self).__name__
        self._require_fitted("encode")
        ids = self._encode(self._check_text(text, f"{name}.encode"))
        if add_sos:
            ids.insert(0, self._special("sos_id", "add_sos"))
        if add_eos:
            ids.append(self._special("eos_id", "add_eos"))
        return ids

    def decode(self, ids) -> str:
        """Text of a 1-D id sequence; <pad>/<sos>/<eos> are dropped, ids >= vocab_size raise."""
        self._require_fitted("decode")
        ids = check_ids(ids, self.vocab_size, f"{type(self).__name__}.decode")
        control = self.control_ids
        return self._decode([i for i in ids if i not in control])

    def encode_batch(self, texts: Iterable, *, add_sos: bool = False, add_eos: bool = False) -> list[list[int]]:
        return [
            self.encode(t, add_sos=add_sos, add_eos=add_eos)
            for _, t in iter_texts(texts, f"{type(self).__name__}.encode_batch")
        ]

    def decode_batch(self, batch) -> list[str]:
        """Texts of each row of a [B, T] array or a list of id lists (rows may differ in length)."""
        return [self.decode(row) for row in batch]

    def save(self, path: str) -> str:
        """Writes the tokenizer to `path` (a .json file; directories are created). Returns `path`."""
        self._require_fitted("save")
        path = os.fspath(path)
        if not path.endswith(".json"):
            raise ValueError(f"tokenizer path must end in .json, got {path!r}")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        payload = {"kind": self.kind, "format_version": FORMAT_VERSION, **self._state(path)}
        # One top-level field per line: the kind and config read at a glance, large tables stay compact.
        lines = (f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in payload.items())
        write_text_atomic(path, "{\n" + ",\n".join(lines) + "\n}\n")
        return path

    def _require_fitted(self, action: str) -> None:
        if not self.is_fitted:
            fit = "train" if self.kind == "subword" else "fit"
            raise NotFittedError(
                f"{type(self).__name__} cannot {action} before it is fitted: call {fit}(...) or load a saved tokenizer"
            )

    def _special(self, attribute: str, option: str) -> int:
        value = getattr(self, attribute)
        if value is None:
            raise ValueError(
                f"{option}=True but this {type(self).__name__} has no {attribute[:3]} token "
                f"(construct it with {attribute[:3]}_token=...)"
            )
        return value


def load(path: str) -> Tokenizer:
    """The tokenizer saved at `path` by `Tokenizer.save`, of whichever kind it is."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no tokenizer file at {path}; a run writes it with tokenizer.save({path!r})")
    try:
        with open(path, encoding="utf-8") as f:
            payload = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"tokenizer file {path} is corrupt (not valid JSON): {e}") from e
    if not isinstance(payload, dict) or "kind" not in payload:
        raise ValueError(f"tokenizer file {path} is corrupt: expected a JSON object with a 'kind' field")
    kind, version = payload["kind"], payload.get("format_version")
    if kind not in _KINDS:
        raise ValueError(f"tokenizer file {path} has unknown kind {kind!r}; known: {sorted(_KINDS)}")
    if version != FORMAT_VERSION:
        raise ValueError(f"tokenizer file {path} has format_version {version!r}; this seqjax reads {FORMAT_VERSION}")
    try:
        return _KINDS[kind]._from_state(payload, path)
    except (KeyError, TypeError, ValueError) as e:
        detail = f"missing field {e}" if isinstance(e, KeyError) else str(e)
        raise ValueError(f"tokenizer file {path} is corrupt: {detail}") from e


def load_or_fit(path: str, fit: Callable[[], Tokenizer]) -> Tokenizer:
    """The tokenizer at `path` if a run already saved one, else `fit()` saved there.

    A resumed run must decode with the vocabulary it trained with, so the first
    run's tokenizer is kept in its workdir and reused rather than refitted.
    """
    if os.path.exists(path):
        return load(path)
    tokenizer = fit()
    if not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"load_or_fit: fit() must return a Tokenizer, got {type(tokenizer).__name__}")
    tokenizer.save(path)
    return tokenizer
