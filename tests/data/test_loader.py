"""seqjax.data.loader: padding, bucketing, LM packing, eval weights, host
sharding and exact resume of the batch stream."""

import json

import numpy as np
import orbax.checkpoint as ocp
import pytest

from seqjax.data import loader

ONE_HOST = dict(process_index=0, process_count=1)


def make_source(size: int, max_len: int = 30, seed: int = 0) -> list[dict]:
    """Examples with ids 1..49 of random length in [1, max_len] and their number."""
    rng = np.random.default_rng(seed)
    return [
        {"ids": rng.integers(1, 50, rng.integers(1, max_len + 1)).tolist(), "label": i % 3, "id": i}
        for i in range(size)
    ]


def preprocess(raw: dict) -> dict:
    return {"inputs": raw["ids"], "label": raw["label"], "id": raw["id"]}


def take(iterator, count: int) -> list[dict]:
    return [next(iterator) for _ in range(count)]


def assert_same_batches(expected: list[dict], actual: list[dict]) -> None:
    assert len(expected) == len(actual)
    for want, got in zip(expected, actual):
        assert sorted(want) == sorted(got)
        for key in want:
            np.testing.assert_array_equal(want[key], got[key], err_msg=key)


def real_ids(batches: list[dict]) -> list[int]:
    return [int(i) for b in batches for i in b["id"][b["weights"] > 0]]


# --- padding and bucketing ---------------------------------------------------------


def test_padding_keeps_values_pads_to_multiple_and_reports_lengths():
    source = make_source(12)
    batches = list(
        loader.make_loader(
            source, preprocess, batch_size=4, train=False, batching=loader.Padding(pad_to_multiple=8), **ONE_HOST
        )
    )
    assert len(batches) == 3
    for k, batch in enumerate(batches):
        rows = source[4 * k : 4 * k + 4]
        longest = max(len(r["ids"]) for r in rows)
        assert batch["inputs"].shape == (4, -(-longest // 8) * 8)
        assert batch["inputs"].dtype == np.int32 and batch["lengths"].dtype == np.int32
        for row, raw in enumerate(rows):
            length = len(raw["ids"])
            assert batch["lengths"][row] == length
            np.testing.assert_array_equal(batch["inputs"][row, :length], raw["ids"])
            assert not batch["inputs"][row, length:].any()  # pad id 0
        np.testing.assert_array_equal(batch["label"], [r["label"] for r in rows])


def test_fixed_length_pads_every_batch_to_max_len_and_truncates():
    source = make_source(8, max_len=30)
    batching = loader.Padding(max_len=10, truncate=True, fixed_length=True)
    batches = list(
        loader.make_loader(
            source, preprocess, batch_size=4, train=False, batching=batching, pad_values={"inputs": -1}, **ONE_HOST
        )
    )
    for k, batch in enumerate(batches):
        assert batch["inputs"].shape == (4, 10)
        for row, raw in enumerate(source[4 * k : 4 * k + 4]):
            kept = min(len(raw["ids"]), 10)
            assert batch["lengths"][row] == kept
            np.testing.assert_array_equal(batch["inputs"][row, :kept], raw["ids"][:kept])
            assert (batch["inputs"][row, kept:] == -1).all()


def test_max_len_caps_the_rounded_up_length():
    source = [{"ids": [1] * 9, "label": 0, "id": 0}]
    batch = next(
        iter(
            loader.make_loader(
                source,
                preprocess,
                batch_size=1,
                train=False,
                batching=loader.Padding(pad_to_multiple=8, max_len=10),
                **ONE_HOST,
            )
        )
    )
    assert batch["inputs"].shape == (1, 10)  # 16 rounded up, capped at max_len


def test_per_step_targets_are_padded_with_the_inputs():
    source = [{"ids": [3, 4, 5]}, {"ids": [6]}]
    tag = lambda raw: {"inputs": raw["ids"], "targets": [i % 2 for i in raw["ids"]]}  # noqa: E731
    batch = next(
        iter(
            loader.make_loader(
                source,
                tag,
                batch_size=2,
                train=False,
                batching=loader.Padding(pad_to_multiple=4),
                pad_values={"targets": -100},
                **ONE_HOST,
            )
        )
    )
    np.testing.assert_array_equal(batch["targets"], [[1, 0, 1, -100], [0, -100, -100, -100]])


def test_bucketing_never_mixes_lengths_beyond_its_bucket():
    boundaries = (4, 8, 16, 32)
    source = make_source(300, max_len=32)
    iterator = loader.make_loader(
        source, preprocess, batch_size=8, train=True, seed=3, batching=loader.Bucketing(boundaries), **ONE_HOST
    ).iterator()
    seen_widths = set()
    for batch in take(iterator, 60):
        width = batch["inputs"].shape[1]
        assert width in boundaries
        lower = ([0] + list(boundaries))[boundaries.index(width)]
        assert (batch["lengths"] > lower).all() and (batch["lengths"] <= width).all(), batch["lengths"]
        seen_widths.add(width)
    iterator.close()
    assert seen_widths == set(boundaries)


def test_bucketed_eval_pass_flushes_partial_buckets():
    source = make_source(37, max_len=20)
    data = loader.make_loader(
        source, preprocess, batch_size=4, train=False, batching=loader.Bucketing((5, 10, 20)), **ONE_HOST
    )
    batches = list(data)
    assert data.num_batches is None  # partial buckets flush separately, so the count depends on lengths
    assert sorted(real_ids(batches)) == list(range(37))
    assert sum(b["weights"].sum() for b in batches) == 37


def test_source_index_is_reported_and_fillers_are_minus_one():
    source = make_source(5)
    batches = list(loader.make_loader(source, preprocess, batch_size=4, train=False, return_index=True, **ONE_HOST))
    np.testing.assert_array_equal(np.concatenate([b["index"] for b in batches]), [0, 1, 2, 3, 4, -1, -1, -1])


# --- eval and sharding ----------------------------------------------------------------


@pytest.mark.parametrize("size,batch_size", [(23, 4), (8, 4), (1, 3)])
def test_eval_pass_counts_every_example_exactly_once(size, batch_size):
    source = make_source(size)
    data = loader.make_loader(source, preprocess, batch_size=batch_size, train=False, **ONE_HOST)
    batches = list(data)
    assert len(batches) == data.num_batches == -(-size // batch_size)
    assert sum(float(b["weights"].sum()) for b in batches) == size
    assert sorted(real_ids(batches)) == list(range(size))
    for batch in batches:  # filler rows copy a real example, so no row has length 0
        assert batch["inputs"].shape[0] == batch_size and (batch["lengths"] > 0).all()


def test_two_hosts_read_disjoint_shards_in_step_during_eval():
    source = make_source(17)  # host 0 reads 9 examples (3 batches of 4), host 1 reads 8 (2 batches)
    fixed = loader.Padding(max_len=30, fixed_length=True)
    per_host = [
        list(
            loader.make_loader(
                source, preprocess, batch_size=8, train=False, batching=fixed, process_index=h, process_count=2
            )
        )
        for h in range(2)
    ]
    assert len(per_host[0]) == len(per_host[1]) == 3  # host 1 adds a weight-0 batch to keep in step
    assert not per_host[1][-1]["weights"].any()
    ids = [real_ids(batches) for batches in per_host]
    assert not set(ids[0]) & set(ids[1])
    assert sorted(ids[0] + ids[1]) == list(range(17))
    assert all(b["inputs"].shape == (4, 30) for batches in per_host for b in batches)


def test_two_hosts_split_each_training_epoch():
    source = make_source(16)
    fixed = loader.Padding(max_len=30, fixed_length=True)
    ids = []
    for host in range(2):
        iterator = loader.make_loader(
            source, preprocess, batch_size=8, train=True, seed=1, batching=fixed, process_index=host, process_count=2
        ).iterator()
        ids.append(real_ids(take(iterator, 2)))  # 2 hosts x 2 batches x 4 rows = one epoch
        iterator.close()
    assert not set(ids[0]) & set(ids[1])
    assert sorted(ids[0] + ids[1]) == list(range(16))


def test_training_reshuffles_every_epoch_and_follows_the_seed():
    source = make_source(12)

    def epochs(seed):
        iterator = loader.make_loader(source, preprocess, batch_size=4, train=True, seed=seed, **ONE_HOST).iterator()
        order = real_ids(take(iterator, 6))
        iterator.close()
        return order[:12], order[12:]

    first, second = epochs(0)
    assert sorted(first) == sorted(second) == list(range(12))
    assert first != second and first != list(range(12))
    assert epochs(0) == (first, second)
    assert epochs(1)[0] not in (first, second)  # seeds 0 and 1 do not share epochs


def test_finite_training_drops_the_partial_batch():
    data = loader.make_loader(make_source(10), preprocess, batch_size=4, train=True, num_epochs=2, **ONE_HOST)
    batches = list(data)
    assert len(batches) == data.num_batches == 5  # 20 examples -> 5 full batches
    assert all(b["weights"].all() for b in batches)


# --- resume -------------------------------------------------------------------


def resume_matches(data: loader.Loader, stop: int, total: int) -> dict:
    """Batches stop..total-1 after a JSON round trip of the state equal the
    uninterrupted ones; returns the saved state."""
    reference = data.iterator()
    expected = take(reference, total)
    reference.close()
    first = data.iterator()
    take(first, stop)
    state = json.loads(json.dumps(first.get_state()))
    first.close()
    resumed = data.iterator()
    resumed.set_state(state)
    assert_same_batches(expected[stop:], take(resumed, total - stop))
    resumed.close()
    return state


@pytest.mark.parametrize("batching", [loader.Padding(), loader.Bucketing((6, 12, 30))], ids=["padding", "bucketing"])
def test_resume_continues_the_same_stream_across_epochs(batching):
    # 10 examples, 3 per batch: the stop and the resumed batches straddle epochs.
    data = loader.make_loader(
        make_source(10), preprocess, batch_size=3, train=True, seed=5, batching=batching, **ONE_HOST
    )
    for stop in (2, 4, 7):
        state = resume_matches(data, stop, 12)
    if isinstance(batching, loader.Bucketing):
        assert any(state["pending"]), "the test should restore examples waiting in buckets"


def test_resume_mid_eval_pass_keeps_every_example_once():
    data = loader.make_loader(
        make_source(11), preprocess, batch_size=4, train=False, batching=loader.Bucketing((8, 30)), **ONE_HOST
    )
    first = data.iterator()
    before = take(first, 1)
    state = first.get_state()
    first.close()
    resumed = data.iterator()
    resumed.set_state(state)
    after = list(resumed)
    assert sorted(real_ids(before + after)) == list(range(11))


def test_loader_state_round_trips_through_an_orbax_checkpoint(tmp_path):
    data = loader.make_loader(
        make_source(10),
        preprocess,
        batch_size=3,
        train=True,
        seed=2,
        batching=loader.Bucketing((6, 12, 30)),
        **ONE_HOST,
    )
    reference = data.iterator()
    expected = take(reference, 8)
    reference.close()
    iterator = data.iterator()
    take(iterator, 5)
    params = {"w": np.arange(6.0).reshape(2, 3)}
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(
            5, args=ocp.args.Composite(params=ocp.args.StandardSave(params), data=loader.checkpoint_save_args(iterator))
        )
        manager.wait_until_finished()
    iterator.close()
    fresh = data.iterator()
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        restored = manager.restore(
            manager.latest_step(),
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(params), data=loader.checkpoint_restore_args(fresh)
            ),
        )
    np.testing.assert_array_equal(restored.params["w"], params["w"])
    assert_same_batches(expected[5:], take(restored.data, 3))
    fresh.close()


def test_worker_processes_give_the_same_batches():
    source = make_source(40)
    common = dict(batch_size=4, train=True, seed=4, batching=loader.Bucketing((10, 30)), **ONE_HOST)
    in_process = loader.make_loader(source, preprocess, **common).iterator()
    expected = take(in_process, 6)
    in_process.close()
    workers = loader.make_loader(source, preprocess, worker_count=2, **common).iterator()
    assert_same_batches(expected, take(workers, 6))
    json.dumps(workers.get_state())
    workers.close()


def test_reads_a_tfds_data_source():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=9):
        source = tfds.data_source("imdb_reviews", split="train")
    chars = lambda raw: {"inputs": np.frombuffer(raw["text"].encode(), np.uint8), "label": raw["label"]}  # noqa: E731
    batches = list(loader.make_loader(source, chars, batch_size=4, train=False, return_index=True, **ONE_HOST))
    assert sum(b["weights"].sum() for b in batches) == 9
    first = source[0]["text"].encode()
    np.testing.assert_array_equal(batches[0]["inputs"][0, : len(first)], list(first))


# --- language modelling ------------------------------------------------------------------


DOCS = ["hello world. ", "the quick brown fox", "jumps", "over the lazy dog!"]


def char_ids(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_token_stream_concatenates_documents_and_marks_their_starts():
    tokens, starts = loader.token_stream(DOCS + [""], char_ids)
    np.testing.assert_array_equal(tokens, char_ids("".join(DOCS)))
    np.testing.assert_array_equal(np.flatnonzero(starts), np.cumsum([0] + [len(d) for d in DOCS[:-1]]))


# Token ids equal to their stream position + 1: unique, so a target names its position.
NUMBERED_DOCS = [list(range(1, 14)), list(range(14, 33)), list(range(33, 38)), list(range(38, 56))]


@pytest.mark.parametrize("layout", ["windows", "streams"])
@pytest.mark.parametrize("hosts", [1, 2])
def test_lm_eval_predicts_every_in_document_target_exactly_once(layout, hosts):
    counts = np.zeros(56, int)
    batch_counts = []
    for host in range(hosts):
        data = loader.lm_loader(
            NUMBERED_DOCS,
            np.asarray,
            batch_size=2 * hosts,
            seq_len=5,
            train=False,
            layout=layout,
            process_index=host,
            process_count=hosts,
        )
        batches = list(data)
        batch_counts.append(len(batches))
        for batch in batches:
            assert batch["inputs"].shape == batch["targets"].shape == (2, 5)
            real = batch["step_mask"] > 0
            np.testing.assert_array_equal(batch["targets"][real], batch["inputs"][real] + 1)
            np.add.at(counts, batch["targets"][real], 1)
    assert len(set(batch_counts)) == 1  # hosts step together
    expected = np.ones(56, int)
    expected[:2] = 0  # id 1 is the first token and never a target; 0 is padding
    expected[[14, 33, 38]] = 0  # nothing in the previous document predicts a document's first token
    np.testing.assert_array_equal(counts, expected)


def test_lm_windows_shift_targets_and_reset_at_document_starts():
    batch = next(iter(loader.lm_loader(DOCS, char_ids, batch_size=8, seq_len=6, train=False)))
    text = "".join(DOCS)
    starts = np.cumsum([0] + [len(d) for d in DOCS[:-1]])
    for row in range(4):
        window = char_ids(text[6 * row : 6 * row + 7])
        np.testing.assert_array_equal(batch["inputs"][row], window[:6])
        np.testing.assert_array_equal(batch["targets"][row], window[1:])
        expected_resets = np.isin(6 * row + np.arange(6), starts)
        expected_resets[0] = True  # every window starts without context
        np.testing.assert_array_equal(batch["resets"][row], expected_resets)


def test_lm_streams_continue_row_by_row():
    text = "abcdefghij" * 20
    data = loader.lm_loader([text], char_ids, batch_size=3, seq_len=7, train=True, layout="streams")
    iterator = data.iterator()
    batches = take(iterator, 4)
    iterator.close()
    stream_len = (len(text) - 1) // 3 // 7 * 7
    for k in range(1, 4):
        np.testing.assert_array_equal(batches[k]["inputs"][:, 0], batches[k - 1]["targets"][:, -1])
        assert not batches[k]["resets"].any()
    assert batches[0]["resets"][:, 0].all()
    for b in range(3):
        np.testing.assert_array_equal(batches[0]["inputs"][b], char_ids(text[b * stream_len : b * stream_len + 7]))


@pytest.mark.parametrize("layout", ["windows", "streams"])
def test_lm_resume_continues_the_same_stream(layout):
    data = loader.lm_loader(DOCS * 3, char_ids, batch_size=2, seq_len=4, train=True, layout=layout, seed=7, **ONE_HOST)
    resume_matches(data, 9, 40)  # several epochs: 38 windows / 2 per batch, or 12 segments


def test_lm_training_shuffles_windows_and_covers_each_epoch():
    data = loader.lm_loader(
        ["abcdefghijklmnopqrstuvwxyz" * 4],
        char_ids,
        batch_size=2,
        seq_len=5,
        train=True,
        seed=0,
        num_epochs=1,
        **ONE_HOST,
    )
    firsts = [int(row[0]) for batch in data for row in batch["inputs"]]
    assert data.num_batches == 10 and len(firsts) == 20
    text = "abcdefghijklmnopqrstuvwxyz" * 4
    assert sorted(firsts) == sorted(ord(text[5 * w]) for w in range(20))
    assert firsts != [ord(text[5 * w]) for w in range(20)]


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(batch_size=0), "batch_size must be a positive integer"),
        (dict(batch_size=-2), "batch_size must be a positive integer"),
        (
            dict(batch_size=3, process_index=0, process_count=2, batching=loader.Padding(max_len=8, fixed_length=True)),
            "does not split evenly",
        ),
        (dict(batch_size=2, process_index=2, process_count=2), r"process_index must lie in \[0, 2\)"),
        (dict(batch_size=2, process_index=0, process_count=2), "same shape"),
        (dict(batch_size=2, num_epochs=0), "num_epochs must be positive"),
    ],
)
def test_bad_loader_arguments_raise(kwargs, message):
    kwargs = {**ONE_HOST, **kwargs}
    with pytest.raises(ValueError, match=message):
        loader.make_loader(make_source(4), preprocess, train=True, **kwargs)


def test_empty_source_raises():
    with pytest.raises(ValueError, match="source is empty"):
        loader.make_loader([], preprocess, batch_size=2, train=True, **ONE_HOST)
    with pytest.raises(ValueError, match="source is empty"):
        loader.lm_loader([], char_ids, batch_size=2, seq_len=4, train=True, **ONE_HOST)
    with pytest.raises(TypeError, match="random access"):
        loader.make_loader(iter([1, 2]), preprocess, batch_size=2, train=True, **ONE_HOST)


@pytest.mark.parametrize("boundaries", [(8, 8, 16), (16, 8), (), (0, 4)])
def test_bucket_boundaries_must_increase(boundaries):
    with pytest.raises(ValueError, match="bucket"):
        loader.Bucketing(boundaries)


def test_example_longer_than_the_limit_raises_naming_it():
    source = [{"ids": [1, 2], "label": 0, "id": 0}, {"ids": list(range(1, 13)), "label": 0, "id": 1}]
    for batching, limit in [
        (loader.Padding(max_len=10), "max_len 10"),
        (loader.Bucketing((4, 8)), "the last bucket boundary 8"),
    ]:
        data = loader.make_loader(source, preprocess, batch_size=2, train=False, batching=batching, **ONE_HOST)
        with pytest.raises(ValueError, match=f"example 1 has length 12, longer than {limit}"):
            list(data)


def test_bad_preprocess_output_raises():
    source = [{"ids": [1, 2]}, {"ids": [3]}]
    cases = [
        (lambda raw: {"tokens": raw["ids"]}, "'inputs' entry"),
        (lambda raw: {"inputs": "some text"}, "not numeric"),
        (lambda raw: {"inputs": raw["ids"], "weights": 1.0}, "adds itself"),
        (lambda raw: {"inputs": raw["ids"], "targets": [0]}, "sequence feature 'targets'"),
        (lambda raw: {"inputs": raw["ids"], "extra": raw["ids"]}, "feature 'extra' has shapes"),
        (lambda raw: {"inputs": raw["ids"], **({"x": 1} if len(raw["ids"]) > 1 else {})}, "same keys"),
    ]
    for function, message in cases:
        with pytest.raises((ValueError, TypeError), match=message):
            list(loader.make_loader(source, function, batch_size=2, train=False, **ONE_HOST))


def test_lm_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown LM layout"):
        loader.lm_loader(DOCS, char_ids, batch_size=2, seq_len=4, train=True, layout="rows", **ONE_HOST)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        loader.lm_loader(["abc"], char_ids, batch_size=2, seq_len=4, train=True, **ONE_HOST)
    with pytest.raises(ValueError, match="1-D integer ids"):
        loader.lm_loader(DOCS, lambda s: [[1.5]], batch_size=2, seq_len=4, train=True, **ONE_HOST)


def test_batching_from_config():
    import ml_collections

    config = ml_collections.ConfigDict({"bucket_boundaries": [8, 16], "truncate": True})
    assert loader.batching_from_config(config) == loader.Bucketing((8, 16), truncate=True)
    config = ml_collections.ConfigDict({"pad_to_multiple": 4, "max_len": 0})
    assert loader.batching_from_config(config) == loader.Padding(pad_to_multiple=4)
