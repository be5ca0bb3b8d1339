"""A sequence tagger: word embedding [+ character-level word vectors] ->
bidirectional recurrent stack -> per-token tag scores [-> linear-chain CRF]
(Huang et al. 2015; Lample et al. 2016; Ma & Hovy 2016).

What tagging needs beyond `seqjax.models.RecurrentModel`'s per-step head:

- character features (seqjax.nn.chars), for words the embedding never saw;
- embeddings of per-token input tags (e.g. part-of-speech tags for chunking);
- word dropout: while training, each token id becomes the unknown-word id
  with probability `word_dropout`, so the <unk> embedding is trained on
  real contexts instead of staying at its initial value;
- dropout on the token representations and on the recurrent outputs;
- a CRF over the tag scores, which scores whole tag sequences (a tag's
  neighbours matter: I-PER never follows O in IOB2), optionally with the
  transitions the tag scheme forbids ruled out.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from seqjax.nn import chars as chars_lib
from seqjax.nn import checks, crf, recurrent

Array = jax.Array


class Tagger(nn.Module):
    """Token ids [B, T] (+ character ids [B, T, W], + input tag ids [B, T, F]) -> tag scores.

    Returns logits [B, T, num_tags], or with `use_crf` a `crf.Scores`
    (emissions [B, T, num_tags] and the transition scores).

    Attributes:
      stack: the recurrent layers (bidirectional for tagging).
      num_tags: K.
      vocab_size, embed_size: the word embedding (param 'embed/embedding').
      unk_id: the id word dropout substitutes.
      word_dropout: probability of replacing a (non-padding) token by unk_id.
      dropout_rate: dropout on the token representations and on the
        recurrent outputs.
      char_encoder: a CharEncoder, or None for words only.
      input_tag_sizes: the vocabulary size of each input tag (F of them;
        () reads none); each gets an embedding 'input_tag_<i>' of
        input_tag_embed_size, concatenated to the word's vector.
      use_crf: score tag sequences with a CRF.
      crf_constraints: (transitions, start, end) booleans the CRF allows.
    """

    batch_inputs: ClassVar[tuple[str, ...]] = ("chars", "input_tags")  # read when configured

    stack: recurrent.RecurrentStack
    num_tags: int
    vocab_size: int
    embed_size: int = 100
    unk_id: int = 1
    word_dropout: float = 0.0
    dropout_rate: float = 0.0
    char_encoder: chars_lib.CharEncoder | None = None
    input_tag_sizes: tuple[int, ...] = ()
    input_tag_embed_size: int = 25
    use_crf: bool = False
    crf_constraints: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @nn.compact
    def __call__(
        self,
        inputs: Array,
        lengths: Array | None = None,
        *,
        chars: Array | None = None,
        input_tags: Array | None = None,
        deterministic: bool = True,
    ):
        if inputs.ndim != 2:
            raise ValueError(f"token-id inputs must be [batch, time], got shape {tuple(inputs.shape)}")
        ids = checks.token_ids(inputs, self.vocab_size, "inputs")
        if self.word_dropout and not deterministic:
            dropped = jax.random.bernoulli(self.make_rng("dropout"), self.word_dropout, ids.shape)
            ids = jnp.where(dropped & (ids > 0), self.unk_id, ids)
        features = nn.Embed(self.vocab_size, self.embed_size, name="embed")(ids)
        if self.char_encoder is not None:
            if chars is None:
                raise ValueError("this tagger reads character ids: the batch needs 'chars' [B, T, W]")
            if chars.shape[:2] != inputs.shape:
                raise ValueError(f"chars {tuple(chars.shape)} do not match inputs {tuple(inputs.shape)} per token")
            features = jnp.concatenate([features, self.char_encoder(chars, deterministic)], axis=-1)
        if self.input_tag_sizes:
            features = jnp.concatenate([features, *self._embed_input_tags(input_tags, inputs.shape)], axis=-1)
        features = nn.Dropout(self.dropout_rate)(features, deterministic=deterministic)
        outputs, _ = self.stack(features, lengths, deterministic=deterministic)
        outputs = nn.Dropout(self.dropout_rate)(outputs, deterministic=deterministic)
        scores = nn.Dense(self.num_tags, name="output")(outputs)
        if not self.use_crf:
            return scores
        return crf.CRF(self.num_tags, self.crf_constraints, name="crf")(scores)

    def _embed_input_tags(self, input_tags: Array | None, shape: tuple[int, ...]) -> list[Array]:
        """[B, T, F] input tag ids -> F embeddings [B, T, input_tag_embed_size]."""
        count = len(self.input_tag_sizes)
        if input_tags is None:
            raise ValueError(
                f"this tagger reads {count} input tag(s) per token: the batch needs 'input_tags' [B, T, F]"
            )
        if input_tags.shape != (*shape, count):
            raise ValueError(f"input_tags {tuple(input_tags.shape)} must be {(*shape, count)} (inputs [B, T] + F)")
        return [
            nn.Embed(size, self.input_tag_embed_size, name=f"input_tag_{i}")(
                checks.token_ids(input_tags[..., i], size, f"input_tags[..., {i}]")
            )
            for i, size in enumerate(self.input_tag_sizes)
        ]
