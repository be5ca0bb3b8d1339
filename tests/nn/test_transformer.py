import dataclasses
import json
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.nn import transformer
from seqjax.nn.transformer import (
    Embedder,
    Encoder,
    TransformerClassifier,
    TransformerConfig,
    TransformerLM,
    TransformerSeq2Seq,
)

B, T, V = 2, 7, 11
# One block keeps compiles short on XLA:CPU; tests that need depth ask for two.
TINY = TransformerConfig(vocab_size=V, d_model=16, num_heads=4, num_layers=1, d_ff=32, dropout_rate=0.0)


def tiny(**changes) -> TransformerConfig:
    return dataclasses.replace(TINY, **changes)


def tokens(shape=(B, T), seed=0):
    return jax.random.randint(jax.random.key(seed), shape, 0, V)


def init(model, *args, **kwargs):
    return jax.jit(lambda *a: model.init(jax.random.key(1), *a, **kwargs))(*args)


def shapes(model, *args, **kwargs):
    """The variables `model.init` would create, as shape/dtype structs (nothing compiled)."""
    return jax.eval_shape(lambda *a: model.init(jax.random.key(1), *a, **kwargs), *args)


# ----------------------------------------------------------------------------- embeddings and positions


def test_sinusoidal_encoding_follows_the_paper():
    d = 6
    pe = np.asarray(transformer.sinusoidal_encoding(jnp.arange(10), d))
    for pos in range(10):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            np.testing.assert_allclose(pe[pos, 2 * i], math.sin(angle), atol=1e-5)
            np.testing.assert_allclose(pe[pos, 2 * i + 1], math.cos(angle), atol=1e-5)


def test_token_embeddings_are_scaled_by_sqrt_d_model():
    embedder = Embedder(tiny(), V)
    ids = tokens()
    variables = embedder.init(jax.random.key(0), ids, jnp.arange(T))
    table = variables["params"]["embedding"]
    np.testing.assert_allclose(embedder.apply(variables, ids, method=Embedder.embed), table[ids] * 4.0, rtol=1e-6)
    # The table starts at std d^-1/2, so scaled embeddings are about unit scale.
    assert 0.7 < float(jnp.std(table * 4.0)) < 1.3


class EncodeTokens(nn.Module):
    """Embedder + Encoder, per-position outputs [B, T, d]."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, ids):
        x = Embedder(self.config, self.config.vocab_size)(ids, jnp.arange(ids.shape[1]))
        return Encoder(self.config)(x, None, True)


@pytest.mark.parametrize("positional,equivariant", [("none", True), ("sinusoidal", False), ("rotary", False)])
def test_encoder_is_permutation_equivariant_only_without_positions(positional, equivariant):
    model = EncodeTokens(tiny(positional=positional))
    ids = tokens()
    perm = jnp.array([3, 0, 6, 1, 5, 2, 4])
    variables = init(model, ids)
    out, permuted = jax.jit(lambda v: (model.apply(v, ids), model.apply(v, ids[:, perm])))(variables)
    assert np.allclose(permuted, out[:, perm], atol=1e-5) == equivariant


# ----------------------------------------------------------------------------- causality and the KV cache


def test_lm_output_at_t_does_not_depend_on_later_inputs():
    # Two blocks: information could leak through a later position's first-block output.
    model = TransformerLM(tiny(vocab_size=0, num_layers=2), 5)
    x = jax.random.normal(jax.random.key(0), (B, T, 3))
    variables = init(model, x)
    t = 3
    jac = jax.jit(jax.jacrev(lambda x: model.apply(variables, x)[:, t]))(x)  # [B, 5, B, T, 3]
    assert np.all(np.asarray(jac[:, :, :, t + 1 :]) == 0.0)
    assert np.abs(np.asarray(jac[0, :, 0, : t + 1])).sum(axis=(0, 2)).min() > 0


def decode_stepwise(model, variables, ids, prefill: int, max_len: int):
    """Next-token logits [B, T - prefill + 1, V] from a prefill of `prefill`
    tokens, then one token at a time, through lm_decoder."""

    @jax.jit
    def run(variables, ids):
        start, step = transformer.lm_decoder(model, variables, max_len)
        cache = start(ids[:, :prefill])  # all but the prompt's last token
        _, logits = jax.lax.scan(lambda cache, token: step(token, cache)[::-1], cache, ids[:, prefill - 1 :].T)
        return jnp.swapaxes(logits, 0, 1)

    return run(variables, ids)


@pytest.mark.parametrize(
    "changes",
    [
        {"positional": "learned", "max_len": 12, "num_kv_heads": 2},
        {"positional": "rotary", "norm_position": "pre", "num_kv_heads": 1, "tie_embeddings": True},
    ],
)
def test_kv_cache_decoding_equals_the_full_forward_pass(changes):
    model = TransformerLM(tiny(**changes), V)
    ids = tokens()
    variables = init(model, ids)
    full = jax.jit(model.apply)(variables, ids)
    stepwise = decode_stepwise(model, variables, ids, prefill=3, max_len=10)
    np.testing.assert_allclose(stepwise, full[:, 2:], rtol=1e-4, atol=1e-5)


def test_prompts_of_different_lengths_decode_like_unpadded_ones():
    model = TransformerLM(tiny(), V)
    ids = tokens()
    variables = init(model, ids)
    prompt_lengths = jnp.array([5, 2])
    nxt = jnp.array([4, 9])

    @jax.jit
    def decode(variables):
        prefill, step = transformer.lm_decoder(model, variables, max_len=8)
        cache = prefill(ids[:, :5], prompt_lengths)
        first, cache = step(ids[jnp.arange(B), prompt_lengths - 1], cache)
        second, _ = step(nxt, cache)
        rows = [jnp.concatenate([ids[:1, :5], nxt[None, :1]], 1), jnp.concatenate([ids[1:, :2], nxt[None, 1:]], 1)]
        return first, second, [model.apply(variables, row)[0] for row in rows]

    first, second, (whole0, whole1) = decode(variables)
    np.testing.assert_allclose(first, jnp.stack([whole0[-2], whole1[-2]]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(second, jnp.stack([whole0[-1], whole1[-1]]), rtol=1e-4, atol=1e-5)


def test_lm_decoder_drives_beam_search():
    """(Greedy decoding through the same decoder is checked against recomputing
    the prefix in test_decode_benchmark_cases_generate_the_same_tokens.)"""
    from seqjax import decoding

    model = TransformerLM(tiny(), V)
    prompt = tokens((B, 3))
    variables = init(model, prompt)

    def score(variables, continuation):
        """log P(continuation | prompt) [B] from one full forward pass."""
        logits = model.apply(variables, jnp.concatenate([prompt, continuation], 1))[:, 2:-1]
        return jnp.take_along_axis(jax.nn.log_softmax(logits), continuation[..., None], -1).sum((1, 2))

    @jax.jit
    def generate(variables):
        prefill, step = transformer.lm_decoder(model, variables, max_len=8)
        greedy, _ = decoding.decode(step, prefill(prompt), prompt[:, -1], 5)
        beams = decoding.beam_search(step, prefill(prompt), prompt[:, -1], 5, beam_size=3, eos_id=None, alpha=0.0)
        return beams.log_probs[:, 0], score(variables, beams.tokens[:, 0]), score(variables, greedy)

    beam_log_prob, rescored, greedy_log_prob = generate(variables)
    np.testing.assert_allclose(beam_log_prob, rescored, rtol=1e-4, atol=1e-4)
    assert np.all(beam_log_prob >= greedy_log_prob - 1e-4)


def test_seq2seq_decoder_is_causal_ignores_source_padding_and_decodes_with_a_cache():
    model = TransformerSeq2Seq(tiny(norm_position="pre"), target_vocab_size=13)
    source, target = tokens(), tokens((B, 5), seed=1)
    lengths = jnp.array([7, 4])
    variables = init(model, source, lengths, decoder_inputs=target)

    @jax.jit
    def compute(variables):
        full = model.apply(variables, source, lengths, decoder_inputs=target)
        noisy_source = source.at[1, 4:].set(3)
        later_changed = target.at[:, 3:].set(0)
        start, step = transformer.seq2seq_decoder(model, variables, max_len=5)
        _, stepwise = jax.lax.scan(lambda cache, token: step(token, cache)[::-1], start(source, lengths), target.T)
        return (
            full,
            model.apply(variables, noisy_source, lengths, decoder_inputs=target),
            model.apply(variables, source, lengths, decoder_inputs=later_changed),
            jnp.swapaxes(stepwise, 0, 1),
        )

    full, noisy, changed, stepwise = compute(variables)
    assert full.shape == (B, 5, 13)
    np.testing.assert_allclose(noisy, full, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(changed[:, :3], full[:, :3], rtol=1e-5, atol=1e-6)
    assert not np.allclose(changed[:, 3:], full[:, 3:], atol=1e-4)
    np.testing.assert_allclose(stepwise, full, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="needs decoder_inputs"):
        model.apply(variables, source, lengths)


def test_seq2seq_decoder_interface_is_the_kv_cache_decoder_and_the_last_cross_attention():
    model = TransformerSeq2Seq(tiny(num_layers=2), target_vocab_size=13)
    source, target = tokens(), tokens((B, 5), seed=1)
    lengths = jnp.array([7, 4])
    variables = init(model, source, lengths, decoder_inputs=target)

    @jax.jit
    def compute(variables):
        start, step = model.incremental_decoder(variables, max_len=5)
        _, stepwise = jax.lax.scan(lambda cache, token: step(token, cache)[::-1], start(source, lengths), target.T)
        full = model.apply(variables, source, lengths, decoder_inputs=target)
        return full, jnp.swapaxes(stepwise, 0, 1), model.source_attention(variables, source, lengths, target)

    full, stepwise, alpha = compute(variables)
    np.testing.assert_allclose(stepwise, full, rtol=1e-4, atol=1e-5)
    sowing = model.clone(config=dataclasses.replace(model.config, sow_attention_weights=True))
    _, state = sowing.apply(variables, source, lengths, decoder_inputs=target, mutable=["intermediates"])
    last = state["intermediates"]["decoder"]["layer_1"]["cross_attention"]["attention_weights"][0]  # [B, H, T, S]
    assert alpha.shape == (B, 5, T) and alpha.dtype == jnp.float32
    np.testing.assert_allclose(alpha, np.asarray(last).mean(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(alpha.sum(-1), 1.0, rtol=1e-5)
    assert (np.asarray(alpha)[1, :, 4:] == 0).all()  # row 1's padded source positions


# ----------------------------------------------------------------------------- classifier, norms, options


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_classifier_padding_changes_nothing(pooling):
    model = TransformerClassifier(tiny(), output_size=3, pooling=pooling)
    ids, lengths = tokens(), jnp.array([7, 3])
    variables = init(model, ids, lengths)
    both = jnp.concatenate([ids, ids.at[1, 3:].set(5)])
    out, noisy = jnp.split(jax.jit(model.apply)(variables, both, jnp.concatenate([lengths, lengths])), 2)
    assert out.shape == (B, 3)
    np.testing.assert_allclose(noisy, out, rtol=1e-5, atol=1e-6)
    assert ("cls" in variables["params"]) == (pooling == "cls")


def test_post_ln_normalises_every_block_output_and_pre_ln_adds_a_final_norm():
    ids = tokens()
    post, pre = EncodeTokens(tiny()), EncodeTokens(tiny(norm_position="pre", norm="rms"))
    post_vars, pre_vars = init(post, ids), shapes(pre, ids)
    out = jax.jit(post.apply)(post_vars, ids)
    # LayerNorm starts with γ = 1, β = 0: each position has mean 0 and variance 1.
    np.testing.assert_allclose(out.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.var(-1), 1.0, rtol=1e-3)
    assert "final_norm" in pre_vars["params"]["Encoder_0"] and "final_norm" not in post_vars["params"]["Encoder_0"]
    rms = pre_vars["params"]["Encoder_0"]["final_norm"]["RMSNorm_0"]
    assert set(rms) == {"scale"}  # RMSNorm: a gain, no bias


def test_batch_norm_needs_mutable_statistics_and_skips_padding():
    model = TransformerClassifier(tiny(norm="batch"), output_size=2)
    ids, lengths = tokens(), jnp.array([7, 3])
    variables = init(model, ids, lengths)
    assert set(variables) == {"params", "batch_stats"}
    with pytest.raises(
        ValueError,
        match=r"norm='batch' updates running statistics while training: apply the "
        r"model with mutable=\['batch_stats'\]",
    ):
        model.apply(variables, ids, lengths, deterministic=False)

    @jax.jit
    def train_mode(variables, ids):
        return model.apply(variables, ids, lengths, deterministic=False, mutable=["batch_stats"])

    _, stats = train_mode(variables, ids)
    _, stats_noisy = train_mode(variables, ids.at[1, 3:].set(5))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), stats, stats_noisy)
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), stats["batch_stats"], variables["batch_stats"])
    assert any(jax.tree.leaves(changed))


def test_tied_embeddings_reuse_the_input_table_for_the_output():
    model = TransformerLM(tiny(tie_embeddings=True), V)
    ids = tokens()
    variables = init(model, ids)
    assert "output" not in variables["params"]
    table = variables["params"]["embedder"]["embedding"]
    # Zeroing the row of token 5 in the shared table zeroes its logit everywhere.
    zeroed = jax.tree.map(lambda x: x, variables)
    zeroed["params"]["embedder"]["embedding"] = table.at[5].set(0.0)
    np.testing.assert_array_equal(jax.jit(model.apply)(zeroed, ids)[..., 5], 0.0)
    with pytest.raises(ValueError, match="tie_embeddings needs output_size == vocab_size"):
        TransformerLM(tiny(tie_embeddings=True), V + 1).init(jax.random.key(0), ids)


def test_bfloat16_compute_keeps_float32_parameters_and_logits():
    ids = tokens()
    full, mixed = TransformerLM(tiny(), V), TransformerLM(tiny(dtype="bfloat16"), V)
    variables = init(full, ids)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(shapes(mixed, ids)))
    want, got = jax.jit(lambda v: (full.apply(v, ids), mixed.apply(v, ids)))(variables)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, atol=0.15)
    assert not np.array_equal(got, want)  # bfloat16 really was used


def test_dropout_only_in_training():
    model = TransformerLM(tiny(dropout_rate=0.3, attention_dropout_rate=0.3), V)
    ids = tokens()
    variables = init(model, ids)

    @jax.jit
    def outputs(variables):
        both = jnp.concatenate([ids, ids])  # two rows with the same tokens draw different masks
        train = model.apply(variables, both, deterministic=False, rngs={"dropout": jax.random.key(0)})
        return model.apply(variables, ids), train[:B], train[B:]

    evaluated, train_a, train_b = outputs(variables)
    assert not np.allclose(train_a, train_b) and not np.allclose(train_a, evaluated)


def test_gelu_and_relu_feed_forwards_differ():
    ids = tokens()
    relu, gelu = EncodeTokens(tiny()), EncodeTokens(tiny(activation="gelu"))
    variables = init(relu, ids)
    a, b = jax.jit(lambda v: (relu.apply(v, ids), gelu.apply(v, ids)))(variables)
    assert not np.allclose(a, b, atol=1e-3)


def test_bad_configs_and_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="d_model=18 is not divisible by num_heads=4"):
        tiny(d_model=18)
    with pytest.raises(ValueError, match="unknown positional='sinusodal'"):
        tiny(positional="sinusodal")
    with pytest.raises(ValueError, match="num_heads=4 must be a multiple of num_kv_heads=3"):
        tiny(num_kv_heads=3)
    with pytest.raises(ValueError, match="rotary positions need an even head width"):
        tiny(d_model=12, num_heads=4, positional="rotary")
    model = TransformerLM(tiny(positional="learned", max_len=5), V)
    with pytest.raises(
        ValueError,
        match=r"sequence of length 7 is longer than the learned position table "
        r"\(max_len=5\)",
    ):
        model.init(jax.random.key(0), tokens())
    with pytest.raises(ValueError, match="longer than the learned position table"):
        transformer.init_decoding_cache(model, B, 8)
    with pytest.raises(ValueError, match=r"token-id inputs must be integer \[batch, time\]"):
        TransformerLM(tiny(), V).init(jax.random.key(0), jnp.zeros((B, T, 3)))


# ----------------------------------------------------------------------------- training and inspection


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
    """A transformer_lm trained through the standard Trainer on the copy task (smoke sizes)."""
    from configs import transformer_synthetic
    from seqjax import parallel, training

    config = transformer_synthetic.get_config("smoke")
    config.train.num_steps = 60
    config.train.log_every = 20
    config.train.checkpoint_every = 60
    config.train.eval_every = 60
    config.optimizer.warmup_steps = 5
    config.optimizer.learning_rate = 3e-3
    workdir = str(tmp_path_factory.mktemp("copy_transformer"))
    final = training.train_and_evaluate(config, workdir, parallel.make_mesh(jax.devices()[:1]))
    return workdir, final


def test_lm_trains_through_the_trainer(trained_workdir):
    workdir, final = trained_workdir
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        losses = [row["train_loss"] for row in map(json.loads, f) if "train_loss" in row]
    # Starts near ln(vocab=10) ≈ 2.3 or above; the blanks alone are learnt within 60 steps.
    assert losses[0] > 1.5 and losses[-1] < 0.8 * losses[0], losses
    assert final["test_loss"] < losses[0]


def test_attention_maps_from_a_trained_run_and_a_fresh_model(trained_workdir, tmp_path):
    from tests.conftest import import_experiment

    attention_maps = import_experiment("attention_maps")

    workdir, _ = trained_workdir
    record = attention_maps.run(str(tmp_path / "trained"), workdir=workdir)
    assert sorted(record["files"]) == ["decoder/layer_0/self_attention"]
    assert len(record["tokens"]) == 3 + 10 + 3  # copy_len + delay + copy_len
    fresh = attention_maps.run(
        str(tmp_path / "fresh"), config_spec="configs/transformer_synthetic.py:classifier,smoke", index=1
    )
    assert fresh["tokens"][0] == "[CLS]"
    for path in list(record["files"].values()) + list(fresh["files"].values()):
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_decode_benchmark_cases_generate_the_same_tokens():
    from tests.conftest import import_experiment

    benchmark_decode = import_experiment("benchmark_decode")

    args = benchmark_decode.parse_args(
        [
            "--batch",
            "2",
            "--prompt",
            "3",
            "--steps",
            "6",
            "--d_model",
            "16",
            "--layers",
            "1",
            "--vocab",
            "13",
            "--bucket",
            "16",
        ]
    )
    model, variables = benchmark_decode.build_model(args)
    prompt = np.asarray(tokens((2, 3)))
    scan = benchmark_decode.greedy_with_cache_scan(model, variables, prompt, 6)()
    recompute = benchmark_decode.greedy_recompute(model, variables, prompt, 6, bucket=16)()
    assert scan.shape == (2, 6)
    np.testing.assert_array_equal(scan, recompute)  # (the benchmark itself checks its loop case too)
