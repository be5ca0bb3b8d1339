"""Greedy and sampled decoding on a Markov chain whose answer is known."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import decoding

VOCAB = 6


def markov_step(table):
    """tokens_to_logits for a first-order chain: logits = table[token]; the
    cache counts steps so tests can check it advances."""

    def tokens_to_logits(tokens, cache):
        return table[tokens], cache + 1

    return tokens_to_logits


def test_greedy_follows_the_argmax_chain():
    table = jnp.full((VOCAB, VOCAB), -5.0).at[jnp.arange(VOCAB), (jnp.arange(VOCAB) + 2) % VOCAB].set(3.0)
    tokens, steps = decoding.decode(markov_step(table), jnp.zeros(()), jnp.array([0, 1]), 4)
    np.testing.assert_array_equal(tokens, [[2, 4, 0, 2], [3, 5, 1, 3]])
    assert int(steps) == 4


def test_eos_stops_a_row_and_pads_after_it():
    table = jnp.full((VOCAB, VOCAB), -5.0).at[jnp.arange(VOCAB), (jnp.arange(VOCAB) + 1) % VOCAB].set(3.0)
    tokens, _ = decoding.decode(markov_step(table), jnp.zeros(()), jnp.array([1, 4]), 5, eos_id=3, pad_id=0)
    np.testing.assert_array_equal(tokens, [[2, 3, 0, 0, 0], [5, 0, 1, 2, 3]])


def test_sampling_matches_tempered_softmax():
    logits = jnp.log(jnp.array([0.5, 0.25, 0.125, 0.0625, 0.03125, 0.03125]))
    table = jnp.tile(logits, (VOCAB, 1))
    rows = 4000
    tokens, _ = decoding.decode(
        markov_step(table), jnp.zeros(()), jnp.zeros(rows, jnp.int32), 1, jax.random.key(0), temperature=2.0
    )
    expected = np.asarray(jax.nn.softmax(logits / 2.0))
    observed = np.bincount(np.asarray(tokens[:, 0]), minlength=VOCAB) / rows
    np.testing.assert_allclose(observed, expected, atol=0.03)


def test_top_k_and_top_p_restrict_the_support():
    probs = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
    logits = jnp.log(jnp.asarray(probs))[None]
    kept_k = np.isfinite(np.asarray(decoding.filter_logits(logits, top_k=2))[0]) & (
        np.asarray(decoding.filter_logits(logits, top_k=2))[0] > -1e30
    )
    np.testing.assert_array_equal(kept_k, [True, True, False, False, False])
    # Nucleus 0.8: 0.4 + 0.3 = 0.7 < 0.8, so the third token (0.15) is needed too.
    filtered = np.asarray(decoding.filter_logits(logits, top_p=0.8))[0]
    np.testing.assert_array_equal(filtered > -1e30, [True, True, True, False, False])
    table = jnp.tile(logits[0], (5, 1))
    tokens, _ = decoding.decode(
        markov_step(table), jnp.zeros(()), jnp.zeros(500, jnp.int32), 3, jax.random.key(1), temperature=1.0, top_k=2
    )
    assert set(np.unique(tokens)) == {0, 1}


def test_bad_arguments_raise():
    table = jnp.zeros((VOCAB, VOCAB))
    with pytest.raises(ValueError, match="needs an rng key"):
        decoding.decode(markov_step(table), 0, jnp.zeros(1, jnp.int32), 2, temperature=1.0)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        decoding.decode(markov_step(table), 0, jnp.zeros(1, jnp.int32), 0)
    with pytest.raises(ValueError, match="top_p"):
        decoding.filter_logits(table, top_p=0.0)


def test_recurrent_decoder_greedy_equals_argmax_of_a_full_forward_pass():
    import ml_collections

    from seqjax import models
    from seqjax.tasks.base import Task

    class LM(Task):
        vocab_size = output_size = VOCAB
        head = "per_step"

        def metric_sums(self, predictions, batch):
            raise AssertionError("only the model's shapes are read")

    config = ml_collections.ConfigDict(dict(name="recurrent", cell="gru", hidden_size=16, embed_size=8, num_layers=2))
    model = models.build(config, LM(ml_collections.ConfigDict()))
    prompt = jnp.array([[1, 4, 2], [3, 3, 0]], jnp.int32)
    params = model.init(jax.random.key(0), prompt)["params"]
    prefill, tokens_to_logits = decoding.recurrent_decoder(model, params)
    generated, _ = decoding.decode(tokens_to_logits, prefill(prompt), prompt[:, -1], 5)
    full = jnp.concatenate([prompt, generated], axis=1)
    logits = model.apply({"params": params}, full[:, :-1])
    # Each generated token is the argmax of the full model's prediction at the step before it.
    np.testing.assert_array_equal(jnp.argmax(logits[:, 2:], -1), generated)


def _tiny_transformer_lm(max_len):
    from seqjax.nn import transformer

    config = transformer.TransformerConfig(
        vocab_size=VOCAB + 4,
        d_model=16,
        num_heads=2,
        num_layers=2,
        d_ff=32,
        dropout_rate=0.0,
        positional="learned",
        max_len=max_len,
    )
    model = transformer.TransformerLM(config, VOCAB + 4)
    variables = model.init(jax.random.key(0), jnp.zeros((2, max_len), jnp.int32))
    # Larger output weights: sharp logits, so argmax ties cannot flip between the two computations.
    variables = jax.tree.map(lambda x: 3 * x, variables)
    return model, variables


def windowed_reference(model, variables, prompt, num_tokens, context):
    """Greedy decoding by full forward passes over each round's window: the
    rounds of generate_windowed (first the whole prompt, then the last
    context // 2 tokens), every token recomputed from scratch."""
    tokens = [list(row) for row in np.asarray(prompt)]
    produced, keep = 0, min(len(tokens[0]), context)
    while produced < num_tokens:
        start = len(tokens[0]) - keep
        for _ in range(min(num_tokens - produced, context - keep + 1)):
            logits = model.apply(variables, jnp.asarray([row[start:] for row in tokens]))[:, -1]
            for row, token in zip(tokens, np.asarray(jnp.argmax(logits, -1))):
                row.append(int(token))
            produced += 1
        keep = context // 2
    return np.asarray([row[-num_tokens:] for row in tokens])


@pytest.mark.parametrize("prompt_len", [3])  # 19 tokens: three rounds of an 8-position cache
def test_windowed_generation_equals_full_forward_passes_over_each_window(prompt_len):
    from seqjax.nn import transformer

    context, num_tokens = 8, 19
    model, variables = _tiny_transformer_lm(context)
    prompt = jax.random.randint(jax.random.key(1), (2, prompt_len), 4, VOCAB + 4)
    prefill, tokens_to_logits = transformer.lm_decoder(model, variables, context)
    generated = decoding.generate_windowed(prefill, tokens_to_logits, prompt, num_tokens, context)
    assert generated.shape == (2, num_tokens)
    np.testing.assert_array_equal(generated, windowed_reference(model, variables, prompt, num_tokens, context))


def test_windowed_generation_refuses_bad_arguments():
    step = markov_step(jnp.zeros((VOCAB, VOCAB)))
    with pytest.raises(ValueError, match="context must be >= 2"):
        decoding.generate_windowed(lambda p: 0, step, jnp.zeros((1, 2), jnp.int32), 4, context=1)
    with pytest.raises(ValueError, match="num_tokens must be >= 1"):
        decoding.generate_windowed(lambda p: 0, step, jnp.zeros((1, 2), jnp.int32), 0, context=4)
