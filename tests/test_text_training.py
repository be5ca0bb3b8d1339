"""Dataset tasks trained end to end: smoke configs through the real entry
point, and a killed run that resumes the same stream of batches."""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from seqjax import training
from tests import helpers
from tests.helpers import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smoke(name, data_dir, variant="smoke"):
    config = load_config(name, variant)
    config.data.source.data_dir = str(data_dir)
    return config


def test_sst2_smoke_through_the_entry_point(tmp_path, data_dir):
    command = [
        sys.executable,
        "-m",
        "experiments.train",
        "--config=configs/sst2.py:smoke",
        f"--workdir={tmp_path}",
        f"--config.data.source.data_dir={data_dir}",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    final = json.loads(result.stdout.strip().splitlines()[-1])
    assert final["step"] == 20 and 0.0 <= final["test_accuracy"] <= 1.0
    assert (tmp_path / "tokenizer.json").exists()
    assert {"data", "state"} <= set(os.listdir(tmp_path / "checkpoints" / "20"))


def test_language_model_smoke_reports_perplexity_and_samples(tmp_path, data_dir):
    final = training.train_and_evaluate(smoke("tinyshakespeare", data_dir), str(tmp_path))
    assert final["test_perplexity"] == pytest.approx(np.exp(final["test_loss"]), rel=1e-5)
    assert final["test_bits_per_token"] == pytest.approx(final["test_loss"] / np.log(2), rel=1e-5)
    command = [
        sys.executable,
        "-m",
        "experiments.sample",
        f"--run_dir={tmp_path}",
        "--prompt=The river",
        "--length=40",
        "--temperature=0.8",
        "--top_k=5",
        "--num_samples=2",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    samples = [line for line in result.stdout.splitlines() if line.startswith("The river")]
    assert len(samples) == 2 and all(len(s) >= len("The river") + 1 for s in samples)


def test_char_gpt_smoke_trains_and_samples_past_its_context(tmp_path, data_dir):
    config = smoke("tinyshakespeare", data_dir, "gpt,smoke")
    assert config.model.name == "transformer_lm" and config.model.d_model == 16  # smoke shrinks the GPT
    final = training.train_and_evaluate(config, str(tmp_path))
    assert final["step"] == 20 and final["test_perplexity"] == pytest.approx(np.exp(final["test_loss"]), rel=1e-5)
    length = 3 * config.data.seq_len  # several windows of the learned position table
    command = [
        sys.executable,
        "-m",
        "experiments.sample",
        f"--run_dir={tmp_path}",
        "--prompt=The river",
        f"--length={length}",
        "--temperature=0",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("The river") and len(result.stdout.rstrip("\n")) >= len("The river") + length // 2


def test_sst2_transformer_smoke_with_batch_norm_trains(tmp_path, data_dir):
    config = smoke("sst2", data_dir, "transformer,smoke")
    config.model.norm = "batch"  # BatchNorm statistics skip the padded positions of real sentences
    final = training.train_and_evaluate(config, str(tmp_path))
    assert final["step"] == 20 and 0.0 <= final["test_accuracy"] <= 1.0 and np.isfinite(final["test_loss"])


def test_stateful_language_model_smoke_trains(tmp_path, data_dir):
    final = training.train_and_evaluate(smoke("tinyshakespeare", data_dir, "smoke,stateful"), str(tmp_path))
    assert np.isfinite(final["test_loss"]) and final["step"] == 20


def test_forecast_smoke_beats_nothing_but_reports_the_naive_baseline(tmp_path):
    final = training.train_and_evaluate(load_config("forecast", "smoke"), str(tmp_path))
    assert final["test_naive_mae"] > 0 and "test_mae_vs_naive" in final
    assert (tmp_path / "normalizer.json").exists()


def test_tagger_smoke_reports_entity_f1(tmp_path, data_dir):
    final = training.train_and_evaluate(smoke("conll_tagger", data_dir), str(tmp_path))
    assert 0.0 <= final["test_f1"] <= 1.0 and 0.0 <= final["test_token_accuracy"] <= 1.0


KILLER = """
import sys
from seqjax import training
from tests.helpers import die_after_step
from tests.helpers import load_config

kill_after_step, workdir, data_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
config = load_config("sst2", "smoke")
config.data.source.data_dir = data_dir
config.train.num_steps = 30
config.optimizer.schedule = "constant"
die_after_step(kill_after_step)
training.train_and_evaluate(config, workdir)
"""


@pytest.mark.slow
def test_killed_dataset_run_resumes_the_same_batches(tmp_path, data_dir):
    def run(workdir, kill_after_step=-1):
        return subprocess.run(
            [sys.executable, "-c", KILLER, str(kill_after_step), str(workdir), str(data_dir)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )

    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert run(reference).returncode == 0
    assert run(killed, kill_after_step=15).returncode == -signal.SIGKILL  # last checkpoint: 10
    finished = run(killed)
    assert finished.returncode == 0, finished.stderr[-3000:]
    # Steps 11..30 saw the batches the uninterrupted run saw: identical losses.
    assert helpers.losses_by_step(killed) == helpers.losses_by_step(reference)
    assert json.loads((killed / "final_metrics.json").read_text()) == json.loads(
        (reference / "final_metrics.json").read_text()
    )


def test_finetune_starts_from_the_language_model_and_keeps_it_frozen(tmp_path, data_dir):
    from seqjax import runs, transfer

    lm_dir, clf_dir = tmp_path / "lm", tmp_path / "clf"
    training.train_and_evaluate(smoke("sst2", data_dir, "lm_pretrain,smoke"), str(lm_dir))
    config = smoke("sst2", data_dir, "finetune,smoke")
    config.train.init_from = str(lm_dir)
    config.data.tokenizer_path = str(lm_dir / "tokenizer.json")
    config.train.freeze_steps = 1000  # longer than the run: the LM weights never move
    training.train_and_evaluate(config, str(clf_dir))
    pretrained = transfer.latest_params(str(lm_dir))
    tuned = runs.load_run(str(clf_dir)).params
    for module in ("embed", "stack"):
        for a, b in zip(jax.tree.leaves(pretrained[module]), jax.tree.leaves(tuned[module])):
            np.testing.assert_array_equal(a, b)
    assert (clf_dir / "tokenizer.json").read_text() == (lm_dir / "tokenizer.json").read_text()


def test_imdb_by_tfds_name_trains_on_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    config = load_config("sst2", "imdb,smoke")
    config.data.splits.eval = "test"  # mock data has whole splits only
    config.data.splits.train = "train"
    config.train.num_steps = 10
    with tfds.testing.mock_data(num_examples=24):
        final = training.train_and_evaluate(config, str(tmp_path))
    assert final["step"] == 10 and 0.0 <= final["test_accuracy"] <= 1.0


def test_tinyshakespeare_by_tfds_name_trains_on_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    config = load_config("tinyshakespeare", "smoke")
    config.data.source = {"name": "tiny_shakespeare", "data_dir": "", "manual_dir": ""}
    config.data.seq_len = 4  # mock texts are a few characters each
    config.train.num_steps = 10
    with tfds.testing.mock_data(num_examples=30):
        final = training.train_and_evaluate(config, str(tmp_path))
    assert final["step"] == 10 and final["test_perplexity"] > 1.0


def test_pretrained_embeddings_from_a_vectors_file_land_at_tokenizer_ids(tmp_path, data_dir):
    from seqjax import embeddings, runs

    vectors = {"great": np.full(16, 0.5, np.float32), "dull": np.full(16, -0.5, np.float32)}
    path = tmp_path / "vectors.txt"
    embeddings.WordVectors(list(vectors), np.stack(list(vectors.values()))).save(str(path), "word2vec")
    config = smoke("sst2", data_dir)
    config.model.pretrained_embeddings = str(path)
    config.model.freeze_embedding = True
    config.train.num_steps = 10
    training.train_and_evaluate(config, str(tmp_path / "run"))
    run = runs.load_run(str(tmp_path / "run"))
    table = np.asarray(run.params["embed"]["embedding"])
    index = run.trainer.task.tokenizer.word_index
    np.testing.assert_array_equal(table[index["great"]], vectors["great"])
    np.testing.assert_array_equal(table[index["dull"]], vectors["dull"])
