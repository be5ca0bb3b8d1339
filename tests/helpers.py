"""Helpers shared by the training tests: reading a run dir, stepping a
trainer, and making a child process die mid-run for the kill-and-resume tests."""

import os
import signal

import jax

from seqjax import config as config_lib
from seqjax import metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, variant: str | None = None):
    """configs/<name>.py[:variant] of this repository, loaded as the entry points load it."""
    path = os.path.join(REPO, "configs", f"{name}.py")
    return config_lib.load_config(f"{path}:{variant}" if variant else path)


def logged(workdir) -> list[dict]:
    """The records of a run dir's metrics.jsonl."""
    return metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))


def losses_by_step(workdir) -> dict[int, float]:
    """{step: train_loss} of a run dir's metrics.jsonl."""
    return {r["step"]: r["train_loss"] for r in logged(workdir) if "train_loss" in r}


def run_steps(trainer, num_steps: int) -> tuple[list[float], dict]:
    """Trains `num_steps` steps from a fresh state: (losses, params on the host)."""
    state = trainer.init_state()
    losses = []
    for index in range(num_steps):
        state, step_metrics = trainer.step(state, index)
        losses.append(float(step_metrics["loss"]))
    return losses, jax.device_get(state.params)


def die_after_step(kill_after_step: int = -1, kill_in_save_step: int = -1, kill_at_final: bool = False) -> None:
    """Makes this process SIGKILL itself right after training step
    `kill_after_step` (1-based) of the loop, or right after it starts the
    asynchronous checkpoint save of `kill_in_save_step` (while orbax is still
    writing it), -1: never; or, with `kill_at_final`, after the final test
    line is logged and before final_metrics.json is written. For the child
    processes of kill-and-resume tests, before they start training."""
    import orbax.checkpoint as ocp

    from seqjax import training

    step_fn = training.Trainer.step

    def step_then_maybe_die(self, state, index=None):
        state, step_metrics = step_fn(self, state, index)
        if index is not None and index + 1 == kill_after_step:
            os.kill(os.getpid(), signal.SIGKILL)
        return state, step_metrics

    save_fn = ocp.CheckpointManager.save

    def save_then_maybe_die(self, step, *args, **kwargs):
        saved = save_fn(self, step, *args, **kwargs)
        if step == kill_in_save_step:
            os.kill(os.getpid(), signal.SIGKILL)
        return saved

    write_json = metrics.write_json_atomic

    def write_json_or_die(path, obj):
        if kill_at_final and path.endswith("final_metrics.json"):
            os.kill(os.getpid(), signal.SIGKILL)
        write_json(path, obj)

    training.Trainer.step = step_then_maybe_die
    ocp.CheckpointManager.save = save_then_maybe_die
    metrics.write_json_atomic = write_json_or_die
