"""Model registry: `build(config.model, task)` returns a Linen module by name.

Every model is called as `model(inputs, lengths, deterministic=...)` with
inputs [B, T, F] floats or [B, T] token ids, and returns [B, output_size]
(many-to-one heads) or [B, T, output_size] (per-step head).
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import ml_collections

from seqjax.nn import heads, recurrent
from seqjax.tasks import Task

_REGISTRY: dict[str, Callable[[ml_collections.ConfigDict, Task], nn.Module]] = {}

HEADS = heads.POOLINGS + ("per_step",)


def register(name: str):
    """Decorator: `builder(model_config, task) -> nn.Module` becomes `config.model.name = name`."""

    def decorate(builder):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return decorate


def names() -> list[str]:
    return sorted(_REGISTRY)


def config_keys(name: str) -> tuple[str, ...]:
    """The `config.model` keys the model `name` reads."""
    return ("name",) + tuple(getattr(_REGISTRY[name], "config_keys", ()))


def build(model_config: ml_collections.ConfigDict, task: Task) -> nn.Module:
    """The model named `model_config.name`, shaped for `task`."""
    name = model_config.name
    if name not in _REGISTRY:
        raise ValueError(f"unknown model config.model.name={name!r}; registered: {', '.join(names())}")
    return _REGISTRY[name](model_config, task)


class RecurrentModel(nn.Module):
    """[embedding] -> recurrent stack -> head -> Dense(output_size).

    Attributes:
      stack: the recurrent layers.
      output_size: units of the final projection.
      head: 'last' / 'mean' / 'max' pool valid steps (many-to-one);
        'per_step' projects every step (many-to-many).
      vocab_size: > 0 for token-id inputs, embedded to `embed_size`.
      embed_size: embedding width (used when vocab_size > 0).
    """

    stack: recurrent.RecurrentStack
    output_size: int
    head: str = "last"
    vocab_size: int = 0
    embed_size: int = 64

    @nn.compact
    def __call__(self, inputs: jax.Array, lengths: jax.Array | None = None, *,
                 deterministic: bool = True, initial_carry=None, return_carry: bool = False,
                 resets: jax.Array | None = None):
        """Predictions; with `return_carry`, also the stack's final carries
        (one per layer), which `initial_carry` accepts back, so a long
        sequence can be run chunk by chunk (seqjax.tbptt); `resets` [B, T]
        restarts the carry where a new document starts in a stream."""
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}")
        if self.vocab_size:
            if inputs.ndim != 2:
                raise ValueError(f"token-id inputs must be [batch, time], got shape {tuple(inputs.shape)}")
            inputs = nn.Embed(self.vocab_size, self.embed_size, name="embed")(inputs)
        outputs, carries = self.stack(inputs, lengths, initial_carry, deterministic=deterministic, resets=resets)
        if self.head == "per_step":
            features = outputs
        elif self.head == "last" and self.stack.bidirectional:
            # The backward direction's summary of the sequence sits at step 0,
            # so take both directions' final hidden states instead of a step.
            features = recurrent.final_hidden(carries[-1], self.stack.merge)
        else:
            features = heads.pool(outputs, lengths, self.head)
        predictions = nn.Dense(self.output_size, name="output")(features)
        return (predictions, carries) if return_carry else predictions


@register("recurrent")
def recurrent_model(config: ml_collections.ConfigDict, task: Task) -> RecurrentModel:
    """A recurrent model from `config.model` (see configs/default.py for every field)."""
    cell_kwargs = {}
    if config.cell == "lstm":
        cell_kwargs["forget_bias"] = config.get("forget_bias", 1.0)
    if config.cell == "irnn":
        cell_kwargs["identity_scale"] = config.get("identity_scale", 1.0)
    stack = recurrent.RecurrentStack(
        cell=config.cell,
        hidden_size=config.hidden_size,
        num_layers=config.get("num_layers", 1),
        bidirectional=config.get("bidirectional", False),
        merge=config.get("merge", "concat"),
        dropout_rate=config.get("dropout_rate", 0.0),
        learn_initial_carry=config.get("learn_initial_carry", False),
        implementation=config.get("implementation", "auto"),
        unroll=config.get("unroll", 1),
        cell_kwargs=cell_kwargs,
        parent=None,
    )
    head = config.get("head", "") or task.head
    return RecurrentModel(stack=stack, output_size=task.output_size, head=head,
                          vocab_size=task.vocab_size, embed_size=config.get("embed_size", 64))


recurrent_model.config_keys = (
    "cell", "hidden_size", "num_layers", "bidirectional", "merge", "dropout_rate",
    "learn_initial_carry", "implementation", "unroll", "forget_bias", "identity_scale",
    "head", "embed_size")
