"""A run of R replicas (vmap sweep mode) is R ordinary runs trained together:
each replica's numbers and files are its sequential run's, for every task
kind and step strategy, on one device or eight, killed or not."""

import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import default
from seqjax import metrics, parallel, replicas, sweeps, training
from tests.helpers import load_config, logged

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEARNING_RATES = (3e-3, 1e-2)
SEEDS = (0, 1, 2)


def base_config():
    """Smoke-sized, with a warm-up that ends mid-run (so both parts of the
    learning-rate schedule matter)."""
    config = default.get_config("smoke")
    config.optimizer.warmup_steps = 5
    config.train.checkpoint_every = 20  # one save per run keeps the test fast
    return config


def lr_by_seed_runs():
    return sweeps.expand(
        sweeps.product(sweeps.values("optimizer.learning_rate", LEARNING_RATES), sweeps.seeds(list(SEEDS)))
    )


def configs_of(base, runs):
    return [sweeps.apply_overrides(base, run.overrides) for run in runs]


@pytest.fixture(scope="module")
def grouped_and_sequential(tmp_path_factory):
    """(runs, group dirs, group finals, sequential dirs, sequential finals) on one device."""
    root = tmp_path_factory.mktemp("replicas")
    runs = lr_by_seed_runs()
    mesh = parallel.make_mesh(jax.devices()[:1])
    group_dirs = [str(root / "group" / run.name) for run in runs]
    # Two vmapped chunks of 3 replicas, looped over inside the program.
    finals = training.train_replicas(configs_of(base_config(), runs), group_dirs, mesh, chunk_size=3)
    seq_dirs = [str(root / "sequential" / run.name) for run in runs]
    seq_finals = [training.train_and_evaluate(c, d, mesh) for c, d in zip(configs_of(base_config(), runs), seq_dirs)]
    return runs, group_dirs, finals, seq_dirs, seq_finals


def test_each_replica_ends_where_its_sequential_run_ends(grouped_and_sequential):
    runs, _, finals, _, seq_finals = grouped_and_sequential
    assert len({json.dumps(f, sort_keys=True) for f in seq_finals}) == len(runs), "runs must differ"
    for run, final, expected in zip(runs, finals, seq_finals):
        assert final.keys() == expected.keys(), run.name
        assert final["step"] == expected["step"] == 20
        for key in expected:
            np.testing.assert_allclose(final[key], expected[key], rtol=1e-5, atol=1e-7, err_msg=run.name)


def test_each_replica_logs_the_metrics_of_its_sequential_run(grouped_and_sequential):
    runs, group_dirs, _, seq_dirs, _ = grouped_and_sequential
    for run, group_dir, seq_dir in zip(runs, group_dirs, seq_dirs):
        ours, theirs = logged(group_dir), logged(seq_dir)
        assert [(r["step"], sorted(r)) for r in ours] == [(r["step"], sorted(r)) for r in theirs], run.name
        for mine, expected in zip(ours, theirs):
            for key in expected.keys() - {"train_steps_per_second"}:
                np.testing.assert_allclose(
                    mine[key], expected[key], rtol=1e-5, atol=1e-7, err_msg=f"{run.name} step {expected['step']} {key}"
                )


def listing(workdir):
    """A run dir's files, its checkpoint steps and their items (not orbax's
    or TensorBoard's internal file names, which hold hashes and times)."""
    found = sorted(name for name in os.listdir(workdir) if name != "checkpoints")
    checkpoints = os.path.join(workdir, "checkpoints")
    for step in sorted(os.listdir(checkpoints)):
        found += [f"checkpoints/{step}/{item}" for item in sorted(os.listdir(os.path.join(checkpoints, step)))]
    return found


def test_every_run_dir_holds_the_files_of_its_sequential_run(grouped_and_sequential):
    runs, group_dirs, finals, seq_dirs, _ = grouped_and_sequential
    for run, workdir, seq_dir, final in zip(runs, group_dirs, seq_dirs, finals):
        assert listing(workdir) == listing(seq_dir), run.name
        config = metrics.read_json(os.path.join(workdir, "config.json"))
        assert config["seed"] == run.overrides["seed"]
        assert config["optimizer"]["learning_rate"] == run.overrides["optimizer.learning_rate"]
        assert metrics.read_json(os.path.join(workdir, "final_metrics.json")) == final
        assert logged(workdir)[-1] == final
        info = metrics.read_json(os.path.join(workdir, "run_info.json"))
        assert info["status"] == "finished" and info["seed"] == run.overrides["seed"]
        assert info["vmap_group"]["size"] == len(runs) and run.name in info["vmap_group"]["runs"]
        np.testing.assert_allclose(info["wall_time_s"], info["vmap_group"]["wall_time_s"] / len(runs))


def test_a_replica_checkpoint_resumes_as_a_sequential_run(grouped_and_sequential, tmp_path):
    # A replica's checkpoint holds its own state (no replica axis, no
    # learning rate), so a sequential run continues from it.
    # (Into a new workdir: the group's own would refuse the longer run, whose
    # cosine schedule differs.)
    runs, group_dirs, finals, _, _ = grouped_and_sequential
    config = configs_of(base_config(), runs)[4]
    config.train.num_steps = 25
    shutil.copytree(os.path.join(group_dirs[4], "checkpoints"), tmp_path / "checkpoints")
    resumed = training.train_and_evaluate(config, str(tmp_path), parallel.make_mesh(jax.devices()[:1]))
    assert resumed["step"] == 25 and resumed["test_mse"] != finals[4]["test_mse"]
    assert [r["step"] for r in logged(tmp_path) if "train_loss" in r] == [25]


def test_eight_devices_split_each_replicas_rows_and_match_one(tmp_path):
    runs = lr_by_seed_runs()[:3]
    one = training.train_replicas(
        configs_of(base_config(), runs),
        [str(tmp_path / "one" / r.name) for r in runs],
        parallel.make_mesh(jax.devices()[:1]),
    )
    eight = training.train_replicas(configs_of(base_config(), runs), [str(tmp_path / "eight" / r.name) for r in runs])
    assert jax.device_count() == 8
    for a, b in zip(one, eight):
        np.testing.assert_allclose(a["test_mse"], b["test_mse"], rtol=1e-4)


def test_each_replica_draws_the_dropout_masks_of_its_sequential_run():
    config = base_config()
    config.model.num_layers = 2
    config.model.dropout_rate = 0.5
    mesh = parallel.make_mesh(jax.devices()[:1])
    group = training.Trainer(configs_of(config, sweeps.expand(sweeps.seeds([0, 1]))), mesh, chunk_size=2)
    single = training.Trainer(configs_of(config, [sweeps.Run("seed=1", {"seed": 1})]), mesh)
    state, single_state = group.init_state(), single.init_state()
    for index in range(3):
        state, step_metrics = group.step(state, index)
        single_state, expected = single.step(single_state, index)
        # Replica 1, not 0: a replica that used another's key would not match.
        np.testing.assert_allclose(step_metrics["loss"][1], expected["loss"], rtol=1e-5)


def test_runs_differing_in_hidden_size_go_to_different_groups():
    runs = sweeps.expand(
        sweeps.product(
            sweeps.values("model.hidden_size", [8, 16]),
            sweeps.values("optimizer.learning_rate", [1e-3, 1e-2]),
            sweeps.seeds(2),
        )
    )
    groups = replicas.group_runs(runs)
    assert [[r.name for r in g] for g in groups] == [[r.name for r in runs[:4]], [r.name for r in runs[4:]]]
    assert {r.overrides["model.hidden_size"] for r in groups[0]} == {8}


def test_max_group_size_cuts_a_group_into_chunks():
    runs = sweeps.expand(sweeps.seeds(5))
    assert [len(g) for g in replicas.group_runs(runs, max_group_size=2)] == [2, 2, 1]


def test_replicas_with_different_shapes_are_refused(tmp_path):
    runs = [sweeps.Run("a", {"model.hidden_size": 8}), sweeps.Run("b", {"model.hidden_size": 16})]
    with pytest.raises(ValueError, match=r"run b differs from run a in a key outside \['optimizer.learning_rate'"):
        training.train_replicas(configs_of(base_config(), runs), [str(tmp_path / "a"), str(tmp_path / "b")])


# ---------------------------------------------------------------- every task kind

# (config name, variant, overrides): the smoke configs of every task kind and
# step strategy, plus a BatchNorm model.
KINDS = {
    "adding": ("default", "smoke", {}),
    "copy_truncated_bptt": ("default", "copy,smoke", {"train.tbptt_len": 4, "train.tbptt_backprop_len": 6}),
    "copy_stateful": ("default", "copy,smoke", {"train.tbptt_len": 5, "train.stateful": True}),
    "forecast": ("forecast", "smoke", {}),
    "translation": ("seq2seq_synthetic", "luong_general,smoke", {"task.decode_test": True}),
    "captioning": ("seq2seq_synthetic", "captioning,smoke", {}),
    "classification": ("sst2", "smoke", {}),
    "language_model": ("tinyshakespeare", "smoke", {}),
    "language_model_stateful": ("tinyshakespeare", "stateful,smoke", {}),
    "tagging": ("conll_tagger", "smoke", {}),
    "parallel_translation": ("multi30k", "transformer,smoke", {"task.decode_test": True}),
    "batch_norm_classifier": ("transformer_synthetic", "classifier,smoke", {"model.norm": "batch"}),
}


def kind_config(kind, seed, data_dir):
    name, variant, overrides = KINDS[kind]
    config = load_config(name, variant)
    config.seed = seed
    for key, value in overrides.items():
        section, leaf = key.split(".")
        config[section][leaf] = value
    if "data" in config:
        config.data.source.data_dir = str(data_dir)
    steps = min(config.train.num_steps, 10)
    config.train.update(num_steps=steps, eval_every=steps, checkpoint_every=steps, log_every=min(5, steps))
    return config


def logged_without_speed(run_dir):
    return [{k: v for k, v in r.items() if k != "train_steps_per_second"} for r in logged(run_dir)]


def assert_records_close(records, expected):
    """Same steps and keys; values equal to float32 rounding (rtol 1e-6)."""
    assert [r.keys() for r in records] == [r.keys() for r in expected]
    for record, want in zip(records, expected):
        for key, value in want.items():
            np.testing.assert_allclose(record[key], value, rtol=1e-6, err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_replica_of_every_task_kind_equals_its_sequential_run(kind, tmp_path, data_dir):
    # On CPU the group's program loops over unbatched replicas
    # (parallel.default_chunk_size), so a replica is its run alone, bit for
    # bit. Two exceptions, in the last bit of evaluations on these 8
    # devices: the BatchNorm model's test evaluation (1.6e-7 relative; its
    # training matches exactly, and on one device everything does), and the
    # CRF tagger with characters' evaluation loss (1.0e-7 relative; its
    # training metrics match exactly, and with either part alone everything does).
    configs = [kind_config(kind, seed, data_dir) for seed in (0, 1)]
    group = training.train_replicas(configs, [str(tmp_path / "group0"), str(tmp_path / "group1")])
    for seed, final in zip((0, 1), group):
        expected = training.train_and_evaluate(configs[seed], str(tmp_path / f"seq{seed}"))
        group_logged = logged_without_speed(tmp_path / f"group{seed}")
        seq_logged = logged_without_speed(tmp_path / f"seq{seed}")
        if kind in ("batch_norm_classifier", "tagging"):
            assert_records_close([final], [expected])
            assert_records_close(group_logged, seq_logged)
        else:
            assert final == expected, (kind, seed)
            assert group_logged == seq_logged, (kind, seed)
        assert listing(tmp_path / f"group{seed}") == listing(tmp_path / f"seq{seed}")
    assert group[0] != group[1], "the replicas must differ"


# ---------------------------------------------------------------- kill and resume

SWEEP_CONFIG = """
from configs import default
from seqjax import sweeps


def get_config(variant=None):
    config = default.get_config("smoke")
    config.train.update(num_steps=30, log_every=5, eval_every=10, checkpoint_every=10, progress=False)
    return config


def get_sweep(name=None):
    return sweeps.product(sweeps.values("optimizer.learning_rate", [3e-3, 1e-2]), sweeps.seeds(2))
"""

# Runs the sweep in vmap mode in a child process that SIGKILLs itself after
# `kill_after_step` steps of the group (-1: never).
KILLER = """
import sys
from absl import app
from experiments import sweep
from tests.helpers import die_after_step

die_after_step(int(sys.argv[1]))
sys.argv = [sys.argv[0]] + sys.argv[2:]
app.run(sweep.main)
"""


def run_sweep(config_path, sweep_dir, kill_after_step=-1):
    command = [
        sys.executable,
        "-c",
        KILLER,
        str(kill_after_step),
        f"--config={config_path}",
        f"--sweep_dir={sweep_dir}",
        "--mode=vmap",
    ]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_killed_group_resumes_to_the_uninterrupted_result(tmp_path):
    config_path = tmp_path / "sweep_config.py"
    config_path.write_text(SWEEP_CONFIG)
    reference = run_sweep(config_path, tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr[-3000:]
    # At step 25 every replica has committed step 10 (the save of step 20
    # waits for it); step 20's saves are asynchronous, and may be partial.
    killed = run_sweep(config_path, tmp_path / "killed", kill_after_step=25)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = run_sweep(config_path, tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    names = sorted(os.listdir(tmp_path / "reference" / "runs"))
    assert len(names) == 4 and names == sorted(os.listdir(tmp_path / "killed" / "runs"))
    for name in names:
        run_dirs = [tmp_path / which / "runs" / name for which in ("reference", "killed")]
        expected, got = (metrics.read_json(os.path.join(d, "final_metrics.json")) for d in run_dirs)
        assert got == expected, name
        losses = [{r["step"]: r.get("train_loss") for r in logged(d)} for d in run_dirs]
        assert losses[1] == losses[0], name
        attempts = metrics.read_json(os.path.join(run_dirs[1], "run_info.json"))["attempts"]
        assert [a["start_step"] for a in attempts][0] == 0 and attempts[1]["start_step"] in (10, 20), name


def test_a_save_only_some_replicas_committed_is_discarded_before_resuming(tmp_path):
    from seqjax import checkpoint

    state = {"w": np.arange(3.0)}
    dirs = [str(tmp_path / "a"), str(tmp_path / "b")]
    both = checkpoint.Checkpointer(dirs, save_every=10, keep=2)
    both.save(10, [state, state])
    both.close()
    first = checkpoint.Checkpointer(dirs[:1], save_every=10, keep=2)
    first.save(20, [state])  # the group was killed before replica b committed step 20
    first.close()
    resumed = checkpoint.Checkpointer(dirs, save_every=10, keep=2)
    assert resumed.latest_step() == 10
    resumed.discard_unshared()
    assert sorted(os.listdir(dirs[0])) == sorted(os.listdir(dirs[1])) == ["10"]
    [restored_a, restored_b] = resumed.restore_latest(state)
    np.testing.assert_array_equal(restored_a["w"], state["w"])
    resumed.close()
