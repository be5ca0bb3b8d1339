"""Tasks on real text: sentiment classification (many-to-one), language
modelling, sequence tagging (synchronous many-to-many).

Each reads a dataset named in `config.data.source` (a TFDS catalog name or a
`local/<kind>`, see docs/datasets.md) through `seqjax.data.sources`, turns
text into ids with a tokenizer fitted on the training split and saved in the
run's workdir (`tokenizer.json`), and batches it with the grain loader
(`seqjax.data.loader`). The Trainer calls `setup(workdir)` first, then pulls
training batches from `train_loader` and evaluates over every example of a
split once through `eval_loader` + `metric_sums`.

`config.data` keys (configs/sst2.py documents each one):
  source        ConfigDict: name, data_dir, manual_dir, and a local kind's options
  splits        ConfigDict mapping train / eval / test to the source's split names
  tokenizer     'word' | 'char' | 'subword'
  vocab_size    word: num_words (0 = all); subword: sentencepiece vocabulary size
  lower         lower-case text (word and char tokenizers)
  text_key, label_key, tags_key   feature names in the source's examples
  max_len, pad_to_multiple, truncate, bucket_boundaries   batching (seqjax.data.loader)
  seq_len       language modelling: tokens per training window
  worker_count  grain worker processes (0: read in the training process)
  tokenizer_path  use this saved tokenizer instead of fitting one (e.g. the
                tokenizer.json of a language-model run being fine-tuned)
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from seqjax.data import loader as loader_lib
from seqjax.data import sources, tokenizers
from seqjax.tasks import entities
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
)
TOKENIZERS = ("word", "char", "subword")
DEFAULT_SPLITS = {"train": "train", "eval": "validation", "test": "test"}
TOKENIZER_FILE = "tokenizer.json"


def as_text(value: Any) -> str:
    """Source text (UTF-8 bytes or str) as str."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class DatasetTask(Task):
    """Base for tasks whose examples come from a dataset source."""

    needs_data = True

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

    def setup(self, workdir: str | None) -> None:
        """Fits the tokenizer on the training texts (or loads the one a
        previous attempt of this run saved in `workdir`)."""
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

    def batch(self, split, index, batch_size, seed):
        raise TypeError(
            f"{type(self).__name__} reads a dataset: use train_loader / eval_loader, not batch(split, index)"
        )

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

    def loader(self, split: str, batch_size: int, train: bool, seed: int) -> loader_lib.Loader:
        raise NotImplementedError  # each task batches its own features

    def _batching(self) -> loader_lib.Batching:
        return loader_lib.batching_from_config(self.data)

    def finalize_metrics(self, metrics: dict) -> dict:
        return metrics


class EncodeText:
    """Preprocess for classification: raw example -> {'inputs': ids, 'targets': label}.
    A class (not a closure) so grain worker processes can pickle it."""

    def __init__(self, tokenizer, text_key: str, label_key: str, split: str):
        self.tokenizer, self.text_key, self.label_key, self.split = tokenizer, text_key, label_key, split

    def __call__(self, example):
        ids = self.tokenizer.encode(as_text(example[self.text_key])) or [self.tokenizer.unk_id or 0]
        label = int(example[self.label_key])
        if label < 0:
            raise ValueError(
                f"an example of split {self.split!r} has no label (-1): evaluate on a labelled "
                "split (config.data.splits)"
            )
        return {"inputs": np.asarray(ids, np.int32), "targets": np.int32(label)}


class ClassificationTask(DatasetTask):
    """Many-to-one text classification (sentiment): CE over classes, or BCE
    with one logit for two classes. Metrics: loss, accuracy.

    Config (config.task): num_classes (0: read from the dataset), loss ('ce' | 'bce').
    """

    head = "last"
    config_keys = ("num_classes", "loss")
    higher_is_better = {"accuracy": True}

    def __init__(self, config, data):
        super().__init__(config, data)
        self.loss = config.get("loss", "ce")
        if self.loss not in ("ce", "bce"):
            raise ValueError(f"config.task.loss must be 'ce' or 'bce', got {self.loss!r}")

    def setup(self, workdir):
        super().setup(workdir)
        self.num_classes = self.config.get("num_classes", 0) or self._dataset_classes()
        if self.loss == "bce" and self.num_classes != 2:
            raise ValueError(f"config.task.loss='bce' needs 2 classes, the dataset has {self.num_classes}")
        self.output_size = 1 if self.loss == "bce" else self.num_classes

    def _dataset_classes(self) -> int:
        feature = self.source_info().features[self.data.get("label_key", "label")]
        return feature.num_classes

    def loader(self, split, batch_size, train, seed):
        preprocess = EncodeText(
            self.tokenizer, self.data.get("text_key", "text"), self.data.get("label_key", "label"), split
        )
        return loader_lib.make_loader(
            self.source(split),
            preprocess,
            batch_size=batch_size,
            train=train,
            batching=self._batching(),
            seed=seed,
            sequence_keys=("inputs",),
            worker_count=self.data.get("worker_count", 0),
        )

    def metric_sums(self, predictions, batch):
        """predictions [B, num_classes] logits (or [B, 1] for BCE)."""
        weights = batch.get("weights", jnp.ones(batch["targets"].shape, jnp.float32))
        labels = batch["targets"]
        if self.loss == "bce":
            logit = predictions[:, 0]
            losses = optax.sigmoid_binary_cross_entropy(logit, labels.astype(jnp.float32))
            hits = (logit > 0).astype(jnp.int32) == labels
        else:
            losses = optax.softmax_cross_entropy_with_integer_labels(predictions, labels)
            hits = predictions.argmax(-1) == labels
        count = weights.sum()
        return {"loss": ((losses * weights).sum(), count), "accuracy": ((hits * weights).sum(), count)}

    def loss_and_metrics(self, predictions, batch):
        metrics = {k: total / count for k, (total, count) in self.metric_sums(predictions, batch).items()}
        return metrics["loss"], metrics


class EncodeDocument:
    """Preprocess for language modelling: raw example -> the document's ids."""

    def __init__(self, tokenizer, text_key: str):
        self.tokenizer, self.text_key = tokenizer, text_key

    def __call__(self, example):
        return np.asarray(self.tokenizer.encode(as_text(example[self.text_key])), np.int32)


class LanguageModelTask(DatasetTask):
    """Next-token prediction over the concatenated documents of a text
    source. Metrics: loss (nats per token), perplexity, bits_per_token
    (bits per character with the char tokenizer).

    Training windows of `config.data.seq_len` tokens are shuffled; with
    `config.train.stateful` rows are contiguous streams instead, so the carry
    can pass from batch to batch (seqjax.tbptt). The cost of a window's first
    steps, which see no context, is why evaluation uses long windows.
    """

    head = "per_step"
    config_keys = ()

    def setup(self, workdir):
        super().setup(workdir)
        self.output_size = self.vocab_size

    def loader(self, split, batch_size, train, seed, layout: str = "windows", seq_len: int | None = None):
        preprocess = EncodeDocument(self.tokenizer, self.data.get("text_key", "text"))
        return loader_lib.lm_loader(
            self.source(split),
            preprocess,
            batch_size=batch_size,
            seq_len=seq_len or self.data.get("seq_len", 128),
            train=train,
            layout=layout,
            seed=seed,
            pad_id=tokenizers.PAD_ID,
            worker_count=self.data.get("worker_count", 0),
        )

    def stream_loader(self, split: str, batch_size: int, seq_len: int) -> loader_lib.Loader:
        """Contiguous streams for stateful training: row b of each segment
        continues row b of the previous one."""
        self._require_setup()
        return self.loader(split, batch_size, train=split == "train", seed=0, layout="streams", seq_len=seq_len)

    def step_sums(self, predictions, batch):
        """predictions [B, T, V] logits -> {'loss': (Σ xent over learnable targets, count), 'accuracy'}."""
        mask = batch["step_mask"]
        xent = optax.softmax_cross_entropy_with_integer_labels(predictions, batch["targets"]) * mask
        hits = (predictions.argmax(-1) == batch["targets"]) * mask
        return {"loss": (xent.sum(), mask.sum()), "accuracy": (hits.sum(), mask.sum())}

    metric_sums = step_sums

    def loss_and_metrics(self, predictions, batch):
        sums = self.step_sums(predictions, batch)
        metrics = {k: total / jnp.maximum(count, 1.0) for k, (total, count) in sums.items()}
        return metrics["loss"], metrics

    def finalize_metrics(self, metrics):
        metrics = dict(metrics)
        metrics["perplexity"] = float(np.exp(metrics["loss"]))
        metrics["bits_per_token"] = metrics["loss"] / float(np.log(2.0))
        return metrics


class EncodeTokens:
    """Preprocess for tagging: one id per token (the word tokenizer on the
    token list, so words are never re-split) and the tag ids."""

    def __init__(self, tokenizer, tokens_key: str, tags_key: str):
        self.tokenizer, self.tokens_key, self.tags_key = tokenizer, tokens_key, tags_key

    def __call__(self, example):
        words = [as_text(w) for w in example[self.tokens_key]]
        ids = [self._word_id(w) for w in words]
        tags = np.asarray(example[self.tags_key], np.int32)
        if len(tags) != len(ids):
            raise ValueError(f"an example has {len(ids)} tokens but {len(tags)} tags")
        return {"inputs": np.asarray(ids, np.int32), "targets": tags}

    def _word_id(self, word: str) -> int:
        ids = self.tokenizer.encode([word])
        return ids[0] if ids else self.tokenizer.unk_id


class TaggingTask(DatasetTask):
    """Per-token tag prediction (NER, POS): CE over tags with padding masked.
    Metrics: loss, token accuracy, and at evaluation entity-level precision,
    recall and F1 (seqjax.tasks.entities: BIO / IOB1 / IOBES chunks).

    config.data.text_key / tags_key name the token and tag sequences
    (defaults 'tokens' and 'tags'; TFDS conll2003 calls the tags 'ner').
    """

    head = "per_step"
    config_keys = ()
    higher_is_better = {"f1": True}

    def training_texts(self):
        # Word lists: the tokenizer counts tokens as given.
        key = self.data.get("text_key", "tokens")
        source = self.source("train")
        return [[as_text(w) for w in source[i][key]] for i in range(len(source))]

    def fit_tokenizer(self):
        if self.data.get("tokenizer", "word") != "word":
            raise ValueError("the tagging task needs config.data.tokenizer='word' (one id per token)")
        vocab = self.data.get("vocab_size", 0) or None
        return tokenizers.WordTokenizer(
            num_words=vocab, lower=self.data.get("lower", False), filters="", oov_token=tokenizers.UNK
        ).fit_on_texts(self.training_texts())

    def setup(self, workdir):
        super().setup(workdir)
        self.tag_names = list(self.source_info().features[self.data.get("tags_key", "tags")].feature.names)
        self.output_size = len(self.tag_names)

    def loader(self, split, batch_size, train, seed):
        preprocess = EncodeTokens(
            self.tokenizer, self.data.get("text_key", "tokens"), self.data.get("tags_key", "tags")
        )
        return loader_lib.make_loader(
            self.source(split),
            preprocess,
            batch_size=batch_size,
            train=train,
            batching=self._batching(),
            seed=seed,
            sequence_keys=("inputs", "targets"),
            worker_count=self.data.get("worker_count", 0),
        )

    def _token_mask(self, batch):
        time = batch["inputs"].shape[1]
        mask = (jnp.arange(time)[None, :] < batch["lengths"][:, None]).astype(jnp.float32)
        return mask * batch.get("weights", jnp.ones(mask.shape[:1]))[:, None]

    def metric_sums(self, predictions, batch):
        """predictions [B, T, num_tags] logits."""
        mask = self._token_mask(batch)
        xent = optax.softmax_cross_entropy_with_integer_labels(predictions, batch["targets"]) * mask
        hits = (predictions.argmax(-1) == batch["targets"]) * mask
        return {"loss": (xent.sum(), mask.sum()), "token_accuracy": (hits.sum(), mask.sum())}

    def loss_and_metrics(self, predictions, batch):
        metrics = {
            k: total / jnp.maximum(count, 1.0) for k, (total, count) in self.metric_sums(predictions, batch).items()
        }
        return metrics["loss"], metrics

    def collect(self, predictions, batch):
        """What evaluation keeps per batch for the corpus-level F1."""
        return {
            "predicted": predictions.argmax(-1),
            "targets": batch["targets"],
            "lengths": batch["lengths"],
            "weights": batch["weights"],
        }

    def corpus_metrics(self, collected: list[dict]) -> dict[str, float]:
        """Entity precision / recall / F1 over every real sentence (none when
        the tags are not chunk tags, e.g. part-of-speech tags)."""
        if not all(t == "O" or t[:2] in ("B-", "I-", "E-", "S-") for t in self.tag_names):
            return {}
        gold, predicted = [], []
        for part in jax.device_get(collected):
            for row in np.flatnonzero(part["weights"] > 0):
                length = int(part["lengths"][row])
                gold.append([self.tag_names[t] for t in part["targets"][row, :length]])
                predicted.append([self.tag_names[t] for t in part["predicted"][row, :length]])
        scores = entities.entity_scores(gold, predicted)
        return {k: float(scores[k]) for k in ("precision", "recall", "f1")}
