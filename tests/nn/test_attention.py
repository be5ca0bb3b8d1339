import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.nn import attention
from seqjax.nn.attention import MultiHeadAttention, dot_product_attention, init_cache

B, T, S, H, K, D = 2, 5, 7, 4, 2, 8

# Compiled once per static configuration: on XLA:CPU one compile of the whole
# function is far cheaper than compiling each eager op.
attend = jax.jit(
    dot_product_attention, static_argnames=("causal", "scale", "implementation", "dropout_rate", "return_weights")
)


def run(module, variables, *args, **kwargs):
    """module.apply(variables, *args, **kwargs), compiled."""
    return jax.jit(functools.partial(module.apply, **kwargs))(variables, *args)


def init(module, *args, **kwargs):
    return jax.jit(functools.partial(module.init, **kwargs))(jax.random.key(1), *args)


def qkv(q_len=T, kv_len=S, heads=H, kv_heads=K, width=D, dtype=jnp.float32, seed=0):
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    return (
        jax.random.normal(kq, (B, q_len, heads, width), dtype),
        jax.random.normal(kk, (B, kv_len, kv_heads, width), dtype),
        jax.random.normal(kv, (B, kv_len, kv_heads, width), dtype),
    )


@jax.jit
def naive_attention(q, k, v, allowed=None):
    """Head by head with numpy-style loops: softmax(q kᵀ/√D) v, masked keys dropped."""
    heads, kv_heads = q.shape[2], k.shape[2]
    outs = []
    for h in range(heads):
        kh, vh = k[:, :, h * kv_heads // heads], v[:, :, h * kv_heads // heads]
        logits = jnp.einsum("btd,bsd->bts", q[:, :, h], kh) / np.sqrt(q.shape[-1])
        if allowed is not None:
            logits = jnp.where(allowed[:, h] if allowed.shape[1] > 1 else allowed[:, 0], logits, -1e30)
        weights = jnp.exp(logits - logits.max(-1, keepdims=True))
        weights = weights / weights.sum(-1, keepdims=True)
        outs.append(jnp.einsum("bts,bsd->btd", weights, vh))
    return jnp.stack(outs, axis=2)


def reference_mask(kv_lengths=None, causal=False, q_len=T, kv_len=S):
    allowed = jnp.ones((B, 1, q_len, kv_len), bool)
    if kv_lengths is not None:
        allowed &= (jnp.arange(kv_len) < kv_lengths[:, None])[:, None, None, :]
    if causal:
        allowed &= jnp.tril(jnp.ones((q_len, kv_len), bool))
    return allowed


# ----------------------------------------------------------------------------- the function


@pytest.mark.parametrize("causal", [False, True])
def test_matches_naive_reference_values_and_gradients(causal):
    q, k, v = qkv()
    lengths = jnp.array([7, 4])
    allowed = reference_mask(lengths, causal)

    @jax.jit
    def values_and_grads(q, k, v):
        def ours(q, k, v):
            return dot_product_attention(q, k, v, causal=causal, kv_lengths=lengths)

        def naive(q, k, v):
            return naive_attention(q, k, v, allowed)

        def grad(fn):
            return jax.grad(lambda *qkv: jnp.sum(jnp.sin(fn(*qkv))), argnums=(0, 1, 2))(q, k, v)

        return ours(q, k, v), naive(q, k, v), grad(ours), grad(naive)

    ours, naive, ours_grads, naive_grads = values_and_grads(q, k, v)
    np.testing.assert_allclose(ours, naive, rtol=1e-5, atol=1e-5)
    for got, want in zip(ours_grads, naive_grads):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_gqa_equals_mha_with_repeated_kv_heads():
    q, k, v = qkv(kv_heads=2)

    @jax.jit
    def grouped_and_repeated(q, k, v):
        def repeat(x):
            return jnp.repeat(x, H // x.shape[2], axis=2)

        mqa_k, mqa_v = k[:, :, :1], v[:, :, :1]  # multi-query: one shared head
        return (
            dot_product_attention(q, k, v),
            dot_product_attention(q, repeat(k), repeat(v)),
            dot_product_attention(q, mqa_k, mqa_v),
            dot_product_attention(q, repeat(mqa_k), repeat(mqa_v)),
        )

    grouped, repeated, single, single_repeated = grouped_and_repeated(q, k, v)
    np.testing.assert_allclose(grouped, repeated, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(single, single_repeated, rtol=1e-6, atol=1e-6)
    assert not np.allclose(grouped, single, atol=1e-3)


def test_padded_keys_get_zero_weight_and_changing_them_changes_nothing():
    q, k, v = qkv()
    lengths = jnp.array([7, 3])
    out, weights = attend(q, k, v, kv_lengths=lengths, return_weights=True)
    assert weights.shape == (B, H, T, S)
    assert np.all(np.asarray(weights[1, :, :, 3:]) == 0.0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    noisy_k, noisy_v = k.at[1, 3:].set(1e3), v.at[1, 3:].set(-1e3)
    np.testing.assert_array_equal(attend(q, noisy_k, noisy_v, kv_lengths=lengths), out)


def test_rows_that_see_no_key_output_zeros():
    q, k, v = qkv()
    out, weights = attend(q, k, v, kv_lengths=jnp.array([0, 2]), return_weights=True)
    np.testing.assert_array_equal(out[0], 0.0)
    np.testing.assert_array_equal(weights[0], 0.0)
    assert np.all(np.isfinite(out))


def test_explicit_mask_and_bias_match_the_reference():
    q, k, v = qkv()
    mask = jax.random.bernoulli(jax.random.key(3), 0.7, (B, 1, T, S)).at[..., 0].set(True)
    np.testing.assert_allclose(attend(q, k, v, mask=mask), naive_attention(q, k, v, mask), rtol=1e-5, atol=1e-5)
    # A bias of 0 / -inf-like is the additive form of the same mask.
    bias = jnp.where(mask, 0.0, -1e9)
    np.testing.assert_allclose(attend(q, k, v, bias=bias), naive_attention(q, k, v, mask), rtol=1e-5, atol=1e-5)


def test_segment_ids_keep_packed_sequences_apart():
    q, k, v = qkv(kv_len=T)
    segments = jnp.array([[0, 0, 1, 1, 1]] * B)

    @jax.jit
    def packed_and_separate(q, k, v):
        packed = dot_product_attention(q, k, v, segment_ids=segments, causal=True)
        split = [dot_product_attention(q[:, a:b], k[:, a:b], v[:, a:b], causal=True) for a, b in ((0, 2), (2, T))]
        return packed, jnp.concatenate(split, axis=1)

    packed, separate = packed_and_separate(q, k, v)
    np.testing.assert_allclose(packed, separate, rtol=1e-5, atol=1e-6)


def test_causal_offset_is_what_a_kv_cache_needs():
    q, k, v = qkv(q_len=3, kv_len=S)
    offset = jnp.array([2, 4])  # queries sit at positions offset..offset+2 among the keys
    out = attend(q, k, v, causal=True, q_offset=offset)
    allowed = (jnp.arange(S) <= offset[:, None, None] + jnp.arange(3)[:, None])[:, None]  # [B, 1, 3, S]
    np.testing.assert_allclose(out, naive_attention(q, k, v, allowed), rtol=1e-5, atol=1e-6)


def test_implementations_available_on_cpu_agree():
    q, k, v = qkv()
    lengths = jnp.array([7, 5])
    xla = attend(q, k, v, causal=True, kv_lengths=lengths, implementation="xla")
    auto = attend(q, k, v, causal=True, kv_lengths=lengths, implementation="auto")
    jax_xla = jax.nn.dot_product_attention(
        q, k, v, is_causal=True, key_value_seq_lengths=lengths.astype(jnp.int32), implementation="xla"
    )
    np.testing.assert_allclose(xla, jax_xla, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(auto, xla)
    for name in attention.IMPLEMENTATIONS:
        try:
            out = attend(q, k, v, causal=True, kv_lengths=lengths, implementation=name)
        except ValueError as error:  # cuDNN cannot run on CPU
            assert name == "cudnn" and jax.default_backend() == "cpu", error
            continue
        np.testing.assert_allclose(out, xla, rtol=2e-2, atol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs a GPU")
def test_cudnn_matches_xla_in_bfloat16():
    q, k, v = qkv(q_len=64, kv_len=64, width=64, dtype=jnp.bfloat16)
    lengths = jnp.array([64, 40])
    cudnn = attend(q, k, v, causal=True, kv_lengths=lengths, implementation="cudnn")
    xla = attend(q, k, v, causal=True, kv_lengths=lengths, implementation="xla")
    np.testing.assert_allclose(cudnn.astype(jnp.float32), xla.astype(jnp.float32), atol=2e-2)


def test_pallas_kernel_matches_xla_with_segments_lengths_and_gradients():
    q, k, v = qkv(q_len=7, kv_len=7)
    lengths = jnp.array([7, 5])
    segments = jnp.array([[0] * 4 + [1] * (q.shape[1] - 4), [0] * q.shape[1]])

    def loss(implementation, q, k, v):
        out = attend(q, k, v, causal=True, kv_lengths=lengths, segment_ids=segments, implementation=implementation)
        return jnp.sum(out * jnp.cos(out))

    for argnum in (1, 2, 3):
        xla = jax.grad(loss, argnums=argnum)("xla", q, k, v)
        pallas = jax.grad(loss, argnums=argnum)("pallas", q, k, v)
        np.testing.assert_allclose(pallas, xla, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(loss("pallas", q, k, v), loss("xla", q, k, v), rtol=1e-5)


def test_auto_is_xla_on_cpu_and_cudnn_or_pallas_refuse_clearly():
    q, k, v = qkv()
    # float32 with D=8: neither cuDNN (half precision) nor the compiled Pallas kernel (D >= 16) applies.
    assert attention.resolve_implementation("auto", q, k, attention.Visibility()) == "xla"
    with pytest.raises(ValueError, match="implementation='pallas' cannot run here: it takes masks as causal"):
        attend(q, k, v, mask=jnp.ones((1, 1, q.shape[1], k.shape[1]), bool), implementation="pallas")
    if jax.default_backend() != "gpu":
        with pytest.raises(ValueError, match="implementation='cudnn' cannot run here: it needs a GPU"):
            attend(q, k, v, implementation="cudnn")
    with pytest.raises(ValueError, match="unknown attention implementation 'flash'"):
        attend(q, k, v, implementation="flash")


def test_bfloat16_inputs_keep_float32_softmax_statistics():
    q, k, v = qkv()
    out, weights = attend(
        q.astype(jnp.bfloat16), k.astype(jnp.bfloat16), v.astype(jnp.bfloat16), causal=True, return_weights=True
    )
    assert out.dtype == jnp.bfloat16 and weights.dtype == jnp.float32
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out.astype(jnp.float32), attend(q, k, v, causal=True), atol=0.05)


def test_attention_dropout_is_unbiased_and_off_without_a_key():
    q, k, v = qkv()

    @jax.jit
    def clean_once_and_mean(q, k, v):
        def drop(key):
            return dot_product_attention(q, k, v, dropout_rate=0.5, dropout_rng=key)

        dropped = jax.vmap(drop)(jax.random.split(jax.random.key(1), 4000))
        no_key = dot_product_attention(q, k, v, dropout_rate=0.5)
        return dot_product_attention(q, k, v), no_key, dropped[0], dropped.mean(0)

    clean, no_key, once, mean = clean_once_and_mean(q, k, v)
    np.testing.assert_array_equal(no_key, clean)
    assert not np.allclose(once, clean, atol=1e-3)
    np.testing.assert_allclose(mean, clean, atol=0.1)


def test_bad_shapes_get_clear_errors():
    q, k, v = qkv()
    with pytest.raises(
        ValueError,
        match=r"mask of shape \(2, 5, 7\) does not broadcast to \[batch, heads, q_len, "
        r"kv_len\] = \(2, 4, 5, 7\)",
    ):
        attend(q, k, v, mask=jnp.ones((B, T, S), bool))
    with pytest.raises(ValueError, match=r"bias of shape \(2, 3, 5, 7\) does not broadcast"):
        attend(q, k, v, bias=jnp.zeros((B, 3, T, S)))
    with pytest.raises(TypeError, match="mask must be boolean"):
        attend(q, k, v, mask=jnp.ones((B, 1, T, S)))
    with pytest.raises(
        ValueError, match=r"query heads \(4\) must be a multiple of the number of key/value heads \(3\)"
    ):
        attend(q, jnp.zeros((B, S, 3, D)), jnp.zeros((B, S, 3, D)))
    with pytest.raises(ValueError, match=r"kv_lengths must have shape \[batch\]=\(2,\)"):
        attend(q, k, v, kv_lengths=jnp.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"query must be \[batch, length, heads, head_dim\]"):
        attend(q[0], k, v)


def test_rotary_scores_depend_only_on_the_relative_position():
    q, k, _ = qkv(q_len=1, kv_len=1, kv_heads=H)

    def score(m, n):
        rq = attention.rotary_embedding(q, jnp.array([m]))
        rk = attention.rotary_embedding(k, jnp.array([n]))
        return jnp.einsum("bthd,bshd->bh", rq, rk)

    np.testing.assert_allclose(score(3, 1), score(12, 10), rtol=1e-4, atol=1e-4)
    assert not np.allclose(score(3, 1), score(3, 2), atol=1e-3)
    np.testing.assert_allclose(attention.rotary_embedding(q, jnp.array([0])), q)  # position 0: identity
    with pytest.raises(ValueError, match="even head width"):
        attention.rotary_embedding(q[..., :3], jnp.array([0]))


# ----------------------------------------------------------------------------- the module


def mha(**kwargs):
    return MultiHeadAttention(num_heads=H, **kwargs)


def test_module_self_attention_is_causal_exactly():
    module = mha(num_kv_heads=K, rotary=True)
    x = jax.random.normal(jax.random.key(0), (B, 6, 16))
    params = init(module, x)
    t = 2
    jac = jax.jit(jax.jacrev(lambda x: run(module, params, x, causal=True)[:, t]))(x)  # [B, F, B, T, F]
    assert np.all(np.asarray(jac[:, :, :, t + 1 :]) == 0.0)
    assert np.all(np.abs(np.asarray(jac[0, :, 0, : t + 1])).sum(axis=(0, 2)) > 0)


def test_module_matches_flax_multi_head_dot_product_attention():
    x, kv = jax.random.normal(jax.random.key(0), (B, T, 16)), jax.random.normal(jax.random.key(1), (B, S, 16))
    ours = mha(qkv_features=32)
    flax_mha = nn.MultiHeadDotProductAttention(num_heads=H, qkv_features=32)
    params = init(ours, x, kv)

    def shapes(module):
        return jax.tree.map(jnp.shape, jax.eval_shape(module.init, jax.random.key(0), x, kv))

    assert shapes(ours) == shapes(flax_mha)
    lengths = jnp.array([7, 4])

    @jax.jit
    def both(params, x, kv):
        padding = (jnp.arange(S) < lengths[:, None])[:, None, None, :]
        causal = nn.make_causal_mask(jnp.ones((B, T)))
        return (
            ours.apply(params, x, kv, kv_lengths=lengths),
            flax_mha.apply(params, x, kv, mask=padding),
            ours.apply(params, x, causal=True),
            flax_mha.apply(params, x, mask=causal),
        )

    cross, flax_cross, causal_self, flax_causal_self = both(params, x, kv)
    np.testing.assert_allclose(cross, flax_cross, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(causal_self, flax_causal_self, rtol=1e-5, atol=1e-5)


def test_cross_attention_keys_and_values_projected_once_give_the_same_output():
    x, kv = jax.random.normal(jax.random.key(0), (B, T, 16)), jax.random.normal(jax.random.key(1), (B, S, 16))
    module = mha(num_kv_heads=K, qkv_features=32)
    params = init(module, x, kv)
    lengths = jnp.array([7, 4])
    key, value = run(module, params, x, kv, project_kv_only=True)
    assert key.shape == value.shape == (B, S, K, 32 // H)
    np.testing.assert_allclose(
        run(module, params, x, (key, value), kv_lengths=lengths),
        run(module, params, x, kv, kv_lengths=lengths),
        rtol=1e-6,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="project_kv_only=True projects the cross-attention inputs_kv"):
        module.apply(params, x, project_kv_only=True)


def test_module_width_not_divisible_by_heads_is_a_clear_error():
    with pytest.raises(ValueError, match="attention width 10 is not divisible by num_heads=4"):
        init(mha(), jnp.zeros((B, T, 10)))
    with pytest.raises(ValueError, match="num_heads=4 must be a multiple of num_kv_heads=3"):
        mha(num_kv_heads=3).init(jax.random.key(0), jnp.zeros((B, T, 12)))


def test_weights_are_sown_only_when_asked():
    x = jax.random.normal(jax.random.key(0), (B, T, 16))
    params = init(mha(), x)
    plain, state = run(mha(), params, x, causal=True, mutable=["intermediates"])
    assert "intermediates" not in state or not state["intermediates"]
    sown_out, state = run(mha(sow_weights=True), params, x, causal=True, mutable=["intermediates"])
    (weights,) = state["intermediates"]["attention_weights"]
    assert weights.shape == (B, H, T, T)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(sown_out, plain, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.triu(np.asarray(weights[0, 0]), 1), 0.0)


def decode_in_pieces(module, params, x, pieces, max_len):
    """Feeds x [B, T, F] in chunks of the given sizes through the KV cache
    (one compiled program); returns the outputs and the final cache."""

    @jax.jit
    def feed(params, x, cache):
        outs, start = [], 0
        for size in pieces:
            out, state = module.apply(
                {**params, "cache": cache}, x[:, start : start + size], decode=True, mutable=["cache"]
            )
            cache, start = state["cache"], start + size
            outs.append(out)
        return jnp.concatenate(outs, axis=1), cache

    return feed(params, x, init_cache(module, jnp.zeros((B, max_len, x.shape[-1]))))


@pytest.mark.parametrize("rotary", [False, True])
def test_kv_cache_decoding_equals_the_full_causal_pass(rotary):
    module = mha(num_kv_heads=K, rotary=rotary)
    x = jax.random.normal(jax.random.key(0), (B, 8, 16))
    params = init(module, x)
    full = run(module, params, x, causal=True)
    stepwise, cache = decode_in_pieces(module, params, x, [3, 1, 1, 2, 1], max_len=10)
    np.testing.assert_allclose(stepwise, full, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(cache["cache_index"], [8, 8])


def test_kv_cache_rows_advance_by_their_own_lengths():
    module = mha()
    x = jax.random.normal(jax.random.key(0), (B, 6, 16))
    params = init(module, x)
    cache = init_cache(module, jnp.zeros((B, 8, 16)))
    # Row 1's prompt is 2 tokens long, padded to 4: its next token goes to position 2.
    _, state = run(
        module, {**params, "cache": cache}, x[:, :4], decode=True, decode_lengths=jnp.array([4, 2]), mutable=["cache"]
    )
    nxt = jnp.stack([x[0, 4], x[1, 2]])[:, None]
    out, state = run(module, {**params, **state}, nxt, decode=True, mutable=["cache"])
    np.testing.assert_array_equal(state["cache"]["cache_index"], [5, 3])
    row1 = jnp.concatenate([x[1:, :2], nxt[1:]], axis=1)
    np.testing.assert_allclose(out[1], run(module, params, row1, causal=True)[0, -1:], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[0], run(module, params, x[:1, :5], causal=True)[0, -1:], rtol=1e-5, atol=1e-5)


def test_kv_cache_overflow_is_an_error_eagerly_and_nan_under_jit():
    module = mha()
    x = jax.random.normal(jax.random.key(0), (B, 4, 16))
    params = init(module, x)
    _, cache = decode_in_pieces(module, params, x, [4], max_len=4)
    with pytest.raises(ValueError, match="KV cache overflow: writing up to position 5 in a cache of length 4"):
        module.apply({**params, "cache": cache}, x[:, :1], decode=True, mutable=["cache"])  # eager: index known
    out, _ = run(module, {**params, "cache": cache}, x[:, :1], decode=True, mutable=["cache"])
    assert np.all(np.isnan(out))
    with pytest.raises(ValueError, match="decode=True needs a KV cache"):
        run(module, params, x, decode=True, mutable=["cache"])
