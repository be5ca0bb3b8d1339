"""Word (or character) tokenizer with the semantics of Keras' `Tokenizer`.

Fitting counts tokens; ids go by frequency, most frequent first, ties broken
by first appearance. Id 0 is reserved for padding and never given to a
token. When set, `oov_token` takes id 1 and unknown (or beyond-`num_words`)
tokens map to it; without it they are dropped, as in Keras. With
`num_words=N`, only ids < N are emitted (N counts id 0 and the oov token).

For the same arguments and corpus, `word_index`, `word_counts`, `word_docs`,
`index_docs`, `document_count`, `texts_to_sequences` and `sequences_to_texts`
equal those of `keras.preprocessing.text.Tokenizer`, with these exceptions,
all deliberate:

- seqjax's extra `sos_token` / `eos_token` take the ids right after the oov
  token (Keras has none; left at None the layouts are identical).
- A reserved token that also occurs in the text keeps its reserved id (Keras
  reassigns it by frequency and leaves id 1 pointing at nothing).
- Bad input raises: a lone string instead of a list of texts, non-str texts,
  ids the tokenizer never assigned, `num_words` too small to hold the
  reserved tokens. Keras iterates the string's characters, crashes deep
  inside, or silently drops/replaces the id.
- No `analyzer` callable (it cannot be saved to a plain file).
"""

from __future__ import annotations

import json

from seqjax.data.tokenizers.base import Tokenizer, check_ids, check_text, iter_texts

DEFAULT_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'


def text_to_word_sequence(text: str, filters: str = DEFAULT_FILTERS, lower: bool = True, split: str = " ") -> list[str]:
    """Words of `text`: lower-cased, each filter character turned into a separator, empties dropped."""
    if lower:
        text = text.lower()
    text = text.translate(str.maketrans({c: split for c in filters}))
    return [w for w in text.split(split) if w]


class WordTokenizer(Tokenizer):
    """Keras-compatible word/character tokenizer (see the module docstring).

    Args:
      num_words: keep only ids < num_words when encoding (None keeps all).
      filters: characters replaced by `split` before splitting.
      lower: lower-case texts (and pre-tokenized tokens) first.
      split: the separator between words.
      char_level: every character (filters not applied) is a token.
      oov_token: string for unknown tokens, id 1; None drops them.
      sos_token, eos_token: optional start/end tokens (ids after the oov token),
        used by `encode(add_sos=..., add_eos=...)`.
    """

    kind = "word"

    def __init__(
        self,
        num_words: int | None = None,
        filters: str = DEFAULT_FILTERS,
        lower: bool = True,
        split: str = " ",
        char_level: bool = False,
        oov_token: str | None = None,
        sos_token: str | None = None,
        eos_token: str | None = None,
    ):
        if not isinstance(split, str) or not split:
            raise ValueError(f"split must be a non-empty string, got {split!r}")
        if not isinstance(filters, str):
            raise TypeError(f"filters must be a string of characters, got {type(filters).__name__}")
        specials = {"oov_token": oov_token, "sos_token": sos_token, "eos_token": eos_token}
        for name, token in specials.items():
            if token is not None and (not isinstance(token, str) or not token):
                raise ValueError(f"{name} must be a non-empty string or None, got {token!r}")
        reserved = [t for t in specials.values() if t is not None]
        if len(set(reserved)) != len(reserved):
            raise ValueError(f"oov_token, sos_token and eos_token must differ, got {specials}")
        if num_words is not None and (
            isinstance(num_words, bool) or not isinstance(num_words, int) or num_words < len(reserved) + 1
        ):
            raise ValueError(
                f"num_words must be None or an int >= {len(reserved) + 1} (id 0 plus the "
                f"{len(reserved)} reserved token(s)), got {num_words!r}"
            )
        self.num_words = num_words
        self.filters = filters
        self.lower = lower
        self.split = split
        self.char_level = char_level
        self.oov_token = oov_token
        self.sos_token = sos_token
        self.eos_token = eos_token
        self.document_count = 0
        self.word_counts: dict[str, int] = {}  # insertion order = first appearance
        self.word_docs: dict[str, int] = {}  # number of documents each token occurs in
        self.word_index: dict[str, int] = {}
        self.index_word: dict[int, str] = {}

    # --- Keras API --------------------------------------------------------------------------
    def fit_on_texts(self, texts) -> WordTokenizer:
        """Counts the tokens of `texts` (str, or lists of str already tokenized) and re-ranks the vocabulary.

        Fitting again adds to the counts, as in Keras.
        """
        # Count into fresh dicts and merge at the end, so a bad text leaves the tokenizer as it was.
        counts, docs, count = {}, {}, 0
        for i, text in iter_texts(texts, "fit_on_texts"):
            tokens = self._tokens(text, f"fit_on_texts: text {i}")
            count += 1
            for w in tokens:
                counts[w] = counts.get(w, 0) + 1
            for w in dict.fromkeys(tokens):
                docs[w] = docs.get(w, 0) + 1
        if count == 0:
            raise ValueError("fit_on_texts got no texts")
        self.document_count += count
        for merged, new in ((self.word_counts, counts), (self.word_docs, docs)):
            for w, c in new.items():
                merged[w] = merged.get(w, 0) + c
        self._build_index()
        return self

    def texts_to_sequences(self, texts) -> list[list[int]]:
        """Ids of each text; unknown and >= num_words tokens become the oov id, or are dropped without one."""
        self._require_fitted("texts_to_sequences")
        return [
            self._ids(self._tokens(text, f"texts_to_sequences: text {i}"))
            for i, text in iter_texts(texts, "texts_to_sequences")
        ]

    def texts_to_words(self, texts) -> list[list[str]]:
        """The words of each text as `fit_on_texts` counts them (lower-cased,
        filtered and split as configured): e.g. a corpus for word vectors
        whose words are exactly this vocabulary's."""
        return [self._tokens(text, f"texts_to_words: text {i}") for i, text in iter_texts(texts, "texts_to_words")]

    def sequences_to_texts(self, sequences) -> list[str]:
        """Space-joined tokens of each id sequence, exactly as Keras does it.

        Id 0 and ids >= num_words become the oov token (dropped without one);
        ids beyond every assigned id raise instead of vanishing.
        """
        self._require_fitted("sequences_to_texts")
        oov = self.oov_token
        texts = []
        for i, seq in enumerate(sequences):
            words = []
            for num in check_ids(seq, len(self.word_index) + 1, f"sequences_to_texts: sequence {i}"):
                word = self.index_word.get(num)
                if word is not None and not (self.num_words and num >= self.num_words):
                    words.append(word)
                elif oov is not None:
                    words.append(oov)
            texts.append(" ".join(words))
        return texts

    @property
    def index_docs(self) -> dict[int, int]:
        """Number of documents each id occurs in."""
        return {self.word_index[w]: c for w, c in self.word_docs.items()}

    @property
    def reserved_tokens(self) -> list[str]:
        """The oov, sos and eos tokens that are set, in id order from 1."""
        return [t for t in (self.oov_token, self.sos_token, self.eos_token) if t is not None]

    # --- shared interface -------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self.document_count > 0

    @property
    def vocab_size(self) -> int:
        size = len(self.word_index) + 1
        return min(size, self.num_words) if self.num_words else size

    @property
    def unk_id(self) -> int | None:
        return None if self.oov_token is None else self.word_index[self.oov_token]

    @property
    def sos_id(self) -> int | None:
        return None if self.sos_token is None else self.word_index[self.sos_token]

    @property
    def eos_id(self) -> int | None:
        return None if self.eos_token is None else self.word_index[self.eos_token]

    def _check_text(self, text, where):
        return text if isinstance(text, (list, tuple)) else check_text(text, where)

    def _encode(self, text) -> list[int]:
        return self._ids(self._tokens(text, "WordTokenizer.encode"))

    def _decode(self, ids: list[int]) -> str:
        # Characters were not separated in the text, words were.
        return ("" if self.char_level else " ").join(self.index_word[i] for i in ids)

    # --- internals --------------------------------------------------------------------------
    def _tokens(self, text, where: str) -> list[str]:
        """Tokens of a str, or of an already tokenized list/tuple of str."""
        if isinstance(text, (list, tuple)):
            for j, token in enumerate(text):
                check_text(token, f"{where}, token {j}")
            return [t.lower() for t in text] if self.lower else list(text)
        check_text(text, where)
        if self.char_level:
            return list(text.lower() if self.lower else text)
        return text_to_word_sequence(text, self.filters, self.lower, self.split)

    def _ids(self, tokens: list[str]) -> list[int]:
        oov, limit = self.unk_id, self.num_words
        ids = []
        for w in tokens:
            i = self.word_index.get(w)
            if i is not None and (limit is None or i < limit):
                ids.append(i)
            elif oov is not None:
                ids.append(oov)
        return ids

    def _build_index(self) -> None:
        reserved = self.reserved_tokens
        # sorted() is stable, so equal counts keep first-appearance order.
        ranked = sorted((w for w in self.word_counts if w not in reserved), key=lambda w: -self.word_counts[w])
        self.word_index = {w: i for i, w in enumerate(reserved + ranked, start=1)}
        self.index_word = {i: w for w, i in self.word_index.items()}

    def _config(self) -> dict:
        return {
            "num_words": self.num_words,
            "filters": self.filters,
            "lower": self.lower,
            "split": self.split,
            "char_level": self.char_level,
            "oov_token": self.oov_token,
            "sos_token": self.sos_token,
            "eos_token": self.eos_token,
        }

    def _state(self, path: str) -> dict:
        return {
            "config": self._config(),
            "document_count": self.document_count,
            "word_counts": list(self.word_counts.items()),
            "word_docs": list(self.word_docs.items()),
            "word_index": self.word_index,
        }

    @classmethod
    def _from_state(cls, state: dict, path: str) -> WordTokenizer:
        tokenizer = cls(**state["config"])
        tokenizer._restore(
            state["document_count"],
            dict(state["word_counts"]),
            dict(state["word_docs"]),
            state["word_index"],
            "the saved word_index",
        )
        return tokenizer

    def _restore(self, document_count: int, word_counts: dict, word_docs: dict, word_index: dict, source: str) -> None:
        if not isinstance(document_count, int) or document_count < 1:
            raise ValueError(f"document_count must be a positive int, got {document_count!r}")
        self.document_count = document_count
        self.word_counts = {str(w): int(c) for w, c in word_counts.items()}
        self.word_docs = {str(w): int(c) for w, c in word_docs.items()}
        self._build_index()
        if word_index != self.word_index:
            wrong = next(
                (w for w in set(word_index) | set(self.word_index) if word_index.get(w) != self.word_index.get(w)), None
            )
            raise ValueError(
                f"{source} disagrees with the word counts (token {wrong!r}: stored "
                f"{word_index.get(wrong)}, counts give {self.word_index.get(wrong)})"
            )

    @classmethod
    def from_keras_json(cls, json_string: str) -> WordTokenizer:
        """A WordTokenizer equal to the Keras Tokenizer that wrote `json_string` (`tokenizer.to_json()`)."""
        config = dict(json.loads(json_string)["config"])
        counts = {k: json.loads(config.pop(k)) for k in ("word_counts", "word_docs", "word_index")}
        document_count = config.pop("document_count")
        config.pop("index_docs", None)
        config.pop("index_word", None)
        tokenizer = cls(**config)
        tokenizer._restore(
            document_count, counts["word_counts"], counts["word_docs"], counts["word_index"], "the Keras word_index"
        )
        return tokenizer
