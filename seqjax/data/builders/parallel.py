"""Local parallel text for translation: aligned file pairs (plain or .gz) or TSV pairs."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow_datasets as tfds

from seqjax.data.builders.common import (
    LocalBuilder,
    SourceError,
    check_file,
    check_split_name,
    normalize_fractions,
    option_files,
    read_text,
    split_lines,
)


class SeqjaxParallel(LocalBuilder):
    """Sentence pairs. Features: Translation({source: Text, target: Text}).

    Examples read back as {source_lang: bytes, target_lang: bytes}, the shape
    of TFDS's `wmt14_translate` and `ted_hrlr_translate`. Each split is either

    * two line-aligned files, given as [source file, target file] or as one
      path holding '{lang}' (Multi30k: 'train.{lang}.gz'); every line pair is
      an example, kept exactly (blank lines included, so alignment holds); or
    * one tab-separated file (Anki/Tatoeba spa.txt: 'English<TAB>Spanish'
      [<TAB>attribution]); `columns` picks the source and target columns,
      blank lines are skipped.
    """

    @classmethod
    def make_config(
        cls,
        paths: Any,
        languages: Sequence[str] = ("source", "target"),
        fractions: Mapping[str, float] | None = None,
        split_seed: int | None = 0,
        columns: Sequence[int] = (0, 1),
    ):
        """Args:
        paths: {split: pair or '{lang}' template or TSV file}, or one of those
          (split 'train', or cut by `fractions`).
        languages: (source, target) feature names, e.g. ('de', 'en').
        fractions: {split: fraction} cutting one corpus; the pairs are
          permuted by `split_seed` first (None: contiguous). Anki files are
          sorted by length, so a contiguous cut would put only the longest
          pairs in the last split.
        columns: the (source, target) 0-based columns of a TSV file.
        """
        languages = [str(lang) for lang in languages]
        if len(languages) != 2 or languages[0] == languages[1] or not all(languages):
            raise SourceError(f"parallel: languages must be two different names, got {languages}")
        columns = [int(c) for c in columns]
        if len(columns) != 2:
            raise SourceError(f"parallel: columns must be (source column, target column), got {columns}")
        fractions = normalize_fractions(fractions)
        if fractions is not None:
            options = {
                "path": cls._files(paths, languages, "parallel"),
                "fractions": [list(f) for f in fractions],
                "split_seed": split_seed,
            }
        else:
            if not isinstance(paths, Mapping):
                paths = {"train": paths}
            if not paths:
                raise SourceError("parallel: paths is empty")
            options = {
                "paths": {
                    check_split_name(s): cls._files(p, languages, f"parallel, split {s!r}") for s, p in paths.items()
                }
            }
        options.update(languages=languages, columns=columns)
        return cls.config_from_options("parallel", options, option_files(options))

    @staticmethod
    def _files(value: Any, languages: list[str], what: str) -> list[str]:
        """[source file, target file] for an aligned pair, or [tsv file]."""
        if isinstance(value, (str, os.PathLike)) and "{lang}" in str(value):
            value = [str(value).format(lang=lang) for lang in languages]
        if isinstance(value, (str, os.PathLike)):
            return [check_file(value, f"{what} (TSV pairs)")]
        if isinstance(value, Sequence) and len(value) == 2:
            return [check_file(v, f"{what} ({lang} side)") for v, lang in zip(value, languages)]
        raise SourceError(
            f"{what}: expected a [source, target] pair of files, a path with '{{lang}}', or a TSV file; got {value!r}"
        )

    def _features(self, options):
        return tfds.features.Translation(languages=options["languages"])

    def _supervised_keys(self, options):
        return tuple(options["languages"])

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(pairs) for split, pairs in self._items_by_split(self._load).items()}

    def _load(self, files: list[str]) -> list[tuple[str, str]]:
        if len(files) == 2:
            return self._aligned(*files)
        return self._tsv(files[0])

    @staticmethod
    def _aligned(source: str, target: str) -> list[tuple[str, str]]:
        source_lines, target_lines = split_lines(read_text(source)), split_lines(read_text(target))
        if len(source_lines) != len(target_lines):
            raise SourceError(
                f"parallel files are not line-aligned: {source} has {len(source_lines)} "
                f"lines but {target} has {len(target_lines)}"
            )
        return list(zip(source_lines, target_lines))

    def _tsv(self, path: str) -> list[tuple[str, str]]:
        src, tgt = self.options["columns"]
        pairs = []
        for line_number, line in enumerate(split_lines(read_text(path)), start=1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if max(src, tgt) >= len(fields):
                raise SourceError(
                    f"{path}: line {line_number} has {len(fields)} tab-separated fields; "
                    f"columns {self.options['columns']} need at least {max(src, tgt) + 1}"
                )
            pairs.append((fields[src], fields[tgt]))
        return pairs

    def _generate_examples(self, pairs):
        source, target = self.options["languages"]
        for i, (s, t) in enumerate(pairs):
            yield i, {source: s, target: t}
