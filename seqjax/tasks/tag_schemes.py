"""Chunk tag schemes: which one a corpus uses, conversion between them, and
the tag transitions each allows (for a CRF's constraints).

- IOB1: I-X inside a chunk; B-X only opens a chunk right after another X chunk
  (the original CoNLL-2003 release).
- IOB2 (BIO): B-X opens every chunk, I-X continues it.
- IOBES: B-X opens, I-X continues and E-X ends a chunk of two or more tokens;
  S-X is a one-token chunk.

Conversion goes through the chunks (`entities.extract_chunks`, which reads all
three), so it never changes which chunks a sentence has: entity scores are the
same whatever scheme a model is trained in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from seqjax.tasks import entities

SCHEMES = ("IOB1", "IOB2", "IOBES")


def is_chunk_tagging(tag_names: Iterable[str]) -> bool:
    """Every tag is 'O' or B-/I-/E-/S- + a type (NER, chunking; not POS)."""
    return all(t == "O" or (t[:2] in ("B-", "I-", "E-", "S-") and len(t) > 2) for t in tag_names)


def check_scheme(scheme: str, what: str) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"{what} must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    return scheme


def scheme_violation(tags: Sequence[str], scheme: str) -> str | None:
    """Why `tags` (one sentence) is not written in `scheme`, or None if it is.
    IOB1 text may also be valid IOB2 and vice versa when no chunk tells them
    apart (e.g. only one-token chunks that follow 'O')."""
    check_scheme(scheme, "scheme")
    parsed = [entities.split_tag(t) for t in tags]
    if scheme != "IOBES" and any(prefix in ("E", "S") for prefix, _ in parsed):
        return f"it has E-/S- tags, which {scheme} does not use"
    for i, chunk in enumerate(entities.extract_chunks(tags)):
        kind, first, last = chunk
        expected = write_chunk(kind, last - first + 1, scheme, after_same_kind=_after_same_kind(tags, first))
        if [t for t in tags[first : last + 1]] != expected:
            return f"chunk {i + 1} ({kind}, tokens {first + 1}-{last + 1}) is tagged {tags[first : last + 1]}"
    return None


def detect_scheme(sentences: Iterable[Sequence[str]]) -> str:
    """The scheme a corpus is written in: IOBES if it has E-/S- tags, else
    IOB1 if some chunk opens with I- (or B- only ever follows a chunk of its
    type), else IOB2."""
    sentences = list(sentences)
    tags = [t for sentence in sentences for t in sentence]
    if any(t[:2] in ("E-", "S-") for t in tags):
        return "IOBES"
    if all(scheme_violation(sentence, "IOB2") is None for sentence in sentences):
        return "IOB2"
    return "IOB1"


def write_chunk(kind: str, size: int, scheme: str, after_same_kind: bool = False) -> list[str]:
    """The tags of one chunk of `size` tokens; `after_same_kind`: it follows
    a chunk of the same type directly (IOB1 opens it with B- only then)."""
    if scheme == "IOBES":
        return [f"S-{kind}"] if size == 1 else [f"B-{kind}"] + [f"I-{kind}"] * (size - 2) + [f"E-{kind}"]
    opener = "B" if scheme == "IOB2" or after_same_kind else "I"
    return [f"{opener}-{kind}"] + [f"I-{kind}"] * (size - 1)


def _after_same_kind(tags: Sequence[str], first: int) -> bool:
    if first == 0:
        return False
    before = entities.split_tag(tags[first - 1])
    return before[0] != "O" and before[1] == entities.split_tag(tags[first])[1]


def convert(tags: Sequence[str], scheme: str) -> list[str]:
    """One sentence's tags (any scheme) rewritten in `scheme`, chunk by chunk."""
    check_scheme(scheme, "scheme")
    out = ["O"] * len(tags)
    previous_end, previous_kind = -2, ""
    for kind, first, last in entities.extract_chunks(tags):
        after_same = first == previous_end + 1 and kind == previous_kind
        out[first : last + 1] = write_chunk(kind, last - first + 1, scheme, after_same_kind=after_same)
        previous_end, previous_kind = last, kind
    return out


def tag_names(kinds: Iterable[str], scheme: str) -> list[str]:
    """Every tag of `scheme` over the chunk types `kinds`: 'O' first (id 0),
    then sorted."""
    prefixes = ("B", "I", "E", "S") if scheme == "IOBES" else ("B", "I")
    return ["O"] + sorted(f"{prefix}-{kind}" for kind in set(kinds) for prefix in prefixes)


def allowed_transitions(names: Sequence[str], scheme: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(transitions [K, K], start [K], end [K]) booleans: what `scheme`
    allows between the tags `names` (seqjax.nn.crf.CRF's constraints).
    IOB2: I-X only after B-X or I-X, and not first. IOBES: also B-X and I-X
    only before I-X or E-X, E-X and S-X only where a chunk may start, and a
    sentence ends in O, E- or S-. IOB1: I-X may open a chunk, so every
    transition is allowed (B-X only separates two chunks of type X)."""
    check_scheme(scheme, "tag scheme")
    parsed = [entities.split_tag(name) for name in names]
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
