"""Sources by name: TFDS catalog datasets (mocked), local kinds, and offline preparation."""

import hashlib
import os
import re
import threading
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import checksums, downloader

from seqjax.data import sources
from seqjax.data.sources import (
    ChecksumMismatchError,
    MissingFileError,
    SourceError,
    get_builder,
    load_source,
    source_info,
)

# ----------------------------------------------------------------------------
# Catalog datasets through tfds.testing.mock_data (no files, no network).


@pytest.mark.parametrize(
    "name, split, keys",
    [
        ("imdb_reviews", "train", {"text", "label"}),
        ("glue/sst2", "validation", {"sentence", "label", "idx"}),
        ("tiny_shakespeare", "train", {"text"}),
        ("lm1b", "test", {"text"}),
        ("conll2003", "train", {"tokens", "pos", "chunks", "ner"}),
        ("ted_hrlr_translate/pt_to_en", "train", {"pt", "en"}),
        ("wmt14_translate/de-en", "validation", {"de", "en"}),
    ],
)
def test_catalog_names_give_random_access_sources(name, split, keys):
    with tfds.testing.mock_data(num_examples=5):
        source = load_source(name, split)
        assert len(source) == 5
        assert set(source[4]) == keys
        np.testing.assert_equal([source[i] for i in range(5)], [source[i] for i in range(5)])  # repeatable


def test_catalog_source_info_has_features():
    with tfds.testing.mock_data(num_examples=3):
        info = source_info("imdb_reviews")
        assert info.features["label"].names == ["neg", "pos"]
        assert info.file_format.value == "array_record"


def test_catalog_list_of_splits():
    with tfds.testing.mock_data(num_examples=2):
        train, test = load_source("imdb_reviews", ["train", "test"])
        assert len(train) == len(test) == 2


def test_catalog_rejects_local_options_and_unknown_names():
    with pytest.raises(SourceError, match="catalog dataset; options \\['paths'\\] only apply to local"):
        get_builder("imdb_reviews", paths="x.tsv")
    with pytest.raises(SourceError, match="unknown dataset 'no_such_dataset_xyz'"):
        get_builder("no_such_dataset_xyz")
    with pytest.raises(SourceError, match="unknown local dataset kind 'local/xml'"):
        get_builder("local/xml")


def test_an_unknown_catalog_name_without_tensorflow_names_the_tf_extra(monkeypatch):
    with pytest.raises(SourceError, match="unknown dataset 'no_such_dataset_xyz'") as with_tf:
        get_builder("no_such_dataset_xyz")
    assert "TensorFlow" not in str(with_tf.value)  # TensorFlow is installed here: no hint
    monkeypatch.setattr(sources, "tensorflow_installed", lambda: False)
    hint = "TensorFlow is not installed, and TFDS drops the datasets whose builders import it"
    with pytest.raises(SourceError, match=re.escape(hint) + r" \(glue, conll2003, .*\): pip install 'seqjax\[tf\]'"):
        get_builder("no_such_dataset_xyz")


def test_a_missing_file_under_the_data_folder_names_the_variable(tmp_path, monkeypatch):
    from seqjax import paths

    monkeypatch.setenv("SEQJAX_DATA", str(tmp_path / "data"))
    missing = paths.data_path("sst2", "train.tsv")
    assert missing == str(tmp_path / "data" / "sst2" / "train.tsv")
    with pytest.raises(SourceError, match=rf"expected the file {re.escape(missing)}, which does not exist; .*"
                       rf"the configs' data folder is \$SEQJAX_DATA, now {re.escape(str(tmp_path / 'data'))}: "
                       r"set SEQJAX_DATA to yours"):  # fmt: skip
        load_source("local/classification", "train", paths=missing, data_dir=str(tmp_path / "tfds"))
    monkeypatch.delenv("SEQJAX_DATA")
    assert paths.data_root() == os.path.join(os.path.expanduser("~"), "seqjax_data")


# ----------------------------------------------------------------------------
# Local kinds through the same API.


def test_local_kind_by_name_reads_exact_examples(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood \t1\nbad \t0\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nfine \t1\n")
    paths = {"train": str(tmp_path / "train.tsv"), "validation": str(tmp_path / "dev.tsv")}
    data_dir = str(tmp_path / "tfds")
    train = load_source("local/classification", "train", data_dir=data_dir, paths=paths)
    assert [train[i] for i in range(len(train))] == [{"text": b"good ", "label": 1}, {"text": b"bad ", "label": 0}]
    info = source_info("local/classification", data_dir=data_dir, paths=paths)
    assert {k: v.num_examples for k, v in info.splits.items()} == {"train": 2, "validation": 1}
    # TFDS split syntax works on local sources too.
    assert len(load_source("local/classification", "train[:1]", data_dir=data_dir, paths=paths)) == 1


def test_builder_made_before_another_process_prepared_reads_the_prepared_files(tmp_path):
    # A sweep's runs each make their builder; one that prepares after another
    # finished finds the files the other wrote and must read their splits.
    (tmp_path / "a.txt").write_text("one\ntwo\nthree\n")
    options = {"data_dir": str(tmp_path / "tfds"), "paths": {"train": str(tmp_path / "a.txt")}, "unit": "line"}
    first = get_builder("local/text", **options)
    waited = get_builder("local/text", **options)
    sources.prepare(first)
    source = sources.prepare(waited).as_data_source("train")
    assert [source[i]["text"] for i in range(len(source))] == [b"one", b"two", b"three"]


def test_runs_preparing_one_dataset_at_once_all_succeed(tmp_path):
    # TFDS fails all but the first to rename its copy into place:
    # "FileExistsError: Cannot rename .../incomplete.XXXX_1.0.0. Destination .../1.0.0 already exists."
    lines = "".join(f"sentence {i}\n" for i in range(2000))
    (tmp_path / "a.txt").write_text(lines)
    options = {"data_dir": str(tmp_path / "tfds"), "paths": {"train": str(tmp_path / "a.txt")}, "unit": "line"}
    start = threading.Barrier(4)
    results, errors = [], []

    def run():
        builder = get_builder("local/text", **options)
        start.wait()
        try:
            source = sources.prepare(builder).as_data_source("train")
            results.append(len(source))
        except Exception as e:  # noqa: BLE001 (collected and asserted below)
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and results == [2000] * 4
    # No copy is left behind: one version folder, which a later run reuses.
    assert sorted(os.listdir(os.path.dirname(get_builder("local/text", **options).data_dir))) == ["1.0.0"]
    assert len(load_source("local/text", "train", **options)) == 2000


def test_local_options_from_a_configdict(tmp_path):
    ml_collections = pytest.importorskip("ml_collections")
    (tmp_path / "a.txt").write_text("one\ntwo\n")
    cfg = ml_collections.ConfigDict(
        {
            "name": "local/text",
            "data_dir": str(tmp_path / "tfds"),
            "manual_dir": "",
            "paths": {"train": str(tmp_path / "a.txt")},
            "unit": "line",
        }
    )
    source = load_source(split="train", **cfg)
    assert [source[i]["text"] for i in range(len(source))] == [b"one", b"two"]
    catalog = ml_collections.ConfigDict({"name": "imdb_reviews", "data_dir": "", "manual_dir": ""})
    with tfds.testing.mock_data(num_examples=2):
        assert len(load_source(split="test", **catalog)) == 2


def test_local_rejects_unknown_options_and_manual_dir(tmp_path):
    (tmp_path / "a.txt").write_text("x\n")
    with pytest.raises(
        SourceError, match="local/text: .*unexpected keyword argument 'label_column'; its options are \\['paths',"
    ):
        get_builder("local/text", paths=str(tmp_path / "a.txt"), label_column="label")
    with pytest.raises(SourceError, match="manual_dir is for TFDS catalog datasets"):
        load_source(
            "local/text", "train", data_dir=str(tmp_path), manual_dir=str(tmp_path), paths=str(tmp_path / "a.txt")
        )


# ----------------------------------------------------------------------------
# Offline preparation with manual_dir (real TFDS, no mock, no network).


def test_offline_missing_file_fails_fast_naming_it(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    start = time.monotonic()
    with pytest.raises(
        MissingFileError, match=f"expected the file {manual}/input.txt \\(1115394 bytes, sha256 86c4e6aa"
    ):
        load_source("tiny_shakespeare", "train", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
    assert time.monotonic() - start < 30  # TFDS alone would retry the unreachable host for minutes
    assert downloader._Downloader.download is not None
    assert "refuse" not in downloader._Downloader.download.__qualname__  # the guard is undone


def test_offline_mismatched_file_names_expected_checksum(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "input.txt").write_text("not shakespeare\n")
    with pytest.raises(ChecksumMismatchError, match=f"{manual}/input.txt is not the one TFDS registers .*got 16 bytes"):
        load_source("tiny_shakespeare", "train", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))


def test_offline_manual_dir_must_exist(tmp_path):
    with pytest.raises(MissingFileError, match="manual_dir .*nowhere is not a directory.*input.txt"):
        load_source("tiny_shakespeare", "train", data_dir=str(tmp_path), manual_dir=str(tmp_path / "nowhere"))


_URL = "https://example.invalid/corpus.txt"


class SeqjaxOfflineProbe(tfds.core.GeneratorBasedBuilder):
    """A download-based builder like tiny_shakespeare, whose registered file the test writes."""

    VERSION = tfds.core.Version("1.0.0")
    url_infos = {}  # set by the test: {url: UrlInfo}

    def _info(self):
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
        path = dl_manager.download(_URL)
        return {"train": self._generate_examples(path)}

    def _generate_examples(self, path):
        for i, line in enumerate(path.read_text().splitlines()):
            yield i, {"text": line}


def test_offline_preparation_takes_the_registered_file_from_manual_dir(tmp_path, monkeypatch):
    manual = tmp_path / "manual"
    manual.mkdir()
    content = b"first\nsecond\n"
    (manual / "corpus.txt").write_bytes(content)
    info = checksums.UrlInfo(size=len(content), checksum=hashlib.sha256(content).hexdigest(), filename="corpus.txt")
    monkeypatch.setattr(SeqjaxOfflineProbe, "url_infos", {_URL: info})
    builder = SeqjaxOfflineProbe(data_dir=str(tmp_path / "tfds"), file_format="array_record")
    source = sources.prepare(builder, manual_dir=str(manual)).as_data_source("train")
    assert [source[i]["text"] for i in range(len(source))] == [b"first", b"second"]


def test_offline_url_without_registered_name_explains_what_to_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(SeqjaxOfflineProbe, "url_infos", {})
    (tmp_path / "manual").mkdir()
    builder = SeqjaxOfflineProbe(data_dir=str(tmp_path / "tfds"), file_format="array_record")
    with pytest.raises(MissingFileError, match="registers no checksum or file name.*copy its folder"):
        sources.prepare(builder, manual_dir=str(tmp_path / "manual"))


def test_dataset_prepared_as_tfrecord_gets_a_clear_error(tmp_path, monkeypatch):
    manual = tmp_path / "manual"
    manual.mkdir()
    content = b"only\n"
    (manual / "corpus.txt").write_bytes(content)
    info = checksums.UrlInfo(size=len(content), checksum=hashlib.sha256(content).hexdigest(), filename="corpus.txt")
    monkeypatch.setattr(SeqjaxOfflineProbe, "url_infos", {_URL: info})
    data_dir = str(tmp_path / "tfds")
    builder = sources.prepare(SeqjaxOfflineProbe(data_dir=data_dir, file_format="array_record"), str(manual))
    # Mark it as what a plain tfds.load leaves behind: TFRecord files, which have no random access.
    # (Writing real TFRecords would import TensorFlow, ~10 s.)
    info_path = os.path.join(builder.data_dir, "dataset_info.json")
    with open(info_path) as f:
        text = f.read()
    assert '"fileFormat": "array_record"' in text
    with open(info_path, "w") as f:
        f.write(text.replace('"fileFormat": "array_record"', '"fileFormat": "tfrecord"'))
    with pytest.raises(SourceError, match="already prepared .* as TFRecord.*tfds convert_format"):
        get_builder("seqjax_offline_probe", data_dir=data_dir)
