"""Bad inputs as researchers really make them: each is refused with the
exception type the code documents and a message that names the offending
key, argument, file or value (and, where there is one, the fix)."""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.experimental import checkify

from seqjax import config as config_lib
from seqjax import decoding, models, tasks, training, transfer
from seqjax.data.builders.common import SourceError
from seqjax.data.sequence import pad_sequences
from seqjax.nn import checks, recurrent, transformer
from tests.helpers import REPO, load_config

# ---------------------------------------------------------------- config values

# (config, variant, key, value, what the message must say after "bad value key=value: ")
BAD_VALUES = [
    ("default", "smoke", "optimizer.learning_rate", float("inf"), "must be a finite number"),
    ("default", "smoke", "optimizer.learning_rate", float("nan"), "must be a finite number"),
    ("default", "smoke", "optimizer.learning_rate", 0.0, "must be > 0"),
    ("default", "smoke", "optimizer.learning_rate", -0.001, "must be > 0"),
    ("default", "smoke", "optimizer.end_lr_fraction", -1.0, "must be in [0, 1]"),
    ("default", "smoke", "optimizer.end_lr_fraction", 1.5, "must be in [0, 1]"),
    ("default", "smoke", "optimizer.warmup_steps", -1, "must be >= 0 (0 turns it off)"),
    ("default", "smoke", "optimizer.warmup_steps", 20, "must be < config.train.num_steps=20"),
    ("default", "smoke", "optimizer.b1", 1.0, "must be in [0, 1)"),
    ("default", "smoke", "optimizer.b2", -0.1, "must be in [0, 1)"),
    ("default", "smoke", "optimizer.momentum", 1.5, "must be in [0, 1)"),
    ("default", "smoke", "optimizer.weight_decay", -1e-4, "must be >= 0 (0 turns it off)"),
    ("default", "smoke", "optimizer.clip_global_norm", -1.0, "must be >= 0 (0 turns it off)"),
    ("default", "smoke", "optimizer.clip_value", float("nan"), "must be a finite number"),
    ("default", "smoke", "optimizer.l2", float("inf"), "must be a finite number"),
    ("default", "smoke", "optimizer.name", "adagrad", "must be one of ['adam', 'adamw', 'sgd']"),
    ("default", "smoke", "optimizer.schedule", "exponential", "must be one of ['constant', 'cosine', 'linear']"),
    ("default", "smoke", "model.dropout_rate", 1.0, "must be in [0, 1)"),
    ("default", "smoke", "model.dropout_rate", -0.1, "must be in [0, 1)"),
    ("default", "smoke", "model.hidden_size", 0, "must be a positive integer"),
    ("default", "smoke", "model.hidden_size", 8.5, "must be a positive integer"),
    ("default", "smoke", "model.num_layers", 0, "must be a positive integer"),
    ("default", "smoke", "model.cell", "lstmm", "must be one of ["),
    ("default", "smoke", "model.name", "mamba", "must be one of ["),
    ("default", "smoke", "train.batch_size", 0, "must be a positive integer"),
    ("default", "smoke", "train.num_steps", -5, "must be a positive integer"),
    ("default", "smoke", "train.log_every", 0, "must be a positive integer"),
    ("default", "smoke", "train.eval_every", 0, "must be a positive integer"),
    ("default", "smoke", "train.checkpoint_every", 7, "must be a multiple of config.train.log_every=5"),
    ("default", "smoke", "train.nonfinite", "ignore", "must be one of ['stop', 'skip']"),
    ("default", "smoke", "train.tbptt_len", -1, "must be an integer >= 0"),
    (
        "default",
        "smoke",
        "train.tbptt_backprop_len",
        4,
        "is the k2 of TBPTT(k1, k2) and needs truncation: set config.train.tbptt_len (k1) > 0",
    ),
    ("default", "smoke", "train.tbptt_update", "sometimes", "must be one of ["),
    ("default", "smoke", "train.eval_batches", -1, "must be an integer >= 0"),
    ("default", "smoke", "task.name", "sorting", "must be one of ["),
    ("default", "smoke", "task.seq_len", 0, "must be a positive integer"),
    ("default", "smoke", "seed", float("nan"), "must be a finite number"),
    ("sst2", "smoke", "data.tokenizer", "bpe", "must be one of ["),
    ("seq2seq_synthetic", "smoke", "task.teacher_forcing_ratio", 1.5, "must be in [0, 1]"),
    ("transformer_synthetic", "smoke", "model.attention_dropout_rate", 1.0, "must be in [0, 1)"),
    ("transformer_synthetic", "smoke", "model.dropout_rate", 2.0, "must be in [0, 1)"),
]


def with_value(config, key, value):
    *sections, leaf = key.split(".")
    section = config
    for name in sections:
        section = section[name]
    with section.ignore_type():
        section[leaf] = value
    return config


@pytest.mark.parametrize(
    "name,variant,key,value,expectation",
    BAD_VALUES,
    ids=[f"{name}:{key}={value}" for name, _, key, value, _ in BAD_VALUES],
)
def test_a_bad_config_value_is_refused_naming_the_key_and_the_value(name, variant, key, value, expectation):
    config = with_value(load_config(name, variant), key, value)
    with pytest.raises(config_lib.ConfigError) as error:
        config_lib.validate(config)
    assert str(error.value).startswith(f"bad value config.{key}={value!r}: {expectation}"), str(error.value)


# (config, variant, misspelt key, the suggestion)
MISSPELT_KEYS = [
    ("default", "smoke", "model.hiden_size", "config.model.hidden_size"),
    ("default", "smoke", "optimizer.learning_rte", "config.optimizer.learning_rate"),
    ("default", "smoke", "train.num_step", "config.train.num_steps"),
    ("sst2", "smoke", "data.text_kye", "config.data.text_key"),
    ("seq2seq_synthetic", "smoke", "task.teacher_forcing_ration", "config.task.teacher_forcing_ratio"),
]


@pytest.mark.parametrize("name,variant,key,suggestion", MISSPELT_KEYS, ids=[k for _, _, k, _ in MISSPELT_KEYS])
def test_a_misspelt_config_key_is_refused_with_the_key_it_meant(name, variant, key, suggestion):
    config = load_config(name, variant)
    *sections, leaf = key.split(".")
    section = config
    for part in sections:
        section = section[part]
    section[leaf] = 1
    with pytest.raises(config_lib.ConfigError, match=rf"^unknown config key config\.{re.escape(key)} \(did you mean "
                       rf"{re.escape(suggestion)}\?\)"):  # fmt: skip
        config_lib.validate(config)


def test_a_misspelt_top_level_key_is_refused():
    config = load_config("default", "smoke")
    config.sed = 1
    with pytest.raises(
        config_lib.ConfigError, match=r"^unknown config key config\.sed \(did you mean config\.seed\?\)"
    ):
        config_lib.validate(config)


# ---------------------------------------------------------------- config files and specs


def test_an_unknown_variant_is_refused_naming_it_and_the_choices():
    with pytest.raises(config_lib.ConfigError, match=r"unknown variant 'smok' of .*default\.py.*; choose from "):
        load_config("default", "smok")


def test_a_missing_config_file_names_the_path(tmp_path):
    missing = tmp_path / "nothere.py"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        config_lib.load_config(str(missing))


# ---------------------------------------------------------------- the Python API


def test_replicas_need_one_workdir_each(tmp_path):
    config = load_config("default", "smoke")
    with pytest.raises(ValueError, match=r"^one workdir per config, got 2 configs and 1 workdirs$"):
        training.train_replicas([config, config], [str(tmp_path)])


def test_init_from_a_dir_without_checkpoints_names_the_dir_and_the_key(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"expected {re.escape(str(tmp_path / 'checkpoints'))}/<step>/ .*"
                       r"\(config\.train\.init_from\)"):  # fmt: skip
        transfer.latest_params(str(tmp_path))


def test_pretrained_embeddings_on_a_character_task_name_the_key(tmp_path, data_dir):
    config = load_config("tinyshakespeare", "smoke")
    config.data.source.data_dir = str(data_dir)
    config.model.pretrained_embeddings = str(tmp_path / "vectors.txt")
    with pytest.raises(ValueError, match=r"^config\.model\.pretrained_embeddings needs a task with a word tokenizer"):
        training.Trainer(config, workdir=str(tmp_path))


# ---------------------------------------------------------------- the command line


def train_cli(workdir, *overrides):
    return subprocess.run(
        [sys.executable, "-m", "experiments.train", "--config=configs/default.py:smoke", f"--workdir={workdir}",
         *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
def test_the_entry_point_refuses_an_infinite_learning_rate_and_sets_documented_keys(tmp_path):
    refused = train_cli(tmp_path / "inf", "--config.optimizer.learning_rate=inf")
    assert refused.returncode != 0
    assert "bad value config.optimizer.learning_rate=inf: must be a finite number" in refused.stderr
    assert not os.path.exists(tmp_path / "inf" / "config.json")
    # Keys the README documents can be set on a shipped config.
    accepted = train_cli(tmp_path / "b2", "--config.optimizer.b2=0.98", "--config.optimizer.nesterov=True",
                         "--config.train.num_steps=5", "--config.optimizer.warmup_steps=1")  # fmt: skip
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    optimizer = json.loads((tmp_path / "b2" / "config.json").read_text())["optimizer"]
    assert optimizer["b2"] == 0.98 and optimizer["nesterov"] is True
    assert np.isfinite(json.loads(accepted.stdout.strip().splitlines()[-1])["test_mse"])


def test_the_entry_point_refuses_a_half_described_multi_process_launch(tmp_path):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COORDINATOR", "JAX_NUM", "JAX_PROCESS"))}
    refused = subprocess.run(
        [sys.executable, "-m", "experiments.train", "--config=configs/default.py:smoke", f"--workdir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**environ, "JAX_COORDINATOR_ADDRESS": "h:1"},
    )  # fmt: skip
    assert refused.returncode != 0
    assert "JAX_COORDINATOR_ADDRESS=h:1 is set but JAX_NUM_PROCESSES and JAX_PROCESS_ID are not" in refused.stderr
    assert "Traceback" not in refused.stderr


# ---------------------------------------------------------------- token ids and lengths


def token_model():
    """A token-id LSTM classifier (vocabulary 10, T = 4), its variables and good inputs."""

    model = models.RecurrentModel(
        stack=recurrent.RecurrentStack(cell="lstm", hidden_size=4), output_size=2, vocab_size=10, embed_size=3
    )
    tokens, lengths = jnp.array([[1, 2, 3, 0], [4, 5, 0, 0]]), jnp.array([3, 2])
    return model, model.init(jax.random.key(0), tokens, lengths), tokens, lengths


@pytest.mark.parametrize(
    "bad_id,expected",
    [(10, r"inputs holds token id 10 at position \(1, 0\), outside \[0, 10\) \(1 such ids\)"),
     (-1, r"inputs holds token id -1 at position \(1, 0\), outside \[0, 10\)")],
)  # fmt: skip
def test_an_out_of_range_token_id_is_refused_in_an_eager_call(bad_id, expected):
    model, variables, tokens, lengths = token_model()
    with pytest.raises(ValueError, match=expected):
        model.apply(variables, tokens.at[1, 0].set(bad_id), lengths)


@pytest.mark.parametrize("bad_length", [5, -1])
def test_a_length_outside_the_time_axis_is_refused_in_an_eager_call(bad_length):
    model, variables, tokens, lengths = token_model()
    with pytest.raises(ValueError, match=rf"^lengths\[0\] = {bad_length} is outside \[0, 4\] \(the time axis"):
        model.apply(variables, tokens, lengths.at[0].set(bad_length))


def test_under_jit_bad_ids_and_lengths_give_nan_in_their_row_only():

    model, variables, tokens, lengths = token_model()
    apply = jax.jit(model.apply)
    good = np.asarray(apply(variables, tokens, lengths))
    bad_id = np.asarray(apply(variables, tokens.at[1, 0].set(-1), lengths))
    bad_length = np.asarray(apply(variables, tokens, lengths.at[1].set(7)))
    for out in (bad_id, bad_length):
        np.testing.assert_array_equal(out[0], good[0])
        assert np.all(np.isnan(out[1]))


def test_checked_mode_raises_under_jit_with_the_offending_value():

    model, variables, tokens, lengths = token_model()
    with checks.enabled():
        checked = jax.jit(checkify.checkify(model.apply))
        error, _ = checked(variables, tokens.at[0, 2].set(12), lengths)
        with pytest.raises(checkify.JaxRuntimeError, match=r"inputs holds token id 12 outside \[0, 10\)"):
            error.throw()
        error, _ = checked(variables, tokens, lengths.at[1].set(-3))
        with pytest.raises(checkify.JaxRuntimeError, match=r"lengths holds length -3 outside \[0, 4\]"):
            error.throw()
        error, _ = checked(variables, tokens, lengths)
        error.throw()  # good inputs: no error


def test_a_transformer_refuses_an_out_of_range_token_id():

    config = transformer.TransformerConfig(d_model=8, num_heads=2, num_layers=1, d_ff=16, max_len=8)
    embedder = transformer.Embedder(config, vocab_size=5)
    tokens, positions = np.array([[1, 2, 5]]), np.arange(3)

    variables = embedder.init(jax.random.key(0), np.array([[1, 2, 3]]), positions)
    with pytest.raises(ValueError, match=r"inputs holds token id 5 at position \(0, 2\), outside \[0, 5\)"):
        embedder.apply(variables, tokens, positions)


def test_pad_sequences_refuses_ids_its_dtype_cannot_hold():

    with pytest.raises(ValueError, match=r"^sequence 1 holds 300, outside the range of dtype int8 \[-128, 127\]"):
        pad_sequences([[1, 2], [1, 2, 300]], dtype="int8")


# ---------------------------------------------------------------- decoding and sampling


def test_a_nan_length_penalty_is_refused_naming_alpha():

    with pytest.raises(ValueError, match=r"^length penalty alpha must be a finite number >= 0, got nan$"):
        decoding.beam_search(None, None, jnp.zeros((1,), jnp.int32), beam_size=2, max_new_tokens=3,
                             eos_id=1, alpha=float("nan"))  # fmt: skip


@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), -1.0])
def test_a_temperature_that_is_not_a_finite_non_negative_number_is_refused(temperature):

    with pytest.raises(
        ValueError, match=rf"^temperature must be a finite number >= 0 \(0 = greedy\), got {temperature}$"
    ):
        decoding.next_tokens(jnp.zeros((1, 4)), jax.random.key(0), temperature, top_k=0, top_p=1.0)


def decode_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "experiments.decode", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_decode_refuses_bad_flags_and_a_run_that_does_not_generate(tmp_path):
    zero = decode_cli(f"--run_dir={tmp_path}", "--batch_size=0")
    assert zero.returncode != 0 and "flag --batch_size=0: 0 is not a positive integer" in zero.stderr
    nan = decode_cli(f"--run_dir={tmp_path}", "--alpha=nan")
    assert (
        nan.returncode != 0
        and "--alpha must be a finite number >= 0 (0 ranks by log-probability), got nan" in nan.stderr
    )
    trained = train_cli(tmp_path / "adding", "--config.train.num_steps=5", "--config.optimizer.warmup_steps=1")
    assert trained.returncode == 0, trained.stderr[-2000:]
    not_seq2seq = decode_cli(f"--run_dir={tmp_path / 'adding'}")
    assert not_seq2seq.returncode != 0
    assert f"--run_dir={tmp_path / 'adding'} holds a run of task 'adding', which does not generate sequences" in (
        not_seq2seq.stderr
    )


# ---------------------------------------------------------------- data files


def conll_task(tmp_path, data_dir, train_text, dev_text):
    (tmp_path / "train.conll").write_text(train_text)
    (tmp_path / "dev.conll").write_text(dev_text)
    paths = {"train": str(tmp_path / "train.conll"), "validation": str(tmp_path / "dev.conll")}
    source = dict(name="local/conll", data_dir=str(data_dir), paths=paths)
    data = ml_collections.ConfigDict(dict(source=source, splits={}, tokenizer="word", pad_to_multiple=4))
    task = tasks.get(ml_collections.ConfigDict(dict(name="tagging")), data)
    task.setup(None)
    return task


GOOD_CONLL = "EU NNP B-ORG\nrejects VBZ O\n\nPeter NNP B-PER\nsays VBZ O\n\n"


def test_a_conll_line_that_lost_its_tag_is_refused_naming_file_and_line(tmp_path, data_dir):
    broken = GOOD_CONLL + "German JJ B-MISC\ncall\n\n"
    with pytest.raises(SourceError, match=rf"^{re.escape(str(tmp_path / 'train.conll'))}: line 8 has 1 columns, but "
                       r"line 1 has 3: every token line needs the same columns"):  # fmt: skip
        conll_task(tmp_path, data_dir, broken, GOOD_CONLL)


def test_a_tag_seen_only_in_the_evaluation_file_is_refused(tmp_path, data_dir):
    expected = (
        f"{tmp_path / 'dev.conll'}: the sentence starting at line 4 has tag 'B-LOC', "
        "which is not one of tag_names ['O', 'B-ORG', 'B-PER']"
    )
    with pytest.raises(SourceError, match=f"^{re.escape(expected)}"):
        conll_task(tmp_path, data_dir, GOOD_CONLL, GOOD_CONLL.replace("Peter NNP B-PER", "Paris NNP B-LOC"))


def test_fewer_classes_than_the_dataset_has_are_refused(tmp_path, data_dir):
    config = load_config("sst2", "smoke")
    config.data.source.data_dir = str(data_dir)
    config.task.num_classes = 1
    with pytest.raises(ValueError, match=r"^config\.task\.num_classes=1, but the dataset's labels \('label'\) have 2 "
                       r"classes; set it to 2, or 0 to read it from the dataset$"):  # fmt: skip
        training.Trainer(config, workdir=str(tmp_path))


def test_a_misspelt_feature_key_names_the_features_the_data_has(tmp_path, data_dir):
    config = load_config("sst2", "smoke")
    config.data.source.data_dir = str(data_dir)
    config.data.text_key = "sentense"
    expected = "config.data.text_key='sentense' names no feature of 'local/classification'; its features are "
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}" + r"\['label', 'text'\]$"):
        training.Trainer(config, workdir=str(tmp_path))


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_a_vector_file_with_a_non_finite_component_names_the_file_and_the_word(tmp_path, bad):
    from seqjax import embeddings

    path = tmp_path / "vectors.txt"
    path.write_text(f"3 2\nthe 0.1 0.2\ncat 0.3 {bad}\nsat 0.5 0.6\n")
    expected = f"{path}: the vector of word 'cat' (entry 1) holds {bad} (1 such vectors): every component must be"
    with pytest.raises(embeddings.VectorFileError, match=f"^{re.escape(expected)}"):
        embeddings.load_vectors(str(path))


@pytest.mark.parametrize("bad", ["nan", "-inf", "NaN"])
def test_a_series_value_that_is_not_finite_names_the_file_and_the_line(tmp_path, data_dir, bad):
    from seqjax.data import sources

    path = tmp_path / "series.csv"
    path.write_text(f"month,passengers\n1,112\n2,{bad}\n3,132\n")
    with pytest.raises(SourceError, match=rf"^{re.escape(str(path))}: line 3: passengers = '{bad}' is not a finite "
                       r"number \(fill or drop missing values before loading\)$"):  # fmt: skip
        sources.load_time_series(str(path), "passengers", data_dir=str(data_dir))


def test_an_evaluation_split_of_one_class_is_reported(tmp_path, data_dir, caplog):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + "good film\t1\nbad film\t0\n" * 4)
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\n" + "good film\t1\n" * 3)
    config = load_config("sst2", "smoke")
    config.data.source.data_dir = str(data_dir)
    config.data.source.paths = {"train": str(tmp_path / "train.tsv"), "validation": str(tmp_path / "dev.tsv")}
    with caplog.at_level("WARNING"):
        tasks.get(config.task, config.data).setup(None)
    assert "the eval split (validation) holds only label 1 in its 3 examples: its accuracy measures one class" in (
        caplog.text
    )


def test_the_imdb_variant_reads_local_aclimdb_folders_with_both_classes_in_validation(tmp_path, data_dir):
    for split, count in (("train", 20), ("test", 4)):
        for label in ("neg", "pos"):
            for i in range(count):
                path = tmp_path / "aclImdb" / split / label / f"{i}_{label}.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"a {'great' if label == 'pos' else 'dull'} film number {i}")
    config = load_config("sst2", "imdb_local")
    config.data.source.update(paths=str(tmp_path / "aclImdb"), data_dir=str(data_dir))
    task = tasks.get(config.task, config.data)
    task.setup(None)
    assert task.num_classes == 2
    validation = task.source("eval")
    assert len(validation) == 4 and {int(validation[i]["label"]) for i in range(4)} == {0, 1}


def test_a_smoke_variant_without_a_sample_for_its_data_says_so():
    with pytest.raises(
        ValueError, match=r"^variant smoke replaces the Multi30k files .*it has no Anki sample: drop `anki`"
    ):
        load_config("multi30k", "anki,smoke")


def test_a_corpus_line_that_is_not_utf8_names_the_file_and_the_line(tmp_path):
    from seqjax import word2vec

    path = tmp_path / "corpus.txt"
    path.write_bytes(b"the cat sat\n" + "un café noir\n".encode("latin-1"))
    corpus = word2vec.text_file_corpus(str(path))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: line 2 is not valid UTF-8 \(invalid continuation "
                       r"byte at byte 6\); re-encode the file as UTF-8"):  # fmt: skip
        list(corpus)


@pytest.mark.parametrize("kind", ["classifier", "language_model"])
def test_a_transformer_refuses_a_bad_length_eagerly_and_makes_its_row_nan_under_jit(kind):
    config = transformer.TransformerConfig(d_model=8, num_heads=2, num_layers=1, d_ff=16, max_len=8, vocab_size=5)
    if kind == "classifier":
        model = transformer.TransformerClassifier(config, output_size=2, pooling="cls")
    else:
        model = transformer.TransformerLM(config, output_size=5)
    tokens, lengths = np.array([[1, 2, 3, 0], [4, 1, 0, 0]]), np.array([3, 2])
    variables = model.init(jax.random.key(0), tokens, lengths)
    with pytest.raises(ValueError, match=r"^lengths\[1\] = 5 is outside \[0, 4\]"):
        model.apply(variables, tokens, np.array([3, 5]))
    good = np.asarray(jax.jit(model.apply)(variables, tokens, lengths))
    bad = np.asarray(jax.jit(model.apply)(variables, tokens, np.array([3, -2])))
    np.testing.assert_array_equal(bad[0], good[0])
    assert np.all(np.isnan(bad[1]))
