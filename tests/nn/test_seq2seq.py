"""Recurrent encoder-decoders: attention scores against numpy, masking,
reversed sources, scheduled sampling and incremental decoding."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.nn import rnn_attention, seq2seq

SOURCE_VOCAB, TARGET_VOCAB = 11, 9
SOURCE = np.array([[4, 5, 6, 7, 0, 0], [8, 9, 10, 4, 5, 6], [7, 0, 0, 0, 0, 0]], np.int32)
LENGTHS = np.array([4, 6, 1], np.int32)
DECODER_INPUTS = np.array([[2, 4, 5, 6], [2, 7, 8, 4], [2, 5, 0, 0]], np.int32)


# The few configurations the tests share (compiling is what takes time here).
BAHDANAU = {"attention": "bahdanau", "reverse_source": True}
LUONG = {"attention": "luong_general", "tie_embeddings": True, "cell": "gru"}
PLAIN = {"attention": "none", "encoder_layers": 2, "decoder_layers": 2}


def small_model(attention="bahdanau", **kwargs):
    kwargs = {"hidden_size": 8, "embed_size": 6, "implementation": "scan", **kwargs}
    return seq2seq.Seq2Seq(SOURCE_VOCAB, TARGET_VOCAB, attention=attention, **kwargs)


@functools.cache
def init(model):
    """Random parameters in the shapes `model.init` would give. Drawn with
    numpy from the traced shapes: compiling a Flax init is slow on CPU and
    these tests only need some weights."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), SOURCE, LENGTHS, decoder_inputs=DECODER_INPUTS)
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.5, s.shape), s.dtype), shapes["params"])


@functools.cache
def _compiled(model, **static):
    def run(params, source, lengths, decoder_inputs, rng):
        rngs = None if rng is None else {"dropout": rng}
        return model.apply({"params": params}, source, lengths, decoder_inputs=decoder_inputs, rngs=rngs, **static)

    return jax.jit(run)


def forward(model, params, source=SOURCE, lengths=LENGTHS, decoder_inputs=DECODER_INPUTS, rng=None, **static):
    """model.apply, jit-compiled once per (model, static keyword arguments)."""
    return _compiled(model, **static)(params, source, lengths, decoder_inputs, rng)


def decode_stepwise(model, params, source, lengths, decoder_inputs):
    """Logits [B, T, V] from feeding decoder_inputs one token at a time."""
    start, tokens_to_logits = model.incremental_decoder({"params": params}, max_len=decoder_inputs.shape[1])
    tokens_to_logits = jax.jit(tokens_to_logits)
    cache = jax.jit(start)(source, lengths)
    steps = []
    for t in range(decoder_inputs.shape[1]):
        logits, cache = tokens_to_logits(jnp.asarray(decoder_inputs[:, t]), cache)
        steps.append(logits)
    return np.stack(steps, axis=1)


# ----------------------------------------------------------------------------- attention scores


def test_attention_scores_match_a_numpy_reference():
    rng = np.random.default_rng(0)
    batch, steps, key_size, query_size, size = 2, 5, 6, 4, 3
    encoded = rng.normal(size=(batch, steps, key_size)).astype(np.float32)
    query = rng.normal(size=(batch, query_size)).astype(np.float32)
    w_query = rng.normal(size=(query_size, size)).astype(np.float32)
    w_key = rng.normal(size=(key_size, size)).astype(np.float32)
    bias, v = rng.normal(size=size).astype(np.float32), rng.normal(size=size).astype(np.float32)
    additive = {"query_kernel": w_query, "key_kernel": w_key, "bias": bias, "v": v}
    # Bahdanau / Luong concat: e_j = vᵀ tanh(W s + U h_j + b), computed row by row.
    expected = np.array(
        [
            [v @ np.tanh(w_query.T @ query[b] + w_key.T @ encoded[b, j] + bias) for j in range(steps)]
            for b in range(batch)
        ]
    )
    for score in ("bahdanau", "concat"):
        keys = rnn_attention.project_keys(score, additive, jnp.asarray(encoded))
        np.testing.assert_allclose(
            rnn_attention.scores(score, additive, jnp.asarray(query), keys), expected, rtol=1e-5, atol=1e-5
        )
    # Luong general: e_j = sᵀ W_a h_j with W_a [Q, E] (stored transposed as key_kernel [E, Q]).
    w_general = rng.normal(size=(query_size, key_size)).astype(np.float32)
    general = {"key_kernel": jnp.asarray(w_general.T)}
    keys = rnn_attention.project_keys("general", general, jnp.asarray(encoded))
    expected = np.einsum("bq,qe,bse->bs", query, w_general, encoded)
    np.testing.assert_allclose(
        rnn_attention.scores("general", general, jnp.asarray(query), keys), expected, rtol=1e-5, atol=1e-5
    )
    # Luong dot: e_j = sᵀ h_j.
    dot_query = rng.normal(size=(batch, key_size)).astype(np.float32)
    keys = rnn_attention.project_keys("dot", {}, jnp.asarray(encoded))
    np.testing.assert_allclose(
        rnn_attention.scores("dot", {}, jnp.asarray(dot_query), keys),
        np.einsum("be,bse->bs", dot_query, encoded),
        rtol=1e-5,
        atol=1e-5,
    )


def test_attend_is_a_masked_softmax_average():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(2, 4, 3)).astype(np.float32)
    query = rng.normal(size=(2, 3)).astype(np.float32)
    mask = np.array([[True, True, False, False], [True, True, True, True]])
    context, alpha = rnn_attention.attend(
        "dot", {}, jnp.asarray(query), jnp.asarray(values), jnp.asarray(values), jnp.asarray(mask)
    )
    logits = np.einsum("be,bse->bs", query, values)
    logits = np.where(mask, logits, -np.inf)
    weights = np.exp(logits - logits.max(1, keepdims=True))
    weights /= weights.sum(1, keepdims=True)
    np.testing.assert_allclose(alpha, weights, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(alpha)[~mask] == 0.0)
    np.testing.assert_allclose(context, np.einsum("bs,bse->be", weights, values), rtol=1e-5, atol=1e-6)
    # A row without any valid step gets zeros, not NaN.
    empty = rnn_attention.masked_softmax(jnp.ones((1, 3)), jnp.zeros((1, 3), bool))
    np.testing.assert_array_equal(empty, np.zeros((1, 3)))


# ----------------------------------------------------------------------------- the model


@pytest.mark.parametrize("config", [BAHDANAU, LUONG], ids=["bahdanau", "luong"])
def test_attention_weights_sum_to_one_and_skip_source_padding(config):
    model = small_model(**config)
    _, alpha = forward(model, init(model), return_attention=True)
    alpha = np.asarray(alpha)
    assert alpha.shape == (3, 4, 6)
    np.testing.assert_allclose(alpha.sum(-1), 1.0, rtol=1e-5)
    padding = np.arange(6)[None, :] >= LENGTHS[:, None]
    assert np.all(alpha.transpose(1, 0, 2)[:, padding] == 0.0)
    assert np.all(alpha[2, :, 0] == 1.0)  # a one-token source takes all the weight


def test_padded_source_tokens_change_nothing():
    model = small_model(**BAHDANAU)
    noisy = np.where(np.arange(6)[None, :] >= LENGTHS[:, None], 3, SOURCE)
    np.testing.assert_array_equal(forward(model, init(model)), forward(model, init(model), source=noisy))


def test_reverse_valid_reverses_only_valid_tokens():
    reversed_ = np.asarray(seq2seq.reverse_valid(jnp.asarray(SOURCE), jnp.asarray(LENGTHS)))
    np.testing.assert_array_equal(reversed_, [[7, 6, 5, 4, 0, 0], [6, 5, 4, 10, 9, 8], [7, 0, 0, 0, 0, 0]])


def test_reversed_source_model_reads_the_reversed_sentence():
    plain, reversing = small_model("bahdanau"), small_model(**BAHDANAU)
    params = init(reversing)  # both models have the same parameters
    reversed_source = np.asarray(seq2seq.reverse_valid(jnp.asarray(SOURCE), jnp.asarray(LENGTHS)))
    logits_r, alpha_r = forward(reversing, params, return_attention=True)
    logits_p, alpha_p = forward(plain, params, source=reversed_source, return_attention=True)
    np.testing.assert_allclose(logits_r, logits_p, rtol=1e-6, atol=1e-6)
    # Weights come back indexed by the original positions: position j of the
    # given source is position len - 1 - j of what the encoder read.
    np.testing.assert_allclose(alpha_r[0, :, :4], alpha_p[0, :, 3::-1], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(alpha_r[1], alpha_p[1, :, ::-1], rtol=1e-6, atol=1e-7)


def test_ratio_one_scheduled_sampling_equals_teacher_forcing():
    model = small_model(**LUONG)  # with input feeding
    sampled = forward(model, init(model), teacher_forcing_ratio=1.0, deterministic=False, rng=jax.random.key(3))
    np.testing.assert_allclose(forward(model, init(model)), sampled, rtol=1e-6, atol=1e-6)


def test_ratio_zero_reads_only_the_models_own_samples():
    model = small_model(**PLAIN)
    params = init(model)
    other_inputs = DECODER_INPUTS.copy()
    other_inputs[:, 1:] = (other_inputs[:, 1:] + 3) % TARGET_VOCAB
    free_running = forward(model, params, teacher_forcing_ratio=0.0, deterministic=False, rng=jax.random.key(3))
    other = forward(
        model,
        params,
        decoder_inputs=other_inputs,
        teacher_forcing_ratio=0.0,
        deterministic=False,
        rng=jax.random.key(3),
    )
    np.testing.assert_array_equal(free_running, other)  # the true tokens after <sos> are never read
    forced = forward(model, params)
    np.testing.assert_allclose(free_running[:, 0], forced[:, 0], rtol=1e-6)  # step 0 reads <sos>
    assert not np.allclose(free_running[:, 1:], forced[:, 1:])


@pytest.mark.parametrize("config", [PLAIN, BAHDANAU, LUONG], ids=["plain", "bahdanau", "luong"])
def test_incremental_decoding_equals_the_teacher_forced_forward(config):
    model = small_model(**config)
    stepwise = decode_stepwise(model, init(model), SOURCE, LENGTHS, DECODER_INPUTS)
    np.testing.assert_allclose(stepwise, forward(model, init(model)), rtol=1e-5, atol=1e-5)


def test_the_bridge_carries_the_source_to_a_decoder_without_attention():
    model = small_model(**PLAIN)
    shifted = (SOURCE + 1) % SOURCE_VOCAB
    assert not np.allclose(forward(model, init(model)), forward(model, init(model), source=shifted))
    cut = small_model(**PLAIN, bridge="none")  # the decoder starts from zeros: nothing of the source remains
    np.testing.assert_array_equal(forward(cut, init(model)), forward(cut, init(model), source=shifted))


def test_bridge_is_dense_only_when_sizes_differ():
    def shapes(model):
        return jax.eval_shape(model.init, jax.random.key(0), SOURCE, LENGTHS, decoder_inputs=DECODER_INPUTS)["params"]

    assert not any(name.startswith("bridge") for name in shapes(small_model("none")))
    wider = shapes(small_model("none", encoder_hidden_size=5))
    assert wider["bridge_0_0_kernel"].shape == (5, 8) and wider["bridge_0_1_kernel"].shape == (5, 8)  # LSTM h, c
    bidirectional = shapes(small_model("bahdanau", cell="gru"))  # [forward; backward] = 16 -> 8
    assert bidirectional["bridge_0_0_kernel"].shape == (16, 8) and "bridge_0_1_kernel" not in bidirectional
    two_layers = shapes(small_model("none", encoder_layers=2, decoder_layers=2, bridge="dense"))
    assert two_layers["bridge_1_0_kernel"].shape == (8, 8)


def test_tied_output_uses_the_target_embedding():
    model = small_model(**LUONG)
    params = init(model)
    assert "output_kernel" not in params["decoder"]
    unused = 1  # never a decoder input, so its embedding row is read only by the softmax
    assert unused not in DECODER_INPUTS
    changed = jax.tree.map(lambda x: x, params)
    changed["decoder"]["embedding"] = params["decoder"]["embedding"].at[unused].add(1.0)
    before, after = forward(model, params), forward(model, changed)
    others = np.arange(TARGET_VOCAB) != unused
    np.testing.assert_array_equal(before[..., others], after[..., others])
    assert np.all(np.asarray(before[..., unused]) != np.asarray(after[..., unused]))


def test_vector_to_sequence_decodes_incrementally_like_its_forward_pass():
    model = seq2seq.VectorToSequence(TARGET_VOCAB, cell="gru", hidden_size=8, embed_size=6, decoder_layers=2)
    features = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), features, decoder_inputs=DECODER_INPUTS)["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.5, s.shape), s.dtype), shapes)
    run = jax.jit(lambda p, f: model.apply({"params": p}, f, decoder_inputs=DECODER_INPUTS))
    full = run(params, features)
    np.testing.assert_allclose(
        decode_stepwise(model, params, features, None, DECODER_INPUTS), full, rtol=1e-5, atol=1e-5
    )
    assert not np.allclose(run(params, features[::-1])[0], full[0])  # the vector conditions the whole sequence


def test_teacher_forcing_schedules():
    ratio = seq2seq.teacher_forcing_ratio
    assert ratio(500, "constant", 0.7) == 0.7
    assert ratio(0, "linear", 0.2, 100) == 1.0
    np.testing.assert_allclose(ratio(50, "linear", 0.2, 100), 0.6)
    assert ratio(1000, "linear", 0.2, 100) == 0.2
    np.testing.assert_allclose(ratio(100, "exponential", 0.0, 100), 0.5)
    np.testing.assert_allclose(ratio(0, "inverse_sigmoid", 0.0, 10), 10 / 11)
    np.testing.assert_allclose(ratio(10**6, "inverse_sigmoid", 0.25, 10), 0.25)
    with pytest.raises(ValueError, match="unknown teacher forcing schedule"):
        ratio(0, "cosine")
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        ratio(0, "constant", 1.5)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown attention 'luong_cosine'"):
        init(small_model("luong_cosine"))
    with pytest.raises(ValueError, match="'dot' attention needs the decoder state"):
        init(small_model("luong_dot", bidirectional_encoder=True))
    with pytest.raises(ValueError, match="unknown bridge"):
        init(small_model("none", bridge="mlp"))
    model = small_model(**BAHDANAU)
    params = init(model)
    with pytest.raises(
        ValueError, match=r"source inputs holds token id 11 at position \(\d+, \d+\), outside \[0, 11\)"
    ):
        model.apply({"params": params}, np.where(SOURCE == 10, 11, SOURCE), LENGTHS, decoder_inputs=DECODER_INPUTS)
    with pytest.raises(
        ValueError, match=r"decoder_inputs holds token id -?\d+ at position \(\d+, \d+\), outside \[0, 9\)"
    ):
        model.apply({"params": params}, SOURCE, LENGTHS, decoder_inputs=DECODER_INPUTS + 5)
    with pytest.raises(ValueError, match="needs decoder_inputs"):
        model.apply({"params": params}, SOURCE, LENGTHS)
    with pytest.raises(ValueError, match="empty source sentence"):
        model.apply({"params": params}, SOURCE, np.array([4, 0, 1]), decoder_inputs=DECODER_INPUTS)
    with pytest.raises(ValueError, match=r"teacher_forcing_ratio must lie in \[0, 1\]"):
        model.apply(
            {"params": params},
            SOURCE,
            LENGTHS,
            decoder_inputs=DECODER_INPUTS,
            teacher_forcing_ratio=2.0,
            deterministic=False,
            rngs={"dropout": jax.random.key(0)},
        )
    with pytest.raises(TypeError, match="integer token ids"):
        model.apply({"params": params}, SOURCE.astype(np.float32), LENGTHS, decoder_inputs=DECODER_INPUTS)
