"""Dataset sources: TFDS catalog datasets by name and local files, read with random access.

Every source is a TFDS dataset prepared as ArrayRecord files and returned by
`builder.as_data_source(split)`: an object with `len()` and `[i]` giving a
feature dict (text features as UTF-8 `bytes`, numbers as numpy), which the
grain loader consumes.

    load_source('imdb_reviews', 'train', data_dir=...)                 # TFDS catalog
    load_source('tiny_shakespeare', 'train', manual_dir='/data/ts')    # offline
    load_source('local/classification', 'train',
                paths={'train': 'sst2/train.tsv', 'validation': 'sst2/dev.tsv'})

Names starting with 'local/' are the local kinds in `LOCAL_KINDS`; their
keyword options go to the builder's `make_config` (see
seqjax/data/builders/ and docs/datasets.md). Any other name is a TFDS catalog
name ('glue/sst2', 'wmt14_translate/de-en', ...).

Offline preparation: with `manual_dir`, a catalog dataset is prepared from
the files in that folder and never from the network. TFDS takes a download
from `manual_dir/<registered file name>` and checks its size and sha256; a
download that is not there raises `MissingFileError` naming the file at once
(instead of TFDS's retry loop against an unreachable host), and a file that
does not match raises `ChecksumMismatchError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import download_manager as tfds_download_manager
from tensorflow_datasets.core.download import downloader as tfds_downloader

from seqjax.data.builders import (
    ChecksumMismatchError,
    MissingFileError,
    SeqjaxClassification,
    SeqjaxConll,
    SeqjaxFolders,
    SeqjaxParallel,
    SeqjaxText,
    SeqjaxTimeseries,
    SourceError,
)

__all__ = [
    "LOCAL_KINDS",
    "ChecksumMismatchError",
    "MissingFileError",
    "SourceError",
    "get_builder",
    "load_source",
    "prepare",
    "source_info",
]

# Name -> builder class of the local dataset kinds.
LOCAL_KINDS = {
    "local/text": SeqjaxText,
    "local/classification": SeqjaxClassification,
    "local/folders": SeqjaxFolders,
    "local/parallel": SeqjaxParallel,
    "local/conll": SeqjaxConll,
    "local/timeseries": SeqjaxTimeseries,
}


def _plain(value: Any) -> Any:
    """ConfigDicts (and tuples of them) as plain dicts and lists, for `make_config`."""
    if hasattr(value, "to_dict"):
        return _plain(value.to_dict())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def is_local(name: str) -> bool:
    return name.startswith("local/")


def get_builder(name: str, *, data_dir: str | None = None, **options) -> tfds.core.DatasetBuilder:
    """The TFDS builder of a source, not yet prepared.

    Args:
      name: a TFDS catalog name ('imdb_reviews', 'glue/sst2') or a local kind
        ('local/text', ...; see `LOCAL_KINDS`).
      data_dir: where prepared datasets live; None or '' is TFDS's default
        (`$TFDS_DATA_DIR` or ~/tensorflow_datasets).
      options: a local kind's `make_config` options (paths, columns, ...);
        catalog datasets take none.
    """
    options = _plain(options)
    data_dir = data_dir or None  # '' (a config's "unset") means TFDS's default
    if is_local(name):
        if name not in LOCAL_KINDS:
            raise SourceError(f"unknown local dataset kind {name!r}; the kinds are {sorted(LOCAL_KINDS)}")
        cls = LOCAL_KINDS[name]
        signature = inspect.signature(cls.make_config)
        try:
            signature.bind(**options)
        except TypeError as e:
            raise SourceError(f"{name}: {e}; its options are {list(signature.parameters)}") from None
        return cls(config=cls.make_config(**options), data_dir=data_dir)
    if options:
        raise SourceError(
            f"{name} is a TFDS catalog dataset; options {sorted(options)} only apply to "
            f"local datasets ({sorted(LOCAL_KINDS)})"
        )
    try:
        return tfds.builder(name, data_dir=data_dir, file_format="array_record")
    except tfds.core.registered.DatasetNotFoundError:
        raise SourceError(
            f"unknown dataset {name!r}: not in the TFDS catalog (tfds.list_builders()) "
            f"and not a local kind {sorted(LOCAL_KINDS)}{_tensorflow_hint()}"
        ) from None
    except ValueError as e:
        if "File format is already set" not in str(e):
            raise
        # A copy prepared earlier by plain tfds.load is TFRecord, which has no random access.
        raise SourceError(
            f"{name} is already prepared in data_dir {data_dir or 'TFDS default'} as TFRecord, but random "
            f"access needs ArrayRecord: point data_dir elsewhere, or convert it with `tfds convert_format "
            f"--dataset_version_dir=<that dataset's version folder> --out_file_format=array_record "
            f"--out_dir=<new folder>`"
        ) from None


def prepare(builder: tfds.core.DatasetBuilder, manual_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """Prepares `builder` (once: a prepared dataset is reused) and returns it.

    Args:
      manual_dir: for catalog datasets, the folder holding the files TFDS
        would download, under their registered names; preparation is then
        offline. None or '' downloads as TFDS does.
    """
    manual_dir = manual_dir or None  # '' (a config's "unset") means no manual_dir
    if not sys.stderr.isatty():
        tfds.disable_progress_bar()  # its carriage-return bars garble a job's log file
    # TFDS prints its preparation messages; stdout is for results (a run's
    # last stdout line is its final metrics).
    with contextlib.redirect_stdout(sys.stderr):
        try:
            _prepare(builder, manual_dir)
        except OSError:
            # Runs of a sweep started together prepare one dataset at once; TFDS
            # then fails to rename all but the first copy into place. The first
            # copy is the same dataset, so read it.
            if not _prepared(builder):
                raise
            builder.info.read_from_directory(builder.data_dir)
        else:
            if not builder.info.splits and _prepared(builder):
                # Another process prepared it after this builder was made (TFDS
                # then reuses the files without reading them): read them now.
                builder.info.read_from_directory(builder.data_dir)
    return builder


def _prepared(builder: tfds.core.DatasetBuilder) -> bool:
    return (builder.data_path / "dataset_info.json").exists()


def _prepare(builder: tfds.core.DatasetBuilder, manual_dir: str | None) -> None:
    if manual_dir is None:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    elif isinstance(builder, tuple(LOCAL_KINDS.values())):
        raise SourceError(
            f"manual_dir is for TFDS catalog datasets; local dataset {builder.name} reads "
            f"its paths directly, so leave manual_dir unset"
        )
    else:
        _prepare_offline(builder, manual_dir)


def _prepare_offline(builder: tfds.core.DatasetBuilder, manual_dir: str) -> None:
    manual_dir = os.path.abspath(os.path.expanduser(str(manual_dir)))
    if not os.path.isdir(manual_dir):
        raise MissingFileError(
            f"{builder.name}: manual_dir {manual_dir} is not a directory; create it and "
            f"put the dataset's download files in it ({_registered_files(builder)})"
        )
    config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
    with _refuse_downloads(builder, manual_dir):
        try:
            builder.download_and_prepare(download_config=config)
        except tfds_download_manager.NonMatchingChecksumError as e:
            raise ChecksumMismatchError(_mismatch_message(builder, manual_dir, e)) from None


def _registered_files(builder: tfds.core.DatasetBuilder) -> str:
    infos = builder.url_infos or {}
    names = sorted({info.filename for info in infos.values() if info.filename})
    if not names:
        return "TFDS registers no file names for it"
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return f"registered file names: {shown}"


@contextlib.contextmanager
def _refuse_downloads(builder: tfds.core.DatasetBuilder, manual_dir: str):
    """Makes TFDS's downloader raise instead of going to the network.

    TFDS reaches the downloader only for a file it did not find in
    manual_dir (or its download cache); offline that would retry an
    unreachable host for minutes, so the first such file ends preparation
    with its exact expected name. While this is active no TFDS download
    happens in this process.
    """
    original = tfds_downloader._Downloader.download

    def refuse(downloader, url, destination_path, verify=True):
        raise MissingFileError(_missing_message(builder, url, manual_dir))

    tfds_downloader._Downloader.download = refuse
    try:
        yield
    finally:
        tfds_downloader._Downloader.download = original


def _missing_message(builder: tfds.core.DatasetBuilder, url: str, manual_dir: str) -> str:
    info = (builder.url_infos or {}).get(url)
    if info is None or not info.filename:
        return (
            f"{builder.name}: preparing offline, TFDS needs {url}, but it registers no checksum or file "
            f"name for it, so it cannot take it from manual_dir {manual_dir}. Prepare the dataset where "
            f"there is network access and copy its folder {builder.data_dir} to the same place here"
        )
    return (
        f"{builder.name}: preparing offline, expected the file {os.path.join(manual_dir, info.filename)} "
        f"({int(info.size)} bytes, sha256 {info.checksum}), downloaded from {url}. Download it where there "
        f"is network access and put it in {manual_dir} under exactly that name"
    )


def _mismatch_message(builder: tfds.core.DatasetBuilder, manual_dir: str, error: Exception) -> str:
    for url, info in (builder.url_infos or {}).items():
        path = os.path.join(manual_dir, info.filename or "")
        if not info.filename or not os.path.isfile(path):
            continue
        size = os.path.getsize(path)
        checksum = _sha256(path) if size == info.size else None
        if size != info.size or checksum != info.checksum:
            got = f"{size} bytes" if checksum is None else f"sha256 {checksum}"
            return (
                f"{builder.name}: the file {path} is not the one TFDS registers for {url}: expected "
                f"{int(info.size)} bytes with sha256 {info.checksum}, got {got}. Replace it with the "
                f"original download"
            )
    return f"{builder.name}: a file in {manual_dir} does not match its registered checksum: {error}"


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_source(
    name: str, split: str | Sequence[str], *, data_dir: str | None = None, manual_dir: str | None = None, **options
):
    """A random-access source of one split (or a list of sources for a list of splits).

    Prepares the dataset first if `data_dir` does not hold it yet.

    Args:
      name, data_dir, options: as `get_builder`.
      split: a split name, or TFDS split syntax ('train[:90%]').
      manual_dir: as `prepare` (catalog datasets only).

    Returns:
      An ArrayRecord data source: `len(src)`, `src[i]` -> {feature: value}.
    """
    builder = prepare(get_builder(name, data_dir=data_dir, **options), manual_dir)
    if isinstance(split, (list, tuple)):
        return [builder.as_data_source(s) for s in split]
    return builder.as_data_source(split)


def source_info(
    name: str, *, data_dir: str | None = None, manual_dir: str | None = None, **options
) -> tfds.core.DatasetInfo:
    """The prepared dataset's info: `.features` (e.g. label names) and `.splits[s].num_examples`."""
    return prepare(get_builder(name, data_dir=data_dir, **options), manual_dir).info


def tensorflow_installed() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _tensorflow_hint() -> str:
    """Why a catalog name may be missing: the TFDS builders of some datasets
    (glue, conll2003, wmt*_translate, ...) import TensorFlow, and TFDS leaves
    them out of its catalog without it."""
    if tensorflow_installed():
        return ""
    return (
        "; TensorFlow is not installed, and TFDS drops the datasets whose builders import it "
        "(glue, conll2003, wmt*_translate, ...): pip install 'seqjax[tf]' for those"
    )


def load_time_series(path: str, column: str, *, data_dir: str | None = None) -> np.ndarray:
    """The whole series in `column` of the CSV file at `path`, [T] float32,
    read through the `local/timeseries` builder (so errors name the file)."""
    if not column:
        raise SourceError(f"name the column to forecast in {path} (config.task.column)")
    source = load_source("local/timeseries", "train", data_dir=data_dir, paths=path, value_column=column)
    return np.asarray(source[0]["values"], np.float32)
