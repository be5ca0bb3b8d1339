"""What seqjax offers: the shipped configs with their variants and sweeps, and
the registered tasks and models.

  seqjax-list                  # everything (also: python -m experiments.catalog)
  seqjax-list configs|tasks|models
  seqjax-list default          # one config: its docstring, variants and sweeps

A shipped config is named on any command by its name or its path:
`--config=default:gru` or `--config=configs/default.py:gru`.
"""

import inspect
import os
import re

from absl import app

from experiments import command
from seqjax import config as config_lib
from seqjax import models, tasks

SECTIONS = ("configs", "tasks", "models")


def summary(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, on one line."""
    paragraph = " ".join(inspect.cleandoc(doc or "").split("\n\n")[0].split())
    end = re.search(r"\.\s+(?=[A-Z])", paragraph)
    return paragraph if end is None else paragraph[: end.start() + 1]


def config_lines(name: str, verbose: bool = False) -> list[str]:
    """A shipped config's summary (its docstring's first line, variants and
    sweeps); with `verbose`, its whole docstring instead of the first line."""
    module = config_lib.load_config_module(name)
    doc = inspect.cleandoc(module.__doc__ or "")
    lines = [f"{name}  ({os.path.relpath(config_lib.resolve_config_path(name))})"]
    text = doc if verbose else summary(doc)
    lines += [f"    {line}" if line else "" for line in text.splitlines()]
    lines.append(f"    variants: {', '.join(config_lib.declared_variants(module)) or '(none)'}")
    sweeps = vars(module).get("SWEEPS", ())
    if sweeps:
        lines.append(f"    sweeps: {', '.join(sweeps)} (--sweep=NAME of seqjax-sweep; the first is the default)")
    return lines


def registry_lines(section: str) -> list[str]:
    """One line per registered task or model: its name, the config keys it reads, and its summary."""
    lines = []
    for name in tasks.names() if section == "tasks" else models.names():
        if section == "tasks":
            keys = tasks.config_keys(name)
            text = summary(tasks.task_class(name).__doc__)
        else:
            keys, text = models.config_keys(name), summary(models.docstring(name))
        lines.append(f"{name}: {text}")
        lines.append(f"    config.{'task' if section == 'tasks' else 'model'} keys: {', '.join(keys)}")
    return lines


def catalog(sections=SECTIONS) -> str:
    out = []
    for section in sections:
        if section == "configs":
            out.append(f"configs (--config=NAME[:variant,...] from any directory; {config_lib.SHIPPED_CONFIGS}):")
            for name in config_lib.shipped_config_names():
                out += ["  " + line for line in config_lines(name)]
        else:
            out.append(f"{section} (config.{'task' if section == 'tasks' else 'model'}.name):")
            out += ["  " + line for line in registry_lines(section)]
        out.append("")
    return "\n".join(out)


def main(argv):
    if len(argv) > 2:
        raise app.UsageError(f"give at most one of {', '.join(SECTIONS)} or a config name, got {' '.join(argv[1:])}")
    what = argv[1] if len(argv) == 2 else None
    if what is None or what in SECTIONS:
        print(catalog((what,) if what else SECTIONS), end="")
        return
    try:
        print("\n".join(config_lines(what, verbose=True)))
    except FileNotFoundError as error:
        raise app.UsageError(f"{what!r} is neither one of {', '.join(SECTIONS)} nor a config: {error}") from error


def entry() -> None:
    command.start(main)


if __name__ == "__main__":
    entry()
