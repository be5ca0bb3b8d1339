"""Character tokenizer for character-level language models (e.g. tiny_shakespeare).

Ids 0-3 are <pad>, <unk>, <sos>, <eos>; the characters seen in fitting
follow in code-point order, so the same corpus always gives the same ids
(`vocab[4:] == sorted(set(text))`). Characters never seen encode as <unk>.
"""

from __future__ import annotations

from seqjax.data.tokenizers.base import EOS_ID, SOS_ID, SPECIAL_TOKENS, UNK_ID, Tokenizer, check_text, iter_texts


class CharTokenizer(Tokenizer):
    """Every character is a token. `lower=True` lower-cases texts first."""

    kind = "char"

    def __init__(self, lower: bool = False):
        self.lower = lower
        self.vocab: list[str] = []  # id -> token; empty until fitted
        self._index: dict[str, int] = {}

    def fit(self, texts) -> CharTokenizer:
        """Adds the characters of `texts` to the vocabulary (ids are re-sorted)."""
        chars = set(self.vocab[len(SPECIAL_TOKENS) :])
        count = 0
        for i, text in iter_texts(texts, "CharTokenizer.fit"):
            text = check_text(text, f"CharTokenizer.fit: text {i}")
            chars.update(text.lower() if self.lower else text)
            count += 1
        if count == 0:
            raise ValueError("CharTokenizer.fit got no texts")
        self._set_vocab(list(SPECIAL_TOKENS) + sorted(chars))
        return self

    @property
    def is_fitted(self) -> bool:
        return bool(self.vocab)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

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
        index = self._index
        return [index.get(c, UNK_ID) for c in (text.lower() if self.lower else text)]

    def _decode(self, ids: list[int]) -> str:
        vocab = self.vocab
        return "".join(vocab[i] for i in ids)

    def _set_vocab(self, vocab: list[str]) -> None:
        if tuple(vocab[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"vocab must start with {list(SPECIAL_TOKENS)}, got {vocab[: len(SPECIAL_TOKENS)]}")
        chars = vocab[len(SPECIAL_TOKENS) :]
        bad = next((c for c in chars if not isinstance(c, str) or len(c) != 1), None)
        if bad is not None:
            raise ValueError(f"vocab entries after the special tokens must be single characters, got {bad!r}")
        if chars != sorted(set(chars)):
            raise ValueError("vocab characters must be unique and in code-point order")
        self.vocab = list(vocab)
        self._index = {c: i for i, c in enumerate(self.vocab) if i >= len(SPECIAL_TOKENS)}

    def _state(self, path: str) -> dict:
        return {"config": {"lower": self.lower}, "vocab": self.vocab}

    @classmethod
    def _from_state(cls, state: dict, path: str) -> CharTokenizer:
        tokenizer = cls(**state["config"])
        tokenizer._set_vocab(state["vocab"])
        return tokenizer
