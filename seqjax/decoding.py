"""Model-agnostic autoregressive decoding: greedy and sampling.

Every decoder is driven through one function,

    tokens_to_logits(tokens [B] int32, cache) -> (logits [B, V], cache)

which consumes the latest token of each row and returns the next-token
logits plus the updated cache (the recurrent carry of an RNN decoder, the
KV cache of a Transformer decoder). The caller prefills the cache with the
prompt and passes the prompt's last token as `first_tokens`.

The loop is a `lax.scan` over a fixed number of steps, so decoding compiles
once for a given `max_new_tokens`; rows that emitted `eos_id` keep emitting
`pad_id` (their cache still advances, which is cheaper than branching).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

TokensToLogits = Callable[[jax.Array, Any], tuple[jax.Array, Any]]


def filter_logits(logits: jax.Array, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Logits [B, V] with everything outside the top-k / nucleus set to -inf.

    top_k: keep the k most likely tokens (0 keeps all).
    top_p: keep the smallest set of most likely tokens whose probability
      reaches top_p (1.0 keeps all); the most likely token is always kept.
    """
    if top_k < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(f"need top_k >= 0 and 0 < top_p <= 1, got top_k={top_k}, top_p={top_p}")
    neg_inf = jnp.finfo(logits.dtype).min
    if top_k and top_k < logits.shape[-1]:
        kth_best = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth_best, neg_inf, logits)
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        # Probability mass strictly before each sorted token: keep the token
        # while that mass is still below top_p.
        mass_before = cumulative - jax.nn.softmax(sorted_logits, axis=-1)
        keep_sorted = mass_before < top_p
        threshold = jnp.min(jnp.where(keep_sorted, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, neg_inf, logits)
    return logits


def next_tokens(logits: jax.Array, rng: jax.Array, temperature: float, top_k: int, top_p: float) -> jax.Array:
    """[B] int32: argmax when temperature == 0, else a sample from the
    filtered distribution softmax(logits / temperature)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    filtered = filter_logits(logits.astype(jnp.float32) / temperature, top_k, top_p)
    return jax.random.categorical(rng, filtered, axis=-1).astype(jnp.int32)


def decode(tokens_to_logits: TokensToLogits, cache: Any, first_tokens: jax.Array, max_new_tokens: int,
           rng: jax.Array | None = None, *, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
           eos_id: int | None = None, pad_id: int = 0) -> tuple[jax.Array, Any]:
    """Generates `max_new_tokens` tokens per row.

    Args:
      tokens_to_logits: the decoder step (see the module docstring).
      cache: the decoder's state after the prompt (minus its last token).
      first_tokens: [B] the prompt's last token per row.
      rng: PRNG key; needed when temperature > 0.
      temperature: 0 = greedy; > 0 samples from softmax(logits / temperature).
      top_k, top_p: restrict sampling to the k most likely tokens / the nucleus.
      eos_id: rows stop at this token (it is emitted; pad_id follows).

    Returns (tokens [B, max_new_tokens] int32, final cache).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature > 0 and rng is None:
        raise ValueError("sampling (temperature > 0) needs an rng key")
    rng = jax.random.key(0) if rng is None else rng
    first_tokens = jnp.asarray(first_tokens, jnp.int32)

    def step(state, step_rng):
        tokens, cache, finished = state
        logits, cache = tokens_to_logits(tokens, cache)
        new = next_tokens(logits, step_rng, temperature, top_k, top_p)
        new = jnp.where(finished, pad_id, new)
        if eos_id is not None:
            finished = finished | (new == eos_id)
        return (new, cache, finished), new

    finished = jnp.zeros(first_tokens.shape, bool)
    step_rngs = jax.random.split(rng, max_new_tokens)
    (_, cache, _), generated = jax.lax.scan(step, (first_tokens, cache, finished), step_rngs)
    return generated.T, cache


def recurrent_decoder(model, params) -> tuple[Callable[[jax.Array], Any], TokensToLogits]:
    """(prefill, tokens_to_logits) for a seqjax recurrent language model
    (`seqjax.models.RecurrentModel` with the per-step head); the cache is
    the stack's carry.

    prefill(prompt [B, P]) runs all but the prompt's last token and returns
    the cache; pass `prompt[:, -1]` to `decode` as `first_tokens`.
    """

    def run(tokens, carry):
        return model.apply({"params": params}, tokens, initial_carry=carry, return_carry=True)

    def prefill(prompt: jax.Array) -> Any:
        prompt = jnp.asarray(prompt, jnp.int32)
        if prompt.ndim != 2 or prompt.shape[1] < 1:
            raise ValueError(f"prompt must be [batch, length >= 1] token ids, got shape {prompt.shape}")
        carry_shapes = jax.eval_shape(lambda t: run(t, None)[1], prompt[:, :1])
        carry = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), carry_shapes)
        if prompt.shape[1] == 1:
            return carry
        return run(prompt[:, :-1], carry)[1]

    def tokens_to_logits(tokens, carry):
        logits, carry = run(tokens[:, None], carry)
        return logits[:, 0], carry

    return prefill, tokens_to_logits
