"""A linear-chain conditional random field over per-step tag scores.

The score of tags y_1..y_n of a sentence with emission scores e [n, K] is

    s(y) = start[y_1] + sum_t e[t, y_t] + sum_{t>1} trans[y_{t-1}, y_t] + end[y_n]

and p(y | x) = exp s(y) / Z with Z = sum over all K^n tag sequences. The
forward algorithm computes log Z in O(n K^2) in log space (`log_partition`),
Viterbi the best sequence (`viterbi`), both as a `lax.scan` over time with
variable lengths: a padded step leaves the forward scores untouched, so it
changes nothing.

Transitions a tag scheme forbids (e.g. O -> I-PER in IOB2;
seqjax.tasks.tag_schemes.allowed_transitions)
get the score FORBIDDEN, a large finite negative number rather than -inf, so
that the log-sum-exp and its gradient stay finite; their probability is then
exp(-1e4) (zero in float32) and Viterbi never takes them while any allowed
path exists.
"""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

FORBIDDEN = -1e4  # the score added to a transition the tag scheme forbids


def _step_mask(lengths: Array, time: int) -> Array:
    """[B, T] bool: step t is inside its sentence."""
    return jnp.arange(time)[None, :] < lengths[:, None]


def sequence_score(
    emissions: Array, tags: Array, lengths: Array, transitions: Array, start: Array, end: Array
) -> Array:
    """s(y) of the given tags: emissions [B, T, K], tags [B, T] ints, lengths
    [B] (>= 1) -> [B]. Steps at or beyond a sentence's length count nowhere."""
    batch, time, _ = emissions.shape
    mask = _step_mask(lengths, time)
    emitted = jnp.take_along_axis(emissions, tags[..., None], axis=-1)[..., 0]
    moved = transitions[tags[:, :-1], tags[:, 1:]]  # [B, T-1]
    last = jnp.take_along_axis(tags, (lengths - 1)[:, None], axis=1)[:, 0]
    return (
        start[tags[:, 0]]
        + jnp.where(mask, emitted, 0.0).sum(axis=1)
        + jnp.where(mask[:, 1:], moved, 0.0).sum(axis=1)
        + end[last]
    )


def log_partition(emissions: Array, lengths: Array, transitions: Array, start: Array, end: Array) -> Array:
    """log Z by the forward algorithm: [B, T, K] emissions, [B] lengths -> [B]."""
    mask = _step_mask(lengths, emissions.shape[1])
    alpha = start[None, :] + emissions[:, 0]  # [B, K]: log-sum of the paths ending in each tag

    def step(alpha, inputs):
        emission, valid = inputs  # [B, K], [B]
        moved = jax.nn.logsumexp(alpha[:, :, None] + transitions[None], axis=1) + emission
        return jnp.where(valid[:, None], moved, alpha), None

    alpha, _ = jax.lax.scan(step, alpha, (jnp.swapaxes(emissions[:, 1:], 0, 1), mask[:, 1:].T))
    return jax.nn.logsumexp(alpha + end[None, :], axis=1)


def negative_log_likelihood(
    emissions: Array, tags: Array, lengths: Array, transitions: Array, start: Array, end: Array
) -> Array:
    """-log p(tags | x) = log Z - s(tags), per sentence [B]."""
    return log_partition(emissions, lengths, transitions, start, end) - sequence_score(
        emissions, tags, lengths, transitions, start, end
    )


def viterbi(emissions: Array, lengths: Array, transitions: Array, start: Array, end: Array) -> tuple[Array, Array]:
    """The best tag sequence and its score: ([B, T] ints, 0 beyond each
    length; [B]). Ties go to the lower tag id."""
    batch, time, num_tags = emissions.shape
    mask = _step_mask(lengths, time)
    score = start[None, :] + emissions[:, 0]

    def forward(score, inputs):
        emission, valid = inputs
        candidates = score[:, :, None] + transitions[None]  # [B, from, to]
        best_from = candidates.argmax(axis=1)  # [B, K]
        moved = candidates.max(axis=1) + emission
        # A padded step keeps the scores and points each tag back to itself.
        keep = jnp.broadcast_to(jnp.arange(num_tags), best_from.shape)
        return jnp.where(valid[:, None], moved, score), jnp.where(valid[:, None], best_from, keep)

    score, backpointers = jax.lax.scan(forward, score, (jnp.swapaxes(emissions[:, 1:], 0, 1), mask[:, 1:].T))
    final = score + end[None, :]
    last = final.argmax(axis=1)  # [B]

    def backward(tag, pointers):  # pointers [B, K]: the best previous tag of each tag
        previous = jnp.take_along_axis(pointers, tag[:, None], axis=1)[:, 0]
        return previous, tag

    first, later = jax.lax.scan(backward, last, backpointers, reverse=True)
    tags = jnp.concatenate([first[:, None], jnp.swapaxes(later, 0, 1)], axis=1) if time > 1 else first[:, None]
    return jnp.where(mask, tags, 0), final.max(axis=1)


@flax.struct.dataclass
class Scores:
    """A CRF's output: everything its loss and decoding need, as one pytree
    a model returns in place of per-step logits.

    emissions [B, T, K], transitions [K, K], start [K], end [K] (forbidden
    moves already at FORBIDDEN).
    """

    emissions: Array
    transitions: Array
    start: Array
    end: Array

    def negative_log_likelihood(self, tags: Array, lengths: Array) -> Array:
        """-log p(tags | x) per sentence [B]."""
        return negative_log_likelihood(self.emissions, tags, lengths, self.transitions, self.start, self.end)

    def decode(self, lengths: Array) -> tuple[Array, Array]:
        """Viterbi: ([B, T] best tags, 0 beyond each length; [B] their scores)."""
        return viterbi(self.emissions, lengths, self.transitions, self.start, self.end)


class CRF(nn.Module):
    """The CRF's parameters (transition, start and end scores, initialised
    at zero), paired with emission scores.

    Attributes:
      num_tags: K.
      constraints: optional (transitions [K, K], start [K], end [K]) booleans
        (seqjax.tasks.tag_schemes.allowed_transitions); forbidden ones
        score FORBIDDEN.
    """

    num_tags: int
    constraints: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @nn.compact
    def __call__(self, emissions: Array) -> Scores:
        """emissions [B, T, K] -> Scores."""
        if emissions.shape[-1] != self.num_tags:
            raise ValueError(f"emissions have {emissions.shape[-1]} tags per step, the CRF {self.num_tags}")
        init = nn.initializers.zeros
        scores = [
            self.param("transitions", init, (self.num_tags, self.num_tags)),
            self.param("start", init, (self.num_tags,)),
            self.param("end", init, (self.num_tags,)),
        ]
        if self.constraints is not None:
            scores = [
                jnp.where(jnp.asarray(allowed), score, FORBIDDEN) for allowed, score in zip(self.constraints, scores)
            ]
        return Scores(emissions, *scores)
