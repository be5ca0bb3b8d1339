"""Heatmaps of a Transformer's attention weights, one PNG per attention layer
with a panel per head, the tokens on the axes (queries down, keys across).

  python -m experiments.attention_maps --run_dir=runs/copy_transformer [--split=test --index=0]
  python -m experiments.attention_maps --config=configs/transformer_synthetic.py:smoke --out_dir=/tmp/maps
  python -m experiments.attention_maps --run_dir=W --tokens=3,1,4,1,5

--run_dir reads an experiments.train run (config.json and its latest
checkpoint); --config initialises a fresh model instead. The input is
example --index of the task's --split, or the ids in --tokens. PNGs go to
--out_dir (default: <run_dir>/attention_maps), named after the layer, e.g.
decoder_layer_0_self_attention.png; attention_maps.json lists them with the
tokens used.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging

from experiments import command
from seqjax import config as config_lib
from seqjax import metrics, tasks
from seqjax.nn import transformer

_RUN_DIR = flags.DEFINE_string("run_dir", None, "The trained run to read the model from.")
_CONFIG = flags.DEFINE_string("config", None, "Config file[:variant] for a freshly initialised model.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where the PNGs go (default: <run_dir>/attention_maps).")
_SPLIT = flags.DEFINE_string("split", "test", "Task split the example comes from.")
_INDEX = flags.DEFINE_integer("index", 0, "Which example of the split's first batch.")
_TOKENS = flags.DEFINE_list("tokens", [], "Token ids to use instead of a task example.")


def fresh_model(config: ml_collections.ConfigDict):
    """(trainer, variables) of a freshly initialised model of `config`."""
    from seqjax import training  # touches devices: after absl set-up

    trainer = training.Trainer(config)
    return trainer, {"params": jax.device_get(trainer.init_state().params)}


def trained_model(workdir: str):
    """(trainer, variables) of the run in `workdir` at its latest checkpoint."""
    from seqjax import runs

    run = runs.load_run(workdir)
    return run.trainer, jax.device_get(run.variables)


def example(task, split: str, index: int, seed: int, tokens: Sequence[int] = ()) -> dict[str, np.ndarray]:
    """One example as a batch of one: the given token ids, or row `index` of `split`'s first batch."""
    if tokens:
        ids = np.asarray([int(t) for t in tokens], np.int32)[None]
        return {"inputs": ids}
    batch = task.batch(split, 0, index + 1, seed)
    return {name: value[index : index + 1] for name, value in batch.items()}


def attention_weights(model, variables: dict, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{layer path: weights [H, T, S]} of every attention layer for the one-example `batch`."""
    if not isinstance(model, transformer.MODELS):
        raise ValueError(f"{type(model).__name__} is not a seqjax Transformer; attention maps need one")
    sowing = model.clone(config=dataclasses.replace(model.config, sow_attention_weights=True))
    extra = {name: jnp.asarray(batch[name]) for name in ("decoder_inputs", "decoder_lengths") if name in batch}
    lengths = batch.get("lengths")
    _, state = jax.jit(lambda v, x, n: sowing.apply(v, x, n, mutable=["intermediates"], **extra))(
        variables, jnp.asarray(batch["inputs"]), None if lengths is None else jnp.asarray(lengths)
    )
    flat = jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]
    maps = {}
    for path, value in flat:
        names = [key.key for key in path if isinstance(key, jax.tree_util.DictKey)]  # drops sow's tuple index
        if names and names[-1] == "attention_weights":
            maps["/".join(names[:-1])] = np.asarray(value[0])
    return maps


def token_labels(task, model, batch: dict[str, np.ndarray]) -> list[str]:
    """Labels of the encoder/decoder positions: the task's token strings when
    its sources are text (`tasks.TEXT_SOURCE_TASKS`), else the ids (or t0,
    t1, ... for real-valued inputs); [CLS] first when the model prepends one."""
    inputs = batch["inputs"][0]
    if inputs.ndim > 1:
        labels = [f"t{i}" for i in range(len(inputs))]
    elif isinstance(task, tasks.TEXT_SOURCE_TASKS):
        labels = list(task.token_strings(inputs))
    else:
        labels = [str(int(i)) for i in inputs]
    if isinstance(model, transformer.TransformerClassifier) and model.pooling == "cls":
        labels = ["[CLS]"] + labels
    return labels


def plot_layer(
    weights: np.ndarray, query_labels: Sequence[str], key_labels: Sequence[str], title: str, path: str
) -> None:
    """One PNG: a heatmap per head of weights [H, T, S]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads, q_len, kv_len = weights.shape
    cols = min(heads, 4)
    rows = -(-heads // cols)
    panel = float(np.clip(0.18 * max(q_len, kv_len), 3.0, 8.0))
    fig, axes = plt.subplots(rows, cols, figsize=(panel * cols + 1.5 * cols, panel * rows + 1.0), squeeze=False)
    for h, ax in enumerate(axes.flat):
        if h >= heads:
            ax.axis("off")
            continue
        # Each head on its own scale: untrained heads spread thinly and would all look blank on [0, 1].
        image = ax.imshow(
            weights[h],
            vmin=0.0,
            vmax=float(weights[h].max()) or 1.0,
            cmap="viridis",
            aspect="auto",
            interpolation="nearest",
        )
        fig.colorbar(image, ax=ax, shrink=0.8)
        ax.set_title(f"head {h}", fontsize=9)
        _set_ticks(ax.set_xticks, key_labels, rotation=90)
        _set_ticks(ax.set_yticks, query_labels)
        ax.set_xlabel("key", fontsize=8)
        ax.set_ylabel("query", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _set_ticks(set_ticks, labels: Sequence[str], **kwargs) -> None:
    """Every label up to 40 tokens, then every k-th so they stay readable."""
    every = max(1, -(-len(labels) // 40))
    positions = list(range(0, len(labels), every))
    set_ticks(positions, [labels[i] for i in positions], fontsize=6, **kwargs)


def run(
    out_dir: str,
    *,
    workdir: str | None = None,
    config_spec: str | None = None,
    split: str = "test",
    index: int = 0,
    tokens: Sequence[int] = (),
) -> dict[str, Any]:
    """Writes one PNG per attention layer into `out_dir`; returns what
    attention_maps.json records."""
    if (workdir is None) == (config_spec is None):
        raise ValueError("give exactly one of --run_dir (a trained run) or --config (a fresh model)")
    if workdir is not None:
        trainer, variables = trained_model(workdir)
    else:
        trainer, variables = fresh_model(config_lib.load_config(config_spec))
    batch = example(trainer.task, split, index, trainer.config.seed, tokens)
    maps = attention_weights(trainer.model, variables, batch)
    labels = token_labels(trainer.task, trainer.model, batch)
    targets = [str(int(i)) for i in batch["decoder_inputs"][0]] if "decoder_inputs" in batch else None
    os.makedirs(out_dir, exist_ok=True)
    files = {}
    for layer, weights in maps.items():
        queries = keys = labels
        if targets is not None and layer.startswith("decoder"):
            # An encoder-decoder's decoder queries target positions; its cross-attention keys are the source.
            queries, keys = targets, (labels if "cross_attention" in layer else targets)
        path = os.path.join(out_dir, layer.replace("/", "_") + ".png")
        plot_layer(weights, queries, keys, f"{layer} ({trainer.config.model.name})", path)
        files[layer] = path
    record = {"files": files, "tokens": labels, "source": workdir or config_spec}
    metrics.write_json_atomic(os.path.join(out_dir, "attention_maps.json"), record)
    return record


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
    out_dir = _OUT_DIR.value or (os.path.join(_RUN_DIR.value, "attention_maps") if _RUN_DIR.value else None)
    if out_dir is None:
        raise app.UsageError("--out_dir is needed with --config")
    record = run(
        out_dir,
        workdir=_RUN_DIR.value,
        config_spec=_CONFIG.value,
        split=_SPLIT.value,
        index=_INDEX.value,
        tokens=_TOKENS.value,
    )
    for layer, path in record["files"].items():
        print(f"{layer}: {path}")


def entry() -> None:
    command.start(main)


if __name__ == "__main__":
    entry()
