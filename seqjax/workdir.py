"""A run's workdir: whose it is (run identity) and who is using it (the lock).

Identity. `W/config.json` records the resolved config of the run that made
W. A later start in W (to resume, or to re-run a finished run) must bring
the same config: `check_identity` refuses any difference that can change
the run's numbers, listing the keys and the way forward. Keys that only
change what is logged or kept (`RESUMABLE_KEYS`) may change; so may
`train.num_steps` upwards under a constant learning rate, where a longer run
continues exactly as if it had been asked for from the start. A finished
run (`W/final_metrics.json`) started again with its own config reports its
stored result and writes nothing (`finished_result`).

Lock. `lock(workdirs)` takes an exclusive `fcntl.flock` on `W/.lock` for the
life of the run, so a second run started in a live workdir is refused
instead of racing the first one's checkpoints and metrics. The kernel
releases a flock when its process ends, however it ends (kill -9 included),
so a killed run never blocks its own resume. On NFS, Linux implements flock
with the server's byte-range locks: they are shared between hosts and are
freed when the holding client's lease ends (a vanished host: after the lease
time, about 90 s on NFSv4). On a file system without locks (flock fails with
ENOLCK / EOPNOTSUPP / ENOSYS, e.g. Lustre mounted without `-o flock`) the
lock falls back to the record in the file: a record of a live process on
this host, or of any process on another host, refuses the start and says
how to clear it; a record of a dead process on this host is taken over.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator, Sequence

import ml_collections
from absl import logging

from seqjax import metrics

# Keys that change what is logged, evaluated on the way or kept on disk, never
# the parameters or the reported test metrics.
RESUMABLE_KEYS = (
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.progress",
    "train.wandb_project",
)
# Keys added after runs were recorded, with the value that means "as before".
ADDED_KEYS = {"train.best_metric": "", "train.early_stopping_patience": 0, "train.wandb_project": ""}
_ABSENT = "(absent)"
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


class RunIdentityError(ValueError):
    """A workdir was started again with a config that changes its numbers."""


class WorkdirBusyError(RuntimeError):
    """Another live run holds the workdir."""


# ----------------------------------------------------------------------------- identity


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """{'train': {'num_steps': 5}} -> {'train.num_steps': 5}."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def as_recorded(config: ml_collections.ConfigDict) -> dict:
    """The config as `W/config.json` holds it (JSON types: tuples become lists)."""
    return json.loads(json.dumps(config.to_dict()))


def differences(recorded: dict, config: dict) -> list[tuple[str, object, object]]:
    """(key, recorded value, new value) of every key that differs, sorted; a
    key added to seqjax after the run started (ADDED_KEYS) counts as its
    default there."""
    old, new = {**ADDED_KEYS, **flatten(recorded)}, flatten(config)
    return [
        (key, old.get(key, _ABSENT), new.get(key, _ABSENT))
        for key in sorted(old.keys() | new.keys())
        if old.get(key, _ABSENT) != new.get(key, _ABSENT)
    ]


def _resumable(key: str, old, new, config: dict) -> bool:
    if key in RESUMABLE_KEYS:
        return True
    constant_rate = config.get("optimizer", {}).get("schedule", "constant") == "constant"
    return key == "train.num_steps" and constant_rate and isinstance(old, int) and new >= old


def check_identity(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Raises RunIdentityError if `workdir` was started with a config whose
    numbers differ from `config`'s; logs the accepted changes."""
    recorded = metrics.read_json(os.path.join(workdir, "config.json"))
    if recorded is None:
        return
    new = as_recorded(config)
    changed = differences(recorded, new)
    refused = [(k, old, value) for k, old, value in changed if not _resumable(k, old, value, new)]
    if refused:
        listing = "; ".join(f"{k}: {old!r} in the workdir, {value!r} now" for k, old, value in refused)
        raise RunIdentityError(
            f"workdir {workdir} holds a run of a different config ({listing}). A run's numbers come from "
            "one config: train this one in a new --workdir, or resume with the recorded values "
            f"({os.path.join(workdir, 'config.json')}). Only {', '.join(RESUMABLE_KEYS)}, and "
            "train.num_steps upwards under a constant learning rate, may change between starts."
        )
    for key, old, value in changed:
        logging.warning(
            "workdir %s: %s changed from %r to %r (does not change the run's numbers)", workdir, key, old, value
        )


def finished_result(workdir: str, config: ml_collections.ConfigDict) -> dict | None:
    """The final metrics of `workdir` if its run finished `config`'s steps,
    else None (a run extended to more steps is unfinished again). Call
    after `check_identity`."""
    final = metrics.read_json(os.path.join(workdir, "final_metrics.json"))
    if final is None:
        return None
    return final if final.get("step") == config.train.num_steps or final.get("stopped_early") else None


# ----------------------------------------------------------------------------- the lock


@contextlib.contextmanager
def lock(workdirs: Sequence[str]) -> Iterator[None]:
    """Holds `W/.lock` of every workdir (in order) until the block ends;
    raises WorkdirBusyError naming the holder if another live run has one."""
    with contextlib.ExitStack() as stack:
        for workdir in workdirs:
            stack.enter_context(_lock_one(workdir))
        yield


@contextlib.contextmanager
def _lock_one(workdir: str) -> Iterator[None]:
    path = os.path.join(workdir, ".lock")
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            raise WorkdirBusyError(_busy_message(workdir, _holder(f))) from None
        except OSError as error:
            if error.errno not in _NO_LOCKS:
                raise
            logging.warning("%s: the file system has no locks (%s); using the lock file's record", path, error)
            holder = _holder(f)
            if holder and not _is_stale(holder):
                raise WorkdirBusyError(_busy_message(workdir, holder)) from None
            locked = False
        _write_record(f)
        try:
            yield
        finally:
            f.truncate(0)
            f.flush()
            if locked:
                fcntl.flock(f, fcntl.LOCK_UN)


def _holder(f) -> dict | None:
    f.seek(0)
    text = f.read().strip()
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None


def _write_record(f) -> None:
    f.seek(0)
    f.truncate(0)
    json.dump({"host": socket.gethostname(), "pid": os.getpid(), "started_at": time.time()}, f)
    f.flush()


def _is_stale(holder: dict) -> bool:
    """True for a record left by a process of this host that no longer runs."""
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError, TypeError):
        return False
    return False


def _busy_message(workdir: str, holder: dict | None) -> str:
    who = (
        f"pid {holder.get('pid')} on host {holder.get('host')}, started "
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.get('started_at', 0)))}"
        if holder
        else "another process"
    )
    return (
        f"workdir {workdir} is in use by a live run ({who}): wait for it to end or use another --workdir. "
        f"If that run is gone (its host vanished), delete {os.path.join(workdir, '.lock')}."
    )
