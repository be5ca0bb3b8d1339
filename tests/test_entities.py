"""Entity-level scores against hand-counted chunks (CoNLL conventions)."""

import pytest

from seqjax.tasks import entities


def test_iob2_chunks():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "O"]
    assert entities.extract_chunks(tags) == [("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 5)]


def test_iob1_chunk_may_start_with_inside_tag():
    # IOB1: I- after O starts a chunk; B- only separates two adjacent chunks of one type.
    tags = ["I-ORG", "I-ORG", "O", "I-PER", "B-PER", "I-MISC"]
    assert entities.extract_chunks(tags) == [("ORG", 0, 1), ("PER", 3, 3), ("PER", 4, 4), ("MISC", 5, 5)]


def test_type_change_inside_splits_chunks():
    assert entities.extract_chunks(["B-PER", "I-LOC", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 2)]


def test_iobes_chunks():
    tags = ["S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC", "O"]
    assert entities.extract_chunks(tags) == [("PER", 0, 0), ("LOC", 1, 3), ("LOC", 4, 4)]


def test_scores_match_hand_count():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "O"]]
    # gold chunks: PER(0,1) LOC(3) | ORG(0) PER(2) -> 4; predicted: PER(0,1) ORG(3) | ORG(0) -> 3; correct: 2.
    scores = entities.entity_scores(gold, pred)
    assert scores["num_gold"] == 4 and scores["num_predicted"] == 3 and scores["num_correct"] == 2
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 4)
    assert scores["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert scores["f1_PER"] == pytest.approx(2 / 3)  # P = 1/1, R = 1/2
    assert scores["f1_LOC"] == 0.0 and scores["f1_ORG"] == pytest.approx(2 / 3)


def test_partial_span_is_wrong():
    scores = entities.entity_scores([["B-PER", "I-PER"]], [["B-PER", "O"]])
    assert scores["num_correct"] == 0 and scores["f1"] == 0.0


def test_bad_tags_and_misaligned_sentences_raise():
    with pytest.raises(ValueError, match="bad tag 'X-PER'"):
        entities.extract_chunks(["X-PER"])
    with pytest.raises(ValueError, match="sentence 0: 2 gold tags but 1 predicted"):
        entities.entity_scores([["O", "O"]], [["O"]])
