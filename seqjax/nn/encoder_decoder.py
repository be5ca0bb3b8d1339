"""What every encoder-decoder model offers to sequence generation.

A generation task (seqjax.tasks.translation) decodes and inspects any
encoder-decoder through these two methods, so a new model family
implements them and needs no change to a task:

    start, tokens_to_logits = model.incremental_decoder(variables, max_len)
        start(inputs, lengths=None) -> cache       encode the source; feed <sos> first
        tokens_to_logits(tokens [B], cache) -> (logits [B, V], cache)
    α = model.source_attention(variables, inputs, lengths, decoder_inputs)
        [B, T, S]: how each of the T target steps attended over the S source
        positions when reading decoder_inputs [B, T] teacher-forced

`variables` is what `model.apply` takes ({'params': ...}, plus e.g.
'batch_stats'). The pair (start, tokens_to_logits) is what every
`seqjax.decoding` search (greedy, sampling, beam) drives.

Shapes: B batch, S source steps, T target steps, V target vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax

Array = jax.Array
Variables = dict[str, Any]


class EncoderDecoder(nn.Module):
    """Base class of the encoder-decoder models: source [B, S] (or features
    [B, F]) and decoder_inputs [B, T] -> logits [B, T, V].

    The methods are `nn.nowrap`: they are called on the unbound model and
    run it through `apply` themselves.
    """

    @nn.nowrap
    def incremental_decoder(self, variables: Variables, max_len: int) -> tuple[Callable, Callable]:
        """(start, tokens_to_logits) decoding up to `max_len` target tokens per row."""
        raise NotImplementedError(f"{type(self).__name__} does not implement incremental_decoder")

    @nn.nowrap
    def source_attention(
        self, variables: Variables, inputs: Array, lengths: Array | None, decoder_inputs: Array
    ) -> Array:
        """α [B, T, S] over the source positions for decoder_inputs [B, T]; rows
        sum to 1 over each row's valid source, padded positions get 0. Raises
        ValueError for a model that does not attend over its source."""
        raise NotImplementedError(f"{type(self).__name__} does not implement source_attention")
