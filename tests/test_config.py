import os
import re
import subprocess
import sys

import pytest

from configs import default
from seqjax import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_default_config_and_every_variant_validate():
    for variant in (None, *default.VARIANTS, "gru,long,smoke"):
        config_lib.validate(default.get_config(variant))


def test_variants_change_what_they_name():
    assert default.get_config("gru").model.cell == "gru"
    assert default.get_config("irnn").model.cell == "irnn"
    assert default.get_config("long").task.seq_len == 400
    assert default.get_config("copy").task.name == "copy"


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match="unknown variant 'lstmm'"):
        default.get_config("lstmm")


def test_unknown_key_in_a_config_file_is_named_with_a_suggestion():
    config = default.get_config()
    config.unlock()
    config.model.hiden_size = 3
    with pytest.raises(
        config_lib.ConfigError,
        match=r"unknown config key config.model.hiden_size \(did you mean config.model.hidden_size\?\)",
    ):
        config_lib.validate(config)


@pytest.mark.parametrize(
    "section,key,value,message",
    [
        ("model", "cell", "lstmm", r"bad value config.model.cell='lstmm': must be one of"),
        ("model", "hidden_size", 0, r"bad value config.model.hidden_size=0: must be a positive integer"),
        ("model", "dropout_rate", 1.5, r"config.model.dropout_rate=1.5: must be in \[0, 1\)"),
        ("optimizer", "name", "adamm", r"config.optimizer.name='adamm'"),
        ("optimizer", "learning_rate", -1.0, r"config.optimizer.learning_rate=-1.0: must be > 0"),
        ("optimizer", "clip_global_norm", -1.0, r"config.optimizer.clip_global_norm=-1.0: must be >= 0"),
        ("train", "batch_size", -4, r"config.train.batch_size=-4: must be a positive integer"),
        ("task", "name", "nope", r"config.task.name='nope': must be one of"),
    ],
)
def test_bad_values_are_named(section, key, value, message):
    config = default.get_config()
    config[section][key] = value
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate(config)


def run_train(*args):
    return subprocess.run(
        [sys.executable, "-m", "experiments.train", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_entry_point_rejects_unknown_override_key(tmp_path):
    result = run_train("--config=configs/default.py:smoke", f"--workdir={tmp_path}", "--config.model.hiden_size=8")
    assert result.returncode != 0
    assert "hiden_size" in result.stderr
    assert not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.slow
def test_entry_point_rejects_bad_value_before_training(tmp_path):
    result = run_train("--config=configs/default.py:smoke", f"--workdir={tmp_path}", "--config.model.cell=lstmm")
    assert result.returncode != 0
    assert "config.model.cell='lstmm'" in result.stderr
    assert not (tmp_path / "metrics.jsonl").exists()


def test_checkpoint_interval_must_align_with_logging():
    config = default.get_config()
    config.train.checkpoint_every = 150
    with pytest.raises(
        config_lib.ConfigError, match="checkpoint_every=150: must be a multiple of config.train.log_every=100"
    ):
        config_lib.validate(config)


@pytest.mark.parametrize(
    "chunk,backprop,message",
    [
        (10, 5, r"tbptt_backprop_len=5: must be >= config.train.tbptt_len=10"),
        (0, 20, r"tbptt_backprop_len=20: is the k2 of TBPTT\(k1, k2\) and needs truncation"),
        (10, -1, r"tbptt_backprop_len=-1: must be an integer >= 0"),
    ],
)
def test_tbptt_backprop_len_must_cover_the_chunk(chunk, backprop, message):
    config = default.get_config("copy")
    config.train.tbptt_len, config.train.tbptt_backprop_len = chunk, backprop
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate(config)
    config.train.tbptt_backprop_len = max(chunk, 1) * 2 if chunk else 0
    config_lib.validate(config)


def test_data_section_keys_are_checked():
    import ml_collections

    from seqjax import config as config_lib

    config = _sst2_smoke()
    config.data.tokeniser = "word"
    with pytest.raises(
        config_lib.ConfigError,
        match=r"unknown config key config.data.tokeniser \(did you mean config.data.tokenizer\?\)",
    ):
        config_lib.validate(config)
    config = _sst2_smoke()
    config.data.tokenizer = "bytes"
    with pytest.raises(config_lib.ConfigError, match="config.data.tokenizer"):
        config_lib.validate(config)
    config = _sst2_smoke()
    config.data.splits = ml_collections.ConfigDict(dict(dev="validation"))
    with pytest.raises(config_lib.ConfigError, match="unknown config key config.data.splits.dev"):
        config_lib.validate(config)


def _sst2_smoke():
    return config_lib.load_config(os.path.join(REPO, "configs", "sst2.py:smoke"))


# ----------------------------------------------------------------------------- loading config specs


def test_a_spec_loads_its_file_with_the_variants_joined_as_config_flags_passes_them(monkeypatch):
    monkeypatch.chdir(REPO)
    assert config_lib.split_spec("configs/default.py:gru,,long") == ("configs/default.py", ("gru", "long"))
    assert config_lib.split_spec("configs/default.py") == ("configs/default.py", ())
    config = config_lib.load_config("configs/default.py:gru,long")
    assert config.to_dict() == default.get_config("gru,long").to_dict()
    assert config_lib.load_config("configs/default.py:").to_dict() == default.get_config().to_dict()
    # A config that builds on another loads it the same way (its transformer variant reads a sibling file).
    transformer = config_lib.load_config("configs/seq2seq_synthetic.py:transformer")
    assert transformer.model.name == "transformer_seq2seq"


def test_each_load_runs_the_file_afresh(monkeypatch):
    monkeypatch.chdir(REPO)
    first = config_lib.load_config_module("configs/default.py")
    second = config_lib.load_config_module("configs/default.py")
    assert first is not second and first.VARIANTS == default.VARIANTS


def test_a_missing_config_file_is_named_with_the_spec_format(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = (
        f"config file not found: configs/nope.py (relative to {tmp_path}), nor a shipped config of that name; a "
        "config spec is path/to/config.py[:variant[,variant...]], or a shipped config: "
        + ", ".join(config_lib.shipped_config_names())
    )
    with pytest.raises(FileNotFoundError, match=f"^{re.escape(expected)}$"):
        config_lib.load_config("configs/nope.py:smoke")


def test_a_file_that_is_not_python_or_has_no_get_config_is_refused_saying_what_to_add(tmp_path):
    text = tmp_path / "config.txt"
    text.write_text("x = 1\n")
    with pytest.raises(
        config_lib.ConfigError,
        match=f"^{re.escape(f'config file {text} is not a Python file: name a .py file that defines get_config')}$",
    ):
        config_lib.load_config(str(text))
    empty = tmp_path / "empty.py"
    empty.write_text("VARIANTS = ('smoke',)\n")
    expected = (
        f"config file {empty} defines no get_config: add `def get_config(variant=None)` returning "
        "an ml_collections.ConfigDict"
    )
    with pytest.raises(config_lib.ConfigError, match=f"^{re.escape(expected)}$"):
        config_lib.load_config(f"{empty}:smoke")


def test_an_unknown_variant_is_named_with_the_file_a_suggestion_and_the_choices(monkeypatch):
    monkeypatch.chdir(REPO)
    expected = (
        "unknown variant 'lstmm' of configs/default.py (did you mean 'lstm'?); "
        "choose from lstm, gru, rnn, irnn, long, copy, smoke"
    )
    with pytest.raises(config_lib.ConfigError, match=f"^{re.escape(expected)}$"):
        config_lib.load_config("configs/default.py:smoke,lstmm")
    expected = "unknown variant 'zzz' of configs/default.py; choose from lstm, gru, rnn, irnn, long, copy, smoke"
    with pytest.raises(config_lib.ConfigError, match=f"^{re.escape(expected)}$"):
        config_lib.load_config("configs/default.py:zzz")


def test_a_variant_of_a_file_without_variants_is_refused_saying_what_to_do(tmp_path):
    plain = tmp_path / "plain.py"
    plain.write_text(
        "import ml_collections\ndef get_config(variant=None):\n    return ml_collections.ConfigDict({'seed': 0})\n"
    )
    assert config_lib.load_config(str(plain)).seed == 0
    expected = (
        f"config file {plain} takes no variants (it declares no VARIANTS), got 'smoke': "
        f"load {plain} without ':smoke', or list the variants get_config takes in VARIANTS"
    )
    with pytest.raises(config_lib.ConfigError, match=f"^{re.escape(expected)}$"):
        config_lib.load_config(f"{plain}:smoke")


def test_get_config_must_return_a_config_dict(tmp_path):
    loose = tmp_path / "loose.py"
    loose.write_text("def get_config(variant=None):\n    return {'seed': 0}\n")
    expected = f"get_config of {loose} returned a dict; it must return an ml_collections.ConfigDict"
    with pytest.raises(config_lib.ConfigError, match=f"^{re.escape(expected)}$"):
        config_lib.load_config(str(loose))


@pytest.mark.parametrize(
    "key,value,allowed",
    [
        ("cell", "lstmm", "['rnn', 'relu_rnn', 'irnn', 'lstm', 'gru', 'gru_reset_before', 'mingru', 'minlstm']"),
        ("head", "first", "['last', 'mean', 'max', 'per_step']"),
        ("merge", "mul", "['concat', 'sum']"),
        ("implementation", "cuda", "['auto', 'scan', 'fused', 'parallel']"),
    ],
)
def test_model_values_are_checked_against_the_lists_their_modules_own(key, value, allowed):
    config = default.get_config()
    config.model[key] = value
    with pytest.raises(
        config_lib.ConfigError,
        match=f"^{re.escape(f'bad value config.model.{key}={value!r}: must be one of {allowed}')}$",
    ):
        config_lib.validate(config)


def test_an_empty_head_means_the_tasks_own():
    config = default.get_config()
    config.model.head = ""
    config_lib.validate(config)


CONFIG_FILES = [f"{name}.py" for name in config_lib.shipped_config_names()]


def string_values(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from string_values(value, f"{prefix}{key}.")
        elif isinstance(value, str):
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_no_config_names_an_absolute_path_outside_the_checkout_and_the_data_folder(name, tmp_path, monkeypatch):
    monkeypatch.setenv("SEQJAX_DATA", str(tmp_path / "data"))
    path = os.path.join(REPO, "configs", name)
    module = config_lib.load_config_module(path)
    for variant in ("", *config_lib.declared_variants(module)):
        config = module.get_config(variant or None).to_dict()
        for key, value in string_values(config):
            if os.path.isabs(value):
                assert value.startswith((REPO, str(tmp_path / "data"))), f"{name}:{variant} {key}={value}"


def test_the_word2vec_smoke_variant_reads_the_bundled_sample():
    config = config_lib.load_config("configs/word2vec.py:smoke")
    assert config.data.files == os.path.join(REPO, "configs", "samples", "corpus.txt")
    assert os.path.isfile(config.data.files)
