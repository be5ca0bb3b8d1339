"""Text tasks on small files written here: tokenizer fitted and saved,
batches, weighted metrics against numpy, every eval example counted once."""

import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from seqjax import tasks
from seqjax.data import tokenizers

POSITIVE = ["a great film", "truly great acting", "i loved it", "great fun", "loved the music"]
NEGATIVE = ["a dull film", "truly awful acting", "i hated it", "dull and slow", "hated the music"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    rows = [(t, 1) for t in POSITIVE] + [(t, 0) for t in NEGATIVE]
    for split, part in (("train", rows), ("dev", rows[::3])):
        (root / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in part))
    (root / "corpus.txt").write_text("to be or not to be, that is the question.\n" * 40)
    conll = (
        "EU B-ORG\nrejects O\nGerman B-MISC\ncall O\n\nPeter B-PER\nBlackburn I-PER\n\n"
        "German B-MISC\nPeter B-PER\nsays O\n\n"
    )
    (root / "train.conll").write_text(conll * 3)
    (root / "dev.conll").write_text(conll)
    return root


def data_config(files, data_dir, **fields):
    config = ml_collections.ConfigDict(
        dict(
            source=ml_collections.ConfigDict(dict(data_dir=data_dir)),
            splits=ml_collections.ConfigDict(),
            pad_to_multiple=4,
        )
    )
    config.update(fields)
    return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def sst_task(files, data_dir, workdir=None, **task_fields):
    data = data_config(files, data_dir, tokenizer="word")
    data.source.name = "local/classification"
    data.source.paths = {"train": str(files / "train.tsv"), "validation": str(files / "dev.tsv")}
    data.splits.test = "validation"
    task = tasks.get(ml_collections.ConfigDict(dict(name="classification", **task_fields)), data)
    task.setup(workdir)
    return task


def test_classification_fits_and_saves_the_tokenizer(files, data_dir, tmp_path):
    task = sst_task(files, data_dir, str(tmp_path))
    saved = tokenizers.load(os.path.join(tmp_path, "tokenizer.json"))
    assert saved.word_index == task.tokenizer.word_index
    assert task.output_size == 2 and task.vocab_size == task.tokenizer.vocab_size
    # 'great' (3 uses) is the most frequent word after the oov token at 1.
    assert task.tokenizer.word_index["great"] == 2


def test_classification_eval_counts_every_example_once(files, data_dir):
    task = sst_task(files, data_dir)
    batches = list(task.eval_loader("eval", 8))
    assert sum(b["weights"].sum() for b in batches) == 4  # rows[::3] of 10
    texts = [task.tokenizer.decode(b["inputs"][i]) for b in batches for i in np.flatnonzero(b["weights"])]
    assert texts == ["a great film", "great fun", "truly awful acting", "hated the music"]


def test_classification_metrics_ignore_filler_rows(files, data_dir):
    task = sst_task(files, data_dir)
    batch = next(iter(task.eval_loader("eval", 8)))
    logits = np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32)
    sums = task.metric_sums(jnp.asarray(logits), batch)
    real = batch["weights"] > 0
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -log_probs[real, batch["targets"][real]].sum()
    np.testing.assert_allclose(sums["loss"][0], expected, rtol=1e-5)
    assert float(sums["loss"][1]) == real.sum()
    assert float(sums["accuracy"][0]) == (logits.argmax(-1) == batch["targets"])[real].sum()


def test_bce_uses_one_logit(files, data_dir):
    task = sst_task(files, data_dir, loss="bce")
    assert task.output_size == 1
    batch = next(iter(task.eval_loader("eval", 4)))
    confident = jnp.where(batch["targets"][:, None] == 1, 20.0, -20.0)
    _, metrics = task.loss_and_metrics(confident, batch)
    assert float(metrics["accuracy"]) == 1.0 and float(metrics["loss"]) < 1e-6


def test_language_model_targets_are_next_characters(files, data_dir):
    data = data_config(files, data_dir, tokenizer="char", seq_len=16)
    data.source.name = "local/text"
    data.source.paths = str(files / "corpus.txt")
    data.source.fractions = (("train", 0.8), ("validation", 0.1), ("test", 0.1))
    task = tasks.get(ml_collections.ConfigDict(dict(name="language_model")), data)
    task.setup(None)
    batch = next(task.train_loader(4, seed=0).iterator())
    assert batch["inputs"].shape == (4, 16)
    np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
    # A model that puts all mass on the true next char has zero loss and perplexity 1.
    perfect = jnp.asarray(np.eye(task.vocab_size)[batch["targets"]] * 50.0)
    _, metrics = task.loss_and_metrics(perfect, batch)
    assert float(metrics["loss"]) < 1e-6 and float(metrics["accuracy"]) == 1.0
    assert task.finalize_metrics({"loss": np.log(4.0), "accuracy": 0.5})["perplexity"] == pytest.approx(4.0)


def test_tagging_batches_masks_and_entity_f1(files, data_dir):
    data = data_config(files, data_dir, tokenizer="word")
    data.source.name = "local/conll"
    data.source.paths = {"train": str(files / "train.conll"), "validation": str(files / "dev.conll")}
    task = tasks.get(ml_collections.ConfigDict(dict(name="tagging")), data)
    task.setup(None)
    assert task.tag_names[0] == "O" and task.output_size == len(task.tag_names)
    batches = list(task.eval_loader("eval", 4))
    batch = batches[0]
    assert batch["inputs"].shape == batch["targets"].shape
    # Perfect predictions give F1 1; predicting all 'O' gives 0 and token accuracy = share of O tags.
    onehot = np.eye(task.output_size)[batch["targets"]] * 10.0
    assert task.corpus_metrics([task.collect(jnp.asarray(onehot), batch)])["f1"] == 1.0
    all_o = np.zeros_like(onehot)
    all_o[..., 0] = 10.0
    assert task.corpus_metrics([task.collect(jnp.asarray(all_o), batch)])["f1"] == 0.0
    sums = task.metric_sums(jnp.asarray(all_o), batch)
    mask = (np.arange(batch["targets"].shape[1])[None] < batch["lengths"][:, None]) & (batch["weights"][:, None] > 0)
    assert batch["weights"].tolist() == [1, 1, 1, 0]  # 3 dev sentences, one filler row
    assert float(sums["token_accuracy"][1]) == mask.sum()
    assert float(sums["token_accuracy"][0]) == ((batch["targets"] == 0) & mask).sum()


def test_dataset_task_errors(files, data_dir):
    with pytest.raises(ValueError, match="set config.data.source.name"):
        tasks.get(ml_collections.ConfigDict(dict(name="classification")), ml_collections.ConfigDict())
    task = tasks.get(
        ml_collections.ConfigDict(dict(name="classification")), data_config(files, data_dir, tokenizer="word")
    )
    with pytest.raises(RuntimeError, match="setup"):
        task.train_loader(2, 0)
    with pytest.raises(ValueError, match="config.train.stateful needs a task with contiguous streams; Classif"):
        task.stream_loader("train", 2, 8)
