import os
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
    return _load_config("sst2", "smoke")


def _load_config(name, variant=None):
    """configs/<name>.py's get_config(variant), loaded the way config_flags loads it (by path)."""
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"{name}_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)
