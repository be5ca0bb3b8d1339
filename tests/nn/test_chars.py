"""Character-level word encoders: a plain-numpy reference for the CNN,
per-word unpadded runs for the BiLSTM, and independence from padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.nn import chars, recurrent

VOCAB = 11


def char_ids(words, width):
    """[1, len(words), width] ids from lists of ids (0-padded)."""
    out = np.zeros((1, len(words), width), np.int32)
    for i, word in enumerate(words):
        out[0, i, : len(word)] = word
    return out


WORDS = [[3, 4, 5, 6], [7], [], [2, 9, 9, 8, 10, 1, 5]]


def numpy_cnn(params, word):
    """Embed, convolve with zero 'same' padding, max over the word's characters."""
    table, kernel, bias = params["table"], params["conv"]["kernel"], params["conv"]["bias"]
    if not word:
        return np.zeros(kernel.shape[-1], np.float32)
    width = kernel.shape[0]
    padded = np.concatenate(
        [np.zeros((width // 2, table.shape[1])), table[word], np.zeros((width // 2, table.shape[1]))]
    )
    windows = [padded[i : i + width] for i in range(len(word))]
    features = np.stack([np.einsum("ke,kef->f", w, kernel) + bias for w in windows])
    return features.max(axis=0)


def test_the_cnn_encoder_equals_a_numpy_reference_at_any_padding_width():
    encoder = chars.CharEncoder("cnn", VOCAB, embed_size=5, hidden_size=6, kernel_size=3)
    variables = encoder.init(jax.random.key(0), char_ids(WORDS, 8))
    params = jax.tree.map(np.asarray, variables["params"])
    for width in (7, 12):
        encoded = np.asarray(encoder.apply(variables, char_ids(WORDS, width)))
        assert encoded.shape == (1, len(WORDS), 6)
        for i, word in enumerate(WORDS):
            np.testing.assert_allclose(encoded[0, i], numpy_cnn(params, word), rtol=1e-5, atol=1e-6)


def test_the_lstm_encoder_equals_each_word_run_alone_without_padding():
    encoder = chars.CharEncoder("lstm", VOCAB, embed_size=5, hidden_size=4)
    variables = encoder.init(jax.random.key(1), char_ids(WORDS, 8))
    encoded = np.asarray(encoder.apply(variables, char_ids(WORDS, 9)))
    assert encoded.shape == (1, len(WORDS), 8)
    stack = recurrent.RecurrentStack(cell="lstm", hidden_size=4, bidirectional=True)
    stack_variables = {"params": variables["params"]["lstm"]}
    table = variables["params"]["table"]
    for i, word in enumerate(WORDS):
        if not word:
            np.testing.assert_array_equal(encoded[0, i], 0.0)
            continue
        _, carries = stack.apply(stack_variables, table[jnp.asarray(word)][None])
        alone = recurrent.final_hidden(carries[-1], "concat")[0]
        np.testing.assert_allclose(encoded[0, i], alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", chars.ENCODERS)
def test_gradients_are_finite_with_empty_words_and_bad_input_is_refused(kind):
    encoder = chars.CharEncoder(kind, VOCAB, embed_size=4, hidden_size=3)
    ids = char_ids(WORDS, 8)
    variables = encoder.init(jax.random.key(2), ids)
    grads = jax.grad(lambda v: encoder.apply(v, ids).sum())(variables)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    with pytest.raises(ValueError, match=r"^character ids must be \[batch, words, chars\], got shape \(4, 8\)"):
        encoder.apply(variables, ids[0])
    with pytest.raises(ValueError, match=r"^chars holds token id 11 at position \(0, 0, 0\), outside \[0, 11\)"):
        encoder.apply(variables, np.full_like(ids, VOCAB))
