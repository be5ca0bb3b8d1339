"""Task registry: `get(config.task)` builds the task named `config.task.name`.

A task is a subclass of `GeneratedTask` (batches generated from a seed) or
`DatasetTask` (batches read from `config.data`); `Task` declares every hook
the trainer and the decoders call (seqjax/tasks/base.py).
"""

from __future__ import annotations

import ml_collections

from seqjax.tasks.base import SPLITS, GeneratedTask, Task
from seqjax.tasks.dataset import DatasetTask
from seqjax.tasks.forecasting import ForecastTask
from seqjax.tasks.parallel import ParallelTranslationTask
from seqjax.tasks.synthetic import AddingTask, CopyTask
from seqjax.tasks.tagging import TaggingTask
from seqjax.tasks.text import ClassificationTask, LanguageModelTask
from seqjax.tasks.translation import CaptioningTask, TranslationTask

_REGISTRY: dict[str, type[Task]] = {}

# Tasks whose sources are text in a vocabulary: they encode raw source texts
# (`encode_texts(texts) -> (ids, lengths, unknown count)`) and name token ids
# (`token_strings(ids, side)`), as experiments/translate.py and
# experiments/attention_maps.py need.
TEXT_SOURCE_TASKS = (TranslationTask, ParallelTranslationTask)


def register(name: str, task_class: type[Task]) -> None:
    """Makes `task_class` available as `config.task.name = name`. It is
    built as `task_class(config.task)`, or `task_class(config.task,
    config.data)` for a DatasetTask."""
    if name in _REGISTRY:
        raise ValueError(f"task {name!r} is already registered")
    if not (isinstance(task_class, type) and issubclass(task_class, (GeneratedTask, DatasetTask))):
        raise TypeError(f"task {name!r}: {task_class!r} is not a subclass of GeneratedTask or DatasetTask")
    _REGISTRY[name] = task_class


def names() -> list[str]:
    return sorted(_REGISTRY)


def task_class(name: str) -> type[Task]:
    """The class registered as `name`."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown task config.task.name={name!r}; registered: {', '.join(names())}")
    return _REGISTRY[name]


def config_keys(name: str) -> tuple[str, ...]:
    """The `config.task` keys the task `name` reads."""
    return ("name",) + tuple(task_class(name).config_keys)


def get(task_config: ml_collections.ConfigDict, data_config: ml_collections.ConfigDict | None = None) -> Task:
    """The task named `task_config.name`, configured by `task_config` (and
    `data_config`, the `config.data` section, for dataset tasks)."""
    cls = task_class(task_config.name)
    if issubclass(cls, DatasetTask):
        return cls(task_config, data_config)
    return cls(task_config)


register("adding", AddingTask)
register("copy", CopyTask)
register("forecast", ForecastTask)
register("translation", TranslationTask)
register("captioning", CaptioningTask)
register("classification", ClassificationTask)
register("language_model", LanguageModelTask)
register("tagging", TaggingTask)
register("parallel_translation", ParallelTranslationTask)

__all__ = [
    "SPLITS",
    "TEXT_SOURCE_TASKS",
    "DatasetTask",
    "GeneratedTask",
    "Task",
    "config_keys",
    "get",
    "names",
    "register",
    "task_class",
]
