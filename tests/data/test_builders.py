"""Local TFDS builders on small files written here: exact examples read back, and bad input."""

import gzip
import os
import pickle

import numpy as np
import pytest
import tensorflow_datasets as tfds

from seqjax.data.builders import (
    MissingFileError,
    SeqjaxClassification,
    SeqjaxConll,
    SeqjaxFolders,
    SeqjaxParallel,
    SeqjaxText,
    SeqjaxTimeseries,
    SourceError,
)
from seqjax.data.builders.common import decode_utf8, fraction_bounds, fraction_indices, split_lines


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """One TFDS data_dir for the module: each config prepares into its own folder."""
    return str(tmp_path_factory.mktemp("tfds"))


def write(path, text, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode(encoding) if isinstance(text, str) else text
    if str(path).endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return str(path)


def prepare(cls, data_dir, **options):
    builder = cls(config=cls.make_config(**options), data_dir=data_dir)
    builder.download_and_prepare()
    return builder


def examples(builder, split):
    source = builder.as_data_source(split)
    return [source[i] for i in range(len(source))]


# ----------------------------------------------------------------------------
# Shared rules.


def test_fraction_bounds_cut_like_tfds_tiny_shakespeare():
    # TFDS cuts 90% then half of the rest; the cumulative rule gives the same cut.
    n = 1115394
    first = int(n * 0.9)
    second = first + int((n - first) * 0.5)
    bounds = fraction_bounds(n, [("train", 0.9), ("validation", 0.05), ("test", 0.05)], "x")
    assert bounds == [("train", 0, first), ("validation", first, second), ("test", second, n)]


def test_fraction_indices_partition_every_item_once():
    indices = fraction_indices(101, [("a", 0.5), ("b", 0.3), ("c", 0.2)], seed=3, what="x")
    joined = np.concatenate(list(indices.values()))
    assert sorted(joined.tolist()) == list(range(101))
    assert [len(v) for v in indices.values()] == [50, 30, 21]
    assert all(np.all(np.diff(v) > 0) for v in indices.values())  # file order kept inside a split
    assert not np.array_equal(indices["a"], np.arange(50))  # the seed permuted
    again = fraction_indices(101, [("a", 0.5), ("b", 0.3), ("c", 0.2)], seed=3, what="x")
    assert all(np.array_equal(indices[k], again[k]) for k in indices)


def test_fractions_must_sum_to_one_and_leave_no_split_empty():
    with pytest.raises(SourceError, match="sum to 1"):
        fraction_bounds(10, [("a", 0.5), ("b", 0.4)], "x")
    with pytest.raises(SourceError, match="'b'.*would be empty"):
        fraction_bounds(3, [("a", 0.9), ("b", 0.05), ("c", 0.05)], "x")


def test_non_utf8_error_names_file_line_and_byte():
    with pytest.raises(SourceError, match=r"f\.txt: line 3, byte 4 is not valid UTF-8 \(byte 0xe9\)"):
        decode_utf8(b"ok\nfine\nabc\xe9\n", "f.txt")


def test_split_lines_only_on_newline():
    # U+2028 and form feeds occur inside sentences; splitting on them would misalign parallel files.
    assert split_lines("a\u2028b\r\nc\x0cd\n") == ["a\u2028b", "c\x0cd"]


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(MissingFileError, match=f"expected the file {tmp_path}/nope.txt"):
        SeqjaxText.make_config(str(tmp_path / "nope.txt"))


def test_empty_file_is_an_error(tmp_path):
    with pytest.raises(SourceError, match="empty"):
        SeqjaxText.make_config(write(tmp_path / "empty.txt", ""))


def test_config_name_changes_with_file_content_and_options(tmp_path):
    path = write(tmp_path / "a.txt", "one\n")
    first = SeqjaxText.make_config(path)
    assert SeqjaxText.make_config(path) is first
    assert SeqjaxText.make_config(path, unit="line").name != first.name
    write(tmp_path / "a.txt", "one two\n")
    assert SeqjaxText.make_config(path).name != first.name


# ----------------------------------------------------------------------------
# Plain text.


def test_text_lines_skip_blank_lines_and_keep_text_exactly(tmp_path, data_dir):
    path = write(tmp_path / "a.txt", "  first line \r\n\n   \nsécond\n")
    builder = prepare(SeqjaxText, data_dir, paths={"train": path}, unit="line")
    assert examples(builder, "train") == [{"text": b"  first line "}, {"text": "sécond".encode()}]


def test_text_file_fractions_are_contiguous_character_ranges(tmp_path, data_dir):
    text = "".join(chr(ord("a") + i % 26) for i in range(200))
    path = write(tmp_path / "corpus.txt", text)
    builder = prepare(SeqjaxText, data_dir, paths=path, fractions={"train": 0.9, "validation": 0.05, "test": 0.05})
    got = {s: examples(builder, s)[0]["text"].decode() for s in ("train", "validation", "test")}
    assert got == {"train": text[:180], "validation": text[180:190], "test": text[190:]}
    # The same examples through tfds.data_source, by name.
    by_name = tfds.data_source(f"seqjax_text/{builder.builder_config.name}", split="test", data_dir=data_dir)
    assert by_name[0]["text"].decode() == text[190:]


def test_text_paragraphs_and_one_file_per_split(tmp_path, data_dir):
    train = write(tmp_path / "train.txt", "para one\nstill one\n\n \npara two\n")
    valid = write(tmp_path / "valid.txt", "only\n")
    builder = prepare(SeqjaxText, data_dir, paths={"train": train, "validation": valid}, unit="paragraph")
    assert [e["text"] for e in examples(builder, "train")] == [b"para one\nstill one", b"para two"]
    assert [e["text"] for e in examples(builder, "validation")] == [b"only"]


def test_text_line_fractions_with_a_seed_partition_the_lines(tmp_path, data_dir):
    lines = [f"line {i}" for i in range(20)]
    path = write(tmp_path / "lines.txt", "\n".join(lines) + "\n")
    builder = prepare(
        SeqjaxText, data_dir, paths=path, unit="line", split_seed=1, fractions={"train": 0.75, "test": 0.25}
    )
    train = [e["text"].decode() for e in examples(builder, "train")]
    test = [e["text"].decode() for e in examples(builder, "test")]
    assert len(train) == 15 and len(test) == 5 and sorted(train + test) == sorted(lines)
    assert train != lines[:15]


def test_text_non_utf8_fails_at_preparation(tmp_path, data_dir):
    path = write(tmp_path / "latin1.txt", "ok\ncafé\n", encoding="latin-1")
    with pytest.raises(SourceError, match=r"latin1\.txt: line 2, byte 4 is not valid UTF-8"):
        prepare(SeqjaxText, data_dir, paths=path)


# ----------------------------------------------------------------------------
# TSV / CSV classification.


def sst2_like(tmp_path):
    train = write(tmp_path / "train.tsv", 'sentence\tlabel\nit \'s "fine" \t1\nbad , bad \t0\ngood \t1\n')
    dev = write(tmp_path / "dev.tsv", "sentence\tlabel\nmeh \t0\n")
    test = write(tmp_path / "test.tsv", "index\tsentence\n0\tunseen one\n1\tunseen two\n")
    return {"train": train, "validation": dev, "test": test}


def test_classification_glue_tsv_with_unlabeled_test(tmp_path, data_dir):
    builder = prepare(SeqjaxClassification, data_dir, paths=sst2_like(tmp_path))
    assert builder.info.features["label"].names == ["0", "1"]
    # GLUE's trailing space and quote characters are text (quoting 'none').
    assert examples(builder, "train") == [
        {"text": b'it \'s "fine" ', "label": 1},
        {"text": b"bad , bad ", "label": 0},
        {"text": b"good ", "label": 1},
    ]
    assert examples(builder, "validation") == [{"text": b"meh ", "label": 0}]
    assert examples(builder, "test") == [{"text": b"unseen one", "label": -1}, {"text": b"unseen two", "label": -1}]
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 3, "validation": 1, "test": 2}


def test_classification_csv_quoting_and_numeric_label_order(tmp_path, data_dir):
    path = write(tmp_path / "reviews.csv", 'review,stars\n"great, really",10\n"said ""meh""",2\nok,2\n')
    builder = prepare(SeqjaxClassification, data_dir, paths=path, text_column="review", label_column="stars")
    assert builder.info.features["label"].names == ["2", "10"]  # numeric, not string, order
    assert examples(builder, "train") == [
        {"text": b"great, really", "label": 1},
        {"text": b'said "meh"', "label": 0},
        {"text": b"ok", "label": 0},
    ]


def test_classification_columns_by_index_without_header(tmp_path, data_dir):
    path = write(tmp_path / "plain.tsv", "pos\tnice\nneg\tawful\n")
    builder = prepare(
        SeqjaxClassification,
        data_dir,
        paths=path,
        has_header=False,
        text_column=1,
        label_column=0,
        label_names=["neg", "pos"],
    )
    assert examples(builder, "train") == [{"text": b"nice", "label": 1}, {"text": b"awful", "label": 0}]


def test_classification_missing_label_column_names_file_and_columns(tmp_path):
    path = write(tmp_path / "nolabel.tsv", "sentence\tscore\nfine\t1\n")
    with pytest.raises(SourceError, match=r"nolabel\.tsv: no label column 'label' .*\['sentence', 'score'\]"):
        SeqjaxClassification.make_config(paths={"train": path})


def test_classification_unknown_label_and_bad_rows(tmp_path, data_dir):
    path = write(tmp_path / "labels.tsv", "sentence\tlabel\nfine\t1\nodd\t7\n")
    with pytest.raises(SourceError, match=r"labels\.tsv: line 3 has label '7', which is not one of"):
        prepare(SeqjaxClassification, data_dir, paths=path, label_names=["0", "1"])
    short = write(tmp_path / "short.tsv", "label\tsentence\n1\n")
    with pytest.raises(SourceError, match=r"short\.tsv: line 2 has 1 fields, so it has no text"):
        SeqjaxClassification.make_config(paths=short)


def test_classification_header_only_and_unknown_delimiter(tmp_path):
    with pytest.raises(SourceError, match="has a header but no data rows"):
        SeqjaxClassification.make_config(paths=write(tmp_path / "h.tsv", "sentence\tlabel\n"))
    with pytest.raises(SourceError, match="set delimiter"):
        SeqjaxClassification.make_config(paths=write(tmp_path / "data.dat", "a\tb\n"))


# ----------------------------------------------------------------------------
# Folder per class.


def test_folders_aclimdb_layout(tmp_path, data_dir):
    for split, cls, name, text in [
        ("train", "pos", "1_9.txt", "loved it"),
        ("train", "neg", "0_2.txt", "awful"),
        ("train", "neg", "3_1.txt", "dull"),
        ("train", "unsup", "5_0.txt", "?"),
        ("test", "pos", "2_8.txt", "great"),
        ("test", "neg", "4_3.txt", "bad"),
    ]:
        write(tmp_path / "aclImdb" / split / cls / name, text)
    write(tmp_path / "aclImdb" / "train" / "pos" / "notes.md", "not a review")
    write(tmp_path / "aclImdb" / ".cache" / "pos" / "x.txt", "hidden folders are not splits")
    builder = prepare(SeqjaxFolders, data_dir, paths=str(tmp_path / "aclImdb"))
    assert builder.info.features["label"].names == ["neg", "pos"]  # unsup is not in test/, so not a class
    assert sorted(examples(builder, "train"), key=lambda e: e["filename"]) == [
        {"text": b"awful", "label": 0, "filename": b"neg/0_2.txt"},
        {"text": b"dull", "label": 0, "filename": b"neg/3_1.txt"},
        {"text": b"loved it", "label": 1, "filename": b"pos/1_9.txt"},
    ]
    assert sorted(e["text"] for e in examples(builder, "test")) == [b"bad", b"great"]


def test_a_percentage_slice_of_class_folders_holds_every_class(tmp_path, data_dir):
    # Sorted by class, the last 10% of 50 neg + 50 pos files would be 10 pos.
    for i in range(50):
        for cls in ("neg", "pos"):
            write(tmp_path / "imdb" / "train" / cls / f"{i:02d}.txt", f"{cls} review {i}")
    builder = prepare(SeqjaxFolders, data_dir, paths={"train": str(tmp_path / "imdb" / "train")})
    tail = [e["label"] for e in examples(builder, "train[90%:]")]
    assert len(tail) == 10 and 0 < sum(tail) < 10
    assert sorted(e["filename"] for e in examples(builder, "train")) == sorted(  # every file once
        f"{cls}/{i:02d}.txt".encode() for i in range(50) for cls in ("neg", "pos")
    )
    again = prepare(SeqjaxFolders, str(tmp_path / "tfds_again"), paths={"train": str(tmp_path / "imdb" / "train")})
    assert examples(again, "train") == examples(builder, "train")  # a fixed order


def test_folders_missing_class_folder_is_named(tmp_path):
    write(tmp_path / "root" / "train" / "pos" / "a.txt", "x")
    with pytest.raises(MissingFileError, match=f"{tmp_path}/root/train/neg/"):
        SeqjaxFolders.make_config(paths=str(tmp_path / "root"), classes=["neg", "pos"])
    with pytest.raises(MissingFileError, match=f"{tmp_path}/nowhere"):
        SeqjaxFolders.make_config(paths=str(tmp_path / "nowhere"))


# ----------------------------------------------------------------------------
# Parallel text.


def test_parallel_aligned_gz_files_by_template(tmp_path, data_dir):
    write(tmp_path / "train.de.gz", "Ein Hund.\nZwei Katzen.\n")
    write(tmp_path / "train.en.gz", "A dog.\nTwo cats.\n")
    write(tmp_path / "val.de", "Hallo.\n")
    write(tmp_path / "val.en", "Hello.\n")
    builder = prepare(
        SeqjaxParallel,
        data_dir,
        languages=["de", "en"],
        paths={
            "train": str(tmp_path / "train.{lang}.gz"),
            "validation": [str(tmp_path / "val.de"), str(tmp_path / "val.en")],
        },
    )
    assert builder.info.supervised_keys == ("de", "en")
    assert examples(builder, "train") == [
        {"de": b"Ein Hund.", "en": b"A dog."},
        {"de": b"Zwei Katzen.", "en": b"Two cats."},
    ]
    assert examples(builder, "validation") == [{"de": b"Hallo.", "en": b"Hello."}]


def test_parallel_tsv_pairs_pick_columns_and_split_by_seed(tmp_path, data_dir):
    rows = [f"sentence {i}\tfrase {i}\tCC-BY attribution #{i}" for i in range(10)]
    path = write(tmp_path / "spa.txt", "\n".join(rows) + "\n")
    builder = prepare(
        SeqjaxParallel,
        data_dir,
        paths=path,
        languages=["es", "en"],
        columns=[1, 0],
        fractions={"train": 0.8, "test": 0.2},
        split_seed=0,
    )
    train, test = examples(builder, "train"), examples(builder, "test")
    assert len(train) == 8 and len(test) == 2
    pairs = {(e["en"].decode(), e["es"].decode()) for e in train + test}
    assert pairs == {(f"sentence {i}", f"frase {i}") for i in range(10)}


def test_parallel_unequal_line_counts_name_both_files(tmp_path, data_dir):
    src = write(tmp_path / "a.de.gz", "eins\nzwei\n")
    tgt = write(tmp_path / "a.en.gz", "one\n")
    with pytest.raises(SourceError, match=r"a\.de\.gz has 2 lines but .*a\.en\.gz has 1"):
        prepare(SeqjaxParallel, data_dir, paths=[src, tgt], languages=["de", "en"])


def test_parallel_errors_on_bad_input(tmp_path, data_dir):
    with pytest.raises(MissingFileError, match=f"{tmp_path}/x.fr"):
        SeqjaxParallel.make_config(paths=str(tmp_path / "x.{lang}"), languages=["fr", "en"])
    bad = write(tmp_path / "bad.de.gz", b"gut\n\xff\xfe\n")
    good = write(tmp_path / "bad.en.gz", "good\nbad\n")
    with pytest.raises(SourceError, match=r"bad\.de\.gz: line 2, byte 1 is not valid UTF-8"):
        prepare(SeqjaxParallel, data_dir, paths=[bad, good], languages=["de", "en"])
    one_column = write(tmp_path / "one.tsv", "only english\n")
    with pytest.raises(SourceError, match=r"one\.tsv: line 1 has 1 tab-separated fields"):
        prepare(SeqjaxParallel, data_dir, paths=one_column)
    with pytest.raises(SourceError, match="two different names"):
        SeqjaxParallel.make_config(paths=one_column, languages=["en", "en"])


# ----------------------------------------------------------------------------
# CoNLL.

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC

Peter NNP B-NP B-PER
-DOCSTART- -X- -X- O
Blackburn NNP I-NP I-PER
"""


def test_conll_sentences_tags_and_docstart(tmp_path, data_dir):
    path = write(tmp_path / "train.conll", CONLL)
    builder = prepare(SeqjaxConll, data_dir, paths={"train": path})
    names = builder.info.features["tags"].feature.names
    assert names == ["O", "B-MISC", "B-ORG", "B-PER", "I-PER"]
    got = examples(builder, "train")
    assert [list(e["tokens"]) for e in got] == [[b"EU", b"rejects", b"German"], [b"Peter"], [b"Blackburn"]]
    assert [[names[t] for t in e["tags"]] for e in got] == [["B-ORG", "O", "B-MISC"], ["B-PER"], ["I-PER"]]


def test_conll_pos_column_and_errors(tmp_path, data_dir):
    path = write(tmp_path / "pos.conll", CONLL)
    builder = prepare(SeqjaxConll, data_dir, paths=path, tag_column=1)
    assert [np.asarray(e["tags"]).tolist() for e in examples(builder, "train")] == [[1, 2, 0], [1], [1]]  # JJ, NNP, VBZ
    with pytest.raises(SourceError, match=r"line 3 has 4 columns; token column 0, tag column 5 do not all exist"):
        SeqjaxConll.make_config(paths=path, tag_column=5)
    with pytest.raises(SourceError, match=r"starting at line 3 has tag 'B-ORG', which is not one of"):
        prepare(SeqjaxConll, data_dir, paths=path, tag_names=["O", "B-PER"])
    with pytest.raises(SourceError, match="no sentences"):
        SeqjaxConll.make_config(paths=write(tmp_path / "doc.conll", "-DOCSTART- -X- O\n\n"))


def test_conll_input_columns_become_text_features_beside_tokens_and_tags(tmp_path, data_dir):
    path = write(tmp_path / "inputs.conll", CONLL)
    builder = prepare(SeqjaxConll, data_dir, paths=path, input_columns={"pos": 1, "chunks": -2})
    got = examples(builder, "train")
    assert [list(e["pos"]) for e in got] == [[b"NNP", b"VBZ", b"JJ"], [b"NNP"], [b"NNP"]]
    assert [list(e["chunks"]) for e in got] == [[b"B-NP", b"B-VP", b"B-NP"], [b"B-NP"], [b"I-NP"]]
    assert [list(e["tokens"]) for e in got][0] == [b"EU", b"rejects", b"German"]
    # Without the option a dataset keeps the name it was prepared under before the option existed.
    assert SeqjaxConll.make_config(paths=path).name == SeqjaxConll.make_config(paths=path, input_columns={}).name
    assert (
        SeqjaxConll.make_config(paths=path).name != SeqjaxConll.make_config(paths=path, input_columns={"pos": 1}).name
    )
    with pytest.raises(
        SourceError, match=r"line 3 has 4 columns; token column 0, tag column -1, input column 'pos' 4 "
    ):
        SeqjaxConll.make_config(paths=path, input_columns={"pos": 4})
    for bad in ({"tags": 1}, {"part of speech": 1}):
        with pytest.raises(SourceError, match=r"is not a usable feature name \(an identifier other than 'tokens'"):
            SeqjaxConll.make_config(paths=path, input_columns=bad)
    with pytest.raises(SourceError, match=r"input_columns: column of 'pos' must be an integer index, got '1'"):
        SeqjaxConll.make_config(paths=path, input_columns={"pos": "1"})


# ----------------------------------------------------------------------------
# Time series.


def test_timeseries_crlf_quoted_dates_and_contiguous_fractions(tmp_path, data_dir):
    rows = "".join(f'"1949-{m:02d}",{100 + m}\r\n' for m in range(1, 11))
    path = write(tmp_path / "air.csv", '"Month","Passengers"\r\n' + rows.rstrip("\r\n"))
    builder = prepare(
        SeqjaxTimeseries,
        data_dir,
        paths=path,
        value_column="Passengers",
        time_column="Month",
        fractions={"train": 0.7, "test": 0.3},
    )
    (train,), (test,) = examples(builder, "train"), examples(builder, "test")
    np.testing.assert_array_equal(train["values"], np.arange(101, 108, dtype=np.float32))
    np.testing.assert_array_equal(test["values"], np.arange(108, 111, dtype=np.float32))
    assert train["values"].dtype == np.float32
    assert list(test["time"]) == [b"1949-08", b"1949-09", b"1949-10"]


def test_timeseries_several_value_columns(tmp_path, data_dir):
    path = write(tmp_path / "multi.csv", "t,a,b\n0,1.5,-2\n1,2.5,-3\n")
    builder = prepare(SeqjaxTimeseries, data_dir, paths=path, value_column=["b", "a"])
    (only,) = examples(builder, "train")
    np.testing.assert_array_equal(only["values"], np.array([[-2, 1.5], [-3, 2.5]], np.float32))
    assert "time" not in only


def test_timeseries_bad_column_and_values(tmp_path, data_dir):
    path = write(tmp_path / "sun.csv", "YEAR,SUNACTIVITY\n1700,5\n1701,\n")
    with pytest.raises(SourceError, match=r"no column 'sunspots'; the header has columns \['YEAR', 'SUNACTIVITY'\]"):
        prepare(SeqjaxTimeseries, data_dir, paths=path, value_column="sunspots")
    with pytest.raises(SourceError, match=r"sun\.csv: line 3: SUNACTIVITY = '' is not a finite number"):
        prepare(SeqjaxTimeseries, data_dir, paths=path, value_column="SUNACTIVITY")


def test_prepared_dataset_is_reused(tmp_path, data_dir):
    path = write(tmp_path / "r.txt", "reuse me\n")
    first = prepare(SeqjaxText, data_dir, paths=path)
    stamp = os.path.getmtime(os.path.join(first.data_dir, "dataset_info.json"))
    second = prepare(SeqjaxText, data_dir, paths=path)
    assert second.data_dir == first.data_dir
    assert os.path.getmtime(os.path.join(second.data_dir, "dataset_info.json")) == stamp


def test_source_survives_pickling_for_worker_processes(tmp_path, data_dir):
    path = write(tmp_path / "p.txt", "alpha\nbeta\n")
    source = prepare(SeqjaxText, data_dir, paths=path, unit="line").as_data_source("train")
    copy = pickle.loads(pickle.dumps(source))
    assert [copy[i] for i in range(len(copy))] == [{"text": b"alpha"}, {"text": b"beta"}]


def test_fractions_as_pairs_keep_their_order():
    # ConfigDicts sort keys, so configs give fractions as (split, fraction) pairs.
    from seqjax.data.builders.common import normalize_fractions

    pairs = normalize_fractions([["train", 0.8], ["validation", 0.1], ["test", 0.1]])
    assert pairs == (("train", 0.8), ("validation", 0.1), ("test", 0.1))
    with pytest.raises(SourceError, match="non-empty mapping split -> fraction or"):
        normalize_fractions([0.8, 0.2])
