"""The linear-chain CRF against brute-force enumeration of every tag
sequence, finite differences, and its masking and tag-scheme constraints."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.nn import crf
from seqjax.tasks import tag_schemes

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def random_problem(seed=0, batch=3, time=4, num_tags=3, lengths=(4, 2, 1)):
    rng = np.random.default_rng(seed)
    emissions = rng.normal(size=(batch, time, num_tags)).astype(np.float32)
    transitions = rng.normal(size=(num_tags, num_tags)).astype(np.float32)
    start, end = rng.normal(size=num_tags).astype(np.float32), rng.normal(size=num_tags).astype(np.float32)
    return emissions, np.asarray(lengths, np.int32), transitions, start, end


def brute_force(emissions, length, transitions, start, end, allowed=None):
    """{tag sequence: score} of every sequence of one sentence (allowed ones only)."""
    scores = {}
    for path in itertools.product(range(emissions.shape[1]), repeat=int(length)):
        if allowed is not None:
            ok_moves, ok_start, ok_end = allowed
            if not ok_start[path[0]] or not ok_end[path[-1]]:
                continue
            if not all(ok_moves[a, b] for a, b in zip(path, path[1:])):
                continue
        score = start[path[0]] + end[path[-1]] + sum(emissions[t, y] for t, y in enumerate(path))
        scores[path] = score + sum(transitions[a, b] for a, b in zip(path, path[1:]))
    return scores


def test_log_partition_best_path_and_scores_equal_enumeration():
    emissions, lengths, transitions, start, end = random_problem()
    log_z = crf.log_partition(emissions, lengths, transitions, start, end)
    best, best_score = crf.viterbi(emissions, lengths, transitions, start, end)
    for b, length in enumerate(lengths):
        scores = brute_force(emissions[b], length, transitions, start, end)
        values = np.array(list(scores.values()), np.float64)
        assert float(log_z[b]) == pytest.approx(np.log(np.exp(values).sum()), abs=1e-5)
        path = max(scores, key=scores.get)
        assert tuple(np.asarray(best[b, :length])) == path and np.all(np.asarray(best[b, length:]) == 0)
        assert float(best_score[b]) == pytest.approx(scores[path], abs=1e-5)
        tags = np.zeros((1, emissions.shape[1]), np.int32)
        for some_path in list(scores)[:: max(1, len(scores) // 7)]:
            tags[0, :length] = some_path
            got = crf.sequence_score(emissions[b : b + 1], tags, lengths[b : b + 1], transitions, start, end)
            assert float(got[0]) == pytest.approx(scores[some_path], abs=1e-5)


def test_padded_steps_change_nothing():
    emissions, lengths, transitions, start, end = random_problem(seed=1)
    tags = np.random.default_rng(2).integers(0, 3, size=lengths.shape + (4,)).astype(np.int32)
    noisy_emissions, noisy_tags = emissions.copy(), tags.copy()
    for b, length in enumerate(lengths):
        noisy_emissions[b, length:] = 100.0 * np.random.default_rng(b).normal(size=noisy_emissions[b, length:].shape)
        noisy_tags[b, length:] = 2
    for fn in (crf.log_partition, lambda e, n, *p: crf.viterbi(e, n, *p)[1]):
        np.testing.assert_array_equal(fn(emissions, lengths, transitions, start, end),
                                      fn(noisy_emissions, lengths, transitions, start, end))  # fmt: skip
    np.testing.assert_array_equal(crf.viterbi(emissions, lengths, transitions, start, end)[0],
                                  crf.viterbi(noisy_emissions, lengths, transitions, start, end)[0])  # fmt: skip
    np.testing.assert_array_equal(
        crf.negative_log_likelihood(emissions, tags, lengths, transitions, start, end),
        crf.negative_log_likelihood(noisy_emissions, noisy_tags, lengths, transitions, start, end),
    )


def test_gradients_equal_finite_differences_and_emission_gradients_are_marginals():
    emissions, lengths, transitions, start, end = random_problem(seed=3)
    tags = np.random.default_rng(4).integers(0, 3, size=(3, 4)).astype(np.int32)
    with jax.enable_x64(True):
        args = [np.asarray(a, np.float64) for a in (emissions, transitions, start, end)]

        def loss(emissions, transitions, start, end):
            return crf.negative_log_likelihood(emissions, tags, lengths, transitions, start, end).sum()

        grads = jax.grad(loss, argnums=(0, 1, 2, 3))(*args)
        eps = 1e-6
        for which, (value, grad) in enumerate(zip(args, grads)):
            for index in list(np.ndindex(value.shape))[::3]:
                bumped = [a.copy() for a in args]
                bumped[which][index] += eps
                lowered = [a.copy() for a in args]
                lowered[which][index] -= eps
                numeric = (loss(*bumped) - loss(*lowered)) / (2 * eps)
                assert float(grad[index]) == pytest.approx(float(numeric), abs=1e-6)
        # d log Z / d emissions[b, t, k] = p(y_t = k): sums to 1 at a real step, 0 at a padded one.
        marginals = jax.grad(lambda e: crf.log_partition(e, lengths, *args[1:]).sum())(args[0])
        expected = (np.arange(4)[None, :] < lengths[:, None]).astype(np.float64)
        np.testing.assert_allclose(np.asarray(marginals).sum(-1), expected, atol=1e-12)


def test_a_constrained_crf_decodes_the_best_allowed_path_even_against_the_emissions():
    rng = np.random.default_rng(5)
    emissions = rng.normal(size=(2, 4, len(TAGS))).astype(np.float32)
    emissions[:, :, TAGS.index("I-PER")] += 5.0  # unconstrained, every step would be I-PER
    lengths = np.array([4, 3], np.int32)
    allowed = tag_schemes.allowed_transitions(TAGS, "IOB2")
    model = crf.CRF(len(TAGS), constraints=allowed)
    variables = model.init(jax.random.key(0), emissions)
    variables = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), variables)
    crf_scores = model.apply(variables, emissions)
    tags, score = crf_scores.decode(lengths)
    params = variables["params"]
    for b, length in enumerate(lengths):
        scores = brute_force(emissions[b], length, np.asarray(params["transitions"]), np.asarray(params["start"]),
                             np.asarray(params["end"]), allowed)  # fmt: skip
        path = max(scores, key=scores.get)
        assert tuple(np.asarray(tags[b, :length])) == path and TAGS[path[0]] != "I-PER"
        assert float(score[b]) == pytest.approx(scores[path], abs=1e-4)
    # The loss of the module is the functional NLL with the forbidden scores in place.
    gold = np.array([[1, 2, 0, 3], [3, 4, 4, 0]], np.int32)
    nll = crf_scores.negative_log_likelihood(gold, lengths)
    constrained = [jnp.where(a, s, crf.FORBIDDEN) for a, s in zip(allowed, (params["transitions"], params["start"],
                                                                           params["end"]))]  # fmt: skip
    np.testing.assert_allclose(nll, crf.negative_log_likelihood(emissions, gold, lengths, *constrained), rtol=1e-6)
