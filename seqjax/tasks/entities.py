"""Entity-level precision, recall and F1 for sequence tagging.

A tag is 'O' or '<prefix>-<type>' with prefix B (begin), I (inside), and
optionally E (end) and S (single) for IOBES. Chunks are read the lenient way
conlleval and seqeval's default mode read them, so IOB1 (where a chunk may
start with I-), IOB2 (every chunk starts with B-) and IOBES all work:

- a chunk starts at B-/S-, or at an I-/E- whose type differs from the tag
  before it, or that follows O, E- or S-;
- a chunk ends before O, B-, S-, or a tag of another type, and after E-/S-.

A predicted chunk counts as correct only if its type, start and end all match
a gold chunk. Scores are micro-averaged over chunks (the CoNLL convention).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

Chunk = tuple[str, int, int]  # (type, first token, last token), inclusive
PREFIXES = ("B", "I", "E", "S")


def split_tag(tag: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', '')."""
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep or prefix not in PREFIXES or not kind:
        raise ValueError(f"bad tag {tag!r}: expected 'O' or one of {PREFIXES} + '-' + type, e.g. 'B-PER'")
    return prefix, kind


def _starts_chunk(prev: tuple[str, str], cur: tuple[str, str]) -> bool:
    (prev_prefix, prev_kind), (prefix, kind) = prev, cur
    if prefix == "O":
        return False
    if prefix in ("B", "S"):
        return True
    return prev_prefix in ("O", "E", "S") or prev_kind != kind


def _ends_chunk(cur: tuple[str, str], nxt: tuple[str, str]) -> bool:
    (prefix, kind), (next_prefix, next_kind) = cur, nxt
    if prefix == "O":
        return False
    if prefix in ("E", "S"):
        return True
    return next_prefix in ("O", "B", "S") or next_kind != kind


def extract_chunks(tags: Sequence[str]) -> list[Chunk]:
    """The chunks of one sentence's tags, in order of their first token."""
    parsed = [split_tag(t) for t in tags]
    outside = ("O", "")
    chunks, start = [], None
    for i, cur in enumerate(parsed):
        prev = parsed[i - 1] if i else outside
        nxt = parsed[i + 1] if i + 1 < len(parsed) else outside
        # The two rules agree: whenever a chunk starts at i, the one before
        # it (if any) ended at i - 1, so chunks never overlap.
        if _starts_chunk(prev, cur):
            start = i
        if start is not None and _ends_chunk(cur, nxt):
            chunks.append((cur[1], start, i))
            start = None
    return chunks


def entity_scores(gold: Iterable[Sequence[str]], predicted: Iterable[Sequence[str]]) -> dict[str, float]:
    """Micro precision / recall / F1 over chunks, plus per-type F1 and counts.

    Args:
      gold, predicted: one tag sequence per sentence, aligned token by token.

    Returns {'precision', 'recall', 'f1', 'num_gold', 'num_predicted',
    'num_correct', 'f1_<TYPE>' for each type seen}.
    """
    gold_count, pred_count, correct = Counter(), Counter(), Counter()
    for index, (gold_tags, pred_tags) in enumerate(zip(gold, predicted, strict=True)):
        if len(gold_tags) != len(pred_tags):
            raise ValueError(f"sentence {index}: {len(gold_tags)} gold tags but {len(pred_tags)} predicted tags")
        gold_chunks, pred_chunks = set(extract_chunks(gold_tags)), set(extract_chunks(pred_tags))
        gold_count.update(kind for kind, _, _ in gold_chunks)
        pred_count.update(kind for kind, _, _ in pred_chunks)
        correct.update(kind for kind, _, _ in gold_chunks & pred_chunks)
    scores = _prf(sum(correct.values()), sum(pred_count.values()), sum(gold_count.values()))
    for kind in sorted(set(gold_count) | set(pred_count)):
        scores[f"f1_{kind}"] = _prf(correct[kind], pred_count[kind], gold_count[kind])["f1"]
    return scores


def _prf(num_correct: int, num_predicted: int, num_gold: int) -> dict[str, float]:
    precision = num_correct / num_predicted if num_predicted else 0.0
    recall = num_correct / num_gold if num_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "num_gold": num_gold,
        "num_predicted": num_predicted,
        "num_correct": num_correct,
    }
