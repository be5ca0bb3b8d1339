"""Metric sinks for a run: JSON lines, TensorBoard events, a console progress bar.

`metrics.jsonl` holds one JSON object per logged step. When a run resumes
from step s, lines logged after s (by the killed process, past its last
checkpoint) are dropped so the file reads as if the run was never killed.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorboardX
import tqdm

# A metric name is split on "_" and each word looked up here; see metric_direction.
LOWER_IS_BETTER = frozenset(
    {"loss", "mse", "mae", "rmse", "nll", "error", "err", "perplexity", "ppl", "cer", "wer", "time"}
)
HIGHER_IS_BETTER = frozenset({"accuracy", "acc", "bleu", "f1", "precision", "recall", "auc", "match"})


def metric_direction(name: str, declared: Mapping[str, bool] | None = None) -> str | None:
    """'min' if lower is better, 'max' if higher is better, None if unknown.

    A task's own declaration (`declared`: its `higher_is_better`, keyed by the
    name without a split prefix such as eval_ or test_) comes first; else the
    words of the name decide: a word among LOWER_IS_BETTER (loss, mse, error,
    perplexity, ...) means 'min', one among HIGHER_IS_BETTER (accuracy, acc,
    bleu, f1, ...) 'max'. `eval_copy_accuracy` -> 'max', `test_mse` -> 'min',
    `train_grad_norm` -> None.
    """
    bare = name.removeprefix("best_").split("_", 1)[-1] if "_" in name else name
    if declared and bare in declared:
        return "max" if declared[bare] else "min"
    words = set(name.lower().split("_"))
    if words & LOWER_IS_BETTER:
        return "min"
    if words & HIGHER_IS_BETTER:
        return "max"
    return None


def to_python(value):
    """numpy / jax scalars -> plain Python numbers for JSON."""
    array = np.asarray(value)
    return array.item() if array.ndim == 0 else array.tolist()


def write_json_atomic(path: str, obj) -> None:
    """Writes JSON via a temporary file and rename, so readers never see half a file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: str):
    """The JSON object in `path`, or None when the file does not exist."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill
                break
    return records


def _is_final_line(record: dict) -> bool:
    return any(name.startswith("test_") for name in record)


class MetricsWriter:
    """Writes scalars to `workdir/metrics.jsonl` and TensorBoard events."""

    def __init__(self, workdir: str, resume_step: int = 0):
        self.path = os.path.join(workdir, "metrics.jsonl")
        # Lines after the checkpoint the run resumes from, and a final test
        # line of an earlier start (killed before final_metrics.json), are
        # written again by this start.
        kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= resume_step and not _is_final_line(r)]
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        os.replace(tmp, self.path)
        self._jsonl = open(self.path, "a")
        self._tensorboard = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=resume_step + 1)

    def write(self, step: int, scalars: Mapping[str, float], prefix: str = "") -> dict:
        record = {"step": step, **{prefix + k: to_python(v) for k, v in scalars.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        for name, value in record.items():
            if name != "step" and isinstance(value, (int, float)):
                self._tensorboard.add_scalar(name, value, step)
        return record

    def config(self, config: Mapping[str, Any]) -> None:
        """The resolved config as TensorBoard text (its Text tab)."""
        self._tensorboard.add_text("config", "```\n" + json.dumps(config, indent=1, sort_keys=True) + "\n```", 0)

    def hparams(self, config: Mapping[str, Any], final: Mapping[str, float]) -> None:
        """The config's values beside the final metrics (TensorBoard's HParams tab)."""
        values = {key: value if isinstance(value, (bool, int, float, str)) else str(value)
                  for key, value in flatten(config).items()}  # fmt: skip
        scores = {key: float(value) for key, value in final.items() if key != "step"}
        self._tensorboard.add_hparams(values, scores, name="hparams")

    def close(self) -> None:
        self._jsonl.close()
        self._tensorboard.close()


class WandbRun:
    """A Weights & Biases mirror of one run's metrics (config.train.wandb_project
    set): every metrics.jsonl line logged at its step, the resolved config,
    and the final metrics as the run summary. W&B's own environment
    variables choose the rest (WANDB_MODE=offline, WANDB_ENTITY, ...). The run
    id is kept in run_info.json, so a resumed run continues the same W&B run
    (steps it logs again after its checkpoint are dropped by W&B; they hold
    the same values)."""

    def __init__(self, workdir: str, project: str, config: Mapping[str, Any], run_id: str):
        try:
            import wandb
        except ImportError as error:
            raise ImportError(
                f"config.train.wandb_project={project!r} needs the wandb package: pip install 'seqjax[wandb]', "
                "or set config.train.wandb_project='' to log without it"
            ) from error
        self.run = wandb.init(
            project=project,
            dir=workdir,
            id=run_id,
            name=os.path.basename(os.path.normpath(workdir)),
            config=dict(config),
            resume="allow",
            reinit="create_new",  # the runs of a vmap group are open together
        )

    def log(self, record: Mapping[str, Any]) -> None:
        self.run.log({k: v for k, v in record.items() if k != "step"}, step=int(record["step"]))

    def finish(self, final: Mapping[str, Any] | None = None, exit_code: int = 0) -> None:
        if final is not None:
            self.run.summary.update(dict(final))
        self.run.finish(exit_code=exit_code)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'model': {'cell': 'lstm'}} -> {'model.cell': 'lstm'}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class Progress:
    """Training progress on stderr; a no-op when disabled.

    On a terminal, a tqdm bar with rate and ETA. Anywhere else (a cluster
    job's log, a redirected file) a plain line every `interval_s` seconds
    and at the last step, never carriage returns:

        step 500/2500 (20%) | 45.2 steps/s | ETA 0:00:44 | loss 0.1234
    """

    def __init__(
        self, start: int, total: int, enabled: bool = True, interactive: bool | None = None, interval_s: float = 30.0
    ):
        self.enabled = enabled
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self._start_step, self._total, self._interval = start, total, interval_s
        self._start_time = self._last_line = time.monotonic()
        self._bar = None
        if enabled and self.interactive:
            self._bar = tqdm.tqdm(
                initial=start, total=total, unit="step", dynamic_ncols=True, mininterval=0.5, file=sys.stderr
            )

    def update(self, step: int, postfix: Mapping[str, float] | None = None) -> None:
        postfix = {k: to_python(v) for k, v in (postfix or {}).items()}
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            if postfix:
                self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
        elif self.enabled and (time.monotonic() - self._last_line >= self._interval or step == self._total):
            self._last_line = time.monotonic()
            print(self.line(step, postfix), file=sys.stderr, flush=True)

    def line(self, step: int, postfix: Mapping[str, float]) -> str:
        """`step 500/2500 (20%) | 45.2 steps/s | ETA 0:00:44 | loss 0.1234`."""
        elapsed = max(time.monotonic() - self._start_time, 1e-9)
        rate = (step - self._start_step) / elapsed
        eta = (self._total - step) / rate if rate > 0 else float("nan")
        eta_text = str(datetime.timedelta(seconds=round(eta))) if math.isfinite(eta) else "?"
        parts = [
            f"step {step}/{self._total} ({100 * step / self._total:.0f}%)",
            f"{rate:.1f} steps/s",
            f"ETA {eta_text}",
        ]
        return " | ".join(parts + [f"{name} {value:.4g}" for name, value in postfix.items()])

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def note(message: str) -> None:
    """One line on stderr about what a run is doing (setting up, compiling,
    evaluating, resuming), printed above a progress bar if one is shown."""
    tqdm.tqdm.write(f"[seqjax {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr)
