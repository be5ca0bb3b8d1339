"""Many small runs in one compiled program: `jax.vmap` over replicas.

Run one after another, a sweep over seeds and learning rates of a small
model compiles the same program once per run and pays the per-step host
and dispatch overhead once per run and step. Here the R runs of a group train together: every array of the train state
gains a leading replica axis [R, ...], each step is one jitted `vmap` of
`training.make_train_step` over the replicas (in chunks on CPU, see
`default_chunk_size`), and each replica sees exactly what its sequential run
(`training.train_and_evaluate`) would see:

  init       params from fold_in(key(seed), 0), as `training.create_train_state`
  batches    task.batch(split, index, batch_size, seed) of the replica's seed,
             stacked to [R, B, ...]
  dropout    fold_in(fold_in(key(seed), 1), step), as `training.Trainer`
  lr         see `ReplicaTrainState`

so its metrics match the sequential run's up to float rounding (batched
matmuls and the data-parallel all-reduce sum in different orders).

What a group may vary is `VMAPPABLE_KEYS`: keys that change neither shapes
nor the traced program. Everything else (model sizes, the task, the
schedule's shape, num_steps, l1/l2, ...) must be equal within a group;
`group_runs` splits a sweep accordingly.

Limits, on purpose:
  * One device, no data-parallel mesh: vmap mode is for models small enough
    that one device is under-used by a single run.
  * No checkpoints: a group that is killed is retrained from step 0 when the
    sweep is rerun (the caller skips groups whose runs all have
    final_metrics.json). metrics.jsonl is rewritten from scratch then.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from seqjax import config as config_lib
from seqjax import metrics, models, optim, sweeps, tasks, training

# Config keys whose values may differ between the replicas of one group.
VMAPPABLE_KEYS = frozenset({"seed", "optimizer.learning_rate"})
vmappable_keys = VMAPPABLE_KEYS


# ---------------------------------------------------------------- grouping


def _shared_overrides(overrides: sweeps.Overrides) -> tuple:
    """The overrides a group must agree on, as a hashable key."""
    return tuple(sorted((k, repr(v)) for k, v in overrides.items() if k not in VMAPPABLE_KEYS))


def group_runs(runs: Sequence[sweeps.Run], max_group_size: int | None = None) -> list[list[sweeps.Run]]:
    """Runs whose overrides differ only in `VMAPPABLE_KEYS`, grouped.

    Groups come in order of first appearance and keep the sweep order inside;
    with `max_group_size`, a larger group is cut into consecutive chunks (to
    bound memory). Runs that set a shape key to the base config's value and
    runs that leave it unset land in different groups: grouping looks at
    overrides only, so it never merges runs that might differ.
    """
    groups: dict[tuple, list[sweeps.Run]] = {}
    for run in runs:
        groups.setdefault(_shared_overrides(run.overrides), []).append(run)
    size = max_group_size or max((len(g) for g in groups.values()), default=1)
    return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]


def _without_vmappable(config: ml_collections.ConfigDict) -> dict:
    resolved = config.to_dict()
    for key in VMAPPABLE_KEYS:
        *path, leaf = key.split(".")
        section = resolved
        for part in path:
            section = section[part]
        section.pop(leaf, None)
    return resolved


def replica_configs(
    base_config: ml_collections.ConfigDict, runs: Sequence[sweeps.Run]
) -> list[ml_collections.ConfigDict]:
    """Each run's resolved, validated config; raises ValueError when two runs
    differ in a key outside `VMAPPABLE_KEYS`."""
    configs = [sweeps.apply_overrides(base_config, run.overrides) for run in runs]
    for run, config in zip(runs, configs):
        try:
            config_lib.validate(config)
        except config_lib.ConfigError as error:
            raise config_lib.ConfigError(f"run {run.name}: {error}") from error
    shared = _without_vmappable(configs[0])
    for run, config in zip(runs[1:], configs[1:]):
        if _without_vmappable(config) != shared:
            raise ValueError(
                f"run {run.name} differs from run {runs[0].name} in a key outside "
                f"{sorted(VMAPPABLE_KEYS)}; it cannot share a vmapped group (use group_runs)"
            )
    return configs


# ---------------------------------------------------------------- training


class ReplicaTrainState(training.TrainState):
    """A TrainState whose `tx` has peak learning rate 1 and whose updates are
    multiplied by this replica's own `learning_rate` [] (carried in the
    vmapped state, so one program serves every learning rate).

    This equals the sequential optimiser because every chain `optim` builds
    applies the learning rate last and linearly: adam/adamw/sgd end in
    `scale_by_learning_rate(schedule)`, and every schedule (warm-up, constant,
    cosine and linear decay to `peak * end_lr_fraction`) is `peak` times the
    same schedule with peak 1. Clipping acts on gradients, before it. An
    optimiser added to `optim` must keep this property to be vmappable over
    learning rates (tests/test_ensemble.py pins it for adam with warm-up and
    cosine decay).
    """

    learning_rate: jax.Array

    def apply_gradients(self, *, grads, **kwargs):
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        updates = jax.tree.map(lambda u: self.learning_rate * u, updates)
        return self.replace(
            step=self.step + 1, params=optax.apply_updates(self.params, updates), opt_state=opt_state, **kwargs
        )


def unit_peak_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """`optim.build_optimizer` for `config` with learning_rate 1."""
    unit = ml_collections.ConfigDict(config.optimizer.to_dict())
    unit.learning_rate = 1.0
    return optim.build_optimizer(unit, config.train.num_steps)


def default_chunk_size() -> int | None:
    """Replicas per vmapped chunk (None: all of them at once).

    On XLA:CPU a batched matmul costs what its slices cost one by one, so
    vmap saves per-step overhead there, not arithmetic; and vmapping 16 small
    LSTMs (hidden 32, T=50, batch 32) at once measured ~2.5x slower per
    replica than 1-2 at a time (16x larger activations fall out of cache).
    So on CPU chunks of 2 replicas are vmapped and a loop inside the same
    compiled program walks over the chunks. Accelerators, where a batched
    matmul does amortise, take the whole group in one vmap.
    """
    return 2 if jax.default_backend() == "cpu" else None


def over_replicas(fn: Callable, chunk_size: int | None) -> Callable:
    """`fn` on one replica -> on all: every argument and result gains a
    leading replica axis [R, ...]; `chunk_size` replicas at a time are vmapped."""

    def batched(*args):
        replicas = jax.tree.leaves(args)[0].shape[0]
        if chunk_size is None or chunk_size >= replicas:
            return jax.vmap(fn)(*args)
        return jax.lax.map(lambda a: fn(*a), args, batch_size=chunk_size)

    return batched


class Ensemble:
    """What a group of R replicas needs: the shared task and model, the
    per-replica seeds, learning rates and dropout keys, the vmapped steps."""

    def __init__(self, configs: Sequence[ml_collections.ConfigDict], chunk_size: int | None = None):
        """`chunk_size`: replicas vmapped together (None: `default_chunk_size()`;
        `len(configs)` vmaps the whole group at once)."""
        self.configs = list(configs)
        self.chunk_size = chunk_size or default_chunk_size()
        config = self.configs[0]
        self.train = config.train
        self.task = tasks.get(config.task)
        self.model = models.build(config.model, self.task)
        self.tx = unit_peak_optimizer(config)
        self.seeds = [c.seed for c in self.configs]
        self.learning_rates = jnp.asarray([c.optimizer.learning_rate for c in self.configs], jnp.float32)
        self.dropout_rngs = jnp.stack([jax.random.fold_in(jax.random.key(s), 1) for s in self.seeds])
        opt = config.optimizer
        step = training.make_train_step(self.task, opt.get("l1", 0.0), opt.get("l2", 0.0))
        self.train_step = jax.jit(over_replicas(step, self.chunk_size), donate_argnums=0)
        self.eval_step = jax.jit(over_replicas(training.make_eval_step(self.task), self.chunk_size))

    @property
    def size(self) -> int:
        return len(self.configs)

    def init_state(self) -> ReplicaTrainState:
        """Every replica initialised as its sequential run is; leaves [R, ...]."""
        example = self._stacked(lambda seed: self.task.batch("train", 0, 2, seed))
        inputs, lengths = training.model_inputs(example)
        extra = training.model_kwargs(self.model.apply, example)  # e.g. an encoder-decoder's decoder_inputs
        rngs = jnp.stack([jax.random.fold_in(jax.random.key(s), 0) for s in self.seeds])

        def init(rng, inputs, lengths, extra, learning_rate):
            params = self.model.init(rng, inputs, lengths, **extra)["params"]
            return ReplicaTrainState.create(
                apply_fn=self.model.apply, params=params, tx=self.tx, learning_rate=learning_rate
            )

        return jax.jit(jax.vmap(init))(rngs, inputs, lengths, extra, self.learning_rates)

    def _stacked(self, batch_of_seed) -> dict[str, jax.Array]:
        per_replica = [batch_of_seed(seed) for seed in self.seeds]
        return {k: jnp.asarray(np.stack([b[k] for b in per_replica])) for k in per_replica[0]}

    def batch(self, split: str, index: int) -> dict[str, jax.Array]:
        """Batch `index` of `split` for every replica's seed: [R, B, ...]."""
        return self._stacked(lambda seed: self.task.batch(split, index, self.train.batch_size, seed))

    def step(self, state: ReplicaTrainState, index: int) -> tuple[ReplicaTrainState, dict]:
        """Optimisation step `index` (0-based, = state.step) of every replica;
        metrics are [R]. The index comes from the host loop rather than
        `state.step`, so the host can prepare the next batch while the device
        still computes this one."""
        return self.train_step(state, self.batch("train", index), self.dropout_rngs)

    def evaluate(self, state: ReplicaTrainState, split: str) -> list[dict[str, float]]:
        """Per replica, metrics averaged over `eval_batches` batches (as `Trainer.evaluate`)."""
        per_batch = jax.device_get(
            [self.eval_step(state, self.batch(split, i)) for i in range(self.train.eval_batches)]
        )
        return [{k: float(np.mean([m[k][r] for m in per_batch])) for k in per_batch[0]} for r in range(self.size)]

    def final_metrics(self, state: ReplicaTrainState, replica: int) -> dict[str, float]:
        """Replica `replica`'s `task.final_metrics` (e.g. BLEU of decoded
        test output), as `Trainer.final_metrics` computes it; {} if none."""
        if not hasattr(self.task, "final_metrics"):
            return {}
        params = jax.tree.map(lambda leaf: leaf[replica], state.params)
        return self.task.final_metrics(
            self.model,
            params,
            batch_size=self.train.batch_size,
            num_batches=self.train.eval_batches,
            seed=self.seeds[replica],
        )


def mean_per_replica(window: list[dict]) -> list[dict[str, float]]:
    """A window of step metrics {name: [R]} -> per replica {name: mean over steps}."""
    stacked = jax.device_get(window)
    replicas = len(next(iter(stacked[0].values())))
    return [{k: float(np.mean([m[k][r] for m in stacked])) for k in stacked[0]} for r in range(replicas)]


# ---------------------------------------------------------------- run files


class RunOutput:
    """The files of one replica's run dir, as `training.train_and_evaluate` writes them."""

    def __init__(self, workdir: str, config: ml_collections.ConfigDict):
        os.makedirs(workdir, exist_ok=True)
        self.workdir = workdir
        metrics.write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())
        self.run_info = training.RunInfo(workdir)
        self.run_info.begin(config.seed, 0)
        self.writer = metrics.MetricsWriter(workdir, resume_step=0)

    def finish(self, final: dict, share_s: float, group: dict[str, Any]) -> None:
        """Writes the final line, final_metrics.json and run_info.json."""
        self.writer.write(final["step"], final)
        self.writer.close()
        metrics.write_json_atomic(os.path.join(self.workdir, "final_metrics.json"), final)
        self.run_info.info["vmap_group"] = group
        self.run_info.end(share_s)


def _log_train(outputs: list[RunOutput], step: int, window: list[dict], seconds: float) -> float:
    """Writes each replica's train_* line; returns the mean loss over replicas."""
    logged = mean_per_replica(window)
    for output, replica in zip(outputs, logged):
        # Replicas advance together, so the group's rate is each one's rate.
        output.writer.write(step, dict(replica, steps_per_second=len(window) / seconds), prefix="train_")
    return float(np.mean([replica["loss"] for replica in logged]))


def _train_loop(ensemble: Ensemble, outputs: list[RunOutput]) -> ReplicaTrainState:
    """The loop of `training.train_and_evaluate`, for all replicas at once."""
    train = ensemble.train
    state = ensemble.init_state()
    progress = metrics.Progress(0, train.num_steps, enabled=train.get("progress", True))
    window, window_start = [], time.monotonic()
    for step in range(1, train.num_steps + 1):
        state, step_metrics = ensemble.step(state, step - 1)
        window.append(step_metrics)
        if step % train.log_every == 0 or step == train.num_steps:
            loss = _log_train(outputs, step, window, time.monotonic() - window_start)
            progress.update(step, {"mean_loss": loss})
            window, window_start = [], time.monotonic()
        if step % train.eval_every == 0 and step != train.num_steps:
            for output, evaluated in zip(outputs, ensemble.evaluate(state, "eval")):
                output.writer.write(step, evaluated, prefix="eval_")
    progress.close()
    return state


def train_group(
    base_config: ml_collections.ConfigDict,
    runs: Sequence[sweeps.Run],
    run_dirs: Sequence[str],
    chunk_size: int | None = None,
) -> list[dict[str, float]]:
    """Trains the runs of one group together; returns each run's final metrics.

    Each `run_dirs[i]` receives what `training.train_and_evaluate` writes for
    `runs[i]` alone: config.json (its resolved config), metrics.jsonl and
    TensorBoard events (train_* every log_every steps, eval_* every
    eval_every, the final test_* line), final_metrics.json, and run_info.json
    with status "finished". Its `wall_time_s` is the group's wall time
    divided by the number of replicas (the run's share, so summing over a
    sweep gives the sweep's time); `vmap_group` records the group's total
    wall time, size and run names. No checkpoints are written (see the
    module docstring). `chunk_size` is `Ensemble`'s.
    """
    if not runs or len(runs) != len(run_dirs):
        raise ValueError(f"train_group needs one run dir per run, got {len(runs)} runs and {len(run_dirs)} dirs")
    started = time.monotonic()
    configs = replica_configs(base_config, runs)
    ensemble = Ensemble(configs, chunk_size)
    outputs = [RunOutput(d, c) for d, c in zip(run_dirs, configs)]
    state = _train_loop(ensemble, outputs)
    steps = jax.device_get(state.step)
    finals = [
        {
            "step": int(steps[r]),
            **{f"test_{k}": v for k, v in evaluated.items()},
            **{f"test_{k}": v for k, v in ensemble.final_metrics(state, r).items()},
        }
        for r, evaluated in enumerate(ensemble.evaluate(state, "test"))
    ]
    seconds = time.monotonic() - started
    group = {
        "mode": "vmap",
        "size": len(runs),
        "chunk_size": ensemble.chunk_size,
        "wall_time_s": seconds,
        "runs": [r.name for r in runs],
    }
    for output, final in zip(outputs, finals):
        output.finish(final, seconds / len(runs), group)
    return finals
