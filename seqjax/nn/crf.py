"""A linear-chain conditional random field over per-step tag scores.

The score of tags y_1..y_n of a sentence with emission scores e [n, K] is

    s(y) = start[y_1] + sum_t e[t, y_t] + sum_{t>1} trans[y_{t-1}, y_t] + end[y_n]

and p(y | x) = exp s(y) / Z with Z = sum over all K^n tag sequences. The
forward algorithm computes log Z in O(n K^2) in log space (`log_partition`),
Viterbi the best sequence (`viterbi`), both as a `lax.scan` over time with
variable lengths: a padded step leaves the forward scores untouched, so it
changes nothing.

Transitions a tag scheme forbids (e.g. O -> I-PER in IOB2, `allowed_transitions`)
get the score FORBIDDEN, a large finite negative number rather than -inf, so
that the log-sum-exp and its gradient stay finite; their probability is then
exp(-1e4) (zero in float32) and Viterbi never takes them while any allowed
path exists.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

FORBIDDEN = -1e4  # the score added to a transition the tag scheme forbids
SCHEMES = ("IOB1", "IOB2", "IOBES")


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


def allowed_transitions(tag_names: Sequence[str], scheme: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(transitions [K, K], start [K], end [K]) booleans: what the tag scheme
    allows. IOB2: I-X only after B-X or I-X, and not first. IOBES: also B-X
    and I-X only before I-X or E-X, E-X and S-X only where a chunk may start,
    and a sentence ends in O, E- or S-. IOB1: I-X may open a chunk, so
    every transition is allowed (B-X only separates two chunks of type X)."""
    if scheme not in SCHEMES:
        raise ValueError(f"tag scheme must be one of {SCHEMES}, got {scheme!r}")
    parsed = [_split_tag(name) for name in tag_names]
    size = len(parsed)
    transitions, start, end = np.ones((size, size), bool), np.ones(size, bool), np.ones(size, bool)
    if scheme == "IOB1":
        return transitions, start, end
    inside = ("I",) if scheme == "IOB2" else ("I", "E")  # prefixes that continue a chunk
    for j, (prefix, kind) in enumerate(parsed):
        if prefix in inside:
            start[j] = False
            for i, (before, before_kind) in enumerate(parsed):
                transitions[i, j] = before in ("B", "I") and before_kind == kind
    if scheme == "IOBES":
        for i, (prefix, kind) in enumerate(parsed):
            if prefix in ("B", "I"):  # an open chunk must continue
                end[i] = False
                for j, (after, after_kind) in enumerate(parsed):
                    transitions[i, j] = after in ("I", "E") and after_kind == kind
    return transitions, start, end


def _split_tag(tag: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', '') (the same reading as seqjax.tasks.entities)."""
    prefix, _, kind = tag.partition("-")
    if tag != "O" and (prefix not in ("B", "I", "E", "S") or not kind):
        raise ValueError(f"bad tag {tag!r}: expected 'O' or B-/I-/E-/S- + a type, e.g. 'B-PER'")
    return (prefix, kind) if tag != "O" else ("O", "")


class CRF(nn.Module):
    """The CRF's parameters and its three operations on emission scores.

    Attributes:
      num_tags: K.
      constraints: optional (transitions [K, K], start [K], end [K]) booleans
        from `allowed_transitions`; forbidden ones score FORBIDDEN.
    """

    num_tags: int
    constraints: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def setup(self):
        init = nn.initializers.zeros
        self.transitions = self.param("transitions", init, (self.num_tags, self.num_tags))
        self.start = self.param("start", init, (self.num_tags,))
        self.end = self.param("end", init, (self.num_tags,))

    def scores(self) -> tuple[Array, Array, Array]:
        """(transitions, start, end) with the forbidden ones set to FORBIDDEN."""
        if self.constraints is None:
            return self.transitions, self.start, self.end
        return tuple(
            jnp.where(jnp.asarray(allowed), score, FORBIDDEN)
            for allowed, score in zip(self.constraints, (self.transitions, self.start, self.end))
        )

    def __call__(self, emissions: Array, tags: Array, lengths: Array) -> Array:
        """-log p(tags | emissions) per sentence [B]."""
        return negative_log_likelihood(emissions, tags, lengths, *self.scores())

    def decode(self, emissions: Array, lengths: Array) -> tuple[Array, Array]:
        """Viterbi: ([B, T] best tags, [B] their scores)."""
        return viterbi(emissions, lengths, *self.scores())
