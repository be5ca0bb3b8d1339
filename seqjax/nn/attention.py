"""Scaled dot-product attention with one dispatch point, and multi-head attention.

Layout everywhere: queries [B, T, H, D], keys and values [B, S, K, D], where
B is the batch, T the query length, S the key length, H the query heads, K
the key/value heads (K divides H; K < H is grouped-query attention, K = 1
multi-query attention; query head h reads key/value head h // (H // K)) and
D the width of one head.

    Attention(Q, K, V) = softmax(Q Kᵀ / √D + bias, masked) V

Which keys a query may see is said, where possible, in the three forms every
fused kernel understands: `causal` (key s is visible to query t when
s <= t + q_offset), `kv_lengths` [B] (keys s >= kv_lengths[b] are padding)
and `segment_ids` [B, T] (packed sequences see only their own segment). An
arbitrary boolean `mask` or additive `bias` is accepted too, but only the
'xla' path can apply it, so 'auto' then picks 'xla'.

`implementation` picks how it is computed, in `dot_product_attention` only:
  'xla'    this module's einsum + softmax, softmax statistics in float32;
           the only path that can return the weights or apply dropout.
  'cudnn'  jax.nn.dot_product_attention(implementation='cudnn'): fused
           cuDNN flash attention; GPU with float16/bfloat16 only.
  'pallas' the Pallas flash-attention kernel (kernels/flash_attention.py):
           compiled on GPU, interpret mode (slow, exact) on CPU; masks as
           causal + kv_lengths + segment_ids.
  'auto'   'pallas' where the compiled kernel supports the shapes and dtypes
           (GPU), else 'cudnn' where valid, else 'xla'.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kernels import flash_attention

Array = jax.Array

IMPLEMENTATIONS = ("auto", "xla", "cudnn", "pallas")
_CUDNN_DTYPES = (jnp.float16, jnp.bfloat16)


@dataclasses.dataclass(frozen=True)
class Visibility:
    """Which keys each query sees, in kernel-friendly form (all optional).

    causal: key s is visible to query t when s <= t + q_offset.
    q_offset: int or [B] ints; the position of query 0 among the keys
      (non-zero while decoding with a KV cache).
    kv_lengths: [B] ints; keys s >= kv_lengths[b] are padding.
    segment_ids: [B, T] ints, self-attention only (S == T); a query sees only
      keys of its own segment (several sequences packed into one row).
    mask: bool broadcastable to [B, H, T, S], True = visible ('xla' only).
    bias: float broadcastable to [B, H, T, S], added to the logits ('xla' only).
    """

    causal: bool = False
    q_offset: Any = None
    kv_lengths: Any = None
    segment_ids: Any = None
    mask: Any = None
    bias: Any = None


def dot_product_attention(
    query: Array,
    key: Array,
    value: Array,
    *,
    causal: bool = False,
    q_offset: Array | int | None = None,
    kv_lengths: Array | None = None,
    segment_ids: Array | None = None,
    mask: Array | None = None,
    bias: Array | None = None,
    scale: float | None = None,
    implementation: str = "auto",
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
    return_weights: bool = False,
) -> Array | tuple[Array, Array]:
    """softmax(q kᵀ · scale + bias, masked) v: [B, T, H, D] x [B, S, K, D] -> [B, T, H, D].

    See `Visibility` for causal / q_offset / kv_lengths / segment_ids / mask
    / bias. `scale` defaults to 1/√D. Dropout on the attention weights runs
    when `dropout_rate > 0` and `dropout_rng` is given. With
    `return_weights`, also returns the weights [B, H, T, S] (float32; rows
    that see no key are all zero, and so is their output).
    """
    vis = Visibility(causal, q_offset, kv_lengths, segment_ids, mask, bias)
    check_attention_inputs(query, key, value, vis)
    vis = _canonical(vis, query.shape[1])
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    use_dropout = dropout_rate > 0.0 and dropout_rng is not None
    name = resolve_implementation(implementation, query, key, vis, needs_weights=return_weights or use_dropout)
    if name == "xla":
        out, weights = xla_attention(query, key, value, vis, scale, dropout_rate if use_dropout else 0.0, dropout_rng)
        return (out, weights) if return_weights else out
    if name == "cudnn":
        return cudnn_attention(query, key, value, vis, scale)
    return pallas_attention(query, key, value, vis, scale)


def resolve_implementation(
    implementation: str, query: Array, key: Array, vis: Visibility, *, needs_weights: bool = False
) -> str:
    """The implementation that will run: 'auto' resolved, an explicit choice
    checked against what it supports (a clear error when it cannot run)."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"unknown attention implementation {implementation!r}; choose one of {', '.join(IMPLEMENTATIONS)}"
        )
    if implementation == "xla":
        return "xla"
    pallas_problem = pallas_unsupported_reason(query, key, vis, needs_weights)
    if implementation == "pallas":
        if pallas_problem:
            raise ValueError(
                f"attention implementation='pallas' cannot run here: {pallas_problem}; "
                "use implementation='xla' or 'auto'"
            )
        return "pallas"
    if (
        implementation == "auto"
        and pallas_problem is None
        and flash_attention.is_supported(query.shape, key.shape, query.dtype)
    ):
        return "pallas"  # compiled GPU kernel for supported shapes and dtypes
    problem = cudnn_unsupported_reason(query, key, vis, needs_weights)
    if implementation == "cudnn" and problem:
        raise ValueError(
            f"attention implementation='cudnn' cannot run here: {problem}; use implementation='xla' or 'auto'"
        )
    return "xla" if problem else "cudnn"


def cudnn_unsupported_reason(query: Array, key: Array, vis: Visibility, needs_weights: bool = False) -> str | None:
    """Why cuDNN flash attention cannot compute this call, or None if it can."""
    if jax.default_backend() != "gpu":
        return f"it needs a GPU, and the default backend is {jax.default_backend()!r}"
    capability = getattr(jax.devices()[0], "compute_capability", None)
    if capability is not None and float(capability) < 8.0:
        return f"cuDNN flash attention needs an Ampere or newer GPU (compute capability >= 8.0), got {capability}"
    if query.dtype not in _CUDNN_DTYPES or key.dtype != query.dtype:
        return f"it needs float16 or bfloat16 queries/keys/values, got {query.dtype} and {key.dtype}"
    if query.shape[-1] > 128 or query.shape[-1] % 8:
        return f"it needs a head width D <= 128 and a multiple of 8, got D={query.shape[-1]}"
    if needs_weights:
        return "it neither returns the attention weights nor applies attention dropout"
    if vis.mask is not None or vis.bias is not None or vis.segment_ids is not None:
        return "it takes masks only as causal + kv_lengths here (no explicit mask, bias or segment_ids)"
    if vis.causal and vis.q_offset is not None:
        return "its causal mask has no query offset (KV-cache prefill after position 0)"
    return None


def pallas_unsupported_reason(query: Array, key: Array, vis: Visibility, needs_weights: bool = False) -> str | None:
    """Why the Pallas flash-attention kernel cannot compute this call, or None.
    (On CPU it runs in interpret mode: correct, slow, for tests.)"""
    del query, key
    if needs_weights:
        return "it neither returns the attention weights nor applies attention dropout"
    if vis.mask is not None or vis.bias is not None:
        return "it takes masks as causal + kv_lengths + segment_ids (no explicit mask or bias)"
    if vis.causal and vis.q_offset is not None:
        return "its causal mask has no query offset (KV-cache prefill after position 0)"
    if jax.default_backend() == "tpu":
        return "the kernel is not lowered for TPU"
    return None


def check_attention_inputs(query: Array, key: Array, value: Array, vis: Visibility) -> None:
    """Clear errors for shapes that do not fit [B, T, H, D] x [B, S, K, D]."""
    for name, x in (("query", query), ("key", key), ("value", value)):
        if x.ndim != 4:
            raise ValueError(f"attention {name} must be [batch, length, heads, head_dim]; got shape {tuple(x.shape)}")
    if key.shape != value.shape:
        raise ValueError(f"attention key and value shapes differ: {tuple(key.shape)} vs {tuple(value.shape)}")
    (batch, q_len, heads, width), (_, kv_len, kv_heads, _) = query.shape, key.shape
    if key.shape[0] != batch or key.shape[-1] != width:
        raise ValueError(
            f"attention query {tuple(query.shape)} and key {tuple(key.shape)} must share the batch and head_dim axes"
        )
    if heads % kv_heads:
        raise ValueError(
            f"the number of query heads ({heads}) must be a multiple of the number of key/value heads ({kv_heads})"
        )
    full = (batch, heads, q_len, kv_len)
    for name, x in (("mask", vis.mask), ("bias", vis.bias)):
        if x is not None and (x.ndim != 4 or any(d not in (1, f) for d, f in zip(x.shape, full))):
            raise ValueError(
                f"attention {name} of shape {tuple(x.shape)} does not broadcast to "
                f"[batch, heads, q_len, kv_len] = {full}"
            )
    if vis.mask is not None and vis.mask.dtype != jnp.bool_:
        raise TypeError(
            f"attention mask must be boolean (True = attend), got dtype {vis.mask.dtype}; pass additive masks as bias"
        )
    if vis.kv_lengths is not None and tuple(vis.kv_lengths.shape) != (batch,):
        raise ValueError(f"kv_lengths must have shape [batch]=({batch},), got {tuple(vis.kv_lengths.shape)}")
    if vis.segment_ids is not None:
        if q_len != kv_len:
            raise ValueError(f"segment_ids are for self-attention; q_len={q_len} != kv_len={kv_len}")
        if tuple(vis.segment_ids.shape) != (batch, q_len):
            raise ValueError(
                f"segment_ids must have shape [batch, length]=({batch}, {q_len}), got {tuple(vis.segment_ids.shape)}"
            )


def _canonical(vis: Visibility, q_len: int) -> Visibility:
    """One query with a causal offset sees keys 0..offset: that is a length,
    which every implementation takes (the common decoding step)."""
    if vis.q_offset is None:
        return vis
    if not vis.causal:
        return dataclasses.replace(vis, q_offset=None)
    if q_len == 1:
        lengths = jnp.asarray(vis.q_offset, jnp.int32) + 1
        if vis.kv_lengths is not None:
            lengths = jnp.minimum(lengths, vis.kv_lengths)
        return dataclasses.replace(vis, causal=False, q_offset=None, kv_lengths=lengths)
    return vis


def visibility_mask(vis: Visibility, q_len: int, kv_len: int) -> Array | None:
    """All of `vis` (except bias) as one bool mask broadcastable to [B, H, T, S], or None."""
    parts = []
    if vis.causal:
        offset = jnp.zeros((), jnp.int32) if vis.q_offset is None else jnp.asarray(vis.q_offset, jnp.int32)
        q_pos = jnp.arange(q_len)[:, None] + offset.reshape(-1, 1, 1, 1)  # [B or 1, 1, T, 1]
        parts.append(jnp.arange(kv_len) <= q_pos)
    if vis.kv_lengths is not None:
        parts.append(jnp.arange(kv_len) < vis.kv_lengths[:, None, None, None])
    if vis.segment_ids is not None:
        seg = vis.segment_ids
        parts.append(seg[:, None, :, None] == seg[:, None, None, :])
    if vis.mask is not None:
        parts.append(vis.mask)
    if not parts:
        return None
    mask = parts[0]
    for part in parts[1:]:
        mask = mask & part
    return mask


def xla_attention(
    query: Array,
    key: Array,
    value: Array,
    vis: Visibility,
    scale: float,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
) -> tuple[Array, Array]:
    """Einsum attention, logits and softmax in float32 whatever the input
    dtype. Returns (out [B, T, H, D] in query.dtype, weights [B, H, T, S])."""
    batch, q_len, heads, width = query.shape
    kv_len, kv_heads = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    # Scaling the [B, T, H, D] queries costs less than scaling the [B, H, T, S] logits.
    query = query * jnp.asarray(scale, query.dtype)
    if groups == 1:
        logits = jnp.einsum("bthd,bshd->bhts", query, key, preferred_element_type=jnp.float32)
    else:
        # Grouping the query heads reads each shared key/value head in place,
        # instead of materialising it `groups` times.
        grouped = query.reshape(batch, q_len, kv_heads, groups, width)
        logits = jnp.einsum("btkgd,bskd->bkgts", grouped, key, preferred_element_type=jnp.float32)
        logits = logits.reshape(batch, heads, q_len, kv_len)
    if vis.bias is not None:
        logits = logits + vis.bias.astype(jnp.float32)
    allowed = visibility_mask(vis, q_len, kv_len)
    if allowed is not None:
        logits = jnp.where(allowed, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1)
    if vis.kv_lengths is not None or vis.mask is not None:
        # Only these can leave a row with no visible key (causal and segment
        # masks always show a query its own position or key 0); such a row
        # would otherwise spread itself uniformly over what it cannot see.
        weights = jnp.where(allowed, weights, 0.0)
    dropped = weights
    if dropout_rate > 0.0:
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
        dropped = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
    dropped = dropped.astype(value.dtype)
    if groups == 1:
        out = jnp.einsum("bhts,bshd->bthd", dropped, value, preferred_element_type=jnp.float32)
    else:
        dropped = dropped.reshape(batch, kv_heads, groups, q_len, kv_len)
        out = jnp.einsum("bkgts,bskd->btkgd", dropped, value, preferred_element_type=jnp.float32)
    return out.reshape(batch, q_len, heads, width).astype(query.dtype), weights


def cudnn_attention(query: Array, key: Array, value: Array, vis: Visibility, scale: float) -> Array:
    """cuDNN flash attention through jax.nn.dot_product_attention."""
    lengths = None if vis.kv_lengths is None else vis.kv_lengths.astype(jnp.int32)
    return jax.nn.dot_product_attention(
        query, key, value, scale=scale, is_causal=vis.causal, key_value_seq_lengths=lengths, implementation="cudnn"
    )


def pallas_attention(query: Array, key: Array, value: Array, vis: Visibility, scale: float) -> Array:
    """kernels.flash_attention (compiled on GPU, interpret mode on CPU).

    Rows that see no key give 0, as the 'xla' path does."""
    lengths = None if vis.kv_lengths is None else jnp.asarray(vis.kv_lengths, jnp.int32)
    return flash_attention.flash_attention(
        query, key, value, causal=vis.causal, segment_ids=vis.segment_ids, kv_lengths=lengths, sm_scale=scale
    )


# ----------------------------------------------------------------------------- rotary


def rotary_embedding(x: Array, positions: Array, base: float = 10000.0) -> Array:
    """RoPE (Su et al. 2021): rotate feature pairs (i, i + D/2) of x [B, T, H, D]
    by angle position · base^(-2i/D); positions [B, T] or [T].

    Rotating queries and keys by their positions makes q·k depend on the
    positions only through their difference.
    """
    width = x.shape[-1]
    if width % 2:
        raise ValueError(f"rotary embeddings need an even head width, got {width}")
    freqs = base ** (-jnp.arange(0, width // 2, dtype=jnp.float32) * 2.0 / width)  # [D/2]
    angles = jnp.asarray(positions, jnp.float32)[..., None] * freqs  # [(B,) T, D/2]
    if angles.ndim == 2:
        angles = angles[None]
    cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]  # [B, T, 1, D/2]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return rotated.astype(x.dtype)


# ----------------------------------------------------------------------------- module


class MultiHeadAttention(nn.Module):
    """Multi-head attention: project, attend per head, concatenate, project (Wᴼ).

    Self-attention when called with `inputs_kv=None`, cross-attention
    otherwise. Parameters: query [F, H, D], key and value [F_kv, K, D]
    (K = num_kv_heads), out [H, D, out_features] (the layout of
    flax.linen.MultiHeadDotProductAttention).

    Attributes:
      num_heads: H, query heads.
      num_kv_heads: K, key/value heads (None: H); fewer gives grouped-query
        attention, 1 multi-query attention.
      qkv_features: H * D (None: the query input width); must divide by H.
      out_features: output width (None: the query input width).
      dropout_rate: dropout on the attention weights (training only).
      rotary: rotate queries and keys by their positions (RoPE; self-attention).
      rotary_base: RoPE wavelength base.
      implementation: 'auto' | 'xla' | 'cudnn' | 'pallas' (see the module docstring).
      sow_weights: store the weights [B, H, T, S] in the 'intermediates'
        collection as 'attention_weights' (forces the 'xla' path).
      dtype: compute dtype (None: the inputs'); softmax statistics stay float32.
      param_dtype: parameter dtype.
    """

    num_heads: int
    num_kv_heads: int | None = None
    qkv_features: int | None = None
    out_features: int | None = None
    dropout_rate: float = 0.0
    use_bias: bool = True
    rotary: bool = False
    rotary_base: float = 10000.0
    implementation: str = "auto"
    sow_weights: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Callable = nn.initializers.xavier_uniform()

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    def head_dim(self, width: int) -> int:
        features = self.qkv_features or width
        if features % self.num_heads:
            raise ValueError(f"attention width {features} is not divisible by num_heads={self.num_heads}")
        if self.num_heads % self.kv_heads:
            raise ValueError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.kv_heads}")
        return features // self.num_heads

    def _project(self, x: Array, heads: int, width: int, name: str) -> Array:
        return nn.DenseGeneral(
            (heads, width),
            use_bias=self.use_bias,
            kernel_init=self.kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )(x)

    def _project_kv(self, inputs_kv: Array, width: int) -> tuple[Array, Array]:
        return (
            self._project(inputs_kv, self.kv_heads, width, "key"),
            self._project(inputs_kv, self.kv_heads, width, "value"),
        )

    @nn.compact
    def __call__(
        self,
        inputs_q: Array,
        inputs_kv: Array | tuple[Array, Array] | None = None,
        *,
        causal: bool = False,
        kv_lengths: Array | None = None,
        segment_ids: Array | None = None,
        mask: Array | None = None,
        bias: Array | None = None,
        positions: Array | None = None,
        deterministic: bool = True,
        decode: bool = False,
        decode_lengths: Array | None = None,
        project_kv_only: bool = False,
    ) -> Array:
        """inputs_q [B, T, F] (and inputs_kv [B, S, F_kv]) -> [B, T, out_features].

        Cross-attention keys and values can be projected once and reused
        (decoding reads the same encoder output at every step):
        `project_kv_only=True` returns (key, value) [B, S, K, D] of
        inputs_kv (inputs_q only gives the query width F), and passing that
        tuple as inputs_kv skips the projection.

        kv_lengths [B]: keys at s >= kv_lengths[b] are padding. positions
        [B, T] or [T]: token positions for RoPE (default 0..T-1).

        decode=True (self-attention only): keys and values of these T
        tokens are appended to the 'cache' collection (see `init_cache`)
        and the queries attend to everything cached so far, causally.
        `decode_lengths` [B] says how many of the T tokens are real per row
        (default all T): the cache of row b advances by that many.
        """
        self_attention = inputs_kv is None
        if project_kv_only:
            if self_attention or isinstance(inputs_kv, tuple):
                raise ValueError("project_kv_only=True projects the cross-attention inputs_kv [B, S, F_kv]")
            return self._project_kv(inputs_kv, self.head_dim(inputs_q.shape[-1]))
        width = self.head_dim(inputs_q.shape[-1])
        if decode and not self_attention:
            raise ValueError(
                "decode=True caches self-attention only; cross-attention keys are "
                "the encoder outputs, passed whole at every step"
            )
        query = self._project(inputs_q, self.num_heads, width, "query")
        if isinstance(inputs_kv, tuple):  # projected by project_kv_only
            key, value = inputs_kv
        else:
            key, value = self._project_kv(inputs_q if self_attention else inputs_kv, width)
        q_offset = None
        if decode and not self.is_initializing():
            if kv_lengths is not None:
                raise ValueError("kv_lengths is implied by the cache when decode=True; pass decode_lengths")
            q_offset = self._cache_index()
            if positions is None:
                positions = q_offset[:, None] + jnp.arange(query.shape[1])
        if self.rotary and self_attention:
            positions = jnp.arange(query.shape[1]) if positions is None else positions
            query = rotary_embedding(query, positions, self.rotary_base)
            key = rotary_embedding(key, positions, self.rotary_base)  # cached rotated: never re-rotated
        if decode and self.is_initializing():
            self._cache_variables(key, value)  # init sees the whole target length once: it sizes the cache
        elif decode:
            key, value = self._append_to_cache(key, value, decode_lengths)
            causal = True
        dropout_rng = None
        if self.dropout_rate > 0.0 and not deterministic:
            dropout_rng = self.make_rng("dropout")
        result = dot_product_attention(
            query,
            key,
            value,
            causal=causal,
            q_offset=q_offset,
            kv_lengths=kv_lengths,
            segment_ids=segment_ids,
            mask=mask,
            bias=bias,
            implementation=self.implementation,
            dropout_rate=self.dropout_rate,
            dropout_rng=dropout_rng,
            return_weights=self.sow_weights,
        )
        if self.sow_weights:
            result, weights = result
            self.sow("intermediates", "attention_weights", weights)
        if q_offset is not None:
            result = self._poison_overflow(result)
        out_features = self.out_features or inputs_q.shape[-1]
        return nn.DenseGeneral(
            out_features,
            axis=(-2, -1),
            use_bias=self.use_bias,
            kernel_init=self.kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="out",
        )(result)

    # -- KV cache: the "cache" collection holds cached_key, cached_value [B, S_max, K, D],
    # cache_index [B] (tokens written per row) and overflow [B] --

    def _cache_variables(self, key: Array, value: Array):
        cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
        index = self.variable("cache", "cache_index", jnp.zeros, key.shape[:1], jnp.int32)
        overflow = self.variable("cache", "overflow", jnp.zeros, key.shape[:1], jnp.bool_)
        return cached_key, cached_value, index, overflow

    def _cache_index(self) -> Array:
        if not self.has_variable("cache", "cache_index"):
            raise ValueError(
                "decode=True needs a KV cache: create it with seqjax.nn.init_cache(model, ...) "
                "and apply with mutable=['cache']"
            )
        return self.get_variable("cache", "cache_index")

    def _append_to_cache(self, key: Array, value: Array, lengths: Array | None) -> tuple[Array, Array]:
        """Writes the new keys/values [B, T, K, D] at each row's index and
        advances it; returns all cached keys and values [B, S_max, K, D]."""
        cached_key, cached_value, index, overflow = self._cache_variables(key, value)
        capacity, new = cached_key.value.shape[1], key.shape[1]
        start = index.value
        _check_capacity(start, new, capacity)
        write = jax.vmap(lambda cache, x, i: jax.lax.dynamic_update_slice(cache, x, (i, 0, 0)))
        cached_key.value = write(cached_key.value, key.astype(cached_key.value.dtype), start)
        cached_value.value = write(cached_value.value, value.astype(cached_value.value.dtype), start)
        overflow.value = overflow.value | (start + new > capacity)
        index.value = start + (new if lengths is None else lengths.astype(jnp.int32))
        return cached_key.value, cached_value.value

    def _poison_overflow(self, result: Array) -> Array:
        """Under jit the cache index is not known while tracing: writing past
        the cache would be clamped silently, so those rows become NaN instead."""
        overflow = self.get_variable("cache", "overflow")
        return jnp.where(overflow[:, None, None, None], jnp.nan, result)


def _check_capacity(start: Array, new: int, capacity: int) -> None:
    if new > capacity:
        raise ValueError(f"decoding {new} tokens at once does not fit a KV cache of length {capacity}")
    try:
        end = int(np.max(np.asarray(start))) + new
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return  # traced: see _poison_overflow
    if end > capacity:
        raise ValueError(
            f"KV cache overflow: writing up to position {end} in a cache of length {capacity}; "
            "initialise the cache with a larger max_len"
        )


def init_cache(model: nn.Module, *args, **kwargs) -> Any:
    """A zero KV cache for `model`: the 'cache' collection that
    `model.init(rng, *args, decode=True, **kwargs)` would create (shapes come
    from the example `args`, e.g. tokens [B, max_len]), without computing any
    parameters."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, decode=True, **kwargs))
    if "cache" not in shapes:
        raise ValueError(f"{type(model).__name__} created no 'cache' collection with decode=True")
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])
