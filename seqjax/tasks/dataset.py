"""Dataset tasks: examples read from a dataset through grain loaders.

A `DatasetTask` reads the dataset named in `config.data.source` (a TFDS
catalog name or a `local/<kind>`, see docs/datasets.md) through
`seqjax.data.sources`, turns text into ids with a tokenizer fitted on the
training split and saved in the run dir (`tokenizer.json`), and batches it
with the grain loader (`seqjax.data.loader`). The trainer calls `setup(workdir)`
first, then pulls training batches from `train_loader` (whose iterator
position is checkpointed) and evaluates every example of a split once
through `eval_loader` + `metric_sums`. Subclasses implement `loader`.

`config.data` keys (configs/sst2.py documents each one):
  source        ConfigDict: name, data_dir, manual_dir, and a local kind's options
  splits        ConfigDict mapping train / eval / test to the source's split names
  tokenizer     'word' | 'char' | 'subword'
  vocab_size    word: num_words (0 = all); subword: sentencepiece vocabulary size
  lower         lower-case text (word and char tokenizers)
  text_key, label_key, tags_key   feature names in the source's examples
  max_len, pad_to_multiple, truncate, bucket_boundaries, fixed_length   batching (seqjax.data.loader)
  seq_len       language modelling: tokens per training window
  worker_count  grain worker processes (0: read in the training process)
  tokenizer_path  use this saved tokenizer instead of fitting one (e.g. the
                tokenizer.json of a language-model run being fine-tuned)
"""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping
from typing import Any, ClassVar

import ml_collections
import numpy as np

from seqjax.data import loader as loader_lib
from seqjax.data import sources, tokenizers
from seqjax.tasks.base import SPLITS, Task

DATA_KEYS = (
    "source",
    "splits",
    "tokenizer",
    "vocab_size",
    "lower",
    "text_key",
    "label_key",
    "tags_key",
    "max_len",
    "pad_to_multiple",
    "truncate",
    "bucket_boundaries",
    "fixed_length",
    "seq_len",
    "worker_count",
    "tokenizer_path",
    "tag_scheme",  # the tagging task's (seqjax/tasks/tagging.py)
    "convert_tags_to",
    "max_word_len",
    "input_tag_keys",
)
TOKENIZERS = ("word", "char", "subword")
DEFAULT_SPLITS = {"train": "train", "eval": "validation", "test": "test"}
TOKENIZER_FILE = "tokenizer.json"


def as_text(value: Any) -> str:
    """Source text (UTF-8 bytes or str) as str."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class DatasetTask(Task):
    """Base for tasks whose examples come from a dataset source (`config.data`)."""

    def __init__(self, config: ml_collections.ConfigDict, data: ml_collections.ConfigDict):
        super().__init__(config)
        if data is None or not data.get("source"):
            raise ValueError(
                f"task {config.name!r} reads a dataset: set config.data.source.name "
                "(a TFDS name or local/<kind>, see docs/datasets.md)"
            )
        self.data = data
        self.tokenizer: tokenizers.Tokenizer | None = None
        self._sources: dict[str, Any] = {}

    # --- sources and tokenizer --------------------------------------------

    def source(self, split: str):
        """The random-access source of `split` ('train', 'eval' or 'test')."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        if split not in self._sources:
            names = dict(DEFAULT_SPLITS, **dict(self.data.get("splits") or {}))
            options = {k: v for k, v in dict(self.data.source).items() if v is not None}
            self._sources[split] = sources.load_source(split=names[split], **options)
        return self._sources[split]

    def source_info(self):
        options = {k: v for k, v in dict(self.data.source).items() if v is not None}
        return sources.source_info(**options)

    # The feature names the task reads: config.data key -> its default.
    feature_keys: ClassVar[dict[str, str]] = {}

    def check_feature_keys(self) -> None:
        """Raises ValueError naming a config.data.*_key that names no
        feature of the source, with the features it has."""
        features = self.source_info().features
        for config_key, default in self.feature_keys.items():
            name = self.data.get(config_key, default)
            if name not in features:
                raise ValueError(
                    f"config.data.{config_key}={name!r} names no feature of {self.data.source.get('name')!r}; "
                    f"its features are {sorted(features.keys())}"
                )

    def setup(self, workdir: str | None) -> None:
        """Checks the feature keys, then fits the tokenizer on the training
        texts (or loads the one a previous attempt of this run saved in
        `workdir`)."""
        self.check_feature_keys()
        fit = self.fit_tokenizer
        if self.data.get("tokenizer_path", ""):
            fit = lambda: tokenizers.load(self.data.tokenizer_path)  # noqa: E731 - a pretrained run's ids
        if workdir is None:
            self.tokenizer = fit()
        else:
            self.tokenizer = tokenizers.load_or_fit(os.path.join(workdir, TOKENIZER_FILE), fit)
        self.vocab_size = self.tokenizer.vocab_size

    def training_texts(self):
        key = self.data.get("text_key", "text")
        source = self.source("train")
        return (as_text(source[i][key]) for i in range(len(source)))

    def fit_tokenizer(self) -> tokenizers.Tokenizer:
        kind = self.data.get("tokenizer", "word")
        vocab = self.data.get("vocab_size", 0) or None
        lower = self.data.get("lower", kind == "word")
        if kind == "word":
            return tokenizers.WordTokenizer(num_words=vocab, lower=lower, oov_token=tokenizers.UNK).fit_on_texts(
                list(self.training_texts())
            )
        if kind == "char":
            return tokenizers.CharTokenizer(lower=lower).fit(self.training_texts())
        if kind == "subword":
            return tokenizers.SubwordTokenizer.train(self.training_texts(), vocab_size=vocab or 8000)
        raise ValueError(f"config.data.tokenizer must be one of {TOKENIZERS}, got {kind!r}")

    def _require_setup(self):
        if self.tokenizer is None:
            raise RuntimeError(f"{type(self).__name__}.setup(workdir) must run before batches are made")

    def example_batch(self, seed: int) -> dict[str, np.ndarray]:
        """Two training examples, batched: for shapes at initialisation."""
        self._require_setup()
        iterator = self.loader("eval", 2, train=False, seed=seed).iterator()
        try:
            return next(iterator)
        finally:
            iterator.close()

    def train_loader(self, batch_size: int, seed: int) -> loader_lib.Loader:
        self._require_setup()
        return self.loader("train", batch_size, train=True, seed=seed)

    def eval_loader(self, split: str, batch_size: int) -> loader_lib.Loader:
        """One pass over every example of `split`, padded batches weighted."""
        self._require_setup()
        return self.loader(split, batch_size, train=False, seed=0)

    @abc.abstractmethod
    def loader(self, split: str, batch_size: int, train: bool, seed: int) -> loader_lib.Loader:
        """Batches of `split`: shuffled with `seed` and endless when `train`,
        else one pass over every example with filler rows of weight 0."""

    def stream_loader(self, split: str, batch_size: int, seq_len: int) -> loader_lib.Loader:
        """Contiguous streams for stateful training (row b of each segment
        continues row b of the previous one). Default: refused."""
        raise ValueError(f"config.train.stateful needs a task with contiguous streams; {type(self).__name__} has none")

    def _batching(self) -> loader_lib.Batching:
        return loader_lib.batching_from_config(self.data)

    def _make_loader(
        self, split: str, preprocess, batch_size: int, train: bool, seed: int, sequence_keys: tuple[str, ...]
    ) -> loader_lib.Loader:
        """Batches of `split` made by `preprocess`, with config.data's
        batching (padding or buckets) and worker count."""
        return loader_lib.make_loader(
            self.source(split),
            preprocess,
            batch_size=batch_size,
            train=train,
            batching=self._batching(),
            seed=seed,
            sequence_keys=sequence_keys,
            worker_count=self.data.get("worker_count", 0),
        )

    def save_assets(self, workdir: str) -> None:
        """The fitted tokenizer, as tokenizer.json (what `setup` reloads)."""
        self._require_setup()
        path = os.path.join(workdir, TOKENIZER_FILE)
        if not os.path.exists(path):
            self.tokenizer.save(path)

    def word_index(self) -> Mapping[str, int] | None:
        """The word tokenizer's {word: id}; None for characters or subwords."""
        self._require_setup()
        return self.tokenizer.word_index if isinstance(self.tokenizer, tokenizers.WordTokenizer) else None

    def training_words(self) -> list[list[str]] | None:
        """The training texts as the word tokenizer splits them (lower-cased
        and filtered as it is); None for characters or subwords."""
        self._require_setup()
        if not isinstance(self.tokenizer, tokenizers.WordTokenizer):
            return None
        return self.tokenizer.texts_to_words(self.training_texts())
