"""Metric sinks for a run: JSON lines, TensorBoard events, a console progress bar.

`metrics.jsonl` holds one JSON object per logged step. When a run resumes
from step s, lines logged after s (by the killed process, past its last
checkpoint) are dropped so the file reads as if the run was never killed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping

import numpy as np
import tensorboardX
import tqdm


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

    def close(self) -> None:
        self._jsonl.close()
        self._tensorboard.close()


class Progress:
    """Console progress bar (stderr) with rate and ETA; a no-op when disabled."""

    def __init__(self, start: int, total: int, enabled: bool = True):
        interactive = sys.stderr.isatty()
        self._bar = tqdm.tqdm(
            initial=start,
            total=total,
            unit="step",
            disable=not enabled,
            dynamic_ncols=True,
            mininterval=0.5 if interactive else 10.0,
            file=sys.stderr,
        )
        self._start_time = time.monotonic()

    def update(self, step: int, postfix: Mapping[str, float] | None = None) -> None:
        self._bar.update(step - self._bar.n)
        if postfix:
            self._bar.set_postfix({k: f"{to_python(v):.4g}" for k, v in postfix.items()}, refresh=False)

    def close(self) -> None:
        self._bar.close()
