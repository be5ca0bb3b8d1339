"""Local CoNLL column files for sequence tagging (NER, POS, chunking)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow_datasets as tfds

from seqjax.data.builders.common import LocalBuilder, SourceError, option_files, read_text, split_lines, split_options


def read_conll(
    path: str,
    token_column: int,
    tag_column: int,
    delimiter: str | None,
    input_columns: Sequence[tuple[str, int]] = (),
) -> list[tuple[list[str], list[str], int, dict[str, list[str]]]]:
    """Sentences of a CoNLL file.

    One token per line ('token ... tag'), a blank line between sentences;
    '-DOCSTART-' lines (document boundaries in CoNLL-2003) are skipped and
    end the sentence.

    Args:
      input_columns: (name, column) of further per-token columns to read
        (e.g. ('pos', 1) for CoNLL-2003's part-of-speech tags).

    Returns:
      [(tokens, tags, line number of the first token, {name: column values})].
    """
    sentences, tokens, tags, start, columns = [], [], [], 0, None
    extra: dict[str, list[str]] = {name: [] for name, _ in input_columns}
    wanted = [token_column, tag_column] + [column for _, column in input_columns]

    def close():
        nonlocal tokens, tags, extra
        if tokens:
            sentences.append((tokens, tags, start, extra))
        tokens, tags, extra = [], [], {name: [] for name, _ in input_columns}

    for line_number, line in enumerate(split_lines(read_text(path)), start=1):
        fields = line.split(delimiter) if delimiter else line.split()
        if not fields or not line.strip():
            close()
            continue
        if fields[0] == "-DOCSTART-":
            close()
            continue
        if not all(-len(fields) <= column < len(fields) for column in wanted):
            inputs = "".join(f", input column {name!r} {column}" for name, column in input_columns)
            raise SourceError(
                f"{path}: line {line_number} has {len(fields)} columns; token column "
                f"{token_column}, tag column {tag_column}{inputs} do not all exist"
            )
        if columns is None:
            columns = (len(fields), line_number)
        elif len(fields) != columns[0]:  # e.g. a line that lost its tag: its token would become the tag
            raise SourceError(
                f"{path}: line {line_number} has {len(fields)} columns, but line {columns[1]} has {columns[0]}: "
                "every token line needs the same columns (token ... tag); fix the line"
            )
        if not tokens:
            start = line_number
        tokens.append(fields[token_column])
        tags.append(fields[tag_column])
        for name, column in input_columns:
            extra[name].append(fields[column])
    close()
    if not sentences:
        raise SourceError(f"{path}: no sentences (expected 'token ... tag' lines with blank lines between sentences)")
    return sentences


def _training_files(options: dict) -> list[str]:
    """The files whose tags define the classes: the 'train' split's, or the
    one file that fractions cut into splits."""
    if "path" in options or "train" not in options["paths"]:
        return option_files(options)
    train = options["paths"]["train"]
    return list(train) if isinstance(train, (list, tuple)) else [train]


def sort_tags(tags) -> list[str]:
    """Tag names in a fixed order: 'O' first (id 0) if present, then sorted."""
    tags = set(tags)
    return (["O"] if "O" in tags else []) + sorted(tags - {"O"})


class SeqjaxConll(LocalBuilder):
    """CoNLL column files. Features: {'tokens': Sequence(Text), 'tags': Sequence(ClassLabel)}."""

    @classmethod
    def make_config(
        cls,
        paths: Any,
        fractions: Mapping[str, float] | None = None,
        split_seed: int | None = None,
        token_column: int = 0,
        tag_column: int = -1,
        tag_names: Sequence[str] | None = None,
        delimiter: str | None = None,
        input_columns: Mapping[str, int] | None = None,
    ):
        """Args:
        paths: {split: file} or one file (cut by `fractions`, by sentence).
        fractions, split_seed: see `split_options` (None: contiguous).
        token_column, tag_column: 0-based (negative counts from the end;
          CoNLL-2003 is 'token POS chunk NER', so -1 is the NER tag).
        tag_names: tags in id order; None reads them from the training
          file ('O' first, then sorted), so a tag that appears only in an
          evaluation file is an error rather than a class no model can learn.
        delimiter: None splits on any whitespace.
        input_columns: {feature name: column} of per-token columns to keep
          as text features beside 'tokens' and 'tags' (CoNLL-2003:
          {'pos': 1, 'chunks': 2}), e.g. for a tagger that reads them.
        """
        options = split_options(paths, fractions, split_seed, "conll")
        options.update(token_column=int(token_column), tag_column=int(tag_column), delimiter=delimiter)
        if input_columns:  # absent otherwise, so datasets prepared before the option keep their name
            options["input_columns"] = _input_columns(input_columns)
        if tag_names is None:
            tags = set()
            for path in _training_files(options):
                for _, sentence_tags, _, _ in cls._read(path, options):
                    tags.update(sentence_tags)
            tag_names = sort_tags(tags)
        options["tag_names"] = list(tag_names)
        return cls.config_from_options("conll", options, option_files(options))

    @staticmethod
    def _read(path: str, options: dict):
        columns = [tuple(pair) for pair in options.get("input_columns", [])]
        return read_conll(path, options["token_column"], options["tag_column"], options["delimiter"], columns)

    def _features(self, options):
        features = {name: tfds.features.Sequence(tfds.features.Text()) for name, _ in options.get("input_columns", [])}
        features["tokens"] = tfds.features.Sequence(tfds.features.Text())
        features["tags"] = tfds.features.Sequence(tfds.features.ClassLabel(names=options["tag_names"]))
        return tfds.features.FeaturesDict(features)

    def _supervised_keys(self, options):
        return ("tokens", "tags")

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(s) for split, s in self._items_by_split(self._load).items()}

    def _load(self, path: str) -> list[dict[str, list]]:
        names = self.options["tag_names"]
        ids = {name: i for i, name in enumerate(names)}
        out = []
        for tokens, tags, line, columns in self._read(path, self.options):
            unknown = [t for t in tags if t not in ids]
            if unknown:
                raise SourceError(
                    f"{path}: the sentence starting at line {line} has tag {unknown[0]!r}, "
                    f"which is not one of tag_names {names} (the training file's tags unless tag_names is "
                    "given): fix the tag, or list every tag in tag_names"
                )
            out.append({**columns, "tokens": tokens, "tags": [ids[t] for t in tags]})
        return out

    def _generate_examples(self, sentences):
        yield from enumerate(sentences)


def _input_columns(input_columns: Mapping[str, int] | None) -> list[list]:
    """[[name, column], ...] sorted by name, checked: names are new feature names."""
    pairs = sorted(dict(input_columns or {}).items())
    for name, column in pairs:
        if not isinstance(name, str) or not name.isidentifier() or name in ("tokens", "tags"):
            raise SourceError(
                f"input_columns: {name!r} is not a usable feature name (an identifier other than 'tokens' and 'tags')"
            )
        if isinstance(column, bool) or not isinstance(column, int):
            raise SourceError(f"input_columns: column of {name!r} must be an integer index, got {column!r}")
    return [[name, int(column)] for name, column in pairs]
