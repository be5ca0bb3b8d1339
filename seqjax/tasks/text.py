"""Tasks on real text: sentiment classification (many-to-one) and language
modelling (sequence tagging is in seqjax.tasks.tagging). Each is a
`seqjax.tasks.dataset.DatasetTask`.

The dataset, tokenizer and batching keys of `config.data` are described in
seqjax/tasks/dataset.py.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from seqjax.data import loader as loader_lib
from seqjax.data import sequence as sequence_lib
from seqjax.data import tokenizers
from seqjax.tasks.dataset import DEFAULT_SPLITS, DatasetTask, as_text


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
    feature_keys = {"text_key": "text", "label_key": "label"}
    higher_is_better = {"accuracy": True}

    def __init__(self, config, data):
        super().__init__(config, data)
        self.loss = config.get("loss", "ce")
        if self.loss not in ("ce", "bce"):
            raise ValueError(f"config.task.loss must be 'ce' or 'bce', got {self.loss!r}")

    def setup(self, workdir):
        super().setup(workdir)
        in_data, configured = self._dataset_classes(), self.config.get("num_classes", 0)
        if configured and configured < in_data:  # labels >= num_classes: a NaN loss, or wrong numbers
            raise ValueError(
                f"config.task.num_classes={configured}, but the dataset's labels "
                f"({self.data.get('label_key', 'label')!r}) have {in_data} classes; set it to {in_data}, "
                "or 0 to read it from the dataset"
            )
        self.num_classes = configured or in_data
        for split in ("eval", "test"):
            self._report_one_class(split)

    def _report_one_class(self, split: str) -> None:
        """Warns when every example of an evaluation split has one label:
        its accuracy then measures one class (an ordered source cut by a
        percentage slice, a filtered file)."""
        source, key = self.source(split), self.data.get("label_key", "label")
        labels = {int(source[i][key]) for i in range(len(source))}
        if len(labels) == 1 and self.num_classes > 1:
            logging.warning(
                "the %s split (%s) holds only label %d in its %d examples: its accuracy measures one class; "
                "check the split (a slice of a source ordered by class?)",
                split, dict(DEFAULT_SPLITS, **dict(self.data.get("splits") or {}))[split], labels.pop(), len(source),
            )  # fmt: skip
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
        return self._make_loader(split, preprocess, batch_size, train, seed, sequence_keys=("inputs",))

    def label_names(self) -> list[str]:
        """The class names of the label feature (the class ids as text when it has none)."""
        feature = self.source_info().features[self.data.get("label_key", "label")]
        names = list(getattr(feature, "names", None) or [])
        return names if len(names) == self.num_classes else [str(i) for i in range(self.num_classes)]

    def encode_raw(self, items):
        """Texts -> ids as training encoded them (an empty text: one <unk>)."""
        for index, item in enumerate(items):
            if not isinstance(item, str):
                raise TypeError(f"input {index} is a {type(item).__name__}; {type(self).__name__} predicts on texts")
        ids = [self.tokenizer.encode(text) or [self.tokenizer.unk_id or 0] for text in items]
        return padded(ids)

    def describe(self, outputs, batch):
        """{'label', 'label_id', 'probabilities'} per text."""
        if self.loss == "bce":
            positive = 1 / (1 + np.exp(-outputs[:, 0].astype(np.float64)))
            probabilities = np.stack([1 - positive, positive], axis=1)
        else:
            shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True)).astype(np.float64)
            probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        names = self.label_names()
        labels = probabilities.argmax(axis=1) if self.loss == "ce" else (outputs[:, 0] > 0).astype(int)
        return [
            {"label": names[label], "label_id": int(label), "probabilities": [float(p) for p in row]}
            for label, row in zip(labels, probabilities)
        ]

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
    feature_keys = {"text_key": "text"}

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

    def finalize_metrics(self, metrics):
        metrics = dict(metrics)
        metrics["perplexity"] = float(np.exp(metrics["loss"]))
        metrics["bits_per_token"] = metrics["loss"] / float(np.log(2.0))
        return metrics


def padded(ids: list[list[int]]) -> dict[str, np.ndarray]:
    """{'inputs' [N, T] ids padded after, 'lengths' [N]}."""
    inputs = sequence_lib.pad_sequences(ids, dtype="int32", padding="post")
    return {"inputs": inputs, "lengths": np.asarray([len(row) for row in ids], np.int32)}
