"""Tag schemes: detection, conversion that keeps every chunk, the
transitions each scheme allows, and the entity F1 against seqeval's."""

import numpy as np
import pytest
from seqeval import metrics as seqeval_metrics

from seqjax.tasks import entities, tag_schemes

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
IOB1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "O", "I-ORG", "I-ORG"]
IOB2 = ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "O", "B-ORG", "I-ORG"]
IOBES = ["B-PER", "E-PER", "S-PER", "O", "S-LOC", "O", "B-ORG", "E-ORG"]


def random_chunked_sentences(seed, count=200):
    """Sentences as chunk lists [(type or None for O, size)], written in IOB2."""
    rng = np.random.default_rng(seed)
    sentences = []
    for _ in range(count):
        tags = []
        while len(tags) < rng.integers(1, 12):
            kind = rng.choice(["O", "PER", "LOC"])
            size = int(rng.integers(1, 4))
            tags += ["O"] * size if kind == "O" else [f"B-{kind}"] + [f"I-{kind}"] * (size - 1)
        sentences.append(tags)
    return sentences


def test_a_known_sentence_in_all_three_schemes():
    for source in (IOB1, IOB2, IOBES):
        assert tag_schemes.convert(source, "IOB1") == IOB1
        assert tag_schemes.convert(source, "IOB2") == IOB2
        assert tag_schemes.convert(source, "IOBES") == IOBES
    assert [tag_schemes.detect_scheme([s]) for s in (IOB1, IOB2, IOBES)] == ["IOB1", "IOB2", "IOBES"]


def test_conversion_keeps_every_chunk_and_round_trips():
    sentences = random_chunked_sentences(0)
    for scheme in tag_schemes.SCHEMES:
        converted = [tag_schemes.convert(s, scheme) for s in sentences]
        assert all(entities.extract_chunks(c) == entities.extract_chunks(s) for c, s in zip(converted, sentences))
        assert all(tag_schemes.scheme_violation(c, scheme) is None for c in converted)
        assert [tag_schemes.convert(c, "IOB2") for c in converted] == sentences
    assert tag_schemes.detect_scheme([tag_schemes.convert(s, "IOBES") for s in sentences]) == "IOBES"
    assert tag_schemes.detect_scheme([tag_schemes.convert(s, "IOB1") for s in sentences]) == "IOB1"
    assert tag_schemes.detect_scheme(sentences) == "IOB2"


def test_scheme_violations_name_the_chunk():
    assert tag_schemes.scheme_violation(IOB1, "IOB2") == "chunk 1 (PER, tokens 1-2) is tagged ['I-PER', 'I-PER']"
    assert tag_schemes.scheme_violation(IOBES, "IOB2") == "it has E-/S- tags, which IOB2 does not use"
    assert tag_schemes.scheme_violation(IOB2, "IOBES") == "chunk 1 (PER, tokens 1-2) is tagged ['B-PER', 'I-PER']"
    with pytest.raises(ValueError, match=r"^scheme must be one of IOB1, IOB2, IOBES, got 'BIO'$"):
        tag_schemes.convert(IOB2, "BIO")


def test_tag_names_of_a_scheme():
    assert tag_schemes.tag_names({"PER", "LOC"}, "IOB2") == ["O", "B-LOC", "B-PER", "I-LOC", "I-PER"]
    assert tag_schemes.tag_names({"PER"}, "IOBES") == ["O", "B-PER", "E-PER", "I-PER", "S-PER"]
    assert tag_schemes.is_chunk_tagging(TAGS) and not tag_schemes.is_chunk_tagging(["NN", "B-NP", "O"])


def test_iob2_and_iobes_constraints():
    moves, first, last = tag_schemes.allowed_transitions(TAGS, "IOB2")
    index = {tag: i for i, tag in enumerate(TAGS)}
    assert not moves[index["O"], index["I-PER"]] and not moves[index["B-LOC"], index["I-PER"]]
    assert moves[index["B-PER"], index["I-PER"]] and moves[index["I-PER"], index["I-PER"]]
    assert moves[index["I-PER"], index["B-LOC"]] and moves[index["O"], index["B-PER"]]
    assert not first[index["I-LOC"]] and first[index["B-LOC"]] and last.all()
    assert np.array_equal(tag_schemes.allowed_transitions(TAGS, "IOB1")[0], np.ones((5, 5), bool))
    iobes = ["O", "B-PER", "I-PER", "E-PER", "S-PER"]
    moves, first, last = tag_schemes.allowed_transitions(iobes, "IOBES")
    i = {tag: n for n, tag in enumerate(iobes)}
    assert moves[i["B-PER"], i["E-PER"]] and not moves[i["B-PER"], i["O"]] and not moves[i["E-PER"], i["I-PER"]]
    assert moves[i["E-PER"], i["S-PER"]] and not first[i["E-PER"]] and first[i["S-PER"]]
    assert list(last) == [True, False, False, True, True]
    with pytest.raises(ValueError, match=r"^tag scheme must be one of IOB1, IOB2, IOBES, got 'BIO'$"):
        tag_schemes.allowed_transitions(TAGS, "BIO")
    with pytest.raises(ValueError, match=r"^bad tag 'PER': expected 'O' or one of"):
        tag_schemes.allowed_transitions(["O", "PER"], "IOB2")


def test_every_sentence_a_scheme_allows_is_valid_in_it():
    """The constraints and the scheme agree: every random path the constraints
    allow is written in the scheme, and every converted sentence is allowed."""
    names = tag_schemes.tag_names({"PER", "LOC"}, "IOBES")
    moves, first, last = tag_schemes.allowed_transitions(names, "IOBES")
    rng = np.random.default_rng(3)
    for sentence in random_chunked_sentences(1, count=100):
        ids = [names.index(t) for t in tag_schemes.convert(sentence, "IOBES")]
        assert first[ids[0]] and last[ids[-1]] and all(moves[a, b] for a, b in zip(ids, ids[1:]))
    for _ in range(300):
        path = [int(rng.choice(np.flatnonzero(first)))]
        for _ in range(int(rng.integers(0, 8))):
            path.append(int(rng.choice(np.flatnonzero(moves[path[-1]]))))
        if last[path[-1]]:
            assert tag_schemes.scheme_violation([names[t] for t in path], "IOBES") is None


@pytest.mark.parametrize("scheme", ["IOB2", "IOBES"])
def test_entity_f1_equals_seqeval_on_noisy_predictions(scheme):
    """seqeval's default (conlleval-compatible) scores on gold tags and
    predictions with random tag errors, some of them invalid sequences."""
    rng = np.random.default_rng(7)
    gold = [tag_schemes.convert(s, scheme) for s in random_chunked_sentences(2, count=300)]
    vocabulary = tag_schemes.tag_names({"PER", "LOC", "ORG"}, scheme)
    predicted = [[t if rng.random() > 0.15 else str(rng.choice(vocabulary)) for t in s] for s in gold]
    ours = entities.entity_scores(gold, predicted)
    assert 0.3 < ours["f1"] < 0.95  # enough errors to tell the readings apart
    assert ours["f1"] == pytest.approx(seqeval_metrics.f1_score(gold, predicted), abs=1e-9)
    assert ours["precision"] == pytest.approx(seqeval_metrics.precision_score(gold, predicted), abs=1e-9)
    assert ours["recall"] == pytest.approx(seqeval_metrics.recall_score(gold, predicted), abs=1e-9)
