"""Flash attention kernel vs the naive and blockwise references.

CPU runs the Pallas kernels in interpret mode. Compiling an interpreted
kernel costs seconds while running it at these sizes costs milliseconds, so
the tests share compiled functions: masks (kv_lengths, segment ids) are
traced arrays, and one compiled forward+backward is checked on many mask
cases. Blocks of 16 give several blocks per sequence. GPU-marked tests run
the compiled kernel at larger sizes and skip on other backends.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.flash_attention import default_block_sizes, flash_attention, is_supported
from kernels.flash_attention_reference import blockwise_attention, naive_attention

ON_GPU = jax.default_backend() == "gpu"
needs_gpu = pytest.mark.skipif(not ON_GPU, reason="needs a GPU: runs the compiled Pallas/Triton kernel")

flash16 = functools.partial(flash_attention, block_q=16, block_k=16)


def blockwise16(*args, **kwargs):
    return blockwise_attention(*args, block_k=16, **kwargs)[0]


def make_inputs(batch=2, q_len=32, kv_len=32, heads=2, kv_heads=2, dim=32, dtype=jnp.float32, seed=0):
    """q [B, T, H, D], k/v [B, S, H_kv, D] and an output cotangent [B, T, H, D] (float32).

    numpy draws them: jax.random would compile anew for every shape.
    """
    rng = np.random.default_rng(seed)

    def draw(*shape):
        return rng.standard_normal(shape, np.float32)

    q = jnp.asarray(draw(batch, q_len, heads, dim), dtype)
    k = jnp.asarray(draw(batch, kv_len, kv_heads, dim), dtype)
    v = jnp.asarray(draw(batch, kv_len, kv_heads, dim), dtype)
    return q, k, v, jnp.asarray(draw(batch, q_len, heads, dim))


# Compiling the interpreted kernels dominates these tests; XLA's backend
# optimisations do not pay for themselves at these sizes.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


@functools.partial(jit, static_argnames=("attention", "static"))
def _output_and_grads(q, k, v, cotangent, arrays, *, attention, static):
    out, vjp = jax.vjp(lambda q, k, v: attention(q, k, v, **dict(static), **arrays), q, k, v)
    return out, vjp(cotangent.astype(out.dtype))


def output_and_grads(attention, q, k, v, cotangent, **options):
    """(out, (dq, dk, dv)) as float32 from a jitted VJP of `attention`.

    Python scalars in `options` (causal, sm_scale) are static; arrays
    (segment_ids, kv_lengths) are traced, so new mask values reuse the compile.
    """
    static = tuple(sorted((n, o) for n, o in options.items() if isinstance(o, (bool, int, float))))
    arrays = {n: o for n, o in options.items() if not isinstance(o, (bool, int, float))}
    out, grads = _output_and_grads(q, k, v, cotangent, arrays, attention=attention, static=static)
    return out.astype(jnp.float32), tuple(g.astype(jnp.float32) for g in grads)


def packed_segment_ids(lengths_per_row, total):
    """[B, total] int32 ids: row b holds segments of the given lengths, 0, 1, 2, ...; the rest gets the next id."""
    rows = []
    for lengths in lengths_per_row:
        ids = np.concatenate([np.full(n, i) for i, n in enumerate(lengths)])
        rows.append(np.pad(ids, (0, total - len(ids)), constant_values=len(lengths)))
    return jnp.asarray(np.stack(rows), jnp.int32)


def assert_close(actual, expected, tol, what=""):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=tol, rtol=tol, err_msg=what)


def check_against_naive(q, k, v, cotangent, tol=1e-5, what="", **options):
    """Kernel output and gradients vs the naive reference; returns the kernel's."""
    out, grads = output_and_grads(flash16, q, k, v, cotangent, **options)
    ref_out, ref_grads = output_and_grads(naive_attention, q, k, v, cotangent, **options)
    assert_close(out, ref_out, tol, f"{what}: output")
    for grad, ref_grad, name in zip(grads, ref_grads, ("dq", "dk", "dv")):
        assert grad.shape == ref_grad.shape
        assert_close(grad, ref_grad, tol, f"{what}: {name}")
    return out, grads


# Self-attention, grouped heads (H=4 over H_kv=2), head dim 64, 3 blocks of 16 per sequence.
SELF = dict(batch=2, q_len=48, kv_len=48, heads=4, kv_heads=2, dim=64)
SELF_MASKS = {
    "plain": (jnp.array([48, 48]), jnp.zeros((2, 48), jnp.int32)),
    "padded": (jnp.array([48, 21]), jnp.zeros((2, 48), jnp.int32)),
    "packed": (jnp.array([48, 48]), packed_segment_ids([[10, 20, 18], [5, 30, 13]], 48)),
    "packed_and_padded": (jnp.array([40, 33]), packed_segment_ids([[10, 20, 18], [16, 16, 16]], 48)),
}


@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_masks_match_naive_in_float32(causal):
    q, k, v, cotangent = make_inputs(**SELF)
    for name, (lengths, ids) in SELF_MASKS.items():
        check_against_naive(q, k, v, cotangent, what=name, causal=causal, kv_lengths=lengths, segment_ids=(ids, ids))


# Cross-attention with lengths that are not block multiples, multi-query (H=2 over H_kv=1),
# head dim 128.
CROSS = dict(batch=2, q_len=37, kv_len=53, heads=2, kv_heads=1, dim=128)
CROSS_MASKS = {
    "plain": (jnp.array([53, 53]), jnp.zeros((2, 37), jnp.int32), jnp.zeros((2, 53), jnp.int32)),
    "padded": (jnp.array([53, 30]), jnp.zeros((2, 37), jnp.int32), jnp.zeros((2, 53), jnp.int32)),
    "packed_pair": (
        jnp.array([53, 40]),
        packed_segment_ids([[20, 17], [37]], 37),
        packed_segment_ids([[25, 28], [53]], 53),
    ),
}


@pytest.mark.parametrize("causal", [False, True])
def test_cross_attention_odd_lengths_match_naive_in_float32(causal):
    q, k, v, cotangent = make_inputs(**CROSS)
    for name, (lengths, q_ids, kv_ids) in CROSS_MASKS.items():
        check_against_naive(
            q, k, v, cotangent, what=name, causal=causal, kv_lengths=lengths, segment_ids=(q_ids, kv_ids)
        )


def test_rows_without_visible_keys_give_zero_output_and_zero_gradient():
    q, k, v, cotangent = make_inputs(**SELF)
    # Batch 0: query rows 16..31 carry segment id 7, which no key has; batch 1: no keys at all.
    q_ids = jnp.zeros((2, 48), jnp.int32).at[0, 16:32].set(7)
    kv_ids = jnp.zeros((2, 48), jnp.int32)
    out, (dq, dk, dv) = check_against_naive(
        q, k, v, cotangent, causal=True, kv_lengths=jnp.array([48, 0]), segment_ids=(q_ids, kv_ids)
    )
    assert not any(bool(jnp.isnan(x).any()) for x in (out, dq, dk, dv))
    assert bool(jnp.all(out[0, 16:32] == 0)) and bool(jnp.all(out[1] == 0))
    assert bool(jnp.all(dq[0, 16:32] == 0)) and bool(jnp.all(dq[1] == 0))
    assert bool(jnp.all(dk[1] == 0)) and bool(jnp.all(dv[1] == 0))
    assert bool(jnp.all(out[0, 32:] != 0))


def test_causal_never_reads_key_blocks_above_the_diagonal():
    # NaN planted in keys/values 32..47 (the last block). A kernel that read the
    # block and only masked it would spread NaN to every row (0 * NaN in P V);
    # rows < 32 must not see it.
    q, k, v, cotangent = make_inputs(**SELF)
    lengths, ids = SELF_MASKS["plain"]
    options = dict(causal=True, kv_lengths=lengths, segment_ids=(ids, ids))
    k_nan, v_nan = k.at[:, 32:].set(jnp.nan), v.at[:, 32:].set(jnp.nan)
    out, (dq, _, _) = output_and_grads(flash16, q, k_nan, v_nan, cotangent, **options)
    ref_out, (ref_dq, _, _) = output_and_grads(naive_attention, q, k, v, cotangent, **options)
    assert bool(jnp.isnan(out[:, 32:]).all())  # the planted NaN is real
    assert_close(out[:, :32], ref_out[:, :32], 1e-5)
    assert_close(dq[:, :32], ref_dq[:, :32], 1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_key_blocks_past_the_length_or_the_causal_reach_are_never_read(causal):
    # Batch 1 has 20 keys: key blocks from 32 on are past its length. With the
    # top-left causal mask no query (t < 37) sees keys >= 37, so batch 0's
    # block 48..63 is never read either. NaN planted there must not reach any
    # output or gradient, and those keys get zero gradients.
    q, k, v, cotangent = make_inputs(**CROSS)
    _, q_ids, kv_ids = CROSS_MASKS["plain"]
    options = dict(causal=causal, kv_lengths=jnp.array([53, 20]), segment_ids=(q_ids, kv_ids))
    unread = jnp.zeros((2, 53), bool).at[1, 32:].set(True)
    if causal:
        unread = unread.at[0, 48:].set(True)

    def poison(x):
        return jnp.where(unread[:, :, None, None], jnp.nan, x)

    out, (dq, dk, dv) = output_and_grads(flash16, q, poison(k), poison(v), cotangent, **options)
    ref_out, (ref_dq, ref_dk, ref_dv) = output_and_grads(naive_attention, q, k, v, cotangent, **options)
    assert_close(out, ref_out, 1e-5)
    assert_close(dq, ref_dq, 1e-5)
    for grad, ref_grad in ((dk, ref_dk), (dv, ref_dv)):
        assert bool(jnp.all(jnp.where(unread[:, :, None, None], grad, 0.0) == 0))
        assert_close(jnp.where(unread[:, :, None, None], 0.0, grad), ref_grad, 1e-5)


def test_log_sum_exp_custom_scale_and_padded_head_dim_match_both_references():
    # D = 40 is zero-padded to 64 inside; batch 1 has no visible key (lse -inf);
    # default (interpret-mode) blocks, shrunk to one block per sequence.
    q, k, v, _ = make_inputs(**{**CROSS, "dim": 40})
    options = dict(causal=True, kv_lengths=jnp.array([53, 0]), sm_scale=0.3)
    out, lse = jit(functools.partial(flash_attention, return_lse=True, **options))(q, k, v)
    naive_out, naive_lse = jit(functools.partial(naive_attention, return_lse=True, **options))(q, k, v)
    blockwise_out, blockwise_lse = jit(functools.partial(blockwise_attention, block_k=16, **options))(q, k, v)
    assert out.shape == q.shape and lse.shape == (2, 2, 37)
    assert bool(jnp.all(lse[1] == -jnp.inf)) and bool(jnp.all(naive_lse[1] == -jnp.inf))
    assert_close(lse[0], naive_lse[0], 1e-5)
    assert_close(out, naive_out, 1e-5)
    assert_close(blockwise_lse[0], naive_lse[0], 1e-5)
    assert_close(blockwise_out, naive_out, 1e-5)


def test_blockwise_reference_matches_naive_with_gradients():
    q, k, v, cotangent = make_inputs(**CROSS)
    lengths, q_ids, kv_ids = CROSS_MASKS["packed_pair"]
    options = dict(causal=True, kv_lengths=lengths.at[1].set(0), segment_ids=(q_ids, kv_ids))
    out, grads = output_and_grads(blockwise16, q, k, v, cotangent, **options)
    ref_out, ref_grads = output_and_grads(naive_attention, q, k, v, cotangent, **options)
    assert_close(out, ref_out, 1e-5)
    for grad, ref_grad in zip(grads, ref_grads):
        assert_close(grad, ref_grad, 1e-5)


@pytest.mark.parametrize("dtype, tol", [(jnp.bfloat16, 3e-2), (jnp.float16, 4e-3)])
def test_half_precision_matches_float32_reference_loosely(dtype, tol):
    q, k, v, cotangent = make_inputs(batch=2, q_len=40, kv_len=40, heads=2, kv_heads=1, dtype=dtype)
    options = dict(causal=True, kv_lengths=jnp.array([40, 21]))
    out, grads = output_and_grads(flash16, q, k, v, cotangent, **options)
    as_f32 = [x.astype(jnp.float32) for x in (q, k, v)]
    ref_out, ref_grads = output_and_grads(naive_attention, *as_f32, cotangent, **options)
    assert jax.eval_shape(functools.partial(flash16, **options), q, k, v).dtype == dtype
    assert_close(out, ref_out, tol)
    for grad, ref_grad in zip(grads, ref_grads):
        # P and dS are rounded to the input dtype before the matmuls: compare to the gradients' scale.
        np.testing.assert_allclose(grad, ref_grad, atol=2 * tol * float(jnp.abs(ref_grad).max()))


def test_vmap_and_single_segment_array_match_a_loop():
    q, k, v, _ = make_inputs(batch=2, q_len=32, kv_len=32)
    qs, ks, vs = (jnp.stack([x, x[::-1] * 0.5]) for x in (q, k, v))
    lengths = jnp.array([[32, 5], [17, 0]])
    ids = jnp.stack([packed_segment_ids([[12, 20], [32]], 32), packed_segment_ids([[30], [7, 7]], 32)])

    def attend(q, k, v, n, s):
        return flash16(q, k, v, causal=True, kv_lengths=n, segment_ids=s)

    out = jit(jax.vmap(attend))(qs, ks, vs, lengths, ids)
    naive = jit(functools.partial(naive_attention, causal=True))
    for i in range(2):
        assert_close(out[i], naive(qs[i], ks[i], vs[i], kv_lengths=lengths[i], segment_ids=ids[i]), 1e-5)


def test_empty_sequences():
    q, k, v, _ = make_inputs(batch=1, q_len=3, kv_len=5)
    no_keys = k[:, :0]
    out, lse = flash_attention(q, no_keys, no_keys, return_lse=True)
    assert out.shape == q.shape and bool(jnp.all(out == 0)) and bool(jnp.all(lse == -jnp.inf))
    dq = jax.grad(lambda q: flash_attention(q, no_keys, no_keys).sum())(q)
    assert bool(jnp.all(dq == 0))
    assert flash_attention(q[:, :0], k, v).shape == (1, 0, 2, 32)


def test_bad_inputs_raise_clear_errors():
    q, k, v, _ = make_inputs(heads=3, kv_heads=2)
    with pytest.raises(ValueError, match="multiple of key/value heads"):
        flash_attention(q, k, v)
    q, k, v, _ = make_inputs(q_len=8, kv_len=12)
    with pytest.raises(ValueError, match="share one dtype"):
        flash_attention(q, k.astype(jnp.bfloat16), v)
    with pytest.raises(ValueError, match="not supported"):
        flash_attention(q.astype(jnp.int32), k.astype(jnp.int32), v.astype(jnp.int32))
    with pytest.raises(ValueError, match="needs T == S"):
        flash_attention(q, k, v, segment_ids=jnp.zeros((2, 8), jnp.int32))
    with pytest.raises(ValueError, match="kv_segment_ids must be"):
        flash_attention(q, k, v, segment_ids=(jnp.zeros((2, 8), jnp.int32), jnp.zeros((2, 8), jnp.int32)))
    with pytest.raises(ValueError, match=r"kv_lengths must lie in \[0, S=12\]"):
        flash_attention(q, k, v, kv_lengths=jnp.array([3, 13]))
    with pytest.raises(ValueError, match="kv_lengths must be an int array"):
        flash_attention(q, k, v, kv_lengths=jnp.array([3.0, 1.0]))
    with pytest.raises(ValueError, match="power of two"):
        flash_attention(q, k, v, block_q=24)
    with pytest.raises(ValueError, match=r"\[B, T, H, D\]"):
        flash_attention(q[0], k, v)


def test_is_supported_and_block_tables():
    assert is_supported((2, 1024, 8, 128), (2, 1024, 2, 128), jnp.bfloat16, "gpu")
    assert not is_supported((2, 1024, 8, 512), (2, 1024, 8, 512), jnp.bfloat16, "gpu")  # D > 256
    assert not is_supported((2, 1024, 8, 64), (2, 1024, 3, 64), jnp.bfloat16, "gpu")  # 8 % 3
    assert not is_supported((2, 1024, 8, 64), (2, 1024, 8, 64), jnp.int8, "gpu")
    assert not is_supported((2, 1024, 8, 64), (2, 1024, 8, 64), jnp.bfloat16, "cpu")  # interpret only
    assert not is_supported((2, 1024, 8, 64), (2, 1024, 8, 64), jnp.bfloat16, "tpu")
    for dim in (32, 64, 128, 256):
        for dtype in (jnp.float32, jnp.bfloat16):
            blocks = default_block_sizes(dim, dtype, "gpu")
            assert all(b >= 16 and b & (b - 1) == 0 for b in blocks[:4])
    assert default_block_sizes(256, jnp.bfloat16, "gpu").block_q <= default_block_sizes(64, jnp.bfloat16, "gpu").block_q


@pytest.mark.parametrize("dtype, dim", [(jnp.bfloat16, 64), (jnp.float16, 128), (jnp.bfloat16, 256), (jnp.float32, 96)])
def test_triton_lowering_for_gpu_traces_on_cpu(dtype, dim):
    """Lowers forward and backward for CUDA (Triton) without a GPU; compiles nothing.

    Proves the kernels are valid Pallas for the Triton lowering (power-of-two
    loads, supported primitives, GPU block sizes); only a GPU run proves the rest.
    """
    q = jax.ShapeDtypeStruct((2, 300, 4, dim), dtype)
    k = jax.ShapeDtypeStruct((2, 200, 2, dim), dtype)
    ids_q, ids_k = jax.ShapeDtypeStruct((2, 300), jnp.int32), jax.ShapeDtypeStruct((2, 200), jnp.int32)
    lengths = jax.ShapeDtypeStruct((2,), jnp.int32)

    def loss(q, k, v, ids_q, ids_k, lengths):
        out = flash_attention(q, k, v, causal=True, segment_ids=(ids_q, ids_k), kv_lengths=lengths, interpret=False)
        return jnp.sum(out.astype(jnp.float32))

    lowered = (
        jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        .trace(q, k, k, ids_q, ids_k, lengths)
        .lower(lowering_platforms=("cuda",))
    )
    text = lowered.as_text()
    assert text.count("xla.gpu.triton") == 3  # forward, dQ, dK/dV kernels
    for name in ("flash_attention_forward", "flash_attention_backward_dq", "flash_attention_backward_dkdv"):
        assert name in text


# ----------------------------------------------------------------------------- GPU only


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype, tol", [(jnp.bfloat16, 3e-2), (jnp.float32, 2e-4)])
@pytest.mark.parametrize("causal", [False, True])
def test_compiled_kernel_matches_reference_on_gpu(dtype, tol, causal):
    # Odd length (not a block multiple), grouped heads, padded keys, default GPU blocks.
    q, k, v, cotangent = make_inputs(batch=2, q_len=1000, kv_len=1000, heads=8, kv_heads=2, dim=128, dtype=dtype)
    options = dict(causal=causal, kv_lengths=jnp.array([1000, 613]))
    out, grads = output_and_grads(flash_attention, q, k, v, cotangent, **options)
    as_f32 = [x.astype(jnp.float32) for x in (q, k, v)]
    ref_out, ref_grads = output_and_grads(naive_attention, *as_f32, cotangent, **options)
    assert_close(out, ref_out, tol)
    for grad, ref_grad in zip(grads, ref_grads):
        np.testing.assert_allclose(grad, ref_grad, atol=2 * tol * float(jnp.abs(ref_grad).max()))


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dim", [64, 256])
def test_compiled_kernel_packed_sequences_on_gpu(dim):
    q, k, v, cotangent = make_inputs(batch=2, q_len=4096, kv_len=4096, heads=4, kv_heads=4, dim=dim, dtype=jnp.bfloat16)
    ids = packed_segment_ids([[1000, 3000, 96], [4096]], 4096)
    out, grads = output_and_grads(flash_attention, q, k, v, cotangent, causal=True, segment_ids=ids)

    def blockwise_output(*args, **kwargs):
        return blockwise_attention(*args, block_k=512, **kwargs)[0]

    as_f32 = [x.astype(jnp.float32) for x in (q, k, v)]
    ref_out, ref_grads = output_and_grads(blockwise_output, *as_f32, cotangent, causal=True, segment_ids=ids)
    assert_close(out, ref_out, 3e-2)
    for grad, ref_grad in zip(grads, ref_grads):
        np.testing.assert_allclose(grad, ref_grad, atol=6e-2 * float(jnp.abs(ref_grad).max()))
