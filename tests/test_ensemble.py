import json
import os

import jax
import numpy as np
import pytest

from configs import default
from seqjax import ensemble, metrics, parallel, sweeps, training

LEARNING_RATES = (3e-3, 1e-2)
SEEDS = (0, 1, 2)


def base_config():
    """Smoke-sized, with a warm-up that ends mid-run (so both parts of the
    learning-rate schedule matter)."""
    config = default.get_config("smoke")
    config.optimizer.warmup_steps = 5
    config.train.checkpoint_every = 20  # one save per sequential run keeps the test fast
    return config


def lr_by_seed_runs():
    return sweeps.expand(
        sweeps.product(sweeps.values("optimizer.learning_rate", LEARNING_RATES), sweeps.seeds(list(SEEDS)))
    )


@pytest.fixture(scope="module")
def vmapped_and_sequential(tmp_path_factory):
    """(runs, vmap dirs, vmap finals, sequential dirs, sequential finals)."""
    root = tmp_path_factory.mktemp("ensemble")
    runs = lr_by_seed_runs()
    vmap_dirs = [str(root / "vmap" / run.name) for run in runs]
    # Two vmapped chunks of 3 replicas, looped over inside the program.
    finals = ensemble.train_group(base_config(), runs, vmap_dirs, chunk_size=3)
    mesh = parallel.make_mesh(jax.devices()[:1])
    seq_dirs = [str(root / "sequential" / run.name) for run in runs]
    seq_finals = [
        training.train_and_evaluate(sweeps.apply_overrides(base_config(), run.overrides), d, mesh)
        for run, d in zip(runs, seq_dirs)
    ]
    return runs, vmap_dirs, finals, seq_dirs, seq_finals


def logged(workdir):
    return metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))


def test_each_replica_ends_where_its_sequential_run_ends(vmapped_and_sequential):
    runs, _, finals, _, seq_finals = vmapped_and_sequential
    assert len({json.dumps(f, sort_keys=True) for f in seq_finals}) == len(runs), "runs must differ"
    for run, final, expected in zip(runs, finals, seq_finals):
        assert final.keys() == expected.keys(), run.name
        assert final["step"] == expected["step"] == 20
        for key in expected:
            np.testing.assert_allclose(final[key], expected[key], rtol=1e-5, atol=1e-7, err_msg=run.name)


def test_each_replica_logs_the_losses_of_its_sequential_run(vmapped_and_sequential):
    runs, vmap_dirs, _, seq_dirs, _ = vmapped_and_sequential
    for run, vmap_dir, seq_dir in zip(runs, vmap_dirs, seq_dirs):
        ours, theirs = logged(vmap_dir), logged(seq_dir)
        assert [(r["step"], sorted(r)) for r in ours] == [(r["step"], sorted(r)) for r in theirs], run.name
        for mine, expected in zip(ours, theirs):
            for key in expected:
                if key != "train_steps_per_second":
                    np.testing.assert_allclose(
                        mine[key],
                        expected[key],
                        rtol=1e-5,
                        atol=1e-7,
                        err_msg=f"{run.name} step {expected['step']} {key}",
                    )


def test_every_run_dir_gets_the_files_of_a_sequential_run(vmapped_and_sequential):
    runs, vmap_dirs, finals, _, _ = vmapped_and_sequential
    for run, workdir, final in zip(runs, vmap_dirs, finals):
        config = metrics.read_json(os.path.join(workdir, "config.json"))
        assert config["seed"] == run.overrides["seed"]
        assert config["optimizer"]["learning_rate"] == run.overrides["optimizer.learning_rate"]
        assert metrics.read_json(os.path.join(workdir, "final_metrics.json")) == final
        assert logged(workdir)[-1] == final
        info = metrics.read_json(os.path.join(workdir, "run_info.json"))
        assert info["status"] == "finished" and info["seed"] == run.overrides["seed"]
        assert info["vmap_group"]["size"] == len(runs) and run.name in info["vmap_group"]["runs"]
        np.testing.assert_allclose(info["wall_time_s"], info["vmap_group"]["wall_time_s"] / len(runs))
        assert "git" in info and "packages" in info


def test_each_replica_draws_the_dropout_masks_of_its_sequential_run():
    config = base_config()
    config.model.num_layers = 2
    config.model.dropout_rate = 0.5
    runs = sweeps.expand(sweeps.seeds([0, 1]))
    group = ensemble.Ensemble(ensemble.replica_configs(config, runs), chunk_size=2)
    state = group.init_state()
    trainer = training.Trainer(sweeps.apply_overrides(config, runs[1].overrides), parallel.make_mesh(jax.devices()[:1]))
    single = trainer.init_state()
    for index in range(3):
        state, step_metrics = group.step(state, index)
        single, expected = trainer.step(single)
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
    groups = ensemble.group_runs(runs)
    assert [[r.name for r in g] for g in groups] == [[r.name for r in runs[:4]], [r.name for r in runs[4:]]]
    assert {r.overrides["model.hidden_size"] for r in groups[0]} == {8}


def test_max_group_size_cuts_a_group_into_chunks():
    runs = sweeps.expand(sweeps.seeds(5))
    assert [len(g) for g in ensemble.group_runs(runs, max_group_size=2)] == [2, 2, 1]


def test_a_group_with_different_shapes_is_refused(tmp_path):
    runs = [sweeps.Run("a", {"model.hidden_size": 8}), sweeps.Run("b", {"model.hidden_size": 16})]
    with pytest.raises(ValueError, match="run b differs from run a"):
        ensemble.train_group(base_config(), runs, [str(tmp_path / "a"), str(tmp_path / "b")])


@pytest.mark.slow
def test_encoder_decoder_seeds_train_together_and_report_decoded_bleu(tmp_path):
    """vmap mode for an encoder-decoder (its decoder_inputs reach init and the
    steps) with config.task.decode_test: each replica's final metrics are its
    sequential run's, BLEU of greedy decoding included."""
    from configs import seq2seq_synthetic

    config = seq2seq_synthetic.get_config("luong_general,smoke")
    config.train.num_steps = config.train.checkpoint_every = config.train.eval_every = 10
    runs = sweeps.expand(sweeps.seeds([0, 1]))
    finals = ensemble.train_group(config, runs, [str(tmp_path / r.name) for r in runs])
    sequential = training.train_and_evaluate(
        sweeps.apply_overrides(config, runs[1].overrides),
        str(tmp_path / "sequential"),
        parallel.make_mesh(jax.devices()[:1]),
    )
    for key in ("test_loss", "test_bleu", "test_greedy_exact_match"):
        np.testing.assert_allclose(finals[1][key], sequential[key], rtol=1e-4, atol=1e-6)
    assert 0.0 <= finals[0]["test_bleu"] <= 100.0
