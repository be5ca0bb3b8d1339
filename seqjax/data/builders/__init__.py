"""Custom TFDS builders for researchers' own files (see docs/datasets.md).

Each builder is a `tfds.core.GeneratorBasedBuilder` configured by its
`make_config(**options)` and writing ArrayRecord files, so a prepared local
dataset reads exactly like a TFDS catalog one (`builder.as_data_source`,
`tfds.data_source`). `seqjax.data.sources` picks them by name ('local/text',
...); use the classes directly only to build a dataset outside a config.
"""

from seqjax.data.builders.common import ChecksumMismatchError, MissingFileError, SourceError
from seqjax.data.builders.conll import SeqjaxConll
from seqjax.data.builders.parallel import SeqjaxParallel
from seqjax.data.builders.text import SeqjaxClassification, SeqjaxFolders, SeqjaxText
from seqjax.data.builders.timeseries import SeqjaxTimeseries

__all__ = [
    "ChecksumMismatchError",
    "MissingFileError",
    "SourceError",
    "SeqjaxClassification",
    "SeqjaxConll",
    "SeqjaxFolders",
    "SeqjaxParallel",
    "SeqjaxText",
    "SeqjaxTimeseries",
]
