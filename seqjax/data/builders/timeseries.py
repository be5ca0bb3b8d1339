"""Local CSV time series for forecasting."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from seqjax.data.builders.common import LocalBuilder, SourceError, fraction_bounds, option_files, split_options
from seqjax.data.builders.text import column_index, delimiter_for, field, read_table


class SeqjaxTimeseries(LocalBuilder):
    """A series from a CSV file; each split is one example: a contiguous segment.

    Features: {'values': float32 [T] (or [T, F] for several value columns)}
    plus {'time': Sequence(Text) [T]} when `time_column` is set. With
    `fractions` the rows are cut in time order (never permuted), so the
    validation segment follows the training one.
    """

    @classmethod
    def make_config(
        cls,
        paths: Any,
        value_column: str | Sequence[str],
        time_column: str | None = None,
        fractions: Mapping[str, float] | None = None,
        delimiter: str | None = None,
    ):
        """Args:
        paths: {split: csv file} or one file (cut by `fractions`).
        value_column: the header name of the values (a list for several).
        time_column: the header name of the time stamps, kept as text.
        delimiter: None picks from the extension.
        """
        options = split_options(paths, fractions, None, "timeseries")
        files = option_files(options)
        many = not isinstance(value_column, str)
        options.update(
            value_columns=list(value_column) if many else [value_column],
            many_values=many,
            time_column=time_column,
            delimiter=delimiter_for(files[0], delimiter),
        )
        if not options["value_columns"]:
            raise SourceError("timeseries: value_column is empty")
        return cls.config_from_options("timeseries", options, files)

    def _features(self, options):
        shape = (None, len(options["value_columns"])) if options["many_values"] else (None,)
        features = {"values": tfds.features.Tensor(shape=shape, dtype=np.float32)}
        if options["time_column"] is not None:
            features["time"] = tfds.features.Sequence(tfds.features.Text())
        return tfds.features.FeaturesDict(features)

    def _split_generators(self, dl_manager):
        options = self.options
        if "paths" in options:
            splits = {split: self._read(path) for split, path in options["paths"].items()}
        else:
            series = self._read(options["path"])
            bounds = fraction_bounds(len(series[0]), options["fractions"], options["path"])
            splits = {name: (series[0][a:b], series[1][a:b]) for name, a, b in bounds}
        return {split: self._generate_examples(split, segment) for split, segment in splits.items()}

    def _read(self, path: str) -> tuple[np.ndarray, list[str]]:
        """(values [T, F] float32, time stamps [T] or [])."""
        options = self.options
        header, rows = read_table(path, options["delimiter"], "minimal", True)
        columns = options["value_columns"] + ([options["time_column"]] if options["time_column"] else [])
        at = {}
        for name in columns:
            at[name] = column_index(header, name, path, "column")
            if at[name] is None:
                raise SourceError(f"{path}: no column {name!r}; the header has columns {header}")
        values = np.empty((len(rows), len(options["value_columns"])), np.float32)
        times = []
        for r, (line, fields) in enumerate(rows):
            for c, name in enumerate(options["value_columns"]):
                text = field(fields, at[name], path, line, f"value column {name!r}").strip()
                try:
                    values[r, c] = value = float(text)
                except ValueError:
                    value = None
                if value is None or not math.isfinite(value):  # float() reads 'nan' and 'inf' as numbers
                    raise SourceError(
                        f"{path}: line {line}: {name} = {text!r} is not a finite number "
                        f"(fill or drop missing values before loading)"
                    )
            if options["time_column"]:
                times.append(field(fields, at[options["time_column"]], path, line, "time column"))
        return values, times

    def _generate_examples(self, split: str, segment):
        values, times = segment
        example = {"values": values if self.options["many_values"] else values[:, 0]}
        if self.options["time_column"] is not None:
            example["time"] = times
        yield split, example
