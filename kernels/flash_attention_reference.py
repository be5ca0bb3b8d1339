"""Pure-JAX references for `kernels.flash_attention`.

Two independent references with the kernel's exact mask semantics:

* `naive_attention`: materialises the [B, H, T, S] score matrix in float32 and
  applies an ordinary softmax. Obviously correct, O(T * S) memory.
* `blockwise_attention`: the kernel's algorithm (online softmax over KV
  blocks, running max and sum, float32 accumulation) written in plain `jnp`
  with a `lax.fori_loop`, over all queries at once. It needs no Pallas, so
  it pins down the algorithm separately from the Pallas mechanics, and it is
  differentiable by ordinary autodiff.

Shapes: q [B, T, H, D]; k, v [B, S, H_kv, D] with H % H_kv == 0 (query head h
reads KV head h // (H // H_kv)). B batch, T query length, S key length, H
query heads, H_kv key/value heads, D head dim.

Mask semantics (shared with the kernel): query t may attend key s iff
  * s < kv_lengths[b]                      (key padding; all keys if None),
  * s <= t if causal                       (top-left aligned, as
                                            jax.nn.dot_product_attention),
  * q_segment_ids[b, t] == kv_segment_ids[b, s] if segment ids are given.
A query row with no visible key outputs zeros (and gets zero gradients).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax


def split_segment_ids(segment_ids, q_len: int, kv_len: int):
    """(q_segment_ids [B, T], kv_segment_ids [B, S]) or None.

    `segment_ids` is None, one [B, T] array (self-attention, T == S), or a
    pair (q_segment_ids [B, T], kv_segment_ids [B, S]).
    """
    if segment_ids is None:
        return None
    if isinstance(segment_ids, (tuple, list)):
        if len(segment_ids) != 2:
            raise ValueError(
                "segment_ids must be one [B, T] array or a pair "
                f"(q_segment_ids, kv_segment_ids); got {len(segment_ids)} items"
            )
        return tuple(segment_ids)
    if q_len != kv_len:
        raise ValueError(
            f"a single segment_ids array needs T == S (got T={q_len}, S={kv_len}); "
            "pass a pair (q_segment_ids [B, T], kv_segment_ids [B, S]) for cross-attention"
        )
    return segment_ids, segment_ids


def attention_mask(batch: int, q_len: int, kv_len: int, *, causal=False, segment_ids=None, kv_lengths=None):
    """Dense boolean mask [B, 1, T, S] (True = attend) of the semantics above."""
    rows = jnp.arange(q_len)[:, None]
    cols = jnp.arange(kv_len)[None, :]
    mask = jnp.ones((batch, 1, q_len, kv_len), bool)
    if causal:
        mask &= (cols <= rows)[None, None]
    if kv_lengths is not None:
        mask &= cols[None, None] < jnp.asarray(kv_lengths)[:, None, None, None]
    segments = split_segment_ids(segment_ids, q_len, kv_len)
    if segments is not None:
        q_seg, kv_seg = segments
        mask &= q_seg[:, None, :, None] == kv_seg[:, None, None, :]
    return mask


def _repeat_kv(k, num_heads: int):
    """[B, S, H_kv, D] -> [B, S, H, D], query head h reading KV head h // G."""
    return jnp.repeat(k, num_heads // k.shape[2], axis=2)


def naive_attention(q, k, v, *, causal=False, segment_ids=None, kv_lengths=None, sm_scale=None, return_lse=False):
    """Softmax attention through the full [B, H, T, S] matrix, in float32.

    Returns the output [B, T, H, D] in q's dtype (and, with return_lse, the
    natural-log log-sum-exp of each row's scaled scores [B, H, T] float32,
    -inf for rows with no visible key).
    """
    batch, q_len, num_heads, head_dim = q.shape
    scale = 1.0 / math.sqrt(head_dim) if sm_scale is None else sm_scale
    k32 = _repeat_kv(k, num_heads).astype(jnp.float32)
    v32 = _repeat_kv(v, num_heads).astype(jnp.float32)
    scores = jnp.einsum("bthd,bshd->bhts", q.astype(jnp.float32), k32, precision=lax.Precision.HIGHEST) * scale
    mask = attention_mask(batch, q_len, k.shape[1], causal=causal, segment_ids=segment_ids, kv_lengths=kv_lengths)
    scores = jnp.where(mask, scores, -jnp.inf)
    row_max = lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True))
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)  # empty rows: avoid -inf - -inf
    probs = jnp.exp(scores - row_max)
    total = jnp.sum(probs, axis=-1, keepdims=True)
    weights = probs / jnp.where(total == 0, 1.0, total)  # empty rows: 0 / 1 = 0
    out = jnp.einsum("bhts,bshd->bthd", weights, v32, precision=lax.Precision.HIGHEST).astype(q.dtype)
    if not return_lse:
        return out
    lse = jnp.where(total == 0, -jnp.inf, row_max + jnp.log(total))[..., 0]
    return out, lse


def blockwise_attention(q, k, v, *, causal=False, segment_ids=None, kv_lengths=None, sm_scale=None, block_k: int = 64):
    """The online-softmax algorithm of the kernel in plain jnp.

    Loops over KV blocks of `block_k` keys (S padded inside and masked),
    keeping per query row a running max m, a running sum l of exp(s - m) and
    an unnormalised float32 accumulator; each block rescales the old state
    by exp(m_old - m_new). Returns (out [B, T, H, D] in q's dtype,
    lse [B, H, T] float32 natural log, -inf for rows with no visible key).
    """
    batch, q_len, num_heads, head_dim = q.shape
    kv_len = k.shape[1]
    scale = 1.0 / math.sqrt(head_dim) if sm_scale is None else sm_scale
    num_blocks = max(1, -(-kv_len // block_k))
    pad = num_blocks * block_k - kv_len
    k_blocks = _kv_blocks(_repeat_kv(k, num_heads), pad, num_blocks, block_k)
    v_blocks = _kv_blocks(_repeat_kv(v, num_heads), pad, num_blocks, block_k)
    lengths = jnp.full((batch,), kv_len, jnp.int32) if kv_lengths is None else jnp.asarray(kv_lengths)
    segments = split_segment_ids(segment_ids, q_len, kv_len)
    if segments is not None:
        kv_seg = jnp.pad(segments[1], ((0, 0), (0, pad))).reshape(batch, num_blocks, block_k)
    q32 = q.astype(jnp.float32) * scale
    rows = jnp.arange(q_len)[:, None]

    def body(j, carry):
        acc, m, l = carry
        cols = j * block_k + jnp.arange(block_k)[None, :]
        s = jnp.einsum("bthd,bshd->bhts", q32, k_blocks[j], precision=lax.Precision.HIGHEST)
        mask = cols[None, None] < lengths[:, None, None, None]
        if causal:
            mask &= (cols <= rows)[None, None]
        if segments is not None:
            mask &= segments[0][:, None, :, None] == kv_seg[:, j][:, None, None, :]
        s = jnp.where(mask, s, -jnp.inf)
        m_new = jnp.maximum(m, jnp.max(s, axis=-1))
        m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
        p = jnp.exp(s - m_safe[..., None])
        alpha = jnp.exp(m - m_safe)
        acc = alpha[..., None] * acc + jnp.einsum("bhts,bshd->bhtd", p, v_blocks[j], precision=lax.Precision.HIGHEST)
        return acc, m_new, alpha * l + jnp.sum(p, axis=-1)

    init = (
        jnp.zeros((batch, num_heads, q_len, head_dim), jnp.float32),
        jnp.full((batch, num_heads, q_len), -jnp.inf, jnp.float32),
        jnp.zeros((batch, num_heads, q_len), jnp.float32),
    )
    acc, m, l = lax.fori_loop(0, num_blocks, body, init)
    out = acc / jnp.where(l == 0, 1.0, l)[..., None]
    lse = jnp.where(l == 0, -jnp.inf, m + jnp.log(jnp.where(l == 0, 1.0, l)))
    return out.transpose(0, 2, 1, 3).astype(q.dtype), lse


def _kv_blocks(x, pad: int, num_blocks: int, block_k: int):
    """[B, S, H, D] -> [num_blocks, B, block_k, H, D] float32, zero-padded."""
    x = jnp.pad(x.astype(jnp.float32), ((0, 0), (0, pad), (0, 0), (0, 0)))
    batch, _, heads, dim = x.shape
    return x.reshape(batch, num_blocks, block_k, heads, dim).transpose(1, 0, 2, 3, 4)
