"""Tokenizers: text <-> ids, saved as plain files in a run's workdir.

    WordTokenizer     Keras `Tokenizer` semantics (fit_on_texts, word_index, num_words, oov_token ...)
    CharTokenizer     one id per character, for character-level language models
    SubwordTokenizer  sentencepiece BPE / unigram, trained by seqjax

All share `vocab_size`, `pad_id` (always 0), `unk_id`, `sos_id`, `eos_id`,
`encode(text, add_sos=, add_eos=)`, `decode(ids)`, `encode_batch`,
`decode_batch` and `save(path)`; `load(path)` reads any of them back. The
special-token table is in `seqjax.data.tokenizers.base`, and docs/tokenizers.md.
"""

from seqjax.data.tokenizers.base import (
    EOS,
    EOS_ID,
    PAD,
    PAD_ID,
    SOS,
    SOS_ID,
    SPECIAL_TOKENS,
    UNK,
    UNK_ID,
    NotFittedError,
    Tokenizer,
    load,
    load_or_fit,
)
from seqjax.data.tokenizers.char import CharTokenizer
from seqjax.data.tokenizers.subword import SubwordTokenizer
from seqjax.data.tokenizers.word import DEFAULT_FILTERS, WordTokenizer, text_to_word_sequence

__all__ = [
    "PAD",
    "UNK",
    "SOS",
    "EOS",
    "PAD_ID",
    "UNK_ID",
    "SOS_ID",
    "EOS_ID",
    "SPECIAL_TOKENS",
    "DEFAULT_FILTERS",
    "Tokenizer",
    "WordTokenizer",
    "CharTokenizer",
    "SubwordTokenizer",
    "NotFittedError",
    "load",
    "load_or_fit",
    "text_to_word_sequence",
]
