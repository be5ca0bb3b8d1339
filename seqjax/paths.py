"""Where configs find datasets: one rule for every config file.

Configs name their data files with `data_path(...)`: under $SEQJAX_DATA, or
~/seqjax_data when it is unset. A missing file under that folder is reported
with the variable to set (seqjax.data.builders.common).
"""

from __future__ import annotations

import os

DATA_ENV = "SEQJAX_DATA"
DEFAULT_DATA_ROOT = os.path.join("~", "seqjax_data")


def data_root() -> str:
    """The folder holding the datasets configs read: $SEQJAX_DATA, else ~/seqjax_data."""
    return os.path.abspath(os.path.expanduser(os.environ.get(DATA_ENV) or DEFAULT_DATA_ROOT))


def data_path(*parts: str) -> str:
    """A path under `data_root()`, e.g. data_path('sst2', 'train.tsv')."""
    return os.path.join(data_root(), *parts)
