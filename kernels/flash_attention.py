"""Fused softmax attention (flash attention) in Pallas: forward and backward.

    out = flash_attention(q, k, v, causal=True)      # q [B, T, H, D], k/v [B, S, H_kv, D]

Attention materialised naively writes a [T, S] score matrix per head to
memory and reads it back twice; that traffic, not the arithmetic, bounds it.
These kernels never form it: each program owns a block of queries, streams
K/V blocks through fast memory and keeps an online softmax (running row max
m, running sum l of exp(s - m), an unnormalised float32 accumulator rescaled
by exp(m_old - m_new) whenever the max grows), so memory traffic is O(T + S)
per head and the work is two matmuls per block.

Backward (a `jax.custom_vjp`; autodiff cannot go through `pallas_call`) uses
only what the forward saved: the output O and the per-row log-sum-exp L
(base 2, float32). With delta = rowsum(dO * O) precomputed (one fused XLA
reduction), P = exp2(S - L) is recomputed per block, and
    dV = P^T dO,   dS = P * (dO V^T - delta),   dQ = scale dS K,   dK = scale dS^T Q.
Two kernels: one per KV block accumulates dK, dV over query blocks (and over
the G query heads sharing that KV head, so grouped heads need no atomics);
one per query block accumulates dQ over KV blocks. No [T, S] array exists at
any point.

Masks, all of them by loop bounds where a whole block is affected:
  * causal (top-left aligned: query t sees keys s <= t, the convention of
    jax.nn.dot_product_attention(is_causal=True) also when T != S): a query
    block's KV loop stops at the diagonal, so blocks above it are never read;
    blocks wholly below it run an unmasked loop body.
  * kv_lengths [B]: key padding; KV blocks at or past the length are never
    read (the partial block is read and masked, so its padded entries must
    be finite).
  * segment ids for packed sequences: `segment_ids` is one [B, T] int array
    (self-attention, T == S) or a pair (q_segment_ids [B, T],
    kv_segment_ids [B, S]); query t sees key s only if their ids are equal.
    Applied in every block (no block skipping by segment).
A query row with no visible key outputs 0 and gets 0 gradients (never NaN):
the forward shifts its scores by 0 instead of a running max of -inf, and its
log-sum-exp is stored as +inf, so that the backward's exp2(S - L) is 0 there
even before masking.
Lengths that are not multiples of the block sizes are padded inside (the
padded keys are masked by length, padded query rows sliced off); head dims
that are not a power of two are zero-padded to one (zeros change neither
q.k nor the kept output columns).

Lowering. On GPU the kernels lower through Triton (`pallas.triton`
CompilerParams); jax 0.10 otherwise lowers `pallas_call` through Mosaic GPU,
whose kernels are written differently (warpgroup-level, explicit
shared-memory pipelines): the same kernel source serves Triton and CPU
interpret mode, ref indexing (`ref[...]`, `pl.ds`) only. Mosaic GPU is
where an FA3-style Hopper kernel (TMA, wgmma, warp specialisation) would
live; whether it is worth a second kernel is a question for the H100
measurements, which are owed: this file was verified on CPU in interpret
mode only (and the Triton lowering traced on CPU by the tests), the GPU
block sizes in `default_block_sizes` are untuned starting points. TPU
(Mosaic TPU) is not supported: it wants the head axis outside the two
minor block dims ([B, H, T, D]) and (8, 128)-aligned blocks.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

from kernels.flash_attention_reference import split_segment_ids

SUPPORTED_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)
MIN_HEAD_DIM_GPU, MAX_HEAD_DIM_GPU = 16, 256
_LOG2E = math.log2(math.e)
_LN2 = math.log(2.0)


class BlockSizes(NamedTuple):
    """Tile sizes (powers of two >= 16) and Triton launch parameters."""

    block_q: int  # forward: queries per program
    block_k: int  # forward: keys per loop step
    block_q_bwd: int  # backward: query block (dQ programs, dK/dV loop steps)
    block_k_bwd: int  # backward: key block (dK/dV programs, dQ loop steps)
    num_warps: int = 4
    num_stages: int = 2
    num_warps_bwd: int = 4
    num_stages_bwd: int = 2


# GPU tiles for 2-byte dtypes by largest head dim. Starting points from the
# usual Triton flash-attention configurations (Ampere/Hopper), NOT yet tuned by
# measurement: registers and shared memory grow with block * D, so tiles
# shrink as D grows.
_GPU_BLOCKS = {
    64: BlockSizes(128, 64, 64, 64, num_warps=4, num_stages=3, num_warps_bwd=4, num_stages_bwd=2),
    128: BlockSizes(128, 64, 64, 64, num_warps=8, num_stages=3, num_warps_bwd=8, num_stages_bwd=2),
    256: BlockSizes(64, 32, 32, 32, num_warps=8, num_stages=2, num_warps_bwd=8, num_stages_bwd=1),
}


def default_block_sizes(head_dim: int, dtype, backend: str) -> BlockSizes:
    """Block sizes for `backend` ('gpu': compiled; anything else: interpret) and head dim.

    float32 tiles take twice the memory of bf16/fp16 ones: the KV block and
    the pipeline depth shrink. Interpret mode runs the grid as a loop of XLA
    ops, where bigger blocks mean fewer, larger ops.
    """
    if backend != "gpu":
        return BlockSizes(128, 128, 128, 128)
    blocks = _GPU_BLOCKS[next((d for d in sorted(_GPU_BLOCKS) if head_dim <= d), 256)]
    if jnp.dtype(dtype).itemsize >= 4:
        blocks = blocks._replace(
            block_k=max(16, blocks.block_k // 2),
            block_q_bwd=max(16, blocks.block_q_bwd // 2),
            num_stages=max(1, blocks.num_stages - 1),
        )
    return blocks


def is_supported(q_shape, k_shape, dtype, backend: str | None = None) -> bool:
    """Whether the compiled kernel handles this case on `backend`.

    For 'auto' dispatch: True only where the kernel runs compiled (GPU, via
    Triton) with a supported dtype and head dim (16..256; non-powers of two
    are padded). Any T, S (padded inside) and H % H_kv == 0. On CPU it returns False: the kernel runs
    there only in interpret mode, which is for tests (slow), though
    `flash_attention(..., interpret=True)` accepts any shape the checks in
    `flash_attention` accept. TPU: False (not lowered).
    """
    backend = jax.default_backend() if backend is None else backend
    if backend not in ("gpu", "cuda"):
        return False
    try:
        _check_shapes(tuple(q_shape), tuple(k_shape), tuple(k_shape))
    except ValueError:
        return False
    return (
        jnp.dtype(dtype) in [jnp.dtype(d) for d in SUPPORTED_DTYPES]
        and MIN_HEAD_DIM_GPU <= q_shape[-1] <= MAX_HEAD_DIM_GPU
    )


def flash_attention(
    q,
    k,
    v,
    *,
    causal: bool = False,
    segment_ids=None,
    kv_lengths=None,
    sm_scale: float | None = None,
    interpret: bool | None = None,
    block_q: int | None = None,
    block_k: int | None = None,
    block_sizes: BlockSizes | None = None,
    return_lse: bool = False,
):
    """softmax(scale * q k^T + mask) v, fused; differentiable w.r.t. q, k, v.

    Args:
      q: [B, T, H, D] queries. B batch, T query length, H query heads, D head dim.
      k, v: [B, S, H_kv, D] keys and values; H % H_kv == 0 (grouped/multi-query
        heads: query head h reads KV head h // (H // H_kv)). q, k, v share one
        dtype: float32, bfloat16 or float16.
      causal: query t attends keys s <= t (top-left aligned when T != S).
      segment_ids: None, an int [B, T] array (needs T == S), or a pair
        (q_segment_ids [B, T], kv_segment_ids [B, S]): attend only within
        equal ids (packed sequences).
      kv_lengths: None or int [B]: keys s >= kv_lengths[b] are padding.
        Values are clipped to [0, S] under jit; out of range concrete values
        raise. Whole key blocks past the length are never read; the block
        holding the length is read and masked, so K/V there must be finite.
      sm_scale: score scale, default 1 / sqrt(D).
      interpret: run the Pallas interpreter; None: on CPU only.
      block_q, block_k: override the forward (and backward) block sizes
        (powers of two >= 16); block_sizes: override everything.
      return_lse: also return the natural-log log-sum-exp of each row's
        scaled scores [B, H, T] float32 (-inf for rows with no visible key);
        it carries no gradient.

    Returns:
      [B, T, H, D] in q's dtype (float32 accumulation inside); rows with no
      visible key are 0. With return_lse, (out, lse).

    Backends: compiled on GPU (Triton lowering; see `is_supported`),
    interpret mode on CPU (tests). Works under jit, vmap and grad.
    """
    _check_dtypes(q, k, v)
    batch, q_len, num_heads, head_dim = _check_shapes(q.shape, k.shape, v.shape)
    kv_len = k.shape[1]
    segments = split_segment_ids(segment_ids, q_len, kv_len)
    _check_segments(segments, batch, q_len, kv_len)
    lengths = _kv_lengths(kv_lengths, batch, kv_len)
    interpret = jax.default_backend() == "cpu" if interpret is None else bool(interpret)
    if not interpret and jax.default_backend() == "tpu":
        raise NotImplementedError(
            "flash_attention has no TPU lowering (its kernels lower through Triton "
            "for GPUs); use XLA attention on TPU, or interpret=True for testing"
        )
    blocks = _resolve_blocks(block_sizes, block_q, block_k, head_dim, q.dtype, interpret, q_len, kv_len)
    scale = 1.0 / math.sqrt(head_dim) if sm_scale is None else float(sm_scale)
    if q_len == 0 or kv_len == 0:  # nothing to compute; no key: every row is empty
        out = jnp.zeros(q.shape, q.dtype)
        return (out, jnp.full((batch, num_heads, q_len), -jnp.inf)) if return_lse else out
    static = _Static(
        causal=bool(causal),
        scale=scale,
        blocks=blocks,
        interpret=interpret,
        groups=num_heads // k.shape[2],
        has_segments=segments is not None,
    )
    q_p, k_p, v_p, segs_p = _pad_inputs(q, k, v, segments, blocks)
    out, lse = _attention(static, q_p, k_p, v_p, lengths, segs_p)
    out = out[:, :q_len, :, :head_dim]
    if not return_lse:
        return out
    lse = lax.stop_gradient(lse[:, :, :q_len])
    return out, jnp.where(jnp.isinf(lse), -jnp.inf, lse * _LN2)


# ----------------------------------------------------------------------------- checks, padding


def _check_dtypes(q, k, v):
    dtypes = {jnp.dtype(x.dtype) for x in (q, k, v)}
    if len(dtypes) != 1:
        raise ValueError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if dtypes.pop() not in [jnp.dtype(d) for d in SUPPORTED_DTYPES]:
        raise ValueError(f"dtype {q.dtype} not supported: use float32, bfloat16 or float16")


def _check_shapes(q_shape, k_shape, v_shape):
    if len(q_shape) != 4 or len(k_shape) != 4:
        raise ValueError(f"q must be [B, T, H, D] and k, v [B, S, H_kv, D]; got q {q_shape}, k {k_shape}")
    if tuple(k_shape) != tuple(v_shape):
        raise ValueError(f"k and v must have equal shapes, got {k_shape} and {v_shape}")
    batch, _, heads, dim = q_shape
    if k_shape[0] != batch or k_shape[3] != dim:
        raise ValueError(f"k/v batch and head dim must match q: q {q_shape}, k {k_shape}")
    if k_shape[2] == 0 or heads % k_shape[2]:
        raise ValueError(f"query heads ({heads}) must be a multiple of key/value heads ({k_shape[2]})")
    if dim == 0:
        raise ValueError("head dim D must be positive")
    return q_shape


def _check_segments(segments, batch, q_len, kv_len):
    if segments is None:
        return
    for name, ids, length in zip(("q_segment_ids", "kv_segment_ids"), segments, (q_len, kv_len)):
        if tuple(ids.shape) != (batch, length):
            raise ValueError(f"{name} must be [B, {length}] = {(batch, length)}, got {tuple(ids.shape)}")
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ValueError(f"{name} must be integers, got {ids.dtype}")


def _kv_lengths(kv_lengths, batch, kv_len):
    """int32 [B] key lengths, clipped to [0, S]; concrete bad values raise."""
    if kv_lengths is None:
        return jnp.full((batch,), kv_len, jnp.int32)
    if not isinstance(kv_lengths, jax.core.Tracer):
        host = np.asarray(kv_lengths)  # on the host: jnp ops would be traced under jit
        if (
            host.shape == (batch,)
            and np.issubdtype(host.dtype, np.integer)
            and host.size
            and (host.min() < 0 or host.max() > kv_len)
        ):
            raise ValueError(f"kv_lengths must lie in [0, S={kv_len}], got values in [{host.min()}, {host.max()}]")
    kv_lengths = jnp.asarray(kv_lengths)
    if kv_lengths.shape != (batch,) or not jnp.issubdtype(kv_lengths.dtype, jnp.integer):
        raise ValueError(
            f"kv_lengths must be an int array [B] = [{batch}], got {kv_lengths.dtype}{list(kv_lengths.shape)}"
        )
    return jnp.clip(kv_lengths, 0, kv_len).astype(jnp.int32)


def _resolve_blocks(block_sizes, block_q, block_k, head_dim, dtype, interpret, q_len, kv_len):
    """Block sizes for this call: defaults per backend, overrides, shrunk for short sequences."""
    blocks = block_sizes or default_block_sizes(head_dim, dtype, "cpu" if interpret else "gpu")
    if block_q is not None:
        blocks = blocks._replace(block_q=block_q, block_q_bwd=block_q)
    if block_k is not None:
        blocks = blocks._replace(block_k=block_k, block_k_bwd=block_k)
    for name in ("block_q", "block_k", "block_q_bwd", "block_k_bwd"):
        size = getattr(blocks, name)
        if size < 16 or size & (size - 1):
            raise ValueError(f"{name} must be a power of two >= 16, got {size}")
    # A block longer than the (power-of-two rounded) sequence only adds padding.
    fit_q, fit_k = max(16, pl.next_power_of_2(max(q_len, 1))), max(16, pl.next_power_of_2(max(kv_len, 1)))
    return blocks._replace(
        block_q=min(blocks.block_q, fit_q),
        block_q_bwd=min(blocks.block_q_bwd, fit_q),
        block_k=min(blocks.block_k, fit_k),
        block_k_bwd=min(blocks.block_k_bwd, fit_k),
    )


def _pad_to(x, axis: int, multiple: int):
    extra = -x.shape[axis] % multiple
    if extra == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths)


def _pad_inputs(q, k, v, segments, blocks: BlockSizes):
    """Pad T, S to block multiples and D to a power of two (>= 16), outside the VJP."""
    q_mult = max(blocks.block_q, blocks.block_q_bwd)
    k_mult = max(blocks.block_k, blocks.block_k_bwd)
    dim_pad = max(16, pl.next_power_of_2(q.shape[-1]))
    q = _pad_to(_pad_to(q, 1, q_mult), 3, dim_pad)
    k = _pad_to(_pad_to(k, 1, k_mult), 3, dim_pad)
    v = _pad_to(_pad_to(v, 1, k_mult), 3, dim_pad)
    if segments is not None:
        segments = (
            _pad_to(segments[0].astype(jnp.int32), 1, q_mult),
            _pad_to(segments[1].astype(jnp.int32), 1, k_mult),
        )
    return q, k, v, segments


# ----------------------------------------------------------------------------- custom VJP


@dataclasses.dataclass(frozen=True)
class _Static:
    """Hashable compile-time settings of one call."""

    causal: bool
    scale: float
    blocks: BlockSizes
    interpret: bool
    groups: int  # query heads per KV head, G = H // H_kv
    has_segments: bool


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attention(static, q, k, v, kv_len, segments):
    """Padded inputs -> (out [B, T, H, D], lse [B, H, T] base-2, +inf where empty)."""
    return _forward(static, q, k, v, kv_len, segments)


def _attention_fwd(static, q, k, v, kv_len, segments):
    out, lse = _forward(static, q, k, v, kv_len, segments)
    return (out, lse), (q, k, v, kv_len, segments, out, lse)


def _attention_bwd(static, residuals, cotangents):
    q, k, v, kv_len, segments, out, lse = residuals
    d_out, _ = cotangents  # lse is returned without gradient (stop_gradient by the caller)
    # delta_t = sum_d dO[t, d] * O[t, d]: one fused elementwise-reduce in XLA.
    delta = jnp.einsum("bthd,bthd->bht", out.astype(jnp.float32), d_out.astype(jnp.float32))
    dq = _backward_dq(static, q, k, v, d_out, lse, delta, kv_len, segments)
    dk, dv = _backward_dkdv(static, q, k, v, d_out, lse, delta, kv_len, segments)
    return dq, dk, dv, None, None


_attention.defvjp(_attention_fwd, _attention_bwd)


# ----------------------------------------------------------------------------- in-kernel helpers


def _cdiv(a, b: int):
    """Ceil division of a non-negative traced int32 by a Python int."""
    return lax.div(a + (b - 1), b)


def _precision(dtype):
    # float32 inputs: full-precision dots (Triton would otherwise use TF32).
    return lax.Precision.HIGHEST if dtype == jnp.float32 else None


def _dot(a, b, contract_a: int, contract_b: int):
    """2-D matmul contracting a's axis contract_a with b's, float32 result."""
    return lax.dot_general(
        a,
        b,
        (((contract_a,), (contract_b,)), ((), ())),
        preferred_element_type=jnp.float32,
        precision=_precision(a.dtype),
    )


def _block_mask(q_start, k_start, shape, kv_len, causal: bool, positional: bool, q_seg, kv_seg):
    """[block_q, block_k] bool (True = attend), or None when nothing is masked.

    positional=False is for blocks known to lie wholly inside the key length
    and below the causal diagonal: only segment ids can mask there.
    """
    mask = None
    if positional:
        cols = k_start + lax.broadcasted_iota(jnp.int32, shape, 1)
        mask = cols < kv_len
        if causal:
            rows = q_start + lax.broadcasted_iota(jnp.int32, shape, 0)
            mask = mask & (cols <= rows)
    if q_seg is not None:
        same = q_seg[:, None] == kv_seg[None, :]
        mask = same if mask is None else mask & same
    return mask


def _kv_block_range(q_start, kv_len, block_q: int, block_k: int, causal: bool):
    """(n_full, n_end) for a query block: KV blocks [0, n_full) need no positional mask,
    [n_full, n_end) need one, blocks >= n_end are invisible to every row (never read)."""
    n_end, n_full = _cdiv(kv_len, block_k), lax.div(kv_len, block_k)
    if causal:
        # The block's last row q_start + block_q - 1 sees keys < q_start + block_q;
        # its first row sees keys <= q_start, so blocks ending there are fully visible.
        n_end = jnp.minimum(n_end, _cdiv(q_start + block_q, block_k))
        n_full = jnp.minimum(n_full, lax.div(q_start + 1, block_k))
    return n_full, n_end


def _q_block_range(k_start, kv_len, num_q_blocks: int, block_q: int, block_k: int, causal: bool):
    """(i_start, i_full) for a KV block: query blocks [i_start, i_full) need a
    positional mask, [i_full, num_q_blocks) none; nothing if the block is past kv_len."""
    num = jnp.int32(num_q_blocks)
    i_start = lax.div(k_start, block_q) if causal else jnp.int32(0)
    # First query block whose first row sees the block's last key.
    i_full = jnp.minimum(_cdiv(k_start + block_k - 1, block_q), num) if causal else i_start
    i_full = jnp.where(k_start + block_k > kv_len, num, i_full)  # straddles the length: mask all
    i_start = jnp.where(k_start >= kv_len, num, i_start)  # wholly padding: skip all
    return i_start, jnp.maximum(i_full, i_start)


def _split_refs(refs, has_segments: bool, num_outputs: int):
    """(q_seg_ref, kv_seg_ref) or (None, None), then the output refs."""
    if has_segments:
        return refs[0], refs[1], refs[2 : 2 + num_outputs]
    return None, None, refs[:num_outputs]


# ----------------------------------------------------------------------------- forward kernel


def _forward_kernel(kv_len_ref, q_ref, k_ref, v_ref, *refs, static: _Static):
    """One program: one (batch, head, query block). Refs: q [bq, D], k/v [S, D]."""
    q_seg_ref, kv_seg_ref, (o_ref, lse_ref) = _split_refs(refs, static.has_segments, 2)
    block_q, block_k = static.blocks.block_q, static.blocks.block_k
    q_start = pl.program_id(2) * block_q
    kv_len = kv_len_ref[...]
    q = q_ref[...]
    q_seg = None if q_seg_ref is None else q_seg_ref[...]
    scale2 = static.scale * _LOG2E  # exp2 is the native instruction; fold log2(e) in

    def step(j, carry, positional):
        acc, m, l = carry
        k_slice = pl.ds(j * block_k, block_k)
        s = _dot(q, k_ref[k_slice, :], 1, 1) * scale2
        kv_seg = None if kv_seg_ref is None else kv_seg_ref[k_slice]
        mask = _block_mask(q_start, j * block_k, s.shape, kv_len, static.causal, positional, q_seg, kv_seg)
        if mask is not None:
            s = jnp.where(mask, s, -jnp.inf)
        m_new = jnp.maximum(m, jnp.max(s, axis=1))
        # A row with nothing visible yet keeps m = -inf; shift by 0 then (exp2(-inf) = 0).
        m_shift = m_new if mask is None else jnp.where(m_new == -jnp.inf, 0.0, m_new)
        p = jnp.exp2(s - m_shift[:, None])
        alpha = jnp.exp2(m - m_shift)
        v_block = v_ref[k_slice, :]
        acc = alpha[:, None] * acc + _dot(p.astype(v_block.dtype), v_block, 1, 0)
        return acc, m_new, alpha * l + jnp.sum(p, axis=1)

    n_full, n_end = _kv_block_range(q_start, kv_len, block_q, block_k, static.causal)
    carry = (
        jnp.zeros(q.shape, jnp.float32),
        jnp.full((block_q,), -jnp.inf, jnp.float32),
        jnp.zeros((block_q,), jnp.float32),
    )
    carry = lax.fori_loop(0, n_full, functools.partial(step, positional=False), carry)
    acc, m, l = lax.fori_loop(n_full, n_end, functools.partial(step, positional=True), carry)
    empty = l == 0.0
    l_safe = jnp.where(empty, 1.0, l)
    o_ref[...] = (acc / l_safe[:, None]).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(empty, jnp.inf, m + jnp.log(l_safe) * _LOG2E)


def _compiler_params(static: _Static, backward: bool):
    if static.interpret:
        return None
    from jax.experimental.pallas import triton as pl_triton  # GPU-only import path

    b = static.blocks
    return pl_triton.CompilerParams(
        num_warps=b.num_warps_bwd if backward else b.num_warps,
        num_stages=b.num_stages_bwd if backward else b.num_stages,
    )


def _length_spec():
    # kv_lengths[b] as a 0-d block, indexed by the batch grid axis.
    return pl.BlockSpec((None,), lambda b, h, i: (b,))


def _forward(static: _Static, q, k, v, kv_len, segments):
    batch, q_len, heads, dim = q.shape
    kv_len_padded, groups = k.shape[1], static.groups
    block_q = static.blocks.block_q
    q_spec = pl.BlockSpec((None, block_q, None, dim), lambda b, h, i: (b, i, h, 0))
    kv_spec = pl.BlockSpec((None, kv_len_padded, None, dim), lambda b, h, i: (b, 0, h // groups, 0))
    in_specs, args = [_length_spec(), q_spec, kv_spec, kv_spec], [kv_len, q, k, v]
    if segments is not None:
        in_specs += [
            pl.BlockSpec((None, block_q), lambda b, h, i: (b, i)),
            pl.BlockSpec((None, kv_len_padded), lambda b, h, i: (b, 0)),
        ]
        args += list(segments)
    return pl.pallas_call(
        functools.partial(_forward_kernel, static=static),
        grid=(batch, heads, q_len // block_q),
        in_specs=in_specs,
        out_specs=[q_spec, pl.BlockSpec((None, None, block_q), lambda b, h, i: (b, h, i))],
        out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((batch, heads, q_len), jnp.float32)],
        compiler_params=_compiler_params(static, backward=False),
        interpret=static.interpret,
        name="flash_attention_forward",
    )(*args)


# ----------------------------------------------------------------------------- backward kernels


def _probs_and_dscores(q, k, v, d_out, lse, delta, mask, scale2):
    """Recomputed P = exp2(S - L) and dS = P * (dO V^T - delta), both [bq, bk] float32."""
    p = jnp.exp2(_dot(q, k, 1, 1) * scale2 - lse[:, None])  # L = +inf on empty rows: P = 0
    if mask is not None:
        p = jnp.where(mask, p, 0.0)
    return p, p * (_dot(d_out, v, 1, 1) - delta[:, None])


def _dq_kernel(kv_len_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, *refs, static: _Static):
    """One program: one (batch, head, query block); loops over KV blocks like the forward."""
    q_seg_ref, kv_seg_ref, (dq_ref,) = _split_refs(refs, static.has_segments, 1)
    block_q, block_k = static.blocks.block_q_bwd, static.blocks.block_k_bwd
    q_start = pl.program_id(2) * block_q
    kv_len = kv_len_ref[...]
    q, d_out, lse, delta = q_ref[...], do_ref[...], lse_ref[...], delta_ref[...]
    q_seg = None if q_seg_ref is None else q_seg_ref[...]

    def step(j, dq, positional):
        k_slice = pl.ds(j * block_k, block_k)
        k_block = k_ref[k_slice, :]
        kv_seg = None if kv_seg_ref is None else kv_seg_ref[k_slice]
        mask = _block_mask(q_start, j * block_k, (block_q, block_k), kv_len, static.causal, positional, q_seg, kv_seg)
        _, ds = _probs_and_dscores(q, k_block, v_ref[k_slice, :], d_out, lse, delta, mask, static.scale * _LOG2E)
        return dq + _dot(ds.astype(k_block.dtype), k_block, 1, 0)

    n_full, n_end = _kv_block_range(q_start, kv_len, block_q, block_k, static.causal)
    dq = lax.fori_loop(0, n_full, functools.partial(step, positional=False), jnp.zeros(q.shape, jnp.float32))
    dq = lax.fori_loop(n_full, n_end, functools.partial(step, positional=True), dq)
    dq_ref[...] = (dq * static.scale).astype(dq_ref.dtype)


def _dkdv_kernel(kv_len_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, *refs, static: _Static):
    """One program: one (batch, KV head, KV block); loops over the G query heads of
    that KV head and over query blocks. Refs: q/dO [T, G, D], lse/delta [G, T], k/v [bk, D]."""
    q_seg_ref, kv_seg_ref, (dk_ref, dv_ref) = _split_refs(refs, static.has_segments, 2)
    block_q, block_k = static.blocks.block_q_bwd, static.blocks.block_k_bwd
    k_start = pl.program_id(2) * block_k
    kv_len = kv_len_ref[...]
    k, v = k_ref[...], v_ref[...]
    kv_seg = None if kv_seg_ref is None else kv_seg_ref[...]
    num_q_blocks = q_ref.shape[0] // block_q

    def step(i, carry, g, positional):
        dk, dv = carry
        q_slice = pl.ds(i * block_q, block_q)
        q, d_out = q_ref[q_slice, g, :], do_ref[q_slice, g, :]
        q_seg = None if q_seg_ref is None else q_seg_ref[q_slice]
        mask = _block_mask(i * block_q, k_start, (block_q, block_k), kv_len, static.causal, positional, q_seg, kv_seg)
        p, ds = _probs_and_dscores(
            q, k, v, d_out, lse_ref[g, q_slice], delta_ref[g, q_slice], mask, static.scale * _LOG2E
        )
        return dk + _dot(ds.astype(q.dtype), q, 0, 0), dv + _dot(p.astype(d_out.dtype), d_out, 0, 0)

    i_start, i_full = _q_block_range(k_start, kv_len, num_q_blocks, block_q, block_k, static.causal)
    carry = (jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32))
    for g in range(static.groups):  # static unroll: G is small (1..8 typically)
        carry = lax.fori_loop(i_start, i_full, functools.partial(step, g=g, positional=True), carry)
        carry = lax.fori_loop(i_full, num_q_blocks, functools.partial(step, g=g, positional=False), carry)
    dk, dv = carry
    dk_ref[...] = (dk * static.scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _backward_dq(static: _Static, q, k, v, d_out, lse, delta, kv_len, segments):
    batch, q_len, heads, dim = q.shape
    kv_len_padded, groups = k.shape[1], static.groups
    block_q = static.blocks.block_q_bwd
    q_spec = pl.BlockSpec((None, block_q, None, dim), lambda b, h, i: (b, i, h, 0))
    kv_spec = pl.BlockSpec((None, kv_len_padded, None, dim), lambda b, h, i: (b, 0, h // groups, 0))
    row_spec = pl.BlockSpec((None, None, block_q), lambda b, h, i: (b, h, i))
    in_specs = [_length_spec(), q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec]
    args = [kv_len, q, k, v, d_out, lse, delta]
    if segments is not None:
        in_specs += [
            pl.BlockSpec((None, block_q), lambda b, h, i: (b, i)),
            pl.BlockSpec((None, kv_len_padded), lambda b, h, i: (b, 0)),
        ]
        args += list(segments)
    return pl.pallas_call(
        functools.partial(_dq_kernel, static=static),
        grid=(batch, heads, q_len // block_q),
        in_specs=in_specs,
        out_specs=q_spec,
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=_compiler_params(static, backward=True),
        interpret=static.interpret,
        name="flash_attention_backward_dq",
    )(*args)


def _backward_dkdv(static: _Static, q, k, v, d_out, lse, delta, kv_len, segments):
    batch, q_len, _, dim = q.shape
    kv_len_padded, kv_heads, groups = k.shape[1], k.shape[2], static.groups
    block_k = static.blocks.block_k_bwd
    # Query-side blocks cover all T rows of the G heads of KV head h: H-block index h.
    q_spec = pl.BlockSpec((None, q_len, groups, dim), lambda b, h, j: (b, 0, h, 0))
    kv_spec = pl.BlockSpec((None, block_k, None, dim), lambda b, h, j: (b, j, h, 0))
    row_spec = pl.BlockSpec((None, groups, q_len), lambda b, h, j: (b, h, 0))
    in_specs = [_length_spec(), q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec]
    args = [kv_len, q, k, v, d_out, lse, delta]
    if segments is not None:
        in_specs += [
            pl.BlockSpec((None, q_len), lambda b, h, j: (b, 0)),
            pl.BlockSpec((None, block_k), lambda b, h, j: (b, j)),
        ]
        args += list(segments)
    return pl.pallas_call(
        functools.partial(_dkdv_kernel, static=static),
        grid=(batch, kv_heads, kv_len_padded // block_k),
        in_specs=in_specs,
        out_specs=[kv_spec, kv_spec],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        compiler_params=_compiler_params(static, backward=True),
        interpret=static.interpret,
        name="flash_attention_backward_dkdv",
    )(*args)
