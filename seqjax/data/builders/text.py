"""Local text datasets: plain text (language modelling), TSV/CSV with labels, folder per class."""

from __future__ import annotations

import csv
import glob
import io
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from seqjax.data.builders.common import (
    LocalBuilder,
    MissingFileError,
    SourceError,
    check_dir,
    check_file,
    check_split_name,
    fraction_bounds,
    option_files,
    read_text,
    split_lines,
    split_options,
)

TEXT_UNITS = ("file", "line", "paragraph")


class SeqjaxText(LocalBuilder):
    """Plain text for language modelling. Features: {'text': Text}.

    `unit` says what one example is: 'file' (the whole file, or with
    fractions its contiguous character range: 90/5/5 reproduces TFDS's
    `tiny_shakespeare` cut), 'line' (each line that is not blank, exactly as
    written less the newline), or 'paragraph' (blocks separated by blank
    lines, stripped).
    """

    @classmethod
    def make_config(
        cls, paths: Any, fractions: Mapping[str, float] | None = None, unit: str = "file", split_seed: int | None = None
    ):
        """Args:
        paths: {split: file} or one file (split 'train', or cut by `fractions`).
        fractions: {split: fraction} cutting one file, in order.
        unit: 'file' | 'line' | 'paragraph'.
        split_seed: None cuts contiguous pieces; an int permutes lines or
          paragraphs first (not allowed with unit='file').
        """
        if unit not in TEXT_UNITS:
            raise SourceError(f"text unit must be one of {TEXT_UNITS}, got {unit!r}")
        if unit == "file" and split_seed is not None:
            raise SourceError(
                "split_seed permutes lines or paragraphs; with unit='file' the "
                "fractions are contiguous character ranges, so leave split_seed None"
            )
        options = split_options(paths, fractions, split_seed, "plain text")
        options["unit"] = unit
        return cls.config_from_options("text", options, option_files(options))

    def _features(self, options):
        return tfds.features.FeaturesDict({"text": tfds.features.Text()})

    def _split_generators(self, dl_manager):
        options = self.options
        if options["unit"] == "file" and "path" in options:
            text = read_text(options["path"])
            bounds = fraction_bounds(len(text), options["fractions"], options["path"])
            splits = {name: [text[start:stop]] for name, start, stop in bounds}
        else:
            splits = self._items_by_split(self._load)
        return {name: self._generate_examples(items) for name, items in splits.items()}

    def _load(self, path: str) -> list[str]:
        text = read_text(path)
        unit = self.options["unit"]
        if unit == "file":
            return [text]
        if unit == "line":
            return [line for line in split_lines(text) if line.strip()]
        return [p.strip() for p in re.split(r"\n[ \t\r]*\n", text) if p.strip()]

    def _generate_examples(self, items: list[str]):
        for i, text in enumerate(items):
            yield i, {"text": text}


# ----------------------------------------------------------------------------
# TSV / CSV with a text column and a label column.


def delimiter_for(path: str, delimiter: str | None) -> str:
    """The field delimiter: given, or '\\t' for .tsv and ',' for .csv (also .gz)."""
    if delimiter is not None:
        return delimiter
    name = path[:-3] if path.endswith(".gz") else path
    if name.endswith(".tsv"):
        return "\t"
    if name.endswith(".csv"):
        return ","
    raise SourceError(
        f"{path}: cannot tell the delimiter from the file name; set delimiter ('\\t' or ',') in the data config"
    )


def read_table(path: str, delimiter: str, quoting: str, has_header: bool) -> tuple[list[str] | None, list]:
    """Parses a delimited file strictly.

    Args:
      quoting: 'none' (GLUE's TSVs: quote characters are text) or 'minimal'
        (standard CSV quoting).

    Returns:
      (header or None, [(line number, fields)]); blank lines are skipped.
    """
    if quoting not in ("none", "minimal"):
        raise SourceError(f"quoting must be 'none' or 'minimal', got {quoting!r}")
    text = read_text(path)
    # Long documents (whole reviews) exceed csv's default 128 KiB field limit.
    csv.field_size_limit(2**31 - 1)
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=delimiter,
        quoting=csv.QUOTE_NONE if quoting == "none" else csv.QUOTE_MINIMAL,
    )
    rows, header = [], None
    try:
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if has_header and header is None:
                header = fields
                continue
            rows.append((reader.line_num, fields))
    except csv.Error as e:
        raise SourceError(f"{path}: line {reader.line_num}: cannot parse ({e})") from None
    if not rows:
        raise SourceError(f"{path}: the file has {'a header but ' if header else ''}no data rows")
    return header, rows


def column_index(header: list[str] | None, column: str | int, path: str, what: str) -> int | None:
    """Index of a column given by header name or 0-based index; None if the name is absent."""
    if isinstance(column, int):
        return column
    if header is None:
        raise SourceError(
            f"{path}: {what} {column!r} is a name but the file has no header; give a 0-based column index"
        )
    return header.index(column) if column in header else None


def field(fields: list[str], index: int, path: str, line: int, what: str) -> str:
    if not -len(fields) <= index < len(fields):
        raise SourceError(
            f"{path}: line {line} has {len(fields)} fields, so it has no {what} "
            f"(column {index}); check the delimiter and quoting"
        )
    return fields[index]


def sort_labels(labels) -> list[str]:
    """Label names in a fixed order: numerically if all are integers, else as strings."""
    labels = set(labels)
    try:
        return sorted(labels, key=int)
    except ValueError:
        return sorted(labels)


class SeqjaxClassification(LocalBuilder):
    """TSV/CSV files with a text column and a label column (e.g. GLUE SST-2).

    Features: {'text': Text, 'label': ClassLabel}. A split listed in
    `unlabeled_splits` whose file has no label column (GLUE's test.tsv) gets
    label -1; any other file without it is an error.
    """

    @classmethod
    def make_config(
        cls,
        paths: Any,
        fractions: Mapping[str, float] | None = None,
        split_seed: int | None = 0,
        text_column: str | int = "sentence",
        label_column: str | int = "label",
        label_names: Sequence[str] | None = None,
        delimiter: str | None = None,
        quoting: str | None = None,
        has_header: bool = True,
        unlabeled_splits: Sequence[str] = ("test",),
    ):
        """Args:
        paths: {split: file} or one file (cut by `fractions`).
        fractions, split_seed: see `split_options` (rows are permuted by
          `split_seed` before cutting; None keeps file order).
        text_column, label_column: header names or 0-based indices.
        label_names: the classes in id order; None reads them from the
          files (sorted numerically if all integers, else as strings).
        delimiter: None picks from the extension (.tsv tab, .csv comma).
        quoting: 'none' or 'minimal'; None is 'none' for tab-separated
          files (GLUE) and 'minimal' otherwise.
        has_header: whether the first row names the columns.
        unlabeled_splits: splits whose file may lack the label column.
        """
        options = split_options(paths, fractions, split_seed, "text classification")
        files = option_files(options)
        delimiter = delimiter_for(files[0], delimiter)
        options.update(
            text_column=text_column,
            label_column=label_column,
            delimiter=delimiter,
            quoting=quoting or ("none" if delimiter == "\t" else "minimal"),
            has_header=bool(has_header),
            unlabeled_splits=list(unlabeled_splits),
        )
        options["label_names"] = list(label_names) if label_names is not None else cls._infer_labels(options)
        if not options["label_names"]:
            raise SourceError(f"text classification: no labels found in {files}")
        return cls.config_from_options("classification", options, files)

    @classmethod
    def _infer_labels(cls, options: dict) -> list[str]:
        splits = options["paths"].items() if "paths" in options else [("train", options["path"])]
        labels = set()
        for split, path in splits:
            rows = cls._read_rows(path, split, options)
            labels.update(label for _, _, label in rows if label is not None)
        return sort_labels(labels)

    @staticmethod
    def _read_rows(path: str, split: str, options: dict) -> list[tuple[int, str, str | None]]:
        """[(line, text, label or None)]; None when the split has no label column."""
        header, rows = read_table(path, options["delimiter"], options["quoting"], options["has_header"])
        text_at = column_index(header, options["text_column"], path, "text column")
        if text_at is None:
            raise SourceError(
                f"{path}: no text column {options['text_column']!r}; the header has "
                f"columns {header}; set text_column in the data config"
            )
        label_at = column_index(header, options["label_column"], path, "label column")
        if label_at is None and split not in options["unlabeled_splits"]:
            raise SourceError(
                f"{path}: no label column {options['label_column']!r} (header columns: "
                f"{header}); set label_column, or list split {split!r} in unlabeled_splits"
            )
        out = []
        for line, fields in rows:
            text = field(fields, text_at, path, line, "text")
            label = None if label_at is None else field(fields, label_at, path, line, "label").strip()
            if label == "":
                raise SourceError(f"{path}: line {line} has an empty label")
            out.append((line, text, label))
        return out

    def _features(self, options):
        return tfds.features.FeaturesDict(
            {
                "text": tfds.features.Text(),
                "label": tfds.features.ClassLabel(names=options["label_names"]),
            }
        )

    def _supervised_keys(self, options):
        return ("text", "label")

    def _split_generators(self, dl_manager):
        options = self.options
        if "paths" in options:
            splits = {s: self._label_ids(p, s) for s, p in options["paths"].items()}
        else:
            splits = self._items_by_split(lambda path: self._label_ids(path, "train"))
        return {name: self._generate_examples(rows) for name, rows in splits.items()}

    def _label_ids(self, path: str, split: str) -> list[tuple[str, int]]:
        names = self.options["label_names"]
        ids = {name: i for i, name in enumerate(names)}
        out = []
        for line, text, label in self._read_rows(path, split, self.options):
            if label is not None and label not in ids:
                raise SourceError(f"{path}: line {line} has label {label!r}, which is not one of label_names {names}")
            out.append((text, -1 if label is None else ids[label]))
        return out

    def _generate_examples(self, rows):
        for i, (text, label) in enumerate(rows):
            yield i, {"text": text, "label": label}


# ----------------------------------------------------------------------------
# Folder per class: <root>/<split>/<class>/*.txt (the aclImdb layout).


def _subfolders(path: str) -> list[str]:
    """Sorted names of the folders in `path`, hidden ones ('.ipynb_checkpoints') left out."""
    return sorted(d for d in os.listdir(path) if not d.startswith(".") and os.path.isdir(os.path.join(path, d)))


class SeqjaxFolders(LocalBuilder):
    """One text file per example, one folder per class (aclImdb layout).

    Features: {'text': Text, 'label': ClassLabel, 'filename': Text (the path
    relative to the split folder, e.g. 'pos/0_9.txt')}. Examples come in a
    fixed shuffled order (`SHUFFLE_SEED`'s permutation of the files sorted by
    class, then name), not class by class: a percentage slice such as
    'train[90%:]' then holds every class in about its share, where a slice
    of the sorted files would hold one class only.
    """

    SHUFFLE_SEED = 0

    @classmethod
    def make_config(cls, paths: Any, classes: Sequence[str] | None = None, pattern: str = "*.txt"):
        """Args:
        paths: the root folder (each subfolder is a split: aclImdb's train/
          and test/), or {split: folder}.
        classes: class folder names in id order; None takes the folders
          present in every split, sorted (so aclImdb's train/unsup is left out).
        pattern: the glob that picks the files inside a class folder.
        """
        split_dirs = cls._split_dirs(paths)
        if classes is None:
            present = [set(_subfolders(p)) for p in split_dirs.values()]
            classes = sorted(set.intersection(*present))
            if not classes:
                raise SourceError(
                    f"folders: no class folder is present in every split folder "
                    f"{sorted(split_dirs.values())}; expected <split>/<class>/{pattern}"
                )
        files = []
        for split_dir in split_dirs.values():
            for name in classes:
                files += cls._class_files(split_dir, name, pattern)
        # The order is part of the dataset: a prepared copy in the old order is not reused.
        options = {"paths": split_dirs, "classes": list(classes), "pattern": pattern, "order": cls.SHUFFLE_SEED}
        return cls.config_from_options("folders", options, files)

    @staticmethod
    def _split_dirs(paths: Any) -> dict[str, str]:
        if isinstance(paths, (str, os.PathLike)):
            root = check_dir(paths, "folders (root)")
            names = _subfolders(root)
            if not names:
                raise SourceError(f"folders: {root} has no split folders; expected {root}/<split>/<class>/*.txt")
            paths = {name: os.path.join(root, name) for name in names}
        if not isinstance(paths, Mapping) or not paths:
            raise SourceError(f"folders: paths must be a root folder or a mapping split -> folder, got {paths!r}")
        return {check_split_name(s): check_dir(p, f"folders, split {s!r}") for s, p in paths.items()}

    @staticmethod
    def _class_files(split_dir: str, name: str, pattern: str) -> list[str]:
        class_dir = os.path.join(split_dir, name)
        if not os.path.isdir(class_dir):
            raise MissingFileError(f"folders: expected the class folder {class_dir}/ holding {pattern} files")
        files = sorted(glob.glob(os.path.join(glob.escape(class_dir), pattern)))
        if not files:
            raise SourceError(f"folders: the class folder {class_dir} has no files matching {pattern!r}")
        return files

    def _features(self, options):
        return tfds.features.FeaturesDict(
            {
                "text": tfds.features.Text(),
                "label": tfds.features.ClassLabel(names=options["classes"]),
                "filename": tfds.features.Text(),
            }
        )

    def _supervised_keys(self, options):
        return ("text", "label")

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split_dir) for split, split_dir in self.options["paths"].items()}

    def _generate_examples(self, split_dir: str):
        files = [
            (label, path)
            for label, name in enumerate(self.options["classes"])
            for path in self._class_files(split_dir, name, self.options["pattern"])
        ]
        order = np.random.default_rng(self.SHUFFLE_SEED).permutation(len(files))
        for i, index in enumerate(order):
            label, path = files[index]
            example = {"text": read_text(check_file(path, "folders")), "label": label}
            yield i, dict(example, filename=os.path.relpath(path, split_dir))
