"""Config files: loading a config spec, and validating the config it gives.

A config file is a Python file whose `get_config(variant=None)` returns an
`ml_collections.ConfigDict` with sections `task`, `model`, `optimizer`,
`train` and a top-level `seed` (configs/default.py documents every field). A
config spec names one and, optionally, some of its variants:
`path[:variant[,variant...]]`, e.g. `configs/seq2seq_synthetic.py:bahdanau,smoke`;
a file lists the variants it takes in `VARIANTS`. `load_config(spec)` is the
one way seqjax reads a spec (sweeps, experiments, configs that build on other
configs); `experiments/train.py` reads its --config flag through
`ml_collections.config_flags`, which passes the same variant string to
`get_config`.

`validate(config)` fails at start, naming the field, on unknown keys and bad
values. Tasks and models declare the keys they read, so a typo such as
`config.model.hiden_size` is caught even inside a config file. The lists of
valid values belong to the modules that use them (model and task registries,
cells, recurrent layers, optimisers); `validate` asks those modules, importing
them only when it runs: this module stays cheap to import, and so does
everything that only builds or expands configs (seqjax.sweeps).
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import os
import types
from collections.abc import Iterable

import ml_collections

TOP_LEVEL_KEYS = ("seed", "task", "model", "optimizer", "train", "data")
REQUIRED_SECTIONS = ("task", "model", "optimizer", "train")
# The keys of config.train: the loop's (seqjax.training), the step strategies'
# (seqjax.steps.choose) and transfer learning's (init_from, init_modules,
# freeze_steps: seqjax.transfer, seqjax.optim; nonfinite: seqjax.optim).
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
    "nonfinite",
    "best_metric",
    "early_stopping_patience",
    "wandb_project",
)


# What seqjax.optim does when a config.optimizer key is absent (tests pin the
# two together); `optimizer_section` gives a config every key, so each one can
# be set from the command line (--config.optimizer.b2=0.98).
OPTIMIZER_DEFAULTS = {
    "name": "adam",  # adam | adamw | sgd
    "learning_rate": 1e-3,  # peak learning rate
    "schedule": "constant",  # constant | cosine | linear (after warm-up)
    "warmup_steps": 0,  # linear warm-up from 0
    "end_lr_fraction": 0.0,  # final lr = learning_rate * this (cosine, linear)
    "b1": 0.9,  # adam, adamw
    "b2": 0.999,  # adam, adamw
    "momentum": 0.0,  # sgd (0 = plain SGD)
    "nesterov": False,  # sgd with momentum
    "weight_decay": 0.0,  # adamw (decoupled)
    "clip_global_norm": 0.0,  # 0 turns it off
    "clip_value": 0.0,  # clip each gradient entry to [-v, v]; 0 turns it off
    "l1": 0.0,  # L1 penalty on weight matrices
    "l2": 0.0,  # L2 penalty on weight matrices
}


def optimizer_section(**values) -> ml_collections.ConfigDict:
    """A config.optimizer section holding every key: `OPTIMIZER_DEFAULTS`
    updated with `values` (unknown keys are refused by `validate`)."""
    section = ml_collections.ConfigDict(OPTIMIZER_DEFAULTS)
    section.update(values)
    return section


class ConfigError(ValueError):
    """A config file, spec or field is unknown or has a bad value."""


# ----------------------------------------------------------------------------- loading config files


def split_spec(config_spec: str) -> tuple[str, tuple[str, ...]]:
    """'configs/x.py:a,b' -> ('configs/x.py', ('a', 'b')); empty variant names are dropped."""
    path, _, variants = config_spec.partition(":")
    return path, tuple(name for name in variants.split(",") if name)


SHIPPED_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def shipped_config_names() -> list[str]:
    """The configs that come with seqjax ('default', 'sst2', ...)."""
    if not os.path.isdir(SHIPPED_CONFIGS):
        return []
    return sorted(name[:-3] for name in os.listdir(SHIPPED_CONFIGS) if name.endswith(".py") and name != "__init__.py")


def resolve_config_path(path: str) -> str:
    """`path` if it is a file (relative to the working directory); else the
    shipped config it names (`configs/default.py`, `default.py` or `default`),
    so commands run from any directory. FileNotFoundError names both places."""
    if os.path.isfile(path):
        return path
    name = os.path.basename(path)
    shipped = os.path.join(SHIPPED_CONFIGS, name if name.endswith(".py") else name + ".py")
    if os.path.dirname(path) in ("", "configs", "./configs") and os.path.isfile(shipped):
        return shipped
    raise FileNotFoundError(
        f"config file not found: {path} (relative to {os.getcwd()}), nor a shipped config of that name; a config "
        f"spec is path/to/config.py[:variant[,variant...]], or a shipped config: {', '.join(shipped_config_names())}"
    )


def load_config_module(path: str) -> types.ModuleType:
    """The module of the config file at `path` (resolved by
    resolve_config_path), executed afresh (it is not put in sys.modules, so
    two files may share a name)."""
    path = resolve_config_path(path)
    spec = importlib.util.spec_from_file_location(f"seqjax_config_{abs(hash(os.path.abspath(path)))}", path)
    if spec is None:
        raise ConfigError(f"config file {path} is not a Python file: name a .py file that defines get_config")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(vars(module).get("get_config")):
        raise ConfigError(
            f"config file {path} defines no get_config: add `def get_config(variant=None)` returning "
            "an ml_collections.ConfigDict"
        )
    return module


def declared_variants(module: types.ModuleType) -> tuple[str, ...]:
    """The variant names a config module declares in VARIANTS (none if it declares none)."""
    return tuple(vars(module).get("VARIANTS", ()))


def check_variants(path: str, module: types.ModuleType, names: Iterable[str]) -> None:
    """Raises ConfigError naming the first of `names` that the file at `path` does not declare."""
    known = declared_variants(module)
    for name in names:
        if not known:
            raise ConfigError(
                f"config file {path} takes no variants (it declares no VARIANTS), got {name!r}: "
                f"load {path} without ':{name}', or list the variants get_config takes in VARIANTS"
            )
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown variant {name!r} of {path}{hint}; choose from {', '.join(known)}")


def load_config(config_spec: str) -> ml_collections.ConfigDict:
    """The ConfigDict of `path[:variant[,variant...]]`: `get_config` of the
    file, given the variants joined by commas (None without variants), the
    string `ml_collections.config_flags` would pass it. Not validated."""
    path, names = split_spec(config_spec)
    module = load_config_module(path)
    check_variants(path, module, names)
    config = module.get_config(",".join(names) or None)
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(
            f"get_config of {path} returned a {type(config).__name__}; it must return an ml_collections.ConfigDict"
        )
    return config


# ----------------------------------------------------------------------------- validation


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
    _check_finite("config", config)
    if "data" in config:
        _validate_data(config.data)
    _validate_task(config.task)
    _validate_model(config.model)
    _validate_optimizer(config.optimizer)
    _validate_train(config.train)
    warmup = config.optimizer.get("warmup_steps", 0)
    _require(
        warmup < config.train.num_steps,
        "config.optimizer.warmup_steps",
        warmup,
        f"must be < config.train.num_steps={config.train.num_steps} (the learning rate would never reach its peak)",
    )


def _check_finite(where: str, section: ml_collections.ConfigDict) -> None:
    """No NaN or infinity anywhere: every float of a config is a rate, size or weight."""
    for key, value in section.items():
        if isinstance(value, ml_collections.ConfigDict):
            _check_finite(f"{where}.{key}", value)
        elif isinstance(value, float) and not math.isfinite(value):
            _require(False, f"{where}.{key}", value, "must be a finite number")


def _check_probabilities(section, where: str, keys: Iterable[str], upper_open: bool) -> None:
    for key in keys:
        if key in section:
            value = section[key]
            inside = 0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0
            _require(inside, f"{where}.{key}", value, "must be in [0, 1)" if upper_open else "must be in [0, 1]")


def _validate_best_metric(train: ml_collections.ConfigDict) -> None:
    best, patience = train.get("best_metric", ""), train.get("early_stopping_patience", 0)
    _require(
        isinstance(best, str) and (best == "" or best.startswith("eval_")),
        "config.train.best_metric",
        best,
        "must be '' (off) or a metric of the eval split, e.g. 'eval_accuracy' or 'eval_loss'",
    )
    _require(
        isinstance(patience, int) and patience >= 0,
        "config.train.early_stopping_patience",
        patience,
        "must be an integer >= 0 (evaluations without improvement; 0 = no early stopping)",
    )
    if patience:
        _require(
            bool(best),
            "config.train.early_stopping_patience",
            patience,
            "needs config.train.best_metric, the metric whose improvement it waits for",
        )
        # An early stop ends a log window, so the last logged window is whole.
        _require(
            train.eval_every % train.log_every == 0,
            "config.train.eval_every",
            train.eval_every,
            f"must be a multiple of config.train.log_every={train.log_every} with early stopping",
        )


def _validate_task(task: ml_collections.ConfigDict) -> None:
    from seqjax import tasks  # the task registry; imported here because it loads every dataset library

    name = task.get("name")
    _require(name in tasks.names(), "config.task.name", name, f"must be one of {tasks.names()}")
    _check_keys("config.task", task, tasks.config_keys(name))
    _check_positive_ints(task, "config.task", ("seq_len", "num_symbols", "copy_len"))
    _check_probabilities(task, "config.task", ("teacher_forcing_ratio",), upper_open=False)


def _validate_data(data: ml_collections.ConfigDict) -> None:
    from seqjax.tasks import base, dataset  # the dataset tasks declare the keys they read

    _require(isinstance(data, ml_collections.ConfigDict), "config.data", data, "must be a section (ConfigDict)")
    _check_keys("config.data", data, dataset.DATA_KEYS)
    if "splits" in data:
        _check_keys("config.data.splits", data.splits, base.SPLITS)
    if "tokenizer" in data:
        _require(
            data.tokenizer in dataset.TOKENIZERS,
            "config.data.tokenizer",
            data.tokenizer,
            f"must be one of {list(dataset.TOKENIZERS)}",
        )
    _check_positive_ints(data, "config.data", ("seq_len", "pad_to_multiple"))


def _validate_model(model: ml_collections.ConfigDict) -> None:
    from seqjax import models  # the registry and its value lists; imported here because they load JAX
    from seqjax.nn import cells, recurrent

    name = model.get("name")
    _require(name in models.names(), "config.model.name", name, f"must be one of {models.names()}")
    _check_keys("config.model", model, models.config_keys(name))
    _check_positive_ints(
        model,
        "config.model",
        (
            "hidden_size",
            "num_layers",
            "embed_size",
            "unroll",
            "char_embed_size",
            "char_hidden_size",
            "char_kernel_size",
            "input_tag_embed_size",
        ),
    )
    _check_probabilities(
        model, "config.model", ("dropout_rate", "attention_dropout_rate", "word_dropout"), upper_open=True
    )
    choices = {
        "cell": cells.cell_names(),
        "char_encoder": models.CHAR_ENCODERS,
        "head": models.HEADS,
        "merge": recurrent.MERGES,
        "implementation": recurrent.IMPLEMENTATIONS,
    }
    if not model.get("head"):  # no head, or an empty one: the task's own
        del choices["head"]
    for key, allowed in choices.items():
        if key in model:
            _require(model[key] in allowed, f"config.model.{key}", model[key], f"must be one of {list(allowed)}")


def _validate_optimizer(opt: ml_collections.ConfigDict) -> None:
    from seqjax import optim  # the optimiser's keys and names; imported here because it loads optax

    _check_keys("config.optimizer", opt, optim.OPTIMIZER_KEYS)
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
    for key in ("clip_global_norm", "clip_value", "l1", "l2", "weight_decay", "warmup_steps"):
        if key in opt:
            _require(opt[key] >= 0, f"config.optimizer.{key}", opt[key], "must be >= 0 (0 turns it off)")
    _check_probabilities(opt, "config.optimizer", ("b1", "b2", "momentum"), upper_open=True)
    _check_probabilities(opt, "config.optimizer", ("end_lr_fraction",), upper_open=False)


def _validate_train(train: ml_collections.ConfigDict) -> None:
    from seqjax import optim, tbptt  # their value lists; imported here because they load jax

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
    if "nonfinite" in train:
        _require(
            train.nonfinite in optim.NONFINITE_POLICIES,
            "config.train.nonfinite",
            train.nonfinite,
            f"must be one of {list(optim.NONFINITE_POLICIES)}",
        )
    if "tbptt_update" in train:
        _require(
            train.tbptt_update in tbptt.UPDATES,
            "config.train.tbptt_update",
            train.tbptt_update,
            f"must be one of {list(tbptt.UPDATES)}",
        )
    _validate_best_metric(train)
    _require(
        isinstance(train.get("wandb_project", ""), str),
        "config.train.wandb_project",
        train.get("wandb_project"),
        "must be a W&B project name, or '' (no W&B logging)",
    )
    # A resumed run starts logging at a checkpoint; on a log boundary its
    # averaged metrics match those of an uninterrupted run.
    _require(
        train.checkpoint_every % train.log_every == 0,
        "config.train.checkpoint_every",
        train.checkpoint_every,
        f"must be a multiple of config.train.log_every={train.log_every}",
    )
