import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from configs import default
from seqjax import config as config_lib
from seqjax import sweep_runner, sweeps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_product_of_cells_lengths_and_seeds_gives_48_named_runs():
    runs = sweeps.expand(default.get_sweep("cell_by_length"))
    assert len(runs) == 48
    assert runs[0].name == "cell=rnn,seq_len=50,seed=0"
    assert runs[-1].name == "cell=lstm,seq_len=400,seed=2"
    assert runs[5].overrides == {"model.cell": "rnn", "task.seq_len": 100, "seed": 2}
    assert len({r.name for r in runs}) == 48


def test_zip_pairs_entries_and_product_multiplies():
    sweep = sweeps.product(
        sweeps.zip_(
            sweeps.values("model.cell", ["rnn", "lstm"]), sweeps.values("optimizer.learning_rate", [1e-4, 3e-3])
        ),
        sweeps.seeds([7, 8]),
    )
    assert [r.name for r in sweeps.expand(sweep)] == [
        "cell=rnn,learning_rate=0.0001,seed=7",
        "cell=rnn,learning_rate=0.0001,seed=8",
        "cell=lstm,learning_rate=0.003,seed=7",
        "cell=lstm,learning_rate=0.003,seed=8",
    ]


def test_zip_of_unequal_axes_is_refused():
    with pytest.raises(ValueError, match=r"equal length, got lengths \[2, 3\]"):
        sweeps.zip_(sweeps.values("a", [1, 2]), sweeps.values("b", [1, 2, 3]))


def test_fixed_keys_stay_out_of_names_and_ambiguous_short_names_use_full_keys():
    sweep = sweeps.product(
        sweeps.fixed({"train.num_steps": 10}),
        sweeps.values("model.name", ["recurrent"]),
        sweeps.values("task.name", ["adding", "copy"]),
    )
    assert [r.name for r in sweeps.expand(sweep)] == ["name=adding", "name=copy"]
    assert sweeps.short_keys(["model.name", "task.name", "task.seq_len"]) == {
        "model.name": "model.name",
        "task.name": "task.name",
        "task.seq_len": "seq_len",
    }


def test_repeated_runs_and_repeated_keys_are_refused():
    with pytest.raises(ValueError, match="repeats runs"):
        sweeps.expand(sweeps.values("seed", [1, 1]))
    with pytest.raises(ValueError, match=r"same key twice: \['seed'\]"):
        sweeps.product(sweeps.seeds(2), sweeps.seeds(2))


def test_unknown_key_or_wrong_type_fails_before_any_run_naming_the_key():
    config = default.get_config()
    with pytest.raises(config_lib.ConfigError, match="unknown config key 'model.hiden_size'"):
        sweeps.validate_runs(config, sweeps.expand(sweeps.values("model.hiden_size", [8, 16])))
    with pytest.raises(config_lib.ConfigError, match="'train.batch_size' the value 'big' of type str"):
        sweeps.validate_runs(config, sweeps.expand(sweeps.values("train.batch_size", ["big", 8])))
    with pytest.raises(config_lib.ConfigError, match=r"run cell=lstmm: bad value config.model.cell='lstmm'"):
        sweeps.validate_runs(config, sweeps.expand(sweeps.values("model.cell", ["lstm", "lstmm"])))


def test_a_variant_axis_trains_each_config_variant_and_validates_each_against_its_own_config():
    runs = sweep_runner.plan("configs/seq2seq_synthetic.py:smoke", "attention_ablation")
    assert [r.name for r in runs[::3]] == [
        "variant=none,seed=0",
        "variant=bahdanau,seed=0",
        "variant=luong_general,seed=0",
        "variant=transformer,seed=0",
    ]
    command = sweep_runner.train_command("configs/seq2seq_synthetic.py:smoke", "/tmp/w", runs[-1])
    assert command[3:] == [
        "--config=configs/seq2seq_synthetic.py:smoke,transformer",
        "--workdir=/tmp/w",
        "--config.seed=2",
    ]
    assert sweeps.config_spec_of("configs/default.py", {"variant": "gru", "seed": 1}) == "configs/default.py:gru"
    assert sweeps.config_spec_of("configs/default.py:copy", {"seed": 1}) == "configs/default.py:copy"
    # A key that exists in one variant only is accepted there and refused, naming the run, in the other.
    ablation = sweeps.product(sweeps.variants(["none", "transformer"]), sweeps.fixed({"model.d_model": 32}))
    transformer_run = sweeps.expand(ablation)[1]
    sweeps.validate_runs(config_lib.load_config("configs/seq2seq_synthetic.py:transformer"), [transformer_run])
    with pytest.raises(config_lib.ConfigError, match="run variant=none: .*unknown config key 'model.d_model'"):
        sweeps.validate_runs(config_lib.load_config("configs/seq2seq_synthetic.py:none"), sweeps.expand(ablation)[:1])


def test_a_run_variant_joins_the_specs_variants():
    assert sweeps.config_spec_of("configs/x.py:smoke,", {"variant": "gru"}) == "configs/x.py:smoke,gru"
    assert sweeps.config_spec_of("configs/x.py:", {"variant": "gru"}) == "configs/x.py:gru"


def test_a_config_without_get_sweep_is_refused_saying_what_to_add(tmp_path):
    plain = tmp_path / "plain.py"
    plain.write_text("def get_config(variant=None):\n    pass\n")
    expected = (
        f"config file {plain} defines no get_sweep: add `def get_sweep(name=None)` returning "
        "a sweep (see seqjax.sweeps), or train the config alone with experiments.train"
    )
    with pytest.raises(config_lib.ConfigError, match=f"^{re.escape(expected)}$"):
        sweep_runner.plan(f"{plain}:smoke", None)


def test_a_sweep_over_an_unknown_variant_fails_before_any_run(monkeypatch):
    monkeypatch.chdir(REPO)
    expected = (
        "unknown variant 'lstmm' of configs/default.py (did you mean 'lstm'?); "
        "choose from lstm, gru, rnn, irnn, long, copy, smoke"
    )
    with pytest.raises(config_lib.ConfigError, match=f"^{re.escape(expected)}$"):
        sweep_runner.plan("configs/default.py", "cell_by_length", {"variant": "lstmm"})


@pytest.mark.slow
def test_vmap_mode_trains_each_variant_with_its_own_config(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    config_file = tmp_path / "cells.py"
    config_file.write_text(
        TINY_SWEEP.format(default=os.path.join(REPO, "configs/default.py"))
        .replace(
            'return sweeps.values("task.seq_len", [6, 1])',
            'return sweeps.product(sweeps.variants(["rnn", "gru"]), sweeps.seeds(2))',
        )
        .replace('config = base.get_config("smoke")', 'config = base.get_config(",".join(["smoke", variant or ""]))')
        .replace("def get_config(", 'VARIANTS = ("rnn", "gru")\n\ndef get_config(')
    )
    runs = sweep_runner.plan(str(config_file), None)
    sweep_dir = str(tmp_path / "sweep")
    result = sweep_runner.run_vmap(str(config_file), runs, sweep_dir, report=lambda line: None)
    assert result["finished"] == [
        "variant=rnn,seed=0",
        "variant=rnn,seed=1",
        "variant=gru,seed=0",
        "variant=gru,seed=1",
    ]
    for run in runs:
        saved = json.loads((tmp_path / "sweep/runs" / run.name / "config.json").read_text())
        assert saved["model"]["cell"] == run.overrides["variant"] and saved["seed"] == run.overrides["seed"]


def test_print_mode_records_the_sweep_and_emits_one_train_command_per_run(tmp_path):
    sweep_dir = tmp_path / "printed"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.sweep",
            "--config=configs/default.py",
            "--sweep=cell_by_length",
            f"--sweep_dir={sweep_dir}",
            "--mode=print",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 48 and all(
        line.startswith("python -m experiments.train --config=configs/default.py ") for line in lines
    )
    assert f"--workdir={sweep_dir}/runs/cell=gru,seq_len=200,seed=1 " in lines[2 * 12 + 2 * 3 + 1]
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert len(record["runs"]) == 48 and record["swept_keys"] == ["model.cell", "task.seq_len", "seed"]
    assert sorted(os.listdir(sweep_dir / "runs" / "cell=gru,seq_len=200,seed=1")) == ["overrides.json"]


def test_sweep_entry_point_refuses_a_bad_key_before_starting(tmp_path):
    config_file = tmp_path / "bad_sweep.py"
    config_file.write_text(
        textwrap.dedent(f"""
        import importlib.util
        spec = importlib.util.spec_from_file_location("base", {os.path.join(REPO, "configs/default.py")!r})
        base = importlib.util.module_from_spec(spec); spec.loader.exec_module(base)
        get_config = base.get_config
        def get_sweep(name=None):
            from seqjax import sweeps
            return sweeps.values("optimizer.learnin_rate", [0.1, 0.2])
    """)
    )
    result = subprocess.run(
        [sys.executable, "-m", "experiments.sweep", f"--config={config_file}", f"--sweep_dir={tmp_path / 'sweep'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "unknown config key 'optimizer.learnin_rate'" in result.stderr
    assert not (tmp_path / "sweep").exists()


TINY_SWEEP = """
import importlib.util
spec = importlib.util.spec_from_file_location("base", {default!r})
base = importlib.util.module_from_spec(spec); spec.loader.exec_module(base)

def get_config(variant=None):
    config = base.get_config("smoke")
    config.train.num_steps = 4
    config.optimizer.warmup_steps = 1
    config.train.log_every = 2
    config.train.eval_every = 2
    config.train.checkpoint_every = 2
    return config

def get_sweep(name=None):
    from seqjax import sweeps
    # seq_len=1 passes validation but the adding problem raises at run time.
    return sweeps.values("task.seq_len", [6, 1])
"""


@pytest.mark.slow
def test_local_mode_isolates_a_crash_and_reruns_only_what_did_not_finish(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    config_file = tmp_path / "tiny.py"
    config_file.write_text(TINY_SWEEP.format(default=os.path.join(REPO, "configs/default.py")))
    runs = sweep_runner.plan(str(config_file), None)
    sweep_dir = str(tmp_path / "sweep")
    sweep_runner.write_sweep_record(sweep_dir, str(config_file), None, runs)
    lines = []
    runner = sweep_runner.LocalRunner(
        str(config_file), sweep_dir, sweep_runner.detect_slots("cpu", 2), report=lines.append
    )
    result = runner.run(runs)
    assert result == {"finished": ["seq_len=6"], "failed": ["seq_len=1"], "skipped": []}
    failure = json.loads((tmp_path / "sweep/runs/seq_len=1/failed.json").read_text())
    assert failure["returncode"] != 0 and "adding problem needs seq_len >= 2" in failure["log_tail"]
    assert any("FAILED seq_len=1" in line and "seq_len >= 2" in line for line in lines)
    done = tmp_path / "sweep/runs/seq_len=6"
    assert json.loads((done / "overrides.json").read_text()) == {"task.seq_len": 6}
    assert (done / "final_metrics.json").exists() and (done / "run_info.json").exists()
    record = json.loads((tmp_path / "sweep/sweep.json").read_text())
    assert [r["name"] for r in record["runs"]] == ["seq_len=6", "seq_len=1"]

    rerun = sweep_runner.LocalRunner(
        str(config_file), sweep_dir, sweep_runner.detect_slots("cpu", 1), report=lines.append
    ).run(runs)
    assert rerun == {"finished": [], "failed": ["seq_len=1"], "skipped": ["seq_len=6"]}


def test_cpu_slots_and_gpu_slots():
    assert sweep_runner.detect_slots("cpu", 3) == [{"JAX_PLATFORMS": "cpu"}] * 3
    assert sweep_runner.detect_slots("gpu:0,2", 1) == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "2"}]
    with pytest.raises(ValueError, match="--devices must be auto, cpu or gpu:<ids>"):
        sweep_runner.detect_slots("tpu", 1)


def test_slots_follow_the_platform_jax_reports():
    cuda = [{"CUDA_VISIBLE_DEVICES": "0"}] * 2 + [{"CUDA_VISIBLE_DEVICES": "1"}] * 2
    assert sweep_runner.slots_for("cuda", 2, 2) == cuda
    assert sweep_runner.slots_for("rocm", 2, 1) == [{"HIP_VISIBLE_DEVICES": "0"}, {"HIP_VISIBLE_DEVICES": "1"}]
    assert sweep_runner.slots_for("tpu", 4, 3) == [{}]  # one run at a time with every chip
    assert sweep_runner.slots_for("cpu", 8, 2) == [{"JAX_PLATFORMS": "cpu"}] * 2


def test_auto_slots_come_from_jax_in_a_fresh_process():
    assert sweep_runner.discover_devices() == ("cpu", 8)  # the 8 CPU devices conftest's XLA_FLAGS ask for
    assert sweep_runner.detect_slots("auto", 2) == [{"JAX_PLATFORMS": "cpu"}] * 2


def test_local_runs_share_a_compilation_cache_and_never_join_the_sweeps_own_launch(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "h:1")
    env = sweep_runner.LocalRunner("c.py", str(tmp_path), [{}]).env
    assert not {"SLURM_STEP_ID", "SLURM_STEP_NUM_TASKS", "JAX_COORDINATOR_ADDRESS"} & set(env)
    assert env["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "jax_cache")
    assert "JAX_COMPILATION_CACHE_DIR" not in sweep_runner.LocalRunner("c.py", "s", [{}], compilation_cache=False).env


def test_the_sst2_seed_sweep_plans_three_seeds_that_vmap_mode_groups_as_one_run():
    from seqjax import replicas

    runs = sweep_runner.plan(os.path.join(REPO, "configs", "sst2.py:smoke"), None)
    assert [r.name for r in runs] == ["seed=0", "seed=1", "seed=2"]
    assert [len(g) for g in replicas.group_runs(runs)] == [3]
    with pytest.raises(ValueError, match=r"unknown sweep 'lr' of configs/sst2.py; choose from seeds"):
        sweep_runner.plan(os.path.join(REPO, "configs", "sst2.py"), "lr")
