"""Config validation: unknown keys and bad values fail at start, naming the field.

A config is an `ml_collections.ConfigDict` with sections `task`, `model`,
`optimizer`, `train` and a top-level `seed` (configs/default.py documents
every field). Tasks and models declare the keys they read, so a typo such as
`config.model.hiden_size` is caught even inside a config file.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import ml_collections

from seqjax import models, optim, tasks
from seqjax.nn import cells

TOP_LEVEL_KEYS = ("seed", "task", "model", "optimizer", "train", "data")
REQUIRED_SECTIONS = ("task", "model", "optimizer", "train")
TRAIN_KEYS = (
    "batch_size",
    "num_steps",
    "log_every",
    "eval_every",
    "eval_batches",
    "checkpoint_every",
    "keep_checkpoints",
    "progress",
    "tbptt_len",
    "tbptt_backprop_len",
    "tbptt_update",
    "stateful",
    "init_from",
    "init_modules",
    "freeze_steps",
)
OPTIMIZER_KEYS = (
    "name",
    "learning_rate",
    "schedule",
    "warmup_steps",
    "end_lr_fraction",
    "b1",
    "b2",
    "momentum",
    "nesterov",
    "weight_decay",
    "clip_global_norm",
    "clip_value",
    "l1",
    "l2",
)


class ConfigError(ValueError):
    """A config field is unknown or has a bad value."""


def _check_keys(where: str, section: ml_collections.ConfigDict, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    for key in section.keys():
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {where}.{close[0]}?)" if close else ""
            raise ConfigError(f"unknown config key {where}.{key}{hint}; known keys: {', '.join(sorted(allowed))}")


def _require(condition: bool, field: str, value, expectation: str) -> None:
    if not condition:
        raise ConfigError(f"bad value {field}={value!r}: {expectation}")


def _check_positive_ints(section, where: str, keys: Iterable[str]) -> None:
    for key in keys:
        value = section.get(key)
        if value is not None:
            _require(isinstance(value, int) and value > 0, f"{where}.{key}", value, "must be a positive integer")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first unknown key or bad value."""
    _check_keys("config", config, TOP_LEVEL_KEYS)
    for section in REQUIRED_SECTIONS:
        _require(
            isinstance(config.get(section), ml_collections.ConfigDict),
            f"config.{section}",
            config.get(section),
            "must be a section (ConfigDict)",
        )
    if "data" in config:
        _validate_data(config.data)
    _validate_task(config.task)
    _validate_model(config.model)
    _validate_optimizer(config.optimizer)
    _validate_train(config.train)


def _validate_task(task: ml_collections.ConfigDict) -> None:
    name = task.get("name")
    _require(name in tasks.names(), "config.task.name", name, f"must be one of {tasks.names()}")
    _check_keys("config.task", task, tasks.config_keys(name))
    _check_positive_ints(task, "config.task", ("seq_len", "num_symbols", "copy_len"))


def _validate_data(data: ml_collections.ConfigDict) -> None:
    from seqjax.tasks import dataset as text  # the dataset tasks declare the keys they read

    _require(isinstance(data, ml_collections.ConfigDict), "config.data", data, "must be a section (ConfigDict)")
    _check_keys("config.data", data, text.DATA_KEYS)
    if "splits" in data:
        _check_keys("config.data.splits", data.splits, ("train", "eval", "test"))
    if "tokenizer" in data:
        _require(
            data.tokenizer in text.TOKENIZERS,
            "config.data.tokenizer",
            data.tokenizer,
            f"must be one of {text.TOKENIZERS}",
        )
    _check_positive_ints(data, "config.data", ("seq_len", "pad_to_multiple"))


def _validate_model(model: ml_collections.ConfigDict) -> None:
    name = model.get("name")
    _require(name in models.names(), "config.model.name", name, f"must be one of {models.names()}")
    _check_keys("config.model", model, models.config_keys(name))
    if "cell" in model:
        _require(
            model.cell in cells.CELL_NAMES, "config.model.cell", model.cell, f"must be one of {list(cells.CELL_NAMES)}"
        )
    _check_positive_ints(model, "config.model", ("hidden_size", "num_layers", "embed_size", "unroll"))
    if "dropout_rate" in model:
        _require(0.0 <= model.dropout_rate < 1.0, "config.model.dropout_rate", model.dropout_rate, "must be in [0, 1)")
    if model.get("head"):
        _require(model.head in models.HEADS, "config.model.head", model.head, f"must be one of {list(models.HEADS)}")
    if "merge" in model:
        _require(model.merge in ("concat", "sum"), "config.model.merge", model.merge, "must be 'concat' or 'sum'")
    if "implementation" in model:
        _require(
            model.implementation in ("auto", "scan", "fused", "parallel"),
            "config.model.implementation",
            model.implementation,
            "must be 'auto', 'scan', 'fused' or 'parallel'",
        )


def _validate_optimizer(opt: ml_collections.ConfigDict) -> None:
    _check_keys("config.optimizer", opt, OPTIMIZER_KEYS)
    _require(
        opt.get("name") in optim.OPTIMIZERS,
        "config.optimizer.name",
        opt.get("name"),
        f"must be one of {list(optim.OPTIMIZERS)}",
    )
    _require(
        opt.get("schedule", "constant") in optim.SCHEDULES,
        "config.optimizer.schedule",
        opt.get("schedule"),
        f"must be one of {list(optim.SCHEDULES)}",
    )
    _require(
        opt.get("learning_rate", -1) > 0, "config.optimizer.learning_rate", opt.get("learning_rate"), "must be > 0"
    )
    for key in ("clip_global_norm", "clip_value", "l1", "l2", "weight_decay", "momentum", "warmup_steps"):
        if key in opt:
            _require(opt[key] >= 0, f"config.optimizer.{key}", opt[key], "must be >= 0 (0 turns it off)")


def _validate_train(train: ml_collections.ConfigDict) -> None:
    _check_keys("config.train", train, TRAIN_KEYS)
    _check_positive_ints(
        train,
        "config.train",
        ("batch_size", "num_steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints"),
    )
    if "eval_batches" in train:
        _require(
            isinstance(train.eval_batches, int) and train.eval_batches >= 0,
            "config.train.eval_batches",
            train.eval_batches,
            "must be an integer >= 0 (0 = a task's whole evaluation split)",
        )
    if "tbptt_len" in train:
        _require(
            isinstance(train.tbptt_len, int) and train.tbptt_len >= 0,
            "config.train.tbptt_len",
            train.tbptt_len,
            "must be an integer >= 0 (0 = full backpropagation through time)",
        )
    if train.get("tbptt_backprop_len"):
        _require(
            isinstance(train.tbptt_backprop_len, int) and train.tbptt_backprop_len > 0,
            "config.train.tbptt_backprop_len",
            train.tbptt_backprop_len,
            "must be an integer >= 0 (0 = backpropagate through the tbptt_len steps of each update)",
        )
        chunk = train.get("tbptt_len", 0)
        _require(
            chunk > 0,
            "config.train.tbptt_backprop_len",
            train.tbptt_backprop_len,
            "is the k2 of TBPTT(k1, k2) and needs truncation: set config.train.tbptt_len (k1) > 0",
        )
        _require(
            train.tbptt_backprop_len >= chunk,
            "config.train.tbptt_backprop_len",
            train.tbptt_backprop_len,
            f"must be >= config.train.tbptt_len={chunk}: each update backpropagates through at least "
            "the steps it advances (0 = exactly those)",
        )
    elif "tbptt_backprop_len" in train:
        _require(
            isinstance(train.tbptt_backprop_len, int),
            "config.train.tbptt_backprop_len",
            train.tbptt_backprop_len,
            "must be an integer >= 0",
        )
    if "tbptt_update" in train:
        _require(
            train.tbptt_update in ("accumulate", "per_chunk"),
            "config.train.tbptt_update",
            train.tbptt_update,
            "must be 'accumulate' or 'per_chunk'",
        )
    # A resumed run starts logging at a checkpoint; on a log boundary its
    # averaged metrics match those of an uninterrupted run.
    _require(
        train.checkpoint_every % train.log_every == 0,
        "config.train.checkpoint_every",
        train.checkpoint_every,
        f"must be a multiple of config.train.log_every={train.log_every}",
    )
