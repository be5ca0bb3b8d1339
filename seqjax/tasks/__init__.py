"""Task registry: `get(config.task)` builds the task named `config.task.name`."""

from __future__ import annotations

from collections.abc import Callable

import ml_collections

from seqjax.tasks.base import SPLITS, Task
from seqjax.tasks.forecasting import ForecastTask
from seqjax.tasks.parallel import ParallelTranslationTask
from seqjax.tasks.synthetic import AddingTask, CopyTask
from seqjax.tasks.text import ClassificationTask, LanguageModelTask, TaggingTask
from seqjax.tasks.translation import CaptioningTask, TranslationTask

_REGISTRY: dict[str, Callable[[ml_collections.ConfigDict], Task]] = {}


def register(name: str, factory: Callable[[ml_collections.ConfigDict], Task]) -> None:
    """Makes `factory(task_config)` available as `config.task.name = name`."""
    if name in _REGISTRY:
        raise ValueError(f"task {name!r} is already registered")
    _REGISTRY[name] = factory


def names() -> list[str]:
    return sorted(_REGISTRY)


def config_keys(name: str) -> tuple[str, ...]:
    """The `config.task` keys the task `name` reads."""
    return ("name",) + tuple(getattr(_REGISTRY[name], "config_keys", ()))


def needs_data(name: str) -> bool:
    """Whether the task `name` reads a dataset named in `config.data`."""
    return getattr(_REGISTRY[name], "needs_data", False)


def get(task_config: ml_collections.ConfigDict, data_config: ml_collections.ConfigDict | None = None) -> Task:
    """The task named `task_config.name`, configured by `task_config` (and
    `data_config`, the `config.data` section, for dataset tasks)."""
    name = task_config.name
    if name not in _REGISTRY:
        raise ValueError(f"unknown task config.task.name={name!r}; registered: {', '.join(names())}")
    if needs_data(name):
        return _REGISTRY[name](task_config, data_config)
    return _REGISTRY[name](task_config)


register("adding", AddingTask)
register("copy", CopyTask)
register("forecast", ForecastTask)
register("translation", TranslationTask)
register("captioning", CaptioningTask)
register("classification", ClassificationTask)
register("language_model", LanguageModelTask)
register("tagging", TaggingTask)
register("parallel_translation", ParallelTranslationTask)

__all__ = ["SPLITS", "Task", "config_keys", "get", "names", "needs_data", "register"]
