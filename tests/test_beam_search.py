"""Beam search against hand-computed log-probabilities, greedy decoding and
exhaustive search."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import decoding

# A hand-built Markov chain: token -> next-token probabilities.
VOCAB = 9
START, EOS, A, B, C, X, Y, Z = 1, 2, 3, 4, 5, 6, 7, 8
TRANSITIONS = {
    START: {A: 0.5, B: 0.4, EOS: 0.1},
    A: {X: 0.34, Y: 0.33, Z: 0.33},
    B: {C: 0.9, EOS: 0.1},
    C: {EOS: 1.0},
    X: {EOS: 1.0},
    Y: {EOS: 1.0},
    Z: {EOS: 1.0},
    0: {EOS: 1.0},
    EOS: {EOS: 1.0},
}


def chain_table(transitions=TRANSITIONS, floor=1e-6):
    probs = np.full((VOCAB, VOCAB), floor)
    for row, nexts in transitions.items():
        for token, p in nexts.items():
            probs[row, token] = p
    return np.log(probs / probs.sum(1, keepdims=True)).astype(np.float32)


def markov(table):
    """tokens_to_logits of a first-order chain; the cache counts calls per row."""
    table = jnp.asarray(table)

    def tokens_to_logits(tokens, calls):
        return table[tokens], calls + 1

    return tokens_to_logits


def test_beam_finds_the_best_sequence_that_greedy_misses():
    table = chain_table()
    step = markov(table)
    greedy, _ = decoding.decode(step, jnp.zeros(1), jnp.array([START]), 4, eos_id=EOS)
    np.testing.assert_array_equal(greedy, [[A, X, EOS, 0]])  # 0.5 * 0.34 = 0.17
    result = decoding.beam_search(step, jnp.zeros(1), jnp.array([START]), 4, 2, eos_id=EOS, alpha=0.0, num_return=2)
    np.testing.assert_array_equal(result.tokens[0], [[B, C, EOS, 0], [A, X, EOS, 0]])  # 0.4 * 0.9 = 0.36 first
    expected = [table[START, B] + table[B, C] + table[C, EOS], table[START, A] + table[A, X] + table[X, EOS]]
    np.testing.assert_allclose(result.log_probs[0], expected, rtol=1e-6)
    np.testing.assert_allclose(result.scores[0], expected, rtol=1e-6)  # alpha = 0: no length penalty
    np.testing.assert_allclose(result.log_probs[0], np.log([0.36, 0.17]), atol=1e-4)
    np.testing.assert_array_equal(result.lengths[0], [3, 3])


def test_length_penalty_decides_between_a_short_and_a_longer_hypothesis():
    # [EOS] has P = 0.5; [A, EOS] has P = 0.5 * 0.9 = 0.45.
    table = chain_table({START: {EOS: 0.5, A: 0.5}, A: {EOS: 0.9, X: 0.1}, X: {EOS: 1.0}})

    def run(alpha):
        return decoding.beam_search(
            markov(table), jnp.zeros(1), jnp.array([START]), 3, 2, eos_id=EOS, alpha=alpha, num_return=2
        )

    raw = run(0.0)
    np.testing.assert_array_equal(raw.tokens[0, 0], [EOS, 0, 0])
    penalised = run(1.0)  # lp(1) = 1, lp(2) = 7/6: log 0.45 / (7/6) = -0.684 > log 0.5 = -0.693
    np.testing.assert_array_equal(penalised.tokens[0, 0], [A, EOS, 0])
    np.testing.assert_allclose(penalised.scores[0], [np.log(0.45) * 6 / 7, np.log(0.5)], atol=1e-4)
    np.testing.assert_allclose(decoding.length_penalty(2, 1.0), 7 / 6)


def test_search_stops_early_once_no_live_beam_can_win():
    table = chain_table({START: {EOS: 0.9, A: 0.1}, A: {A: 1.0}})
    result = decoding.beam_search(markov(table), jnp.zeros(1), jnp.array([START]), 10, 2, eos_id=EOS, alpha=0.6)
    # After one step [EOS] scores log 0.9 and the best live beam at most log 0.1 / lp(10).
    assert int(result.num_steps) == 1
    np.testing.assert_array_equal(result.tokens[0, 0], [EOS] + [0] * 9)
    # Without an EOS, every hypothesis runs to max_new_tokens.
    full = decoding.beam_search(markov(table), jnp.zeros(1), jnp.array([START]), 10, 2, eos_id=None)
    assert int(full.num_steps) == 10 and int(full.lengths[0, 0]) == 10


def test_beam_of_one_is_greedy():
    rng = np.random.default_rng(0)
    table = rng.normal(0, 2, (VOCAB, VOCAB)).astype(np.float32)
    starts = jnp.arange(VOCAB)
    greedy, _ = decoding.decode(markov(table), jnp.zeros(VOCAB), starts, 6)
    beam = decoding.beam_search(markov(table), jnp.zeros(VOCAB), starts, 6, 1, eos_id=None, alpha=0.0)
    np.testing.assert_array_equal(beam.tokens[:, 0], greedy)
    # With an EOS that only ever wins as the argmax, too.
    chain = chain_table()
    greedy, _ = decoding.decode(markov(chain), jnp.zeros(1), jnp.array([B]), 4, eos_id=EOS)
    beam = decoding.beam_search(markov(chain), jnp.zeros(1), jnp.array([B]), 4, 1, eos_id=EOS, alpha=0.0)
    np.testing.assert_array_equal(beam.tokens[:, 0], greedy)


# A model whose next-token distribution depends on the whole prefix: the cache
# is a hash of the history, so a beam that picked up the wrong parent's cache
# would get the wrong logits.
HASH_VOCAB, HASH_EOS, HASH_STATES = 4, 1, 1009
HASH_TABLE = np.random.default_rng(0).normal(0, 1.5, (HASH_STATES, HASH_VOCAB)).astype(np.float32)


def next_state(state, tokens):
    return (state * 31 + tokens + 7) % HASH_STATES


def history_model():
    table = jnp.asarray(HASH_TABLE)

    def tokens_to_logits(tokens, state):
        state = next_state(state, tokens)
        return table[state], state

    return tokens_to_logits


def exhaustive(first, length, alpha):
    """Every finished hypothesis (ended by EOS or by length) with its score,
    best first, computed in numpy from the same hash model."""
    log_probs = HASH_TABLE - np.log(np.exp(HASH_TABLE).sum(1, keepdims=True))
    results = []
    for size in range(1, length + 1):
        for tokens in itertools.product(range(HASH_VOCAB), repeat=size):
            if HASH_EOS in tokens[:-1] or (size < length and tokens[-1] != HASH_EOS):
                continue
            state, log_p, previous = 0, 0.0, first
            for token in tokens:
                state = next_state(state, previous)
                log_p += log_probs[state, token]
                previous = token
            results.append((log_p / ((5 + size) / 6) ** alpha, tokens))
    return sorted(results, reverse=True)


def test_a_beam_as_wide_as_all_hypotheses_is_exhaustive_search():
    length, alpha = 4, 0.8
    best = exhaustive(2, length, alpha)[:5]
    # 3 non-EOS tokens: at most 27 live prefixes, so 32 beams keep all of them.
    result = decoding.beam_search(
        history_model(),
        jnp.zeros((1,), jnp.int32),
        jnp.array([2]),
        length,
        32,
        eos_id=HASH_EOS,
        alpha=alpha,
        num_return=5,
    )
    np.testing.assert_allclose(result.scores[0], [score for score, _ in best], rtol=1e-5)
    for row, (_, tokens) in zip(np.asarray(result.tokens[0]), best):
        np.testing.assert_array_equal(row[: len(tokens)], tokens)
        assert np.all(row[len(tokens) :] == 0)  # padded after the end


def test_rows_of_a_batch_are_searched_independently_under_jit():
    step = history_model()
    search = jax.jit(lambda cache, first: decoding.beam_search(step, cache, first, 5, 3, eos_id=HASH_EOS, num_return=3))
    batched = search(jnp.zeros((3,), jnp.int32), jnp.array([0, 2, 3]))
    alone = search(jnp.zeros((1,), jnp.int32), jnp.array([2]))
    np.testing.assert_array_equal(batched.tokens[1], alone.tokens[0])
    np.testing.assert_allclose(batched.scores[1], alone.scores[0], rtol=1e-6)
    assert not np.array_equal(batched.tokens[0], batched.tokens[1])
    assert np.all(np.diff(np.asarray(batched.scores), axis=1) <= 0)  # best first


def test_bad_arguments_raise():
    step = markov(chain_table())
    with pytest.raises(ValueError, match="beam_size must be an integer >= 1, got 0"):
        decoding.beam_search(step, jnp.zeros(1), jnp.array([START]), 3, 0, eos_id=EOS)
    with pytest.raises(ValueError, match=r"num_return must be an integer in \[1, beam_size=2\]"):
        decoding.beam_search(step, jnp.zeros(1), jnp.array([START]), 3, 2, eos_id=EOS, num_return=3)
    with pytest.raises(ValueError, match=r"^length penalty alpha must be a finite number >= 0, got -1"):
        decoding.beam_search(step, jnp.zeros(1), jnp.array([START]), 3, 2, eos_id=EOS, alpha=-1.0)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        decoding.beam_search(step, jnp.zeros(1), jnp.array([START]), 0, 2, eos_id=EOS)
    with pytest.raises(ValueError, match=r"leading dimension; got a leaf of shape \(3,\)"):
        decoding.beam_search(step, jnp.zeros(3), jnp.array([START, A]), 3, 2, eos_id=EOS)


def test_beam_hypotheses_of_a_seq2seq_model_score_their_teacher_forced_log_probability():
    from seqjax.nn import seq2seq

    model = seq2seq.Seq2Seq(10, 7, hidden_size=8, embed_size=4, attention="luong_general", implementation="scan")
    source, lengths = np.array([[4, 5, 6, 0], [7, 8, 9, 5]], np.int32), np.array([3, 4], np.int32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), source, lengths, decoder_inputs=source[:, :2])
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.7, s.shape), s.dtype), shapes["params"])
    start, tokens_to_logits = seq2seq.incremental_decoder(model, params)
    k, length, alpha, sos, eos = 3, 5, 0.6, 2, 3
    result = jax.jit(
        lambda cache: decoding.beam_search(
            tokens_to_logits, cache, jnp.full((2,), sos), length, k, eos_id=eos, alpha=alpha, num_return=k
        )
    )(start(source, lengths))
    hypotheses = np.asarray(result.tokens).reshape(2 * k, length)
    decoder_inputs = np.concatenate([np.full((2 * k, 1), sos), hypotheses[:, :-1]], axis=1)
    logits = model.apply(
        {"params": params}, np.repeat(source, k, 0), np.repeat(lengths, k, 0), decoder_inputs=decoder_inputs
    )
    token_log_probs = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), hypotheses[..., None], -1)[..., 0]
    hypothesis_lengths = np.asarray(result.lengths).reshape(-1)
    expected = np.array([token_log_probs[i, :n].sum() for i, n in enumerate(hypothesis_lengths)])
    np.testing.assert_allclose(np.asarray(result.log_probs).reshape(-1), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        result.scores, result.log_probs / decoding.length_penalty(result.lengths, alpha), rtol=1e-6
    )
    for row, n in zip(hypotheses, hypothesis_lengths):  # ends at EOS (or at the length limit), padded after
        assert (row[n - 1] == eos or n == length) and eos not in row[: n - 1] and np.all(row[n:] == 0)


def test_static_cache_parts_are_tiled_once_and_never_reordered():
    cache = {"state": jnp.arange(2.0), "memory": decoding.Static(jnp.arange(2.0) * 10)}
    tiled = decoding.tile_beams(cache, batch=2, beam_size=3)
    np.testing.assert_array_equal(tiled["memory"].value, [0, 0, 0, 10, 10, 10])
    moved = decoding.gather_beams(dict(tiled, state=jnp.arange(6.0)), jnp.array([[2, 0, 0], [1, 1, 2]]), 3)
    np.testing.assert_array_equal(moved["state"], [2, 0, 0, 4, 4, 5])
    assert moved["memory"] is tiled["memory"]
    # Inside jit'd beam search every step sees the memory as tiled (row b's beams: b's value), else NaN.
    table = jnp.asarray(chain_table())

    def tokens_to_logits(tokens, cache):
        expected = 10.0 * (jnp.arange(tokens.shape[0]) // 2)
        poison = jnp.where(cache["memory"].value == expected, 0.0, jnp.nan)
        return table[tokens] + poison[:, None], cache

    start = {"memory": decoding.Static(jnp.array([0.0, 10.0]))}
    result = jax.jit(lambda c: decoding.beam_search(tokens_to_logits, c, jnp.array([START, START]), 4, 2, eos_id=EOS))(
        start
    )
    assert np.isfinite(result.scores).all()
