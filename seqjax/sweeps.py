"""Sweeps: products and zips of config overrides, expanded into named runs.

A config file declares its sweeps beside `get_config` in `get_sweep(name)`:

    from seqjax import sweeps

    def get_sweep(name=None):
        return sweeps.product(
            sweeps.values("model.cell", ["rnn", "irnn", "gru", "lstm"]),
            sweeps.values("task.seq_len", [50, 100, 200, 400]),
            sweeps.seeds(3))                               # 4 x 4 x 3 = 48 runs

A sweep is a list of override dicts ({dotted key: value}); `expand` turns it
into `Run`s with stable, readable names such as `cell=lstm,seq_len=200,seed=1`.
`validate_runs` applies every run's overrides to the base config and
validates the result, so a bad key or value fails before any run starts.

Every config file's `get_sweep` imports this module, so it imports nothing
heavy (no JAX, no dataset library): only seqjax.config, which loads the
registries when a config is validated (tests/test_imports.py checks it).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import ml_collections

from seqjax import config as config_lib

Overrides = dict[str, Any]
VARIANT = "variant"  # not a config key: the config variant a run adds to the sweep's config spec


def values(key: str, choices: Iterable[Any]) -> list[Overrides]:
    """One axis: `key` takes each of `choices`."""
    return [{key: value} for value in choices]


def seeds(count_or_list: int | Sequence[int]) -> list[Overrides]:
    """The seed axis: `seeds(3)` is seeds 0, 1, 2; or an explicit list."""
    chosen = range(count_or_list) if isinstance(count_or_list, int) else count_or_list
    return values("seed", chosen)


def variants(names: Iterable[str]) -> list[Overrides]:
    """An axis over the config file's own variants (`get_config(variant)`),
    for ablations whose arms differ in more than a few keys, e.g. an RNN
    encoder-decoder against a Transformer. Run `variant=transformer` of
    `configs/x.py:base` trains `configs/x.py:base,transformer`."""
    return values(VARIANT, names)


def fixed(overrides: Overrides) -> list[Overrides]:
    """A single point: these overrides for every run it is combined with."""
    return [dict(overrides)]


def product(*axes: list[Overrides]) -> list[Overrides]:
    """Every combination of the axes (the first axis varies slowest)."""
    combos = []
    for parts in itertools.product(*axes):
        combos.append(_merge(parts))
    return combos


def zip_(*axes: list[Overrides]) -> list[Overrides]:
    """The i-th entries of the axes together; axes must have equal length."""
    lengths = {len(axis) for axis in axes}
    if len(lengths) > 1:
        raise ValueError(f"zip_ needs axes of equal length, got lengths {[len(a) for a in axes]}")
    return [_merge(parts) for parts in zip(*axes)]


def override(sweep: list[Overrides], overrides: Overrides) -> list[Overrides]:
    """`sweep` with `overrides` (the command line's) set in every run. A key
    the sweep sets to one value for every run takes the new value; a key
    the sweep varies is refused (ValueError): one value would make the runs
    that differ only in it the same run."""
    for key, value in overrides.items():
        taken = list(dict.fromkeys(repr(point.get(key, _UNSET)) for point in sweep))
        if len(taken) > 1:
            shown = ", ".join("(the config's own)" if text == repr(_UNSET) else text for text in taken)
            raise ValueError(
                f"--config.{key}={value!r} sets a key the sweep varies (over {shown}); one value for every run "
                f"would make the runs that differ in {key} the same run: drop --config.{key}, or declare the "
                "values you want in the config's get_sweep"
            )
    return [{**point, **overrides} for point in sweep]


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET = _Unset()


def _merge(parts: Iterable[Overrides]) -> Overrides:
    merged: Overrides = {}
    for part in parts:
        clash = set(merged) & set(part)
        if clash:
            raise ValueError(f"sweep axes set the same key twice: {sorted(clash)}")
        merged.update(part)
    return merged


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of a sweep: its name (also its directory) and its overrides."""

    name: str
    overrides: Overrides

    @property
    def seed(self) -> int | None:
        return self.overrides.get("seed")


def format_value(value: Any) -> str:
    """A short, filesystem-safe rendering of an override value."""
    if isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, bool):
        text = str(value).lower()
    else:
        text = str(value)
    return text.replace("/", "_").replace(" ", "").replace(",", "_")


def short_keys(keys: Iterable[str]) -> dict[str, str]:
    """Dotted key -> its last component, or the full key where that is ambiguous."""
    keys = list(dict.fromkeys(keys))
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: short if last.count(short) == 1 else key for key, short in zip(keys, last)}


def swept_keys(sweep: list[Overrides]) -> list[str]:
    """Keys that take more than one value across the sweep, in first-seen order."""
    keys = list(dict.fromkeys(key for overrides in sweep for key in overrides))
    return [k for k in keys if len({repr(o.get(k)) for o in sweep}) > 1]


def expand(sweep: list[Overrides]) -> list[Run]:
    """Named runs, in sweep order. A name lists the swept keys (those whose
    value varies) in a fixed order; keys fixed for the whole sweep are left out."""
    ordered = swept_keys(sweep) or list(dict.fromkeys(k for o in sweep for k in o))
    names = short_keys(ordered)
    runs = []
    for overrides in sweep:
        name = ",".join(f"{names[k]}={format_value(overrides[k])}" for k in ordered if k in overrides)
        runs.append(Run(name or "base", dict(overrides)))
    duplicates = {r.name for r in runs if sum(o.name == r.name for o in runs) > 1}
    if duplicates:
        raise ValueError(f"the sweep repeats runs: {sorted(duplicates)}")
    return runs


def apply_overrides(config: ml_collections.ConfigDict, overrides: Overrides) -> ml_collections.ConfigDict:
    """A copy of `config` with `overrides` applied; unknown keys and values
    of the wrong type raise ConfigError naming the key."""
    config = ml_collections.ConfigDict(config.to_dict())  # deep copy, type-safe
    for key, value in overrides.items():
        if key == VARIANT:  # chosen through the config spec (config_spec_of), not a key of the config
            continue
        *path, leaf = key.split(".")
        section = config
        for part in path:
            if part not in section or not isinstance(section[part], ml_collections.ConfigDict):
                raise config_lib.ConfigError(f"sweep overrides unknown config key {key!r} ({part!r} is not a section)")
            section = section[part]
        if leaf not in section:
            raise config_lib.ConfigError(f"sweep overrides unknown config key {key!r}")
        try:
            section[leaf] = value
        except TypeError as error:
            raise config_lib.ConfigError(
                f"sweep gives {key!r} the value {value!r} of type {type(value).__name__}, "
                f"but the config holds a {type(section[leaf]).__name__}"
            ) from error
    return config


def validate_runs(config: ml_collections.ConfigDict, runs: Iterable[Run]) -> None:
    """Applies and validates every run's overrides; raises on the first bad one."""
    for run in runs:
        try:
            config_lib.validate(apply_overrides(config, run.overrides))
        except config_lib.ConfigError as error:
            raise config_lib.ConfigError(f"run {run.name}: {error}") from error


def config_spec_of(config_spec: str, overrides: Overrides) -> str:
    """The `path[:variants]` a run trains: the sweep's spec plus the run's
    variant, if it has one ('configs/x.py:smoke' + bahdanau ->
    'configs/x.py:smoke,bahdanau')."""
    variant = overrides.get(VARIANT)
    if not variant:
        return config_spec
    path, names = config_lib.split_spec(config_spec)
    return f"{path}:{','.join((*names, str(variant)))}"


def override_flags(overrides: Overrides) -> list[str]:
    """`--config.key=value` flags for `experiments.train` (seed is
    `--config.seed`); the variant goes into the config spec instead."""
    return [f"--config.{key}={value}" for key, value in overrides.items() if key != VARIANT]
