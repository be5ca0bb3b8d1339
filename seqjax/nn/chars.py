"""Character-level word representations: one vector per word, computed from
its characters, to sit beside the word embedding. A word never seen in
training still has characters (capitals, suffixes, digits), which is what a
tagger needs for the words its word embedding knows nothing about.

Two encoders over the character ids [B, T, W] of each word (0 = padding):

- 'lstm': a bidirectional LSTM over the word's characters; the word is the
  final forward state and the final backward state, concatenated
  (Lample et al. 2016), [B, T, 2 * hidden_size].
- 'cnn': a convolution over character windows, max-pooled over the word's
  characters (Ma & Hovy 2016; Chiu & Nichols 2016), [B, T, hidden_size].

A padding word (no characters) encodes to zeros.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax.nn import checks, recurrent

Array = jax.Array

ENCODERS = ("lstm", "cnn")


class CharEncoder(nn.Module):
    """Character ids [B, T, W] -> word vectors [B, T, D].

    Attributes:
      kind: 'lstm' or 'cnn' (ENCODERS).
      vocab_size: character ids are < vocab_size; 0 is padding.
      embed_size: width of the character embedding.
      hidden_size: LSTM units per direction, or CNN filters.
      kernel_size: characters per CNN window.
      dropout_rate: dropout on the character embeddings while training.
    """

    kind: str
    vocab_size: int
    embed_size: int = 25
    hidden_size: int = 25
    kernel_size: int = 3
    dropout_rate: float = 0.0

    @property
    def output_size(self) -> int:
        return 2 * self.hidden_size if self.kind == "lstm" else self.hidden_size

    @nn.compact
    def __call__(self, chars: Array, deterministic: bool = True) -> Array:
        if self.kind not in ENCODERS:
            raise ValueError(f"unknown character encoder {self.kind!r}; choose one of {', '.join(ENCODERS)}")
        if chars.ndim != 3:
            raise ValueError(f"character ids must be [batch, words, chars], got shape {tuple(chars.shape)}")
        batch, words, width = chars.shape
        # Not named 'embedding', so the word embedding stays the one table
        # seqjax.embeddings finds (pretrained vectors go there).
        table = self.param("table", nn.initializers.normal(1.0), (self.vocab_size, self.embed_size))
        ids = checks.token_ids(chars, self.vocab_size, "chars")
        embedded = jnp.take(table, ids, axis=0, mode="fill", fill_value=jnp.nan)  # a bad id gives NaN, as nn.Embed
        # Padding positions embed to zeros, so a CNN window that reaches past
        # the word sees the same zeros as its 'SAME' padding, however wide W.
        embedded = jnp.where((chars > 0)[..., None], embedded, 0.0)
        embedded = nn.Dropout(self.dropout_rate)(embedded, deterministic=deterministic)
        flat = embedded.reshape(batch * words, width, self.embed_size)
        lengths = (chars > 0).sum(-1).reshape(batch * words)
        if self.kind == "lstm":
            encoded = self._lstm(flat, lengths, deterministic)
        else:
            encoded = self._cnn(flat, lengths)
        return jnp.where((lengths > 0)[:, None], encoded, 0.0).reshape(batch, words, self.output_size)

    def _lstm(self, flat: Array, lengths: Array, deterministic: bool) -> Array:
        stack = recurrent.RecurrentStack(cell="lstm", hidden_size=self.hidden_size, bidirectional=True, name="lstm")
        _, carries = stack(flat, lengths, deterministic=deterministic)
        return recurrent.final_hidden(carries[-1], "concat")

    def _cnn(self, flat: Array, lengths: Array) -> Array:
        windows = nn.Conv(self.hidden_size, (self.kernel_size,), padding="SAME", name="conv")(flat)
        valid = (jnp.arange(flat.shape[1])[None, :] < lengths[:, None])[..., None]
        return jnp.where(valid, windows, -jnp.inf).max(axis=1)
