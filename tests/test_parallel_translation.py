"""Translation on real sentence pairs (seqjax.tasks.parallel): batches from
parallel files, length limits, unknown tokens, training RNN and Transformer
encoder-decoders through the Trainer, Transformer decoding, decode.py."""

import io
import json
import os
import sys
from contextlib import redirect_stderr, redirect_stdout

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import multi30k
from seqjax import config as config_lib
from seqjax import runs, tasks, training
from seqjax.data.tokenizers import EOS_ID, PAD_ID, SOS_ID, UNK_ID
from seqjax.nn import transformer
from seqjax.tasks import parallel, translation

TRAIN = [
    ("Ein Hund läuft im Park.", "A dog runs in the park."),
    ("Eine Katze schläft.", "A cat sleeps."),
    ("Ein Mann liest ein Buch.", "A man reads a book."),
    ("Zwei Kinder spielen im Sand.", "Two children play in the sand."),
    ("", "An empty source line."),  # dropped from training
    (
        "Ein Hund und eine Katze und ein Mann und zwei Kinder spielen im Park.",
        "A dog and a cat and a man and two children play in the park.",
    ),  # 15 / 16 tokens: over the limit
    ("Die Frau lacht.", "The woman laughs."),
]
VAL = [("Ein Mann schläft.", "A man sleeps."), ("Die Katze liest.", "The cat reads.")]
TEST = [
    ("Ein Mann läuft.", "A man runs."),
    ("Zwei Kinder spielen im Park.", "Two children play in the park."),
    ("Die Frau liest ein Buch.", "The woman reads a book."),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Aligned de/en files of the three splits, and a TFDS data_dir."""
    root = tmp_path_factory.mktemp("pairs")
    for split, pairs in (("train", TRAIN), ("val", VAL), ("test", TEST)):
        for side, lang in enumerate(("de", "en")):
            (root / f"{split}.{lang}").write_text("".join(pair[side] + "\n" for pair in pairs), encoding="utf-8")
    return root


def data_config(files, **overrides):
    paths = {split: str(files / f"{split}.{{lang}}") for split in ("train", "val", "test")}
    data = {
        "source": {
            "name": "local/parallel",
            "data_dir": str(files / "tfds"),
            "languages": ["de", "en"],
            "paths": paths,
        },
        "splits": {"train": "train", "eval": "val", "test": "test"},
        "tokenizer": "word",
        "vocab_size": 0,
        "lower": False,
        "pad_to_multiple": 4,
    }
    data.update(overrides)
    return ml_collections.ConfigDict(data)


def make_task(files, workdir=None, data=None, **task_overrides):
    config = ml_collections.ConfigDict(
        {"name": "parallel_translation", "max_source_len": 12, "max_target_len": 12, **task_overrides}
    )
    task = tasks.get(config, data or data_config(files))
    task.setup(workdir)
    return task


def test_batches_frame_targets_with_sos_and_eos_and_round_trip_the_text(files):
    task = make_task(files)
    assert task.vocab_size == task.source_tokenizer.vocab_size and task.output_size == task.target_vocab_size
    batches = list(task.eval_loader("test", 8))
    assert len(batches) == 1
    batch = batches[0]
    real = batch["weights"] > 0
    assert real.tolist() == [True] * 3 + [False] * 5  # filler rows weigh 0
    source_time, target_time = batch["inputs"].shape[1], batch["targets"].shape[1]
    assert source_time % 4 == 0 and target_time % 4 == 0
    assert source_time == 8 and target_time == 8  # longest: 6 source tokens, 7 target tokens + <eos>
    for row in range(3):
        n = batch["target_lengths"][row]
        assert batch["targets"][row, n - 1] == EOS_ID and (batch["targets"][row, n:] == PAD_ID).all()
        assert batch["decoder_inputs"][row, 0] == SOS_ID
        np.testing.assert_array_equal(batch["decoder_inputs"][row, 1:n], batch["targets"][row, : n - 1])
        assert (batch["decoder_inputs"][row, n:] == PAD_ID).all()
        assert (batch["inputs"][row, batch["lengths"][row] :] == PAD_ID).all()
    # Word tokens (punctuation split off) decode back to the raw sentences.
    assert task.source_texts(batch["inputs"][:3]) == [s for s, _ in TEST]
    assert task.detokenize(batch["targets"][:3]) == [t for _, t in TEST]
    assert (batch["teacher_forcing_ratio"] == 1.0).all()
    keys = {"inputs", "lengths", "weights", "decoder_inputs", "targets", "target_lengths", "teacher_forcing_ratio"}
    assert set(batch) == keys


def test_training_pairs_over_the_limits_are_filtered_or_truncated(files):
    filtered = make_task(files, too_long="filter")
    # The empty-source pair and the 15-token pair are dropped; the rest kept in file order.
    assert filtered.train_indices().tolist() == [0, 1, 2, 3, 6]
    assert filtered.train_report == {"kept": 5, "total": 7, "empty": 1, "too_long": 1}
    truncated = make_task(files, too_long="truncate")
    assert truncated.train_indices().tolist() == [0, 1, 2, 3, 5, 6]
    lengths = []
    iterator = truncated.train_loader(6, seed=0).iterator()
    batch = next(iterator)
    iterator.close()
    lengths = batch["lengths"].tolist()
    assert max(lengths) == 12 and batch["inputs"].shape[1] == 12  # cut to max_source_len
    assert batch["target_lengths"].max() == 13 and batch["targets"].shape[1] == 13  # 12 tokens + <eos>
    assert sorted(batch["targets"][:, 0].tolist()) == sorted(
        truncated.target_tokenizer.encode(t.split()[0])[0] for i, (_, t) in enumerate(TRAIN) if i in (0, 1, 2, 3, 5, 6)
    )
    with pytest.raises(ValueError, match="max_source_len=12"):
        make_task(files, too_long="error").train_indices()


def test_teacher_forcing_schedule_follows_the_batch_count_across_a_resume(files):
    task = make_task(files, teacher_forcing_ratio=0.0, teacher_forcing_schedule="linear", teacher_forcing_decay_steps=4)
    iterator = task.train_loader(4, seed=0).iterator()
    ratios = [float(next(iterator)["teacher_forcing_ratio"][0]) for _ in range(2)]
    state = iterator.get_state()
    third = next(iterator)
    iterator.close()
    resumed = task.train_loader(4, seed=0).iterator()
    resumed.set_state(state)
    again = next(resumed)
    resumed.close()
    assert ratios == [1.0, 0.75]
    assert float(third["teacher_forcing_ratio"][0]) == float(again["teacher_forcing_ratio"][0]) == 0.5
    np.testing.assert_array_equal(third["inputs"], again["inputs"])


def test_unknown_tokens_become_unk_and_bad_sources_raise(files):
    task = make_task(files)
    inputs, lengths, unknown = task.encode_texts(["Ein Zebra läuft im Xylophon.", "Die Katze schläft."])
    assert unknown == 2 and lengths.tolist() == [6, 4]
    assert inputs[0, 1] == UNK_ID and inputs[0, 4] == UNK_ID and (inputs[1, 4:] == PAD_ID).all()
    with pytest.raises(ValueError, match="source 1 is empty"):
        task.encode_texts(["Ein Hund.", "   "])
    with pytest.raises(ValueError, match="max_source_len=12"):
        task.encode_texts(["Hund " * 13])


def test_bad_configs_name_the_problem(files):
    with pytest.raises(ValueError, match="too_long must be one of"):
        make_task(files, too_long="drop")
    with pytest.raises(ValueError, match="config.data.max_len does not apply"):
        make_task(files, data=data_config(files, max_len=10))
    with pytest.raises(ValueError, match="source_language='fr' is not a feature"):
        make_task(files, source_language="fr")
    with pytest.raises(ValueError, match="max_target_len must be a positive integer"):
        make_task(files, max_target_len=0)
    with pytest.raises(RuntimeError, match="setup"):
        tasks.get(ml_collections.ConfigDict({"name": "parallel_translation"}), data_config(files)).detokenize([[4]])


def test_word_punctuation_round_trip():
    text = "A man (in a hat) says: hello, world! It's a well-known dog."
    split = parallel.split_punctuation(text)
    assert "( in" in split and "hat )" in split and "It's" in split and "well-known" in split
    assert parallel.join_punctuation(" ".join(split.split())) == text


def smoke_config(model: str, tmp_path, steps: int = 10):
    config = multi30k.get_config(f"{model},smoke")
    config.data.source.data_dir = str(tmp_path / "tfds")
    config.train.num_steps = steps
    config.optimizer.learning_rate = 1e-2
    config.optimizer.warmup_steps = 0
    config.train.eval_every = config.train.checkpoint_every = steps  # one evaluation, one save: fast
    config_lib.validate(config)
    return config


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """The smoke config (configs/samples/parallel_*) trained for 10 steps
    through the Trainer, for the Luong RNN and the Transformer."""
    runs = {}
    for model in ("luong", "transformer"):
        workdir = tmp_path_factory.mktemp(model)
        final = training.train_and_evaluate(smoke_config(model, workdir), str(workdir / "run"))
        runs[model] = (str(workdir / "run"), final)
    return runs


@pytest.mark.parametrize("model", ["luong", "transformer"])
def test_rnn_and_transformer_train_through_the_trainer(trained_runs, model):
    workdir, final = trained_runs[model]
    logged = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    train_losses = [m["train_loss"] for m in logged if "train_loss" in m]
    assert final["step"] == 10 and np.isfinite(final["test_loss"])
    assert train_losses[-1] < train_losses[0], train_losses
    assert final["test_perplexity"] == pytest.approx(np.exp(final["test_loss"]), rel=1e-5)
    for name in ("source_tokenizer.json", "target_tokenizer.json"):
        assert os.path.exists(os.path.join(workdir, name))


def tiny_transformer():
    cfg = transformer.TransformerConfig(
        vocab_size=13, d_model=16, num_heads=2, num_layers=1, d_ff=32, dropout_rate=0.0, implementation="xla"
    )
    model = transformer.TransformerSeq2Seq(cfg, target_vocab_size=11)
    rng = np.random.default_rng(0)
    inputs = jnp.asarray(rng.integers(4, 13, (3, 5)), jnp.int32)
    lengths = jnp.asarray([5, 3, 1], jnp.int32)
    params = model.init(jax.random.key(1), inputs, lengths, decoder_inputs=jnp.zeros((3, 2), jnp.int32))["params"]
    # Larger weights make the untrained distribution peaked: no near-ties, and <eos> is reachable.
    params = jax.tree.map(lambda p: p * 3.0, params)
    return model, params, inputs, lengths


def test_transformer_greedy_decoding_equals_argmax_over_the_full_prefix():
    model, params, inputs, lengths = tiny_transformer()
    max_len = 7
    tokens = np.asarray(translation.generate(model, params, inputs, lengths, max_len=max_len))
    # Reference: rerun the whole teacher-forced model (no KV cache) on the prefix so far and take
    # the argmax at its last position. The prefix is padded to max_len so one compiled shape
    # serves every step; the decoder is causal, so the padding cannot reach position t.
    forward = jax.jit(lambda prefix: model.apply({"params": params}, inputs, lengths, decoder_inputs=prefix))
    prefix = np.full((3, max_len), PAD_ID, np.int32)
    prefix[:, 0] = SOS_ID
    expected, finished = [], np.zeros(3, bool)
    for t in range(max_len):
        new = np.asarray(forward(jnp.asarray(prefix))[:, t].argmax(-1), np.int32)
        new = np.where(finished, PAD_ID, new)
        finished |= new == EOS_ID
        expected.append(new)
        if t + 1 < max_len:
            prefix[:, t + 1] = new
    np.testing.assert_array_equal(tokens, np.stack(expected, axis=1))
    assert finished.any()  # <eos> was reached, and the rows after it are padding
    beam_one = translation.generate(model, params, inputs, lengths, max_len=max_len, beam_size=1)
    np.testing.assert_array_equal(np.asarray(beam_one), tokens)
    with pytest.raises(ValueError, match="beam_size must be 0"):
        translation.generate(model, params, inputs, lengths, max_len=max_len, beam_size=-1)


def run_experiment(name, argv, stdin=""):
    """(stdout, stderr) of experiments.<name>.main under the flags `argv`."""
    from absl import flags

    from tests.conftest import import_experiment

    script = import_experiment(name)
    flags.FLAGS.unparse_flags()
    flags.FLAGS([name] + argv)
    out, err = io.StringIO(), io.StringIO()
    old_stdin, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            script.main([name])
    finally:
        sys.stdin = old_stdin
    return out.getvalue(), err.getvalue()


def test_decode_script_scores_the_test_split(trained_runs):
    workdir, _ = trained_runs["transformer"]
    out, err = run_experiment("decode", [f"--run_dir={workdir}", "--beam_size=2", "--batch_size=8"])
    result = json.loads(out.strip().splitlines()[-1])
    assert result["search"] == "beam2" and result["sentences"] == 8  # every pair of the sample test split
    assert 0.0 <= result["bleu"] <= 100.0 and "case:mixed" in result["bleu_signature"]
    assert "tok:13a" in result["bleu_signature"] and "BLEU = " in err
    assert os.path.exists(os.path.join(workdir, "decode_test_beam2.json"))


@pytest.mark.parametrize("model", ["luong", "transformer"])
def test_translate_script_writes_hypotheses_scores_references_and_plots_alignments(trained_runs, model, tmp_path):
    from absl import app

    workdir, _ = trained_runs[model]
    sources = ["Ein Zebra läuft im Park.", "Die Katze schläft.", "Ein Mann liest ein Buch."]
    (tmp_path / "de.txt").write_text("".join(s + "\n" for s in sources), encoding="utf-8")
    references = ["A zebra runs in the park.", "The cat sleeps.", "A man reads a book."]
    (tmp_path / "en.txt").write_text("".join(r + "\n" for r in references), encoding="utf-8")
    hyps = tmp_path / "hyps.txt"
    out, err = run_experiment(
        "translate",
        [
            f"--run_dir={workdir}",
            f"--input={tmp_path / 'de.txt'}",
            f"--output={hyps}",
            f"--references={tmp_path / 'en.txt'}",
            "--batch_size=2",
            "--plot=0,2",
            f"--plot_dir={tmp_path / 'maps'}",
        ],
    )
    hypotheses = hyps.read_text(encoding="utf-8").splitlines()
    assert len(hypotheses) == 3 and "1 source token(s) outside the run's vocabulary" in err  # "Zebra"
    result = json.loads(out.strip().splitlines()[-1])
    bleu, _ = translation.corpus_bleu(hypotheses, references)
    assert result["bleu"] == pytest.approx(bleu) and result["sentences"] == 3 and "BLEU = " in err
    for index in (0, 2):
        assert (tmp_path / "maps" / f"alignment_{index}.png").read_bytes()[:4] == b"\x89PNG"
    # Batches of 2 with a filled-up last batch decode exactly as one batch of 3, and stdin works.
    out, _ = run_experiment(
        "translate", [f"--run_dir={workdir}", "--batch_size=3"], stdin=(tmp_path / "de.txt").read_text(encoding="utf-8")
    )
    assert out.splitlines() == hypotheses
    run = runs.load_run(str(workdir))  # the Python API translates as the command does
    assert run.translate(sources, batch_size=2) == hypotheses
    with pytest.raises(ValueError, match=r"^the run trained \w+, an encoder-decoder: translate with"):
        run.predict(sources)
    with pytest.raises(app.UsageError, match="source 0 is empty"):
        run_experiment("translate", [f"--run_dir={workdir}", "--source= "])
    (tmp_path / "two.txt").write_text("a\nb\n")
    with pytest.raises(app.UsageError, match="2 references for 1 sources"):
        run_experiment(
            "translate", [f"--run_dir={workdir}", "--source=Ein Hund.", f"--references={tmp_path / 'two.txt'}"]
        )
    with pytest.raises(app.UsageError, match="beam_size must be 0"):
        run_experiment("translate", [f"--run_dir={workdir}", "--source=Ein Hund.", "--beam_size=-1"])


def test_a_tfds_translation_dataset_by_name_takes_its_languages_from_the_supervised_keys(tmp_path):
    import tensorflow_datasets as tfds

    data = ml_collections.ConfigDict(
        {
            "source": {"name": "ted_hrlr_translate/pt_to_en", "data_dir": ""},
            "splits": {"train": "train", "eval": "validation", "test": "test"},
            "tokenizer": "char",
            "pad_to_multiple": 8,
        }
    )
    with tfds.testing.mock_data(num_examples=6):
        task = make_task(tmp_path, workdir=str(tmp_path), data=data, max_source_len=200, max_target_len=200)
        batch = next(iter(task.eval_loader("test", 8)))
    assert task.languages == ("pt", "en")
    assert batch["weights"].tolist() == [1.0] * 6 + [0.0] * 2
    assert (batch["decoder_inputs"][:, 0] == SOS_ID).all() and batch["inputs"].max() < task.vocab_size
    assert (tmp_path / "source_tokenizer.json").exists() and (tmp_path / "target_tokenizer.json").exists()
