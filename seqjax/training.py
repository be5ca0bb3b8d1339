"""The training loop: one loop for a run of R >= 1 replicas.

    trainer = Trainer(configs)        task, model, feeds, step strategy, optimiser
    state   = restore the newest checkpoint, or init
    loop:   state, metrics = trainer.step(state, index)      (jit-compiled)
            every log_every steps: train_* lines; every eval_every: eval_*;
            every checkpoint_every: a checkpoint per replica
    end:    test evaluation (+ the task's final metrics) -> W/final_metrics.json

A run is one config (R = 1) or R configs that differ only in seed and/or
learning rate (`seqjax.replicas`), each with its own run dir; a replica's run
dir holds the same files whether it was trained alone or in a group.

Batches are a pure function of (seed, split, step) or come from a loader
whose position is checkpointed, and dropout keys are a pure function of
(seed, step), so a run restored from step s continues exactly as the
uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from seqjax import (
    checkpoint,
    embeddings,
    feeds,
    metrics,
    models,
    optim,
    parallel,
    provenance,
    replicas,
    steps,
    tasks,
    transfer,
    word2vec,
)
from seqjax import config as config_lib
from seqjax import workdir as workdir_lib
from seqjax.steps import TrainState, model_inputs, model_kwargs

Metrics = dict[str, float]
WORD2VEC_VECTORS = os.path.join("word2vec", "vectors.bin")  # a run's own vectors (pretrained_embeddings='word2vec')


class Trainer:
    """What a run needs: the task, the model, the feeds, the step strategy
    and the optimiser, for R >= 1 replicas.

    Args:
      config: the run's config, or R configs that differ only in
        `replicas.VMAPPABLE_KEYS` (its replicas).
      mesh: the devices (default: all of them, data parallel).
      workdir: the run dir (or one per replica), where dataset tasks keep
        their fitted tokenizers; None for a trainer that writes nothing.
      chunk_size: replicas vmapped together (default `parallel.default_chunk_size()`).
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict | Sequence[ml_collections.ConfigDict],
        mesh: jax.sharding.Mesh | None = None,
        workdir: str | Sequence[str] | None = None,
        chunk_size: int | None = None,
    ):
        self.configs = [config] if isinstance(config, ml_collections.ConfigDict) else list(config)
        workdirs = [workdir] if workdir is None or isinstance(workdir, str) else list(workdir)
        for config_r in self.configs:
            config_lib.validate(config_r)
        names = [f"replica {r}" for r in range(len(self.configs))] if workdirs == [None] else workdirs
        replicas.check_compatible(self.configs, [os.path.basename(os.path.normpath(n)) for n in names])
        self.names = names
        self.workdirs = workdirs if workdirs != [None] else [None] * len(self.configs)
        self.config = config = self.configs[0]
        chunk = chunk_size or parallel.default_chunk_size()
        self.layout = parallel.Layout(mesh or parallel.make_mesh(), len(self.configs), chunk)
        parallel.check_batch_size(config.train.batch_size, self.layout.mesh)
        self.task = tasks.get(config.task, config.get("data"))
        # Process 0 fits and saves what the task keeps in the run dir (its
        # tokenizer); the others then load it.
        parallel.writer_first(lambda: self.task.setup(workdirs[0]), "task setup")
        if config.model.get("pretrained_embeddings", "") and self.task.word_index() is None:
            raise ValueError(
                "config.model.pretrained_embeddings needs a task with a word tokenizer (config.data.tokenizer='word')"
            )
        for config_r in self.configs:  # a bad config.model.word2vec fails now, not after compiling
            if config_r.model.get("pretrained_embeddings", "") == word2vec.FROM_TRAINING_WORDS:
                word2vec.settings_for_run(config_r.model, config_r.seed)
        self.model = models.build(config.model, self.task)
        self.feeds = feeds.ReplicaFeeds(self.task, self.configs, self.layout, steps.stream_length(config))
        self.example = self.feeds.example()
        self.strategy = steps.choose(config, self.task, self.model, self.layout, self.feeds, self.example)
        self.lr_scales = replicas.learning_rate_scales(self.configs)
        num_updates = config.train.num_steps * self.strategy.updates_per_batch
        self.tx = optim.build_optimizer(config, num_updates, unit_peak=self.lr_scales is not None)
        self.schedules = [optim.learning_rate_schedule(c.optimizer, num_updates) for c in self.configs]
        self.dropout_rngs = self.layout.stack([jax.random.fold_in(jax.random.key(c.seed), 1) for c in self.configs])
        self.replica_shape = jax.eval_shape(self._init_replica, jax.random.key(0))
        # One replica's state as init and checkpoints lay it out (no replica axis).
        self.replica_shardings = self.strategy.state_shardings(self.replica_shape, parallel.Layout(self.layout.mesh))
        run_shape = self.layout.stack_shapes(self.replica_shape)
        self._init = self.layout.compile(
            self._init_replica, self.layout.replicated(), self.strategy.state_shardings(run_shape)
        )
        self.strategy.compile(self.state_shape())

    # --- the state ----------------------------------------------------------------

    def _init_replica(self, rng: jax.Array) -> TrainState:
        """A fresh state of one replica (traced): params from `rng`, the
        optimiser state, BatchNorm statistics if the model has any, and what
        the strategy adds (a zero stream carry)."""
        inputs, lengths = model_inputs(self.example)
        variables = self.model.init(rng, inputs, lengths, **model_kwargs(self.model, self.example))
        state = TrainState.create(
            apply_fn=self.model.apply,
            params=variables["params"],
            tx=self.tx,
            batch_stats=variables.get("batch_stats"),
        )
        return self.strategy.prepare_state(state, self.example)

    def state_shape(self) -> Any:
        """Shape structs of the run's state (leaves [R, ...] for R > 1, and
        the replicas' learning rates when they differ)."""
        shape = self.replica_shape
        if self.lr_scales is not None:
            shape = shape.replace(lr_scale=jax.ShapeDtypeStruct((), np.float32))
        return self.layout.stack_shapes(shape)

    def init_state(self) -> TrainState:
        """Fresh states of every replica, each initialised as its sequential
        run is (params from fold_in(key(seed), 0)), with `config.train.init_modules`
        copied from the run in `config.train.init_from` and pretrained
        embeddings when the config asks for them."""
        state = self._init(self.layout.stack([jax.random.fold_in(jax.random.key(c.seed), 0) for c in self.configs]))
        if not any(c.train.get("init_from", "") or c.model.get("pretrained_embeddings", "") for c in self.configs):
            return self._with_learning_rates(state)
        states = self.layout.unstack(state)
        return self._assemble(
            [
                s.replace(params=self._initial_params(c, s.params, w))
                for s, c, w in zip(states, self.configs, self.workdirs)
            ]
        )

    def _initial_params(self, config: ml_collections.ConfigDict, params: Any, workdir: str | None) -> Any:
        if config.train.get("init_from", ""):
            pretrained = transfer.latest_params(config.train.init_from)
            params = transfer.transfer(params, pretrained, config.train.get("init_modules", optim.DEFAULT_INIT_MODULES))
        if config.model.get("pretrained_embeddings", ""):
            vectors = self._pretrained_vectors(config, workdir)
            params, report = embeddings.init_embedding(
                params, self.task.word_index(), vectors, path=embeddings.WORD_EMBEDDING, seed=config.seed
            )
            _note(f"pretrained embeddings: {report.summary()}")
        return params

    def _pretrained_vectors(self, config: ml_collections.ConfigDict, workdir: str | None) -> embeddings.WordVectors:
        """The vectors config.model.pretrained_embeddings names: a vector file,
        or 'word2vec': trained on this run's training words at its first start
        (kept in W/word2vec/vectors.bin; process 0 trains, the others read)."""
        location = config.model.pretrained_embeddings
        if location != word2vec.FROM_TRAINING_WORDS:
            return embeddings.load_vectors(location, config.model.get("pretrained_format", "auto") or "auto")
        settings = word2vec.settings_for_run(config.model, config.seed)
        path = None if workdir is None else os.path.join(workdir, WORD2VEC_VECTORS)
        started = time.monotonic()
        vectors = parallel.writer_first(
            lambda: word2vec.vectors_for_run(self.task.training_words, settings, path), "word2vec"
        )
        seconds = time.monotonic() - started
        _note(f"word2vec: vectors of {len(vectors.words)} words in {seconds:.1f} s ({path or 'not kept'})")
        return vectors

    def _assemble(self, states: Sequence[TrainState]) -> TrainState:
        """One state per replica (as a checkpoint gives them) -> the run's state."""
        state = self.layout.stack(states)
        return self._with_learning_rates(jax.device_put(state, self.strategy.state_shardings(state)))

    def _with_learning_rates(self, state: TrainState) -> TrainState:
        """The replicas' learning rates [R] in the state, when they differ."""
        if self.lr_scales is None:
            return state
        return state.replace(lr_scale=jax.device_put(self.lr_scales, self.layout.replicated()))

    def replica_template(self) -> Any:
        """One replica's state as shape structs with their shardings (what a checkpoint restores into)."""
        return jax.tree.map(
            lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
            self.replica_shape,
            self.replica_shardings,
        )

    def restore_or_init(self, ckpt: checkpoint.Checkpointer) -> TrainState:
        """The newest checkpointed state of every replica (and their data
        iterators' positions), or fresh states when there is none."""
        restored = ckpt.restore_latest(self.replica_template(), self.feeds.iterators)
        return self.init_state() if restored is None else self._assemble(restored)

    def restore_best(self, best: checkpoint.BestCheckpoint) -> TrainState:
        """The run's state made of every replica's best checkpoint."""
        return self._assemble(best.restore(self.replica_template()))

    def replica_states(self, state: TrainState) -> list[TrainState]:
        """One state per replica, as checkpoints hold them (without the
        learning rates, which come from the configs)."""
        return self.layout.unstack(state.replace(lr_scale=None))

    def save(self, ckpt: checkpoint.Checkpointer, step: int, state: TrainState, force: bool = False) -> None:
        """A checkpoint per replica."""
        if step % ckpt.save_every and not force:
            return
        ckpt.save(step, self.replica_states(state), force=force, data_iterators=self.feeds.iterators)

    def batches_done(self, state: TrainState) -> int:
        """Training batches the state has seen (the loop's step count)."""
        return int(np.ravel(jax.device_get(state.step))[0]) // self.strategy.updates_per_batch

    # --- steps and metrics ------------------------------------------------------

    def step(self, state: TrainState, index: int | None = None) -> tuple[TrainState, dict]:
        """Trains every replica on its training batch `index` (0-based;
        default: the next one, read from the state, which waits for the
        device). Metrics are scalars, or [R] for R > 1 replicas."""
        index = self.batches_done(state) if index is None else index
        return self.strategy.train_step(state, index, self.dropout_rngs)

    def evaluate(self, state: TrainState, split: str) -> list[Metrics]:
        """Per replica, the metrics of `split` (exact totals over the
        evaluation pass, then `task.finalize_metrics`). Raises
        FloatingPointError for a non-finite loss: the parameters are finite
        (training checks its own loss), so the split holds inputs the model
        cannot score (or skipped updates hid a divergence), and a NaN or inf
        result is not one to report."""
        results = [self._finalize(result) for result in self.strategy.evaluate(state, split)]
        for name, result in zip(self.names, results):
            if "loss" in result and not np.isfinite(result["loss"]):
                raise FloatingPointError(
                    f"step {self.batches_done(state)}: {split} loss is {result['loss']} in {name}; nothing was "
                    f"written for it. With a finite training loss, the {split} split holds inputs the model cannot "
                    "score (an extreme or missing value, a corrupt example): check that split of the data. "
                    "Otherwise training diverged: lower config.optimizer.learning_rate or clip gradients."
                )
        return results

    def learning_rates(self, step: int, state: TrainState | None = None) -> list[float]:
        """Per replica, the learning rate of step `step`'s last update (its
        own config's schedule: a replica with its own rate logs that rate).
        Updates skipped for a non-finite gradient (config.train.nonfinite=
        'skip', counted in `state`) do not advance the schedule."""
        update = step * self.strategy.updates_per_batch - 1
        skipped = optim.skipped_updates(state.opt_state) if state is not None else None
        if skipped is None:
            skipped = np.zeros(len(self.schedules), np.int64)
        return [float(schedule(update - int(n))) for schedule, n in zip(self.schedules, skipped)]

    def final_metrics(self, state: TrainState) -> list[Metrics]:
        """Per replica, what the task measures once at the end beyond its
        test evaluation (e.g. BLEU of decoded output; `task.final_metrics`)."""
        params = self.layout.unstack(state.params)
        return [
            self._finalize(
                self.task.final_metrics(
                    self.model,
                    params_r,
                    batch_size=config.train.batch_size,
                    num_batches=config.train.get("eval_batches", 0),
                    seed=config.seed,
                ),
                derived=False,
            )
            for params_r, config in zip(params, self.configs)
        ]

    def host_metrics(self, window: Sequence[dict]) -> list[list[Metrics]]:
        """A window of train steps' metrics on the host, [step][replica]
        (waits for the steps to finish)."""
        return [self.layout.unstack(step_metrics) for step_metrics in jax.device_get(list(window))]

    def window_means(self, per_step: Sequence[Sequence[Metrics]]) -> list[Metrics]:
        """Per replica, the mean of each metric over a window of train steps
        (`host_metrics`)."""
        return [
            self._finalize({name: float(np.mean([step[r][name] for step in per_step])) for name in per_step[0][r]})
            for r in range(self.layout.replicas)
        ]

    def _finalize(self, results: Metrics, derived: bool = True) -> Metrics:
        """Floats, with the metrics derived from the means (RMSE, perplexity)."""
        if derived:
            results = self.task.finalize_metrics(dict(results))
        return {name: float(value) for name, value in results.items()}


# ---------------------------------------------------------------- the loop


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, mesh=None) -> Metrics:
    """Trains one run (resuming from `workdir` if it holds checkpoints) and
    returns its final test metrics, also written to `workdir/final_metrics.json`."""
    return train_replicas([config], [workdir], mesh)[0]


def train_replicas(
    configs: Sequence[ml_collections.ConfigDict],
    workdirs: Sequence[str],
    mesh: jax.sharding.Mesh | None = None,
    chunk_size: int | None = None,
) -> list[Metrics]:
    """Trains R runs that differ only in seed and/or learning rate as one
    run of R replicas, `workdirs[r]` receiving what `train_and_evaluate`
    writes for `configs[r]` alone; resumes from their checkpoints. Returns
    each replica's final metrics."""
    if not configs or len(configs) != len(workdirs):
        raise ValueError(f"one workdir per config, got {len(configs)} configs and {len(workdirs)} workdirs")
    for workdir in workdirs:
        os.makedirs(workdir, exist_ok=True)
    # One lock per run: its writing process (process 0 of a multi-process run) holds it.
    with workdir_lib.lock(workdirs) if parallel.is_writer() else contextlib.nullcontext():
        for config, workdir in zip(configs, workdirs):
            workdir_lib.check_identity(workdir, config)
        stored = [workdir_lib.finished_result(w, c) for c, w in zip(configs, workdirs)]
        if all(final is not None for final in stored):
            logging.warning("%s: finished already; its stored final metrics, nothing trained", ", ".join(workdirs))
            return stored
        return _train_replicas(configs, workdirs, mesh, chunk_size)


def _train_replicas(configs, workdirs, mesh, chunk_size) -> list[Metrics]:
    started = time.monotonic()
    where = ", ".join(workdirs)
    _note(f"{where}: setting up (data, model, compiling the step)")
    trainer = Trainer(configs, mesh, workdirs, chunk_size)
    _note(f"set up in {time.monotonic() - started:.1f} s")
    files = [RunFiles(workdir, config, trainer.task) for workdir, config in zip(workdirs, configs)]
    train = trainer.config.train
    ckpt = checkpoint.Checkpointer(
        [os.path.join(w, "checkpoints") for w in workdirs], train.checkpoint_every, train.keep_checkpoints
    )
    ckpt.discard_unshared()  # a killed group may have left some replicas one save ahead
    state = trainer.restore_or_init(ckpt)
    ckpt.set_aside_unusable()  # damaged newer checkpoints: kept aside, their steps saved anew
    start = trainer.batches_done(state)
    _note(f"resumed from step {start} of {train.num_steps} (its checkpoint)" if start else "training from step 0")
    keeper = BestKeeper(trainer, workdirs) if train.get("best_metric") else None
    for run_files in files:
        run_files.begin(start)
    try:
        with Preemption() as preemption:
            if keeper is None or not keeper.out_of_patience(start):
                state = _train_steps(trainer, state, start, files, ckpt, preemption, keeper)
    except Preempted as stopped:
        ckpt.close()
        trainer.feeds.close()
        for run_files in files:
            run_files.stopped(stopped, time.monotonic() - started)
        raise
    finals = _final_metrics(trainer, state)
    if trainer.batches_done(state) < train.num_steps:
        finals = [dict(final, stopped_early=True) for final in finals]
    if keeper is not None:
        finals = keeper.with_best_metrics(finals)
    ckpt.close()
    trainer.feeds.close()
    seconds = time.monotonic() - started
    group = _group_record(trainer, workdirs, seconds)
    for run_files, final in zip(files, finals):
        run_files.finish(final, seconds / len(files), group)
    return finals


def _train_steps(
    trainer: Trainer, state, start: int, files: list[RunFiles], ckpt, preemption, keeper: BestKeeper | None
) -> TrainState:
    """Steps start + 1 .. num_steps, with logging, evaluation and checkpoints
    (and the best checkpoint, and early stopping, with `keeper`). Raises
    Preempted at the first logging step after a preemption signal, once a
    checkpoint of that step is saved."""
    train = trainer.config.train
    progress = metrics.Progress(start, train.num_steps, enabled=train.get("progress", True) and parallel.is_writer())
    guard = NonFiniteGuard(train.get("nonfinite", "stop"), files, ckpt)
    window, window_start = [], time.monotonic()
    for step in range(start + 1, train.num_steps + 1):
        state, step_metrics = trainer.step(state, step - 1)
        window.append(step_metrics)
        if step % train.log_every == 0 or step == train.num_steps:
            per_step = trainer.host_metrics(window)  # waits for the window's steps to finish
            # Before any eval or save of these steps (checkpoint_every is a multiple of log_every).
            guard.check(per_step, step - len(window) + 1)
            logged = trainer.window_means(per_step)
            rate = len(window) / (time.monotonic() - window_start)
            for run_files, means, rate_r in zip(files, logged, trainer.learning_rates(step, state)):
                run_files.log(step, dict(means, learning_rate=rate_r, steps_per_second=rate), prefix="train_")
            progress.update(step, {"loss": float(np.mean([means["loss"] for means in logged]))})
            window, window_start = [], time.monotonic()
        out_of_patience = False
        # The best checkpoint's candidates include the last step.
        if step % train.eval_every == 0 and step != train.num_steps or keeper is not None and step == train.num_steps:
            evaluated = _timed(trainer.evaluate, state, "eval", step)
            for run_files, results in zip(files, evaluated):
                run_files.log(step, results, prefix="eval_")
            if keeper is not None:
                out_of_patience = keeper.evaluated(step, trainer.replica_states(state), evaluated)
        # A stop only where a log window ends, so the resumed run logs the same windows.
        stop = step % train.log_every == 0 and step != train.num_steps and preemption.requested()
        trainer.save(ckpt, step, state, force=step == train.num_steps or stop or out_of_patience)
        if out_of_patience and step != train.num_steps:
            _note(f"step {step}: stopping early, {keeper.metric} did not improve in {keeper.patience} evaluations")
            break
        if stop:
            ckpt.wait()
            progress.close()
            raise Preempted(step, preemption.signum, [f.workdir for f in files])
    progress.close()
    return state


class BestKeeper:
    """config.train.best_metric (an eval_* metric, its direction from the
    task): keeps each replica's best checkpoint by it (checkpoint.BestCheckpoint,
    in <run dir>/best_checkpoint), stops training after
    config.train.early_stopping_patience evaluations without improvement
    (0: never), and adds the best checkpoint's test metrics to the final ones.

    Its state is the best checkpoints' steps, kept by orbax, so a resumed
    run counts the evaluations since the best exactly as an uninterrupted one."""

    def __init__(self, trainer: Trainer, workdirs: Sequence[str]):
        train = trainer.config.train
        self.trainer, self.metric = trainer, train.best_metric
        self.name = self.metric.removeprefix("eval_")
        mode = metrics.metric_direction(self.metric, trainer.task.higher_is_better)
        if mode is None:
            raise config_lib.ConfigError(
                f"config.train.best_metric={self.metric!r}: whether higher or lower is better is unknown for it; "
                "choose a loss, error, accuracy, F1 or BLEU metric of the eval split"
            )
        self.patience, self.eval_every = train.get("early_stopping_patience", 0), train.eval_every
        directories = [os.path.join(w, "best_checkpoint") for w in workdirs]
        self.checkpoint = checkpoint.BestCheckpoint(directories, self.name, mode)
        self.best_steps = [None if best is None else best[0] for best in self.checkpoint.best()]

    def evaluated(self, step: int, states: Sequence[TrainState], results: Sequence[Metrics]) -> bool:
        """Offers step `step`'s states (their eval `results`) as the best; True when patience has run out."""
        if self.name not in results[0]:
            raise config_lib.ConfigError(
                f"config.train.best_metric={self.metric!r} is not a metric of the eval split, which reports "
                f"{', '.join('eval_' + name for name in results[0])}: choose one of them"
            )
        improved = self.checkpoint.offer(step, states, [r[self.name] for r in results])
        self.best_steps = [step if better else best for better, best in zip(improved, self.best_steps)]
        return self.out_of_patience(step)

    def out_of_patience(self, step: int) -> bool:
        """Whether every replica has gone `patience` evaluations since its best, at `step`."""
        if not self.patience:
            return False
        evaluations_since = [None if b is None else step // self.eval_every - b // self.eval_every
                             for b in self.best_steps]  # fmt: skip
        return all(n is not None and n >= self.patience for n in evaluations_since)

    def with_best_metrics(self, finals: Sequence[Metrics]) -> list[Metrics]:
        """`finals` (the last state's) plus best_step, best_<metric> and the
        best checkpoint's test metrics as best_test_*."""
        kept = self.checkpoint.best()
        tested = _final_metrics(self.trainer, self.trainer.restore_best(self.checkpoint))
        self.checkpoint.close()
        merged = []
        for final, best, (step, value) in zip(finals, tested, kept):
            extra = {f"best_{k}": v for k, v in best.items() if k.startswith("test_")}
            merged.append({**final, "best_step": step, f"best_{self.metric}": value, **extra})
        return merged


class Preempted(Exception):
    """A run stopped by its scheduler's signal, its checkpoint saved: run it
    again (same config and workdir) to resume. `experiments.train` exits
    with PREEMPTED_EXIT_CODE."""

    def __init__(self, step: int, signum: int, workdirs: Sequence[str]):
        self.step, self.signum = step, signum
        super().__init__(
            f"{signal.Signals(signum).name} received: stopped at step {step} with a checkpoint saved in "
            f"{', '.join(workdirs)}; run the same command again to resume"
        )


# EX_TEMPFAIL ("try again later"); Slurm requeues jobs that exit with it when
# slurm.conf lists it in RequeueExit (scripts/slurm_cluster.sh does).
PREEMPTED_EXIT_CODE = 75


class Preemption:
    """While entered, SIGTERM (a scheduler's preemption) and SIGUSR2 (the
    signal Slurm sends ahead of a time limit with `--signal=USR2@T`, which
    submitit and docs/cluster.md use) only note that the run must stop; the
    loop stops at its next logging step (`requested`), saves a checkpoint
    and raises Preempted. The previous handlers are restored on exit.

    In a run of several processes every process asks at the same steps and
    all stop if any received the signal, so they save the same step."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR2)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():  # (handlers can only be set there)
            self._previous = {signum: signal.signal(signum, self._note) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _note(self, signum: int, frame) -> None:
        logging.warning("%s received: the run stops at its next logging step", signal.Signals(signum).name)
        self.signum = self.signum or signum

    def requested(self) -> bool:
        """Whether any process of the run was signalled (a collective: every
        process must call it at the same steps)."""
        signalled = self.signum is not None
        if jax.process_count() == 1:
            return signalled
        from jax.experimental import multihost_utils

        signums = multihost_utils.process_allgather(np.int32(self.signum or 0))
        self.signum = self.signum or int(np.max(signums)) or None
        return bool(np.any(signums))


class NonFiniteGuard:
    """Stops a run at its first non-finite training loss or gradient norm,
    naming the step, the replica's run dir and its last checkpoint,
    which holds finite parameters (every save follows a check). Under the
    `skip` policy the optimiser skips such updates (`optim.SKIP_LIMIT` in a
    row at most) and the guard only warns, until a longer streak."""

    # Other metrics may be NaN legitimately (an accuracy over a step with
    # nothing to count); the loss and the gradient norm never are.
    GUARDED = ("loss", "grad_norm")

    def __init__(self, policy: str, files: Sequence[RunFiles], ckpt: checkpoint.Checkpointer):
        self.policy, self.files, self.ckpt = policy, files, ckpt
        self.streak = 0  # consecutive steps with a non-finite metric, any replica

    def check(self, window: Sequence[Sequence[Metrics]], first_step: int) -> None:
        """`window[i][r]`: replica r's metrics at step first_step + i (host values)."""
        for offset, per_replica in enumerate(window):
            bad = [
                (r, name, float(m[name]))
                for r, m in enumerate(per_replica)
                for name in self.GUARDED
                if name in m and not np.isfinite(m[name])
            ]
            self.streak = self.streak + 1 if bad else 0
            if not bad:
                continue
            replica, name, value = bad[0]
            step, workdir = first_step + offset, self.files[replica].workdir
            if self.policy == "skip" and self.streak <= optim.SKIP_LIMIT:
                logging.warning("step %d: train %s is %s in %s; update skipped", step, name, value, workdir)
                continue
            self.ckpt.wait()
            last = self.ckpt.latest_step()
            saved = f"its last checkpoint is step {last}" if last is not None else "it has no checkpoint yet"
            raise FloatingPointError(
                f"step {step}: train {name} is {value} in run {workdir}; training stopped ({saved}, "
                "with finite parameters). Lower config.optimizer.learning_rate, clip gradients "
                "(config.optimizer.clip_global_norm) or check the data and labels, in a new workdir; "
                f"config.train.nonfinite='skip' skips up to {optim.SKIP_LIMIT} such updates in a row instead."
            )


def _final_metrics(trainer: Trainer, state: TrainState) -> list[Metrics]:
    step = trainer.batches_done(state)
    tested = _timed(trainer.evaluate, state, "test", step)
    return [
        {"step": step, **{f"test_{k}": v for k, v in test.items()}, **{f"test_{k}": v for k, v in extra.items()}}
        for test, extra in zip(tested, trainer.final_metrics(state))
    ]


def _timed(evaluate, state, split: str, step: int) -> list[Metrics]:
    """`evaluate(state, split)` between two notes (evaluation can take long)."""
    started = time.monotonic()
    _note(f"step {step}: evaluating the {split} split")
    results = evaluate(state, split)
    _note(f"step {step}: {split} evaluation done in {time.monotonic() - started:.1f} s")
    return results


def _note(message: str) -> None:
    if parallel.is_writer():
        metrics.note(message)


def _group_record(trainer: Trainer, workdirs: Sequence[str], seconds: float) -> dict | None:
    """What run_info.json records of a group of replicas (None for R = 1)."""
    if not trainer.layout.stacked:
        return None
    return {
        "mode": "vmap",
        "size": trainer.layout.replicas,
        "chunk_size": trainer.layout.chunk_size,
        "wall_time_s": seconds,
        "runs": [os.path.basename(os.path.normpath(w)) for w in workdirs],
    }


class RunFiles:
    """The files of one run dir: config.json (the resolved config), the task's
    assets (tokenizers, normalisers), metrics.jsonl + TensorBoard events,
    run_info.json, and final_metrics.json at the end. Only the writing
    process (`parallel.is_writer`) writes them; on the others every method
    is a no-op."""

    def __init__(self, workdir: str, config: ml_collections.ConfigDict, task: tasks.Task):
        self.workdir, self.config = workdir, config
        self.active = parallel.is_writer()
        self.writer: metrics.MetricsWriter | None = None
        self.wandb: metrics.WandbRun | None = None
        if not self.active:
            return
        task.save_assets(workdir)
        metrics.write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())
        self.run_info = RunInfo(workdir)

    def begin(self, start_step: int) -> None:
        if self.active:
            self.run_info.begin(self.config.seed, start_step)
            self.writer = metrics.MetricsWriter(self.workdir, resume_step=start_step)
            self.writer.config(self.config.to_dict())
            project = self.config.train.get("wandb_project", "")
            if project:
                run_id = self.run_info.info.setdefault("wandb_id", uuid.uuid4().hex[:12])
                self.wandb = metrics.WandbRun(self.workdir, project, self.config.to_dict(), run_id)

    def log(self, step: int, scalars: Metrics, prefix: str = "") -> None:
        """A metrics.jsonl line (and TensorBoard scalars)."""
        if self.active:
            record = self.writer.write(step, scalars, prefix=prefix)
            if self.wandb is not None:
                self.wandb.log(record)

    def stopped(self, preempted: Preempted, seconds: float) -> None:
        """run_info.json records the attempt's end: the step and the signal."""
        if self.active:
            self.writer.close()
            if self.wandb is not None:
                self.wandb.finish(exit_code=PREEMPTED_EXIT_CODE)
            self.run_info.end(seconds, status="preempted", stopped_at_step=preempted.step,
                              signal=signal.Signals(preempted.signum).name)  # fmt: skip

    def finish(self, final: Metrics, seconds: float, group: dict | None) -> None:
        """The final line, final_metrics.json, and run_info.json (wall time: this run's share of the group's)."""
        if not self.active:
            return
        record = self.writer.write(final["step"], final)
        self.writer.hparams(self.config.to_dict(), final)
        self.writer.close()
        if self.wandb is not None:
            self.wandb.log(record)
            self.wandb.finish(final)
        metrics.write_json_atomic(os.path.join(self.workdir, "final_metrics.json"), final)
        if group is not None:
            self.run_info.info["vmap_group"] = group
        self.run_info.end(seconds)


class RunInfo:
    """`W/run_info.json`: provenance of every (re)start of the run and its wall time."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, "run_info.json")
        previous = metrics.read_json(self.path) or {}
        self.info = {
            "attempts": previous.get("attempts", []),
            "wall_time_s": previous.get("wall_time_s", 0.0),
            "status": "running",
        }
        if "wandb_id" in previous:  # every start of the run logs to the same W&B run
            self.info["wandb_id"] = previous["wandb_id"]

    def begin(self, seed: int, start_step: int) -> None:
        self.info.update(seed=seed, **provenance.collect())
        self.info["attempts"].append({"start_step": start_step, "started_at": time.time()})
        metrics.write_json_atomic(self.path, self.info)

    def end(self, seconds: float, status: str = "finished", **attempt) -> None:
        self.info["wall_time_s"] += seconds
        self.info["attempts"][-1].update(wall_time_s=seconds, **attempt)
        self.info["status"] = status
        metrics.write_json_atomic(self.path, self.info)
