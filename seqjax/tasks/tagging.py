"""Sequence tagging (synchronous many-to-many): named entities, chunks and
part-of-speech tags, one tag per token.

config.data keys the task reads besides the common ones (seqjax/tasks/dataset.py):

- text_key / tags_key: the token and tag sequences ('tokens', 'tags'; TFDS
  conll2003 calls the NER tags 'ner'). For CoNLL column files the column is
  config.data.source.tag_column (CoNLL-2003: 1 POS, 2 chunk, -1 NER).
- tag_scheme: the scheme of the files' chunk tags, 'auto' (detected from
  the training tags) or one of IOB1, IOB2, IOBES: a declared scheme the
  training file breaks is an error naming the sentence.
- convert_tags_to: '' (train on the tags as they are) or a scheme to
  rewrite every sentence's tags in on reading (e.g. 'IOBES'); chunks, and
  so entity scores, are unchanged, and predictions are described in the
  files' scheme.
- max_word_len: 0, or the characters per token to give the model as
  'chars' [B, T, max_word_len] ids (a longer word keeps its first and last
  max_word_len / 2 characters: prefixes and suffixes both carry meaning).
- input_tag_keys: () or per-token features of the data to give the model
  as 'input_tags' [B, T, len(keys)] ids (e.g. ('pos',): part-of-speech tags
  as an input to chunking). Each key gets its own vocabulary of the
  training values (0 padding, 1 unknown), saved as input_tags_<key>.json.
  For CoNLL files, config.data.source.input_columns names the columns
  (CoNLL-2003: {'pos': 1}); TFDS conll2003 has 'pos' and 'chunks'.

Tags that are not chunk tags (part-of-speech) are scored by token accuracy
only; chunk tags also by entity precision / recall / F1 the conlleval way
(seqjax.tasks.entities). A model may return per-token logits [B, T, K] or
the scores of a linear-chain CRF (seqjax.nn.crf.Scores): the loss is then
the CRF's negative log-likelihood per token and predictions are its Viterbi
paths.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tensorflow_datasets as tfds

from seqjax.data import tokenizers
from seqjax.nn import crf
from seqjax.tasks import entities, tag_schemes
from seqjax.tasks.dataset import DatasetTask, as_text
from seqjax.tasks.text import padded

CHAR_TOKENIZER_FILE = "char_tokenizer.json"
INPUT_TAGS_FILE = "input_tags_{key}.json"  # one vocabulary per config.data.input_tag_keys entry


class WordFeatures:
    """A sentence's words -> {'inputs' [T] word ids, with max_word_len > 0
    'chars' [T, max_word_len] character ids, 0-padded, and with input tag
    vocabularies 'input_tags' [T, F] ids of the per-token input tags}."""

    def __init__(
        self,
        words: tokenizers.Tokenizer,
        chars: tokenizers.Tokenizer | None,
        max_word_len: int,
        input_tags: Mapping[str, tokenizers.Tokenizer] | None = None,
    ):
        self.words, self.chars, self.max_word_len = words, chars, max_word_len
        self.input_tags = dict(input_tags or {})

    @staticmethod
    def token_id(vocabulary: tokenizers.Tokenizer, token: str) -> int:
        ids = vocabulary.encode([token])
        return ids[0] if ids else vocabulary.unk_id

    def word_id(self, word: str) -> int:
        return self.token_id(self.words, word)

    def char_ids(self, word: str) -> list[int]:
        ids, width = self.chars.encode(word), self.max_word_len
        return ids if len(ids) <= width else ids[: (width + 1) // 2] + ids[len(ids) - width // 2 :]

    def __call__(self, words: Sequence[str], columns: Mapping[str, Sequence[str]] | None = None) -> dict:
        """columns: {input tag key: one value per word}, for every key of `input_tags`."""
        features = {"inputs": np.asarray([self.word_id(w) for w in words], np.int32)}
        if self.chars is not None:
            chars = np.zeros((len(words), self.max_word_len), np.int32)
            for position, word in enumerate(words):
                ids = self.char_ids(word)
                chars[position, : len(ids)] = ids
            features["chars"] = chars
        if self.input_tags:
            tags = np.zeros((len(words), len(self.input_tags)), np.int32)
            for column, (key, vocabulary) in enumerate(self.input_tags.items()):
                values = (columns or {}).get(key)
                if values is None or len(values) != len(words):
                    got = "none" if values is None else f"{len(values)} values"
                    raise ValueError(f"input tag {key!r}: need one value per token ({len(words)}), got {got}")
                tags[:, column] = [self.token_id(vocabulary, value) for value in values]
            features["input_tags"] = tags
        return features


class TagConversion:
    """Tag ids of the files' scheme -> tag ids of the training scheme, one
    sentence at a time (a tag's new prefix depends on its neighbours)."""

    def __init__(self, source_names: Sequence[str], scheme: str, target_names: Sequence[str]):
        self.source_names, self.scheme = list(source_names), scheme
        self.target_ids = {name: i for i, name in enumerate(target_names)}

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        converted = tag_schemes.convert([self.source_names[i] for i in ids], self.scheme)
        return np.asarray([self.target_ids[t] for t in converted], np.int32)


class ColumnText:
    """A per-token feature's values as strings: a text sequence decoded, or
    a class-label sequence (TFDS conll2003's 'pos') mapped to its names."""

    def __init__(self, names: Sequence[str] | None):
        self.names = None if names is None else list(names)

    def __call__(self, values) -> list[str]:
        return [as_text(v) for v in values] if self.names is None else [self.names[int(v)] for v in values]


class EncodeTokens:
    """Preprocess: a sentence's word (character, input tag) ids and its tag ids."""

    def __init__(
        self,
        features: WordFeatures,
        tokens_key: str,
        tags_key: str,
        conversion: TagConversion | None,
        columns: Mapping[str, ColumnText] | None = None,
    ):
        self.features, self.tokens_key, self.tags_key, self.conversion = features, tokens_key, tags_key, conversion
        self.columns = dict(columns or {})

    def __call__(self, example):
        columns = {key: text(example[key]) for key, text in self.columns.items()}
        encoded = self.features([as_text(w) for w in example[self.tokens_key]], columns)
        tags = np.asarray(example[self.tags_key], np.int32)
        if len(tags) != len(encoded["inputs"]):
            raise ValueError(f"an example has {len(encoded['inputs'])} tokens but {len(tags)} tags")
        return {**encoded, "targets": tags if self.conversion is None else self.conversion(tags)}


class TaggingTask(DatasetTask):
    """Per-token tag prediction (NER, chunking, POS): see the module docstring.

    After `setup`: tag_names (the training scheme's, id order),
    source_tag_names (the files'), tag_scheme (the training scheme; None for
    tags that are not chunk tags), char_vocab_size (0 without characters),
    input_tag_keys and input_tag_sizes (each input tag vocabulary's size).
    """

    head = "per_step"
    config_keys = ()
    feature_keys = {"text_key": "tokens", "tags_key": "tags"}
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
        tags_key = self.data.get("tags_key", "tags")
        self.source_tag_names = list(self.source_info().features[tags_key].feature.names)
        self.source_scheme, self.tag_scheme, self.tag_names = self._schemes()
        self.output_size = len(self.tag_names)
        self.char_tokenizer, self.char_vocab_size = None, 0
        max_word_len = self.data.get("max_word_len", 0)
        if max_word_len < 0:
            raise ValueError(f"config.data.max_word_len must be >= 0 (0 = no character ids), got {max_word_len}")
        if max_word_len:
            fit = lambda: tokenizers.CharTokenizer().fit(  # noqa: E731
                word for sentence in self.training_texts() for word in sentence
            )
            path = None if workdir is None else os.path.join(workdir, CHAR_TOKENIZER_FILE)
            self.char_tokenizer = fit() if path is None else tokenizers.load_or_fit(path, fit)
            self.char_vocab_size = self.char_tokenizer.vocab_size
        self._setup_input_tags(workdir)

    def _setup_input_tags(self, workdir: str | None) -> None:
        """A vocabulary per config.data.input_tag_keys entry, fitted on the
        training values (or reloaded from the run's workdir)."""
        keys = self.data.get("input_tag_keys", ())
        keys = (keys,) if isinstance(keys, str) else tuple(keys)
        features = self.source_info().features
        taken = (self.data.get("text_key", "tokens"), self.data.get("tags_key", "tags"))
        per_token = sorted(k for k in features if isinstance(features[k], tfds.features.Sequence) and k not in taken)
        self.input_tag_keys, self.input_tag_tokenizers, self.input_tag_columns = keys, {}, {}
        for key in keys:
            if key not in per_token:
                raise ValueError(
                    f"config.data.input_tag_keys: {key!r} is not a per-token feature of the data besides the "
                    f"tokens and the tags it predicts (it has {per_token}); for CoNLL column files name the "
                    "column in config.data.source.input_columns (CoNLL-2003: {'pos': 1, 'chunks': 2})"
                )
            values = features[key].feature  # a ClassLabel for TFDS conll2003's 'pos', Text for CoNLL files
            self.input_tag_columns[key] = ColumnText(
                values.names if isinstance(values, tfds.features.ClassLabel) else None
            )
            fit = lambda key=key: tokenizers.WordTokenizer(  # noqa: E731
                lower=False, filters="", oov_token=tokenizers.UNK
            ).fit_on_texts(self._training_column(key))
            path = None if workdir is None else os.path.join(workdir, INPUT_TAGS_FILE.format(key=key))
            self.input_tag_tokenizers[key] = fit() if path is None else tokenizers.load_or_fit(path, fit)
        self.input_tag_sizes = tuple(self.input_tag_tokenizers[key].vocab_size for key in keys)

    def _training_column(self, key: str) -> list[list[str]]:
        source, text = self.source("train"), self.input_tag_columns[key]
        return [text(source[i][key]) for i in range(len(source))]

    def save_assets(self, workdir: str) -> None:
        super().save_assets(workdir)
        path = os.path.join(workdir, CHAR_TOKENIZER_FILE)
        if self.char_tokenizer is not None and not os.path.exists(path):
            self.char_tokenizer.save(path)
        for key, vocabulary in self.input_tag_tokenizers.items():
            path = os.path.join(workdir, INPUT_TAGS_FILE.format(key=key))
            if not os.path.exists(path):
                vocabulary.save(path)

    def _training_tags(self) -> list[list[str]]:
        key, source = self.data.get("tags_key", "tags"), self.source("train")
        return [[self.source_tag_names[t] for t in source[i][key]] for i in range(len(source))]

    def _schemes(self) -> tuple[str | None, str | None, list[str]]:
        """(the files' scheme, the training scheme, the training tag names)."""
        declared, target = self.data.get("tag_scheme", "auto"), self.data.get("convert_tags_to", "")
        if not tag_schemes.is_chunk_tagging(self.source_tag_names):
            if declared != "auto" or target:
                raise ValueError(
                    f"config.data.tag_scheme={declared!r} and convert_tags_to={target!r} are for chunk tags "
                    f"(O, B-X, I-X, ...), but the tags are {self.source_tag_names[:6]}...: leave them 'auto' and ''"
                )
            return None, None, self.source_tag_names
        sentences = self._training_tags()
        if declared == "auto":
            scheme = tag_schemes.detect_scheme(sentences)
        else:
            scheme = tag_schemes.check_scheme(declared, "config.data.tag_scheme")
            for index, sentence in enumerate(sentences):
                if (why := tag_schemes.scheme_violation(sentence, scheme)) is not None:
                    raise ValueError(
                        f"config.data.tag_scheme={scheme!r}, but training sentence {index + 1} is not {scheme}: "
                        f"{why}. Set the scheme the files use, or 'auto' (detected: "
                        f"{tag_schemes.detect_scheme(sentences)})"
                    )
        if not target or target == scheme:
            return scheme, scheme, self.source_tag_names
        tag_schemes.check_scheme(target, "config.data.convert_tags_to")
        kinds = {entities.split_tag(name)[1] for name in self.source_tag_names if name != "O"}
        return scheme, target, tag_schemes.tag_names(kinds, target)

    def _conversion(self) -> TagConversion | None:
        if self.tag_names == self.source_tag_names:
            return None
        return TagConversion(self.source_tag_names, self.tag_scheme, self.tag_names)

    def word_features(self) -> WordFeatures:
        self._require_setup()
        return WordFeatures(
            self.tokenizer, self.char_tokenizer, self.data.get("max_word_len", 0), self.input_tag_tokenizers
        )

    def loader(self, split, batch_size, train, seed):
        preprocess = EncodeTokens(
            self.word_features(),
            self.data.get("text_key", "tokens"),
            self.data.get("tags_key", "tags"),
            self._conversion(),
            self.input_tag_columns,
        )
        sequence_keys = ("inputs", "targets") + (("chars",) if self.char_tokenizer is not None else ())
        sequence_keys += ("input_tags",) if self.input_tag_keys else ()
        return self._make_loader(split, preprocess, batch_size, train, seed, sequence_keys)

    def encode_raw(self, items):
        """Sentences -> word ids [N, T], lengths [N] (and chars [N, T, W],
        input_tags [N, T, F]). A sentence is a list of token strings or a
        string split at whitespace; with input_tag_keys, a dict of 'tokens'
        and a list of one value per token for each key."""
        features = self.word_features()
        encoded = []
        for index, item in enumerate(items):
            if self.input_tag_keys:
                if not isinstance(item, Mapping) or "tokens" not in item:
                    example = {"tokens": ["EU", "rejects"], **{key: ["NNP", "VBZ"] for key in self.input_tag_keys}}
                    raise ValueError(
                        f"input {index} ({item!r}): this tagger also reads {list(self.input_tag_keys)} per token: "
                        f"give each sentence as a dict like {example}"
                    )
                tokens, columns = self._tokens(item["tokens"], index), item
            else:
                tokens, columns = self._tokens(item, index), None
            try:
                encoded.append(features(tokens, columns))
            except ValueError as error:
                raise ValueError(f"input {index}: {error}") from None
        batch = padded([list(e["inputs"]) for e in encoded])
        for key, trailing in (("chars", (features.max_word_len,)), ("input_tags", (len(self.input_tag_keys),))):
            if key in encoded[0]:
                values = np.zeros(batch["inputs"].shape + trailing, np.int32)
                for row, e in enumerate(encoded):
                    values[row, : len(e[key])] = e[key]
                batch[key] = values
        return batch

    @staticmethod
    def _tokens(sentence, index: int) -> list[str]:
        tokens = sentence.split() if isinstance(sentence, str) else list(sentence)
        if not tokens or not all(isinstance(token, str) for token in tokens):
            raise ValueError(f"input {index} ({sentence!r}): give a sentence as a string or a list of token strings")
        return tokens

    def predicted_tags(self, predictions, lengths) -> jax.Array:
        """[B, T] tag ids: the CRF's Viterbi path, or each step's best tag."""
        if isinstance(predictions, crf.Scores):
            return predictions.decode(lengths)[0]
        return predictions.argmax(-1)

    def describe(self, outputs, batch):
        """{'tags'} per sentence: one tag name per token, in the files' scheme."""
        predicted = np.asarray(self.predicted_tags(outputs, batch["lengths"]))
        described = []
        for row, length in enumerate(batch["lengths"]):
            tags = [self.tag_names[t] for t in predicted[row, :length]]
            if self.tag_names != self.source_tag_names:
                tags = tag_schemes.convert(tags, self.source_scheme)
            described.append({"tags": tags})
        return described

    def _token_mask(self, batch):
        time = batch["inputs"].shape[1]
        mask = (jnp.arange(time)[None, :] < batch["lengths"][:, None]).astype(jnp.float32)
        return mask * batch.get("weights", jnp.ones(mask.shape[:1]))[:, None]

    def metric_sums(self, predictions, batch):
        """predictions [B, T, num_tags] logits or crf.Scores. The loss is per
        token either way (a CRF's sentence NLL summed over tokens)."""
        mask = self._token_mask(batch)
        if isinstance(predictions, crf.Scores):
            weights = batch.get("weights", jnp.ones(mask.shape[:1]))
            nll = predictions.negative_log_likelihood(batch["targets"], jnp.maximum(batch["lengths"], 1))
            loss = (nll * weights).sum()
        else:
            loss = (optax.softmax_cross_entropy_with_integer_labels(predictions, batch["targets"]) * mask).sum()
        hits = (self.predicted_tags(predictions, batch["lengths"]) == batch["targets"]) * mask
        return {"loss": (loss, mask.sum()), "token_accuracy": (hits.sum(), mask.sum())}

    def collect(self, predictions, batch):
        """What evaluation keeps per batch for the corpus-level F1."""
        return {
            "predicted": self.predicted_tags(predictions, batch["lengths"]),
            "targets": batch["targets"],
            "lengths": batch["lengths"],
            "weights": batch["weights"],
        }

    def corpus_metrics(self, collected: list[dict]) -> dict[str, float]:
        """Entity precision / recall / F1 over every real sentence (none when
        the tags are not chunk tags, e.g. part-of-speech tags)."""
        if self.tag_scheme is None:
            return {}
        gold, predicted = [], []
        for part in jax.device_get(collected):
            for row in np.flatnonzero(part["weights"] > 0):
                length = int(part["lengths"][row])
                gold.append([self.tag_names[t] for t in part["targets"][row, :length]])
                predicted.append([self.tag_names[t] for t in part["predicted"][row, :length]])
        scores = entities.entity_scores(gold, predicted)
        return {k: float(scores[k]) for k in ("precision", "recall", "f1")}
