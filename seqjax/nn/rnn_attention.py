"""Attention for recurrent encoder-decoders: Bahdanau (additive) and Luong
(dot, general, concat) scores over the encoder outputs.

Shapes: B batch, S source steps, E encoder output width, Q query width (the
decoder state), A the width of the additive / concat alignment layer.

    Bahdanau et al. 2015   e_ij = vᵀ tanh(W s_{i-1} + U h_j)        ('bahdanau')
    Luong et al. 2015      e_ij = s_iᵀ h_j                          ('dot')
                           e_ij = s_iᵀ W_a h_j                      ('general')
                           e_ij = vᵀ tanh(W_a [s_i; h_j])           ('concat')
    α_ij = softmax_j(e_ij) over the valid source steps,  c_i = Σ_j α_ij h_j

Each score splits into a part that depends only on the encoder outputs (U h_j,
W_a h_j) and a part that depends on the query. `project_keys` computes the
first once per source sentence, so a decoder step only pays for the second;
the projected keys travel in the decoding cache. The weights are plain arrays
(`attention_weights` declares them), so `scores` is a pure function that can
run inside `lax.scan` and `lax.while_loop`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

SCORES = ("bahdanau", "dot", "general", "concat")


def attention_weights(
    module: nn.Module, score: str, query_size: int, key_size: int, attention_size: int
) -> dict[str, Array]:
    """Declares the parameters of `score` on `module` (call it from setup or a
    compact method) and returns them as {name: array}."""
    if score not in SCORES:
        raise ValueError(f"unknown attention score {score!r}; choose one of {', '.join(SCORES)}")
    init = nn.initializers.glorot_uniform()
    if score == "dot":
        if query_size != key_size:
            raise ValueError(
                f"Luong 'dot' attention needs the decoder state ({query_size}) and the encoder outputs "
                f"({key_size}) to have the same width; use 'general' or 'concat', or match the sizes"
            )
        return {}
    if score == "general":
        return {"key_kernel": module.param("attention_key_kernel", init, (key_size, query_size))}
    # Additive forms: 'concat' is W_a [s; h] = W s + U h, the same network as Bahdanau's.
    return {
        "query_kernel": module.param("attention_query_kernel", init, (query_size, attention_size)),
        "key_kernel": module.param("attention_key_kernel", init, (key_size, attention_size)),
        "bias": module.param("attention_bias", nn.initializers.zeros_init(), (attention_size,)),
        "v": module.param("attention_v", nn.initializers.normal(attention_size**-0.5), (attention_size,)),
    }


def project_keys(score: str, weights: dict[str, Array], encoded: Array) -> Array:
    """The query-independent part of the scores: encoded [B, S, E] ->
    [B, S, E] ('dot'), [B, S, Q] ('general') or [B, S, A] (additive forms)."""
    if score == "dot":
        return encoded
    return encoded @ weights["key_kernel"]


def scores(score: str, weights: dict[str, Array], query: Array, keys: Array) -> Array:
    """Alignment scores e [B, S] of query [B, Q] against projected keys [B, S, ·]."""
    if score in ("dot", "general"):
        return jnp.einsum("bq,bsq->bs", query, keys)
    hidden = jnp.tanh(keys + (query @ weights["query_kernel"] + weights["bias"])[:, None, :])
    return hidden @ weights["v"]


def masked_softmax(logits: Array, mask: Array | None) -> Array:
    """softmax over the last axis where `mask` [B, S] is True; exactly 0
    elsewhere. A row with no valid step gets all zeros (not NaN)."""
    if mask is None:
        return jax.nn.softmax(logits, axis=-1)
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    return jax.nn.softmax(logits, axis=-1) * mask


def attend(
    score: str, weights: dict[str, Array], query: Array, keys: Array, values: Array, mask: Array | None
) -> tuple[Array, Array]:
    """(context c [B, E] = Σ_j α_j values_j, α [B, S]) for query [B, Q]."""
    alpha = masked_softmax(scores(score, weights, query, keys), mask)
    return jnp.einsum("bs,bse->be", alpha, values), alpha
