"""What every local builder shares: errors, strict file reading, split rules, configs.

A local dataset is a TFDS `GeneratorBasedBuilder` whose `BuilderConfig` holds
the researcher's paths and options. The config's name is a fingerprint of
those options and of each file's size and modification time, so a prepared
copy is reused until a file or an option changes, and two datasets of the
same kind never share a directory under `data_dir`.

Every builder writes ArrayRecord files (random access through
`tfds.data_source` / `builder.as_data_source`) with shuffling disabled, so
example i of a split is the i-th example of its file, in file order. The
loader shuffles with a seed; the stored order stays the file's.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from seqjax import paths

# Split names TFDS accepts (it builds file names from them).
_SPLIT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class SourceError(ValueError):
    """A dataset source cannot be read: the message names the file and the problem."""


class MissingFileError(SourceError, FileNotFoundError):
    """An expected file or directory is not there: the message names it and where it goes."""


class ChecksumMismatchError(SourceError):
    """A file is present but is not the file the dataset registers (size or sha256)."""


# ----------------------------------------------------------------------------
# Reading files strictly.


def check_file(path: str, what: str) -> str:
    """Returns the absolute path of an existing, non-empty regular file.

    Args:
      path: the file.
      what: what the file is for, quoted in the error (e.g. "the train split").
    """
    path = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.exists(path):
        raise MissingFileError(
            f"{what}: expected the file {path}, which does not exist; "
            f"put the file there or fix the path in the data config{_data_root_hint(path)}"
        )
    if not os.path.isfile(path):
        raise SourceError(f"{what}: {path} is not a regular file")
    if os.path.getsize(path) == 0:
        raise SourceError(f"{what}: the file {path} is empty (0 bytes)")
    return path


def check_dir(path: str, what: str) -> str:
    """Returns the absolute path of an existing directory."""
    path = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isdir(path):
        raise MissingFileError(
            f"{what}: expected the directory {path}, which does not exist; create it or fix the path in the "
            f"data config{_data_root_hint(path)}"
        )
    return path


def _data_root_hint(path: str) -> str:
    """For a path under the configs' data folder: how to point it elsewhere."""
    root = paths.data_root()
    if os.path.commonpath([root, path]) != root:
        return ""
    return f" (the configs' data folder is ${paths.DATA_ENV}, now {root}: set {paths.DATA_ENV} to yours)"


def read_bytes(path: str) -> bytes:
    """The file's bytes; a name ending in .gz is gunzipped."""
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:  # BadGzipFile is an OSError
            raise SourceError(f"{path}: not a valid gzip file ({e})") from None
    return data


def decode_utf8(data: bytes, path: str) -> str:
    """Decodes strictly as UTF-8 (a leading BOM is dropped).

    Raises:
      SourceError naming the file, the 1-based line and byte column, and the
      offending byte, so the researcher can find and re-encode it.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise SourceError(
            f"{path}: line {line}, byte {column} is not valid UTF-8 (byte 0x{data[e.start]:02x}); "
            f"re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`"
        ) from None
    return text[1:] if text.startswith("\ufeff") else text


def read_text(path: str) -> str:
    """The whole file as a str (gunzipped if .gz), strictly UTF-8.

    Raises:
      SourceError if the file holds only whitespace.
    """
    text = decode_utf8(read_bytes(path), path)
    if not text.strip():
        raise SourceError(f"{path}: the file is empty (no text after decoding)")
    return text


def split_lines(text: str) -> list[str]:
    """Lines split on '\\n' only, with a trailing '\\r' removed.

    `str.splitlines` would also split on U+2028, form feeds and other
    separators that occur inside sentences, breaking the alignment of
    parallel files, so only newline ends a line here.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


# ----------------------------------------------------------------------------
# Splits.


def check_split_name(name: str) -> str:
    if not isinstance(name, str) or not _SPLIT_NAME.match(name):
        raise SourceError(
            f"split name {name!r} is not valid: use letters, digits and '_', "
            f"starting with a letter (e.g. 'train', 'validation', 'test')"
        )
    return name


def fraction_bounds(n: int, fractions: Sequence[tuple[str, float]], what: str) -> list[tuple[str, int, int]]:
    """Cuts [0, n) into consecutive pieces with the given fractions.

    The rule, fixed so that every run cuts the same way: split j ends at
    floor(n * (f_1 + ... + f_j)) and the last split ends at n. (For
    fractions 0.9/0.05/0.05 this is the cut TFDS's `tiny_shakespeare` makes.)

    Returns:
      [(split, start, stop)] in the given order.
    """
    total = sum(f for _, f in fractions)
    if any(f <= 0 for _, f in fractions) or not math.isclose(total, 1.0, abs_tol=1e-6):
        raise SourceError(f"{what}: split fractions must be positive and sum to 1, got {dict(fractions)}")
    bounds, start, cumulative = [], 0, 0.0
    for j, (name, f) in enumerate(fractions):
        cumulative += f
        stop = n if j == len(fractions) - 1 else min(n, int(math.floor(n * cumulative + 1e-9)))
        if stop <= start:
            raise SourceError(
                f"{what}: split {name!r} ({f:g} of {n} items) would be empty; use a larger fraction or more data"
            )
        bounds.append((name, start, stop))
        start = stop
    return bounds


def fraction_indices(
    n: int, fractions: Sequence[tuple[str, float]], seed: int | None, what: str
) -> dict[str, np.ndarray]:
    """Item indices of each split, cut by `fraction_bounds`.

    With `seed` None the pieces are contiguous; otherwise the items are first
    permuted by `np.random.default_rng(seed)` (a fixed rule for a fixed seed),
    and each split keeps its items in file order.
    """
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    return {name: np.sort(order[start:stop]) for name, start, stop in fraction_bounds(n, fractions, what)}


def normalize_fractions(fractions) -> tuple[tuple[str, float], ...] | None:
    """((split, fraction), ...) in cutting order, from a mapping or from
    (split, fraction) pairs. Use pairs in ml_collections configs: a
    ConfigDict sorts its keys, which would reorder the cut."""
    if fractions is None:
        return None
    if isinstance(fractions, Mapping):
        pairs = list(fractions.items())
    elif isinstance(fractions, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in fractions):
        pairs = [tuple(p) for p in fractions]
    else:
        pairs = []
    if not pairs:
        raise SourceError(
            f"fractions must be a non-empty mapping split -> fraction or (split, fraction) pairs, got {fractions!r}"
        )
    return tuple((check_split_name(k), float(v)) for k, v in pairs)


def split_options(paths: Any, fractions: Mapping[str, float] | None, split_seed: int | None, what: str) -> dict:
    """Validates the two ways of naming splits and checks the files exist.

    Either `paths` maps split -> file (one path alone is split 'train'), or
    `paths` is one file cut into splits by `fractions` (see
    `fraction_indices`; `split_seed` None keeps the pieces contiguous).

    Returns:
      {'paths': {split: abs path}} or
      {'path': abs path, 'fractions': [[split, f], ...], 'split_seed': seed}.
    """
    fractions = normalize_fractions(fractions)
    if fractions is not None:
        if not isinstance(paths, (str, os.PathLike)):
            raise SourceError(f"{what}: fractions cut one file into splits; give paths as a single path, not {paths!r}")
        return {"path": check_file(paths, what), "fractions": [list(f) for f in fractions], "split_seed": split_seed}
    if isinstance(paths, (str, os.PathLike)):
        paths = {"train": paths}
    if not isinstance(paths, Mapping) or not paths:
        raise SourceError(f"{what}: paths must be a path or a mapping split -> path, got {paths!r}")
    return {"paths": {check_split_name(k): check_file(v, f"{what}, split {k!r}") for k, v in paths.items()}}


def option_files(options: dict) -> list[str]:
    """Every file named by `split_options` output (a split may name several)."""
    values = [options["path"]] if "path" in options else list(options["paths"].values())
    return [f for v in values for f in (v if isinstance(v, (list, tuple)) else [v])]


# ----------------------------------------------------------------------------
# Configs and the base builder.


def file_stamp(path: str) -> list:
    """What identifies a file's version cheaply: path, size, mtime (ns)."""
    st = os.stat(path)
    return [path, st.st_size, st.st_mtime_ns]


def fingerprint(kind: str, options: dict, files: Sequence[str]) -> str:
    """A config name that changes when an option or a file changes.

    Returns:
      '<kind>_<12 hex digits>': sha256 of the options and each file's stamp.
    """
    blob = json.dumps(
        {"kind": kind, "options": options, "files": [file_stamp(f) for f in sorted(set(files))]},
        sort_keys=True,
        default=str,
    )
    return f"{kind}_{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


# (builder name, config name) -> config, filled by `LocalBuilder.config_from_options`.
_MADE_CONFIGS: dict[tuple[str, str], LocalConfig] = {}


@dataclasses.dataclass(eq=False)
class LocalConfig(tfds.core.BuilderConfig):
    """A local dataset's config: `options` holds the validated user options.

    Built by each builder's `make_config`, never by hand: `name` must be the
    fingerprint of `options` and the files.
    """

    options: dict = dataclasses.field(default_factory=dict)


class LocalBuilder(tfds.core.GeneratorBasedBuilder):
    """Base of the local builders: ArrayRecord files, file order kept.

    Subclasses define `make_config(**options)`, `_features(options)`,
    `_split_generators` and `_generate_examples`.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version."}

    def __init__(self, *, config: LocalConfig | str | None = None, data_dir: str | None = None, **kwargs):
        """Args:
        config: from `make_config(...)`, or the name of one made in this process.
        data_dir: where TFDS keeps prepared datasets (its default when None).
        kwargs: other `tfds.core.DatasetBuilder` arguments (e.g. version).
        """
        if config is None:
            raise TypeError(f"{type(self).__name__} needs config={type(self).__name__}.make_config(...)")
        if isinstance(config, LocalConfig):
            # Unpickling (grain workers) rebuilds the builder from a copy of its config; TFDS
            # insists on the very object it finds by name, so equal fingerprints share one.
            config = _MADE_CONFIGS.setdefault((type(self).name, config.name), config)
        kwargs.setdefault("file_format", "array_record")
        super().__init__(config=config, data_dir=data_dir, **kwargs)

    @property
    def options(self) -> dict:
        return self.builder_config.options

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=self._features(self.options),
            supervised_keys=self._supervised_keys(self.options),
            disable_shuffling=True,
        )

    def _supervised_keys(self, options: dict):
        return None

    def _items_by_split(self, load) -> dict[str, list]:
        """{split: items}, where `load(path)` reads one file into a list of items.

        Cuts one file by fractions when the options say so (see `split_options`).
        """
        options = self.options
        if "paths" in options:
            return {split: load(path) for split, path in options["paths"].items()}
        items = load(options["path"])
        indices = fraction_indices(len(items), options["fractions"], options["split_seed"], options["path"])
        return {split: [items[i] for i in idx] for split, idx in indices.items()}

    @classmethod
    def config_from_options(cls, kind: str, options: dict, files: Sequence[str]) -> LocalConfig:
        """The config for these options, the same object for the same fingerprint.

        Configs are remembered so that TFDS finds them by name in this process
        (`tfds.builder('seqjax_text/<config name>')`); other processes read a
        prepared config by name from its files.
        """
        name = fingerprint(kind, options, files)
        key = (cls.name, name)
        if key not in _MADE_CONFIGS:
            _MADE_CONFIGS[key] = LocalConfig(
                name=name,
                version=cls.VERSION,
                options=options,
                description=f"{kind} from {', '.join(sorted(set(files)))}",
            )
        return _MADE_CONFIGS[key]

    @classmethod
    def get_builder_config(cls, name: str, version=None) -> tfds.core.BuilderConfig | None:
        return _MADE_CONFIGS.get((cls.name, name)) or super().get_builder_config(name, version)
