"""A trained model on raw inputs: `seqjax.runs.Run.predict` and the
`seqjax-predict` command reproduce the run's own test metrics on its test
split, load the best checkpoint, and refuse inputs they cannot take."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from seqjax import runs, training
from seqjax.data.builders.conll import read_conll
from seqjax.tasks import entities, tag_schemes
from tests.helpers import REPO, load_config

SAMPLES = os.path.join(REPO, "configs", "samples")


def trained(name, workdir, data_dir, **train):
    config = load_config(name, "smoke")
    config.data.source.data_dir = str(data_dir)
    config.train.update(**train)
    return training.train_and_evaluate(config, str(workdir))


def predict_command(*args, stdin=None, cwd):
    path = shutil.which("seqjax-predict")
    assert path is not None, "seqjax-predict is not on PATH: install seqjax with `pip install -e .`"
    return subprocess.run([path, *args], input=stdin, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_the_predict_command_reproduces_a_classifiers_test_accuracy(tmp_path, data_dir):
    final = trained("sst2", tmp_path / "run", data_dir)
    # The smoke config's test split is the sample's dev file.
    rows = [line.split("\t") for line in open(os.path.join(SAMPLES, "sentiment_dev.tsv")).read().splitlines()[1:]]
    (tmp_path / "texts.txt").write_text("".join(text + "\n" for text, _ in rows), encoding="utf-8")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    result = predict_command(f"--run_dir={tmp_path / 'run'}", f"--input={tmp_path / 'texts.txt'}", cwd=outside)
    assert result.returncode == 0, result.stderr[-2000:]
    predictions = [json.loads(line) for line in result.stdout.splitlines()]
    assert [p["input"] for p in predictions] == [text for text, _ in rows]
    accuracy = np.mean([p["label_id"] == int(label) for p, (_, label) in zip(predictions, rows)])
    assert accuracy == pytest.approx(final["test_accuracy"], abs=1e-6)
    assert all(p["label"] == str(p["label_id"]) and abs(sum(p["probabilities"]) - 1) < 1e-9 for p in predictions)


@pytest.mark.slow
def test_a_taggers_predictions_from_stdin_give_its_test_accuracy_and_entity_f1(tmp_path, data_dir):
    final = trained("conll_tagger", tmp_path / "run", data_dir)
    sentences = read_conll(os.path.join(SAMPLES, "ner_dev.conll"), 0, -1, None)
    stdin = "".join(" ".join(tokens) + "\n" for tokens, _, _, _ in sentences)
    result = predict_command(f"--run_dir={tmp_path / 'run'}", cwd=tmp_path, stdin=stdin)
    assert result.returncode == 0, result.stderr[-2000:]
    predicted = [json.loads(line)["tags"] for line in result.stdout.splitlines()]
    gold = [tags for _, tags, _, _ in sentences]
    assert [len(p) for p in predicted] == [len(g) for g in gold]
    # Token accuracy is counted in the training scheme (IOBES); predictions come in the files' (IOB2).
    trained_scheme = [
        (tag_schemes.convert(p, "IOBES"), tag_schemes.convert(g, "IOBES")) for p, g in zip(predicted, gold)
    ]
    hits = sum(p == g for ps, gs in trained_scheme for p, g in zip(ps, gs))
    assert hits / sum(len(g) for g in gold) == pytest.approx(final["test_token_accuracy"], abs=1e-6)
    assert entities.entity_scores(gold, predicted)["f1"] == pytest.approx(final["test_f1"], abs=1e-9)


@pytest.mark.slow
def test_a_tagger_reading_pos_tags_takes_json_lines_and_reproduces_its_test_accuracy(tmp_path, data_dir):
    config = load_config("conll_tagger", "smoke,chunk,pos_input")
    config.data.source.data_dir = str(data_dir)
    final = training.train_and_evaluate(config, str(tmp_path / "run"))
    sentences = read_conll(os.path.join(SAMPLES, "ner_dev.conll"), 0, 2, None, [("pos", 1)])
    stdin = "".join(json.dumps({"tokens": tokens, "pos": columns["pos"]}) + "\n" for tokens, _, _, columns in sentences)
    result = predict_command(f"--run_dir={tmp_path / 'run'}", cwd=tmp_path, stdin=stdin)
    assert result.returncode == 0, result.stderr[-2000:]
    predicted = [json.loads(line)["tags"] for line in result.stdout.splitlines()]
    gold = [tags for _, tags, _, _ in sentences]
    # Token accuracy is counted in the training scheme (IOBES); predictions come in the files' (IOB2).
    trained_scheme = [
        (tag_schemes.convert(p, "IOBES"), tag_schemes.convert(g, "IOBES")) for p, g in zip(predicted, gold)
    ]
    hits = sum(p == g for ps, gs in trained_scheme for p, g in zip(ps, gs))
    assert hits / sum(len(g) for g in gold) == pytest.approx(final["test_token_accuracy"], abs=1e-6)
    assert entities.entity_scores(gold, predicted)["f1"] == pytest.approx(final["test_f1"], abs=1e-9)
    plain = predict_command(f"--run_dir={tmp_path / 'run'}", cwd=tmp_path, stdin="Grace visited Acme\n")
    assert plain.returncode != 0 and "input line 1: not JSON" in plain.stderr


@pytest.mark.slow
def test_the_best_checkpoint_loads_and_bad_inputs_are_refused(tmp_path, data_dir):
    final = trained("sst2", tmp_path / "run", data_dir, best_metric="eval_accuracy")
    best = runs.load_run(str(tmp_path / "run"), checkpoint="best")
    latest = runs.load_run(str(tmp_path / "run"))
    assert best.step == final["best_step"] and latest.step == final["step"] == 20
    with pytest.raises(TypeError, match=r"^input 1 is a int; ClassificationTask predicts on texts$"):
        latest.predict(["fine", 3])
    with pytest.raises(ValueError, match=r"^predict takes a non-empty sequence of inputs"):
        latest.predict("one text, not a list")
    with pytest.raises(ValueError, match=r"^checkpoint must be one of latest, best, got 'newest'$"):
        runs.load_run(str(tmp_path / "run"), checkpoint="newest")
    adding = tmp_path / "adding"
    training.train_and_evaluate(load_config("default", "smoke"), str(adding))
    with pytest.raises(FileNotFoundError, match=r"keeps no best checkpoint \(config.train.best_metric=''\)"):
        runs.load_run(str(adding), checkpoint="best")
    run = runs.load_run(str(adding))
    with pytest.raises(ValueError, match=r"^input 0 has shape \(5,\); AddingTask takes \[T, features\] values, T >= 1"):
        run.predict([np.zeros(5)])
    refused = predict_command(f"--run_dir={adding}", cwd=tmp_path, stdin="[[0.5, 1.0], [0.25\n")
    assert refused.returncode == 1 and "input line 1: not JSON" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.slow
def test_forecasts_come_in_the_series_units_and_give_the_runs_test_mae(tmp_path):
    config = load_config("forecast", "smoke")
    final = training.train_and_evaluate(config, str(tmp_path))
    run = runs.load_run(str(tmp_path))
    task = run.trainer.task
    batch = next(iter(task.eval_batches("test", 10_000, config.seed)))
    real = batch["weights"] > 0
    raw_windows = task.normalizer.denormalize(batch["inputs"][real, :, 0].astype(np.float64))
    raw_targets = task.normalizer.denormalize(batch["targets"][real].astype(np.float64))
    forecasts = np.stack(run.predict(list(raw_windows)))
    assert forecasts.shape == raw_targets.shape
    assert np.mean(np.abs(forecasts - raw_targets)) == pytest.approx(final["test_mae"], rel=1e-4)
