"""The commands as a user meets them: console scripts run from a folder
outside the checkout, shipped configs named from anywhere, the listing,
one override spelling in train and sweep, and bad flags as one-line usage
errors, never tracebacks."""

import ast
import configparser
import importlib.util
import json
import os
import re
import shutil
import subprocess

import pytest

from seqjax import config as config_lib
from seqjax import models, sweeps, tasks
from tests.helpers import REPO

SETUP_CFG = os.path.join(REPO, "setup.cfg")


def console_scripts() -> dict[str, str]:
    """{script name: 'module:function'} as setup.cfg declares them."""
    parser = configparser.ConfigParser()
    parser.read(SETUP_CFG)
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=")) for line in lines)


def command(name: str, *args, cwd, timeout=300) -> subprocess.CompletedProcess:
    """Runs the installed console script `name` in `cwd`."""
    path = shutil.which(name)
    assert path is not None, f"{name} is not on PATH: install seqjax with `pip install -e .`"
    return subprocess.run([path, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_every_console_script_names_an_entry_function_and_is_installed():
    scripts = console_scripts()
    assert {"seqjax-train", "seqjax-sweep", "seqjax-report", "seqjax-predict", "seqjax-list"} <= set(scripts)
    for name, target in scripts.items():
        module_name, function = target.split(":")
        spec = importlib.util.find_spec(module_name)  # not imported: each command defines its own --config
        assert spec is not None, target
        with open(spec.origin, encoding="utf-8") as f:
            defined = {node.name for node in ast.parse(f.read()).body if isinstance(node, ast.FunctionDef)}
        assert function in defined, target
        assert shutil.which(name) is not None, f"{name} declared in setup.cfg but not installed"


@pytest.mark.slow
def test_train_runs_from_a_folder_outside_the_checkout_with_a_shipped_config(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    by_name = command("seqjax-train", "--config=default:smoke", "--workdir=run", cwd=outside)
    assert by_name.returncode == 0, by_name.stderr[-2000:]
    assert json.loads(by_name.stdout.splitlines()[-1])["step"] == 20
    by_path = command("seqjax-train", "--config=configs/default.py:smoke", "--workdir=run", cwd=outside)
    assert by_path.returncode == 0, by_path.stderr[-2000:]  # the same config: the finished run's stored result
    assert by_path.stdout.splitlines()[-1] == by_name.stdout.splitlines()[-1]


def test_a_config_file_in_the_working_directory_comes_before_a_shipped_one(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    mine = tmp_path / "configs" / "default.py"
    mine.write_text("import ml_collections\ndef get_config(variant=None):\n    return ml_collections.ConfigDict()\n")
    monkeypatch.chdir(tmp_path)
    assert config_lib.resolve_config_path("configs/default.py") == "configs/default.py"
    assert config_lib.resolve_config_path("sst2") == os.path.join(config_lib.SHIPPED_CONFIGS, "sst2.py")
    with pytest.raises(
        FileNotFoundError, match=r"^config file not found: other/x\.py \(relative to .*shipped config: "
    ):
        config_lib.resolve_config_path("other/x.py")


def test_a_misspelt_override_is_one_usage_line_naming_the_key(tmp_path):
    result = command(
        "seqjax-train", "--config=default:smoke", "--workdir=w", "--config.train.num_stepz=3", cwd=tmp_path
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (
        "FATAL Flags parsing error: --config.train.num_stepz was refused: 'num_stepz' Did you mean "
        '"num_steps" instead of "num_stepz"?' in result.stderr
    )
    missing = command("seqjax-train", "--config=nope:smoke", "--workdir=w", cwd=tmp_path)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "config file not found: nope (relative to " in missing.stderr and not (tmp_path / "w").exists()


def test_the_listing_names_every_shipped_config_task_and_model(tmp_path):
    result = command("seqjax-list", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in config_lib.shipped_config_names():
        assert re.search(rf"^  {name}  \(", result.stdout, re.M), name
    for name in tasks.names() + models.names():
        assert re.search(rf"^  {name}: ", result.stdout, re.M), name
    assert "variants: lstm, gru, rnn, irnn, long, copy, smoke" in result.stdout
    assert "sweeps: cell_by_length, cell_by_length_cpu, adding_cell_by_T_cpu, copy_tbptt_cpu" in result.stdout
    one = command("seqjax-list", "sst2", cwd=tmp_path)
    assert one.returncode == 0 and "Sentiment (many-to-one)" in one.stdout and "sweeps: seeds" in one.stdout


@pytest.mark.parametrize("name", [n for n in config_lib.shipped_config_names()])
def test_every_declared_variant_of_a_shipped_config_gives_a_valid_config(name):
    module = config_lib.load_config_module(name)
    variants = vars(module).get("VARIANTS", ())
    for variant in (None, *variants):
        config = module.get_config(variant) if variants else module.get_config()
        if name != "word2vec":  # configures seqjax-word2vec, not a training run
            config_lib.validate(config)


@pytest.mark.parametrize("name", [n for n in config_lib.shipped_config_names()])
def test_the_declared_sweeps_are_the_ones_get_sweep_accepts(name):
    module = config_lib.load_config_module(name)
    declared = vars(module).get("SWEEPS", ())
    if not callable(vars(module).get("get_sweep")):
        assert declared == ()
        return
    assert declared and module.get_sweep(None) == module.get_sweep(declared[0])
    for sweep_name in declared:
        assert module.get_sweep(sweep_name)
    with pytest.raises(ValueError, match=rf"unknown sweep 'nope' of configs/{name}\.py; choose from {declared[0]}"):
        module.get_sweep("nope")


def test_an_override_replaces_what_a_sweep_fixes_and_refuses_what_it_varies():
    sweep = sweeps.product(
        sweeps.fixed({"train.num_steps": 1500}), sweeps.values("model.cell", ["rnn", "gru"]), sweeps.seeds(2)
    )
    overridden = sweeps.override(sweep, {"train.num_steps": 7, "model.hidden_size": 8})
    assert [o["train.num_steps"] for o in overridden] == [7] * 4 and all(
        o["model.hidden_size"] == 8 for o in overridden
    )
    assert [r.name for r in sweeps.expand(overridden)] == [r.name for r in sweeps.expand(sweep)]
    with pytest.raises(
        ValueError, match=r"^--config\.model\.cell='lstm' sets a key the sweep varies \(over 'rnn', 'gru'\)"
    ):
        sweeps.override(sweep, {"model.cell": "lstm"})
    partly = [{"seed": 0}, {"seed": 1, "train.num_steps": 5}]
    with pytest.raises(ValueError, match=r"varies \(over \(the config's own\), 5\)"):
        sweeps.override(partly, {"train.num_steps": 7})


SHIPPED_SWEEPS = [
    (name, sweep_name)
    for name in config_lib.shipped_config_names()
    for sweep_name in vars(config_lib.load_config_module(name)).get("SWEEPS", ())
]


@pytest.mark.slow
@pytest.mark.parametrize("name,sweep_name", SHIPPED_SWEEPS, ids=[f"{n}-{s}" for n, s in SHIPPED_SWEEPS])
def test_every_shipped_sweep_takes_fewer_steps_or_refuses_clearly(tmp_path, name, sweep_name):
    variant = "copy" if sweep_name == "copy_tbptt_cpu" else None
    spec = f"{name}:{variant}" if variant else name
    result = command(
        "seqjax-sweep",
        f"--config={spec}",
        f"--sweep={sweep_name}",
        "--sweep_dir=s",
        "--mode=print",
        "--config.train.num_steps=500",
        cwd=tmp_path,
    )
    assert "Traceback" not in result.stderr
    record = json.loads((tmp_path / "s" / "sweep.json").read_text()) if result.returncode == 0 else None
    if record is None:  # the sweep varies num_steps: refused, saying what to do
        assert result.returncode == 1 and "--config.train.num_steps=500 sets a key the sweep varies" in result.stderr
        assert "drop --config.train.num_steps" in result.stderr
        return
    assert all(run["overrides"]["train.num_steps"] == 500 for run in record["runs"])
    assert all("--config.train.num_steps=500" in line for line in result.stdout.splitlines())
