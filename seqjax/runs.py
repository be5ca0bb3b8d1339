"""Reopen a finished (or running) training run from its run dir: the
resolved config, the task with its saved tokenizer, the model, and the
parameters of its latest (or best) checkpoint; and predict with it on raw
inputs:

    from seqjax import runs
    run = runs.load_run("runs/sst2_lstm")                 # or checkpoint="best"
    run.predict(["a gorgeous, witty film", "flat and dull"])
    # [{'label': '1', 'label_id': 1, 'probabilities': [0.03, 0.97]}, ...]

What `predict` takes and returns is the task's (`Task.encode_raw`,
`Task.describe`): texts for classifiers, sentences (token lists or
whitespace-separated strings) for taggers ({'tags': [...]}), windows of raw
values for forecasting (forecasts in the series' units), and the model's own
input arrays for the synthetic tasks (its outputs). Translation runs
translate (`run.translate(["Ein Hund läuft."], beam_size=4)`), language
models continue a prompt (`run.generate("ROMEO:", length=200)`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from seqjax import checkpoint as checkpoint_lib
from seqjax import decoding, metrics, steps, tasks, training
from seqjax.nn import transformer
from seqjax.tasks import translation

CHECKPOINTS = ("latest", "best")


@dataclasses.dataclass
class Run:
    config: ml_collections.ConfigDict
    trainer: training.Trainer
    params: Any
    step: int
    model_state: dict = dataclasses.field(default_factory=dict)  # e.g. {'batch_stats': ...} for BatchNorm
    _apply: Any = dataclasses.field(default=None, repr=False)  # the jitted model, compiled on first use

    @property
    def variables(self) -> dict[str, Any]:
        """{'params': ..., plus the model's other collections}, for model.apply."""
        return {"params": self.params, **self.model_state}

    def predict(self, items: Sequence[Any], batch_size: int = 64) -> list[Any]:
        """The model's prediction for each raw input, as its task describes
        it (see the module docstring), `batch_size` inputs at a time."""
        task, model = self.trainer.task, self.trainer.model
        if isinstance(task, translation.GenerationObjective):
            raise ValueError(
                f"the run trained {type(model).__name__}, an encoder-decoder: translate with experiments.translate "
                "(seqjax-translate) or decode with experiments.decode instead"
            )
        if isinstance(items, (str, bytes)) or not len(items):
            raise ValueError("predict takes a non-empty sequence of inputs (a list of texts, sentences or arrays)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if self._apply is None:
            self._apply = jax.jit(
                lambda variables, x, n, extras: model.apply(variables, x, n, deterministic=True, **extras)
            )
        described = []
        for start in range(0, len(items), batch_size):
            batch = task.encode_raw(items[start : start + batch_size])
            extras = steps.model_kwargs(model, batch)  # e.g. a tagger's 'chars'
            outputs = self._apply(self.variables, batch["inputs"], batch["lengths"], extras)
            described += task.describe(jax.device_get(outputs), batch)
        return described

    def translate(
        self, texts: Sequence[str], beam_size: int = 0, alpha: float = 0.6, batch_size: int = 64
    ) -> list[str]:
        """The translation of each source text: greedy (beam_size 0) or beam
        search with the GNMT length penalty `alpha`."""
        task = self._text_source_task()
        inputs, lengths, _ = task.encode_texts(texts)
        return task.detokenize(self.decode_ids(inputs, lengths, beam_size, alpha, batch_size))

    def decode_ids(
        self, inputs: np.ndarray, lengths: np.ndarray, beam_size: int = 0, alpha: float = 0.6, batch_size: int = 64
    ) -> np.ndarray:
        """Output ids [N, max_len] of encoded sources (ids [N, S], lengths
        [N]), `batch_size` at a time. The last batch is filled up with copies
        of its last row, so every batch has one shape and the search compiles once."""
        task = self._text_source_task()
        if beam_size < 0 or batch_size < 1:
            raise ValueError(f"beam_size must be >= 0 and batch_size >= 1, got {beam_size} and {batch_size}")
        search = jax.jit(
            lambda p, x, n: translation.generate(
                self.trainer.model, p, x, n, max_len=task.target_len, beam_size=beam_size, alpha=alpha
            )
        )
        outputs, batch_size = [], min(batch_size, len(inputs))
        for start in range(0, len(inputs), batch_size):
            rows = np.arange(start, start + batch_size).clip(max=len(inputs) - 1)
            tokens = search(self.params, inputs[rows], lengths[rows])
            outputs.append(np.asarray(jax.device_get(tokens))[: len(inputs) - start])
        return np.concatenate(outputs)

    def _text_source_task(self):
        task = self.trainer.task
        if not isinstance(task, tasks.TEXT_SOURCE_TASKS):
            raise ValueError(f"the run trained {type(task).__name__}, not a translation task: it cannot translate")
        return task

    def generate(
        self,
        prompt: str,
        length: int,
        temperature: float = 0.8,
        top_k: int = 0,
        top_p: float = 1.0,
        num_samples: int = 1,
        seed: int = 0,
    ) -> list[str]:
        """`num_samples` continuations of `prompt` by a language model, each
        `length` tokens (temperature 0: greedy). Recurrent LMs carry their
        state through any length; Transformer LMs decode with a KV cache over
        windows of the training length (seqjax.decoding.generate_windowed)."""
        task, model = self.trainer.task, self.trainer.model
        if task.head != "per_step" or not isinstance(task, tasks.DatasetTask) or task.tokenizer is None:
            raise ValueError(
                f"the run trained task {self.config.task.name!r}, not a language model: it cannot generate"
            )
        tokenizer = task.tokenizer
        prompt_ids = tokenizer.encode(prompt)
        if not prompt_ids:
            raise ValueError(f"the prompt {prompt!r} has no tokens the model knows")
        tokens = jnp.tile(jnp.asarray(prompt_ids, jnp.int32)[None], (num_samples, 1))
        rng, sampling = jax.random.key(seed), dict(temperature=temperature, top_k=top_k, top_p=top_p)
        if isinstance(model, transformer.TransformerLM):
            context = self.config.data.get("seq_len", 0) or model.config.max_len
            prefill, tokens_to_logits = transformer.lm_decoder(model, self.variables, context)
            generated = decoding.generate_windowed(
                jax.jit(prefill), tokens_to_logits, tokens, length, context, rng, **sampling
            )
        else:
            prefill, tokens_to_logits = decoding.recurrent_decoder(model, self.params)
            generate = jax.jit(
                lambda cache, first, key: decoding.decode(tokens_to_logits, cache, first, length, key, **sampling)[0]
            )
            generated = generate(prefill(tokens), tokens[:, -1], rng)
        return tokenizer.decode_batch(jax.device_get(generated))


def load_run(run_dir: str, checkpoint: str = "latest") -> Run:
    """The run in `run_dir` at its latest checkpoint, or with
    `checkpoint='best'` at its best by config.train.best_metric."""
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {checkpoint!r}")
    config_path = os.path.join(run_dir, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{config_path} not found: is {run_dir} the workdir of a seqjax training run?")
    with open(config_path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    trainer = training.Trainer(config, workdir=run_dir)
    if checkpoint == "best":
        state, step = _best_state(trainer, run_dir)
    else:
        ckpt = checkpoint_lib.Checkpointer([os.path.join(run_dir, "checkpoints")], 1, 1)
        if ckpt.latest_step() is None:
            raise FileNotFoundError(f"no checkpoint in {os.path.join(run_dir, 'checkpoints')}")
        state, step = trainer.restore_or_init(ckpt), ckpt.latest_step()
        ckpt.close()
    trainer.feeds.close()
    model_state = {} if state.batch_stats is None else {"batch_stats": state.batch_stats}
    return Run(config, trainer, state.params, step, model_state=model_state)


def _best_state(trainer: training.Trainer, run_dir: str) -> tuple[steps.TrainState, int]:
    """The run's best kept state and the step it was kept at."""
    metric = trainer.config.train.get("best_metric", "")
    directory = os.path.join(run_dir, "best_checkpoint")
    if not metric or not os.path.isdir(directory):
        raise FileNotFoundError(
            f"{run_dir} keeps no best checkpoint (config.train.best_metric={metric!r}): load the latest one, "
            "or train with config.train.best_metric set"
        )
    name = metric.removeprefix("eval_")
    best = checkpoint_lib.BestCheckpoint(
        [directory], name, metrics.metric_direction(metric, trainer.task.higher_is_better)
    )
    kept = best.best()[0]
    if kept is None:
        raise FileNotFoundError(f"no checkpoint in {directory}")
    state = trainer.restore_best(best)
    best.close()
    return state, kept[0]
