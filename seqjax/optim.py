"""The optimiser of a run, built from the run config as one optax chain.

`build_optimizer(config, num_updates)` is the only place the chain is
assembled. Each update passes, in this order:

  1. penalties     + gradient of l1*Σ|w| + l2*Σw² over weight matrices
                   (`config.optimizer.l1`, `l2`; leaves with ndim >= 2)
  2. freeze        frozen parameters' gradients zeroed, so they count neither
                   in clipping nor in Adam's moments
  3. clip          each entry to [-clip_value, clip_value]
  4. clip          by global norm `clip_global_norm`
  5. optimiser     adam / adamw / sgd, scaled by the learning-rate schedule
  6. freeze        frozen parameters' updates zeroed, so decoupled weight
                   decay and momentum cannot move them either

Freezing is one mechanism, `freeze(rules)`: a `FreezeRule` names what it
holds (`select(params)` -> key paths) and for how long (`steps`: None for
good, N for the first N updates). `freeze_rules(config)` derives the rules
of a run from `config.train.freeze_steps` / `init_modules` (transfer
learning) and `config.model.freeze_embedding` / `freeze_embedding_steps`.

The penalties are part of the gradient, not of the loss: the training step
differentiates the task loss only. `weight_penalty` computes the penalty's
value, for logging.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from seqjax import embeddings

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "linear")
# The keys `build_optimizer` reads from config.optimizer (for config validation).
OPTIMIZER_KEYS = (
    "name",
    "learning_rate",
    "schedule",
    "warmup_steps",
    "end_lr_fraction",
    "b1",
    "b2",
    "momentum",
    "nesterov",
    "weight_decay",
    "clip_global_norm",
    "clip_value",
    "l1",
    "l2",
)
DEFAULT_INIT_MODULES = ("embed", "stack")
# config.train.nonfinite: what a non-finite loss or gradient does (seqjax.training).
NONFINITE_POLICIES = ("stop", "skip")
SKIP_LIMIT = 10  # consecutive skipped updates after which `skip` stops the run too

Path = tuple[str, ...]
Selector = Callable[[Any], Iterable[Path]]


# --- the whole chain -------------------------------------------------------------------------


def build_optimizer(
    config: ml_collections.ConfigDict, num_updates: int, *, unit_peak: bool = False
) -> optax.GradientTransformation:
    """The optax chain of a run (module docstring: penalties, freeze, clips,
    optimiser with its schedule, freeze).

    Args:
      config: the whole run config; reads `optimizer`, and `train` and
        `model` for the freeze rules (either may be absent: nothing frozen).
      num_updates: optimiser updates in the run (the schedule decays over
        them; several per batch under per-chunk TBPTT).
      unit_peak: build the chain with peak learning rate 1 instead of
        `config.optimizer.learning_rate`. Every chain applies the learning
        rate last and linearly, so for any lr the invariant

            lr * unit_peak updates == updates of the chain with peak lr

        holds step for step, up to float rounding (tests/test_optim.py pins
        it to 1e-6). Vmapped replicas with different learning rates share
        one unit-peak chain and each scales its updates by its own lr; an
        optimiser or schedule added here must keep this property.

    Config errors (unknown optimiser or schedule, both embedding freezes set)
    raise ValueError here; freeze rules that do not match the model raise
    ValueError at `init`.
    """
    opt = config.optimizer
    peak = 1.0 if unit_peak else opt.learning_rate
    rules = freeze_rules(config)
    chain = []
    if opt.get("l1", 0.0) or opt.get("l2", 0.0):
        chain.append(add_penalty_gradient(opt.get("l1", 0.0), opt.get("l2", 0.0)))
    if rules:
        chain.append(freeze(rules))
    if opt.get("clip_value", 0.0) > 0:
        chain.append(optax.clip(opt.clip_value))
    if opt.get("clip_global_norm", 0.0) > 0:
        chain.append(optax.clip_by_global_norm(opt.clip_global_norm))
    chain.append(base_optimizer(opt, learning_rate_schedule(opt, num_updates, peak=peak)))
    if rules:
        chain.append(freeze(rules))
    if config.get("train", {}).get("nonfinite", "stop") == "skip":
        # A non-finite gradient leaves params and optimiser state untouched;
        # after SKIP_LIMIT in a row the update goes through and the loop stops the run.
        return optax.apply_if_finite(optax.chain(*chain), max_consecutive_errors=SKIP_LIMIT)
    return optax.chain(*chain)


def skipped_updates(opt_state: Any) -> np.ndarray | None:
    """Per replica [R] (or [1]), the updates the `skip` policy has skipped so
    far (optax.apply_if_finite's count), None without that policy."""
    states = jax.tree.leaves(opt_state, is_leaf=lambda node: isinstance(node, optax.ApplyIfFiniteState))
    found = [node for node in states if isinstance(node, optax.ApplyIfFiniteState)]
    return None if not found else np.asarray(jax.device_get(found[0].total_notfinite)).reshape(-1)


def base_optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    """adam, adamw or sgd from the `config.optimizer` section, with `schedule` as its
    learning rate. Each ends in `scale_by_learning_rate(schedule)` (weight
    decay and momentum come before it), which `unit_peak` relies on."""
    name = config.name
    if name == "adam":
        return optax.adam(schedule, b1=config.get("b1", 0.9), b2=config.get("b2", 0.999))
    if name == "adamw":
        return optax.adamw(
            schedule, b1=config.get("b1", 0.9), b2=config.get("b2", 0.999), weight_decay=config.get("weight_decay", 0.0)
        )
    if name == "sgd":
        momentum = config.get("momentum", 0.0) or None
        return optax.sgd(schedule, momentum=momentum, nesterov=config.get("nesterov", False))
    raise ValueError(f"unknown config.optimizer.name={name!r}; choose one of {', '.join(OPTIMIZERS)}")


def learning_rate_schedule(
    config: ml_collections.ConfigDict, num_updates: int, *, peak: float | None = None
) -> optax.Schedule:
    """Linear warm-up from 0 for `warmup_steps`, then constant, cosine or
    linear decay to `peak * end_lr_fraction` at `num_updates`.

    `peak` defaults to `config.learning_rate`; every schedule is `peak` times
    the same schedule with peak 1.
    """
    peak = config.learning_rate if peak is None else peak
    warmup = config.get("warmup_steps", 0)
    fraction = config.get("end_lr_fraction", 0.0)
    name = config.get("schedule", "constant")
    decay_steps = max(num_updates - warmup, 1)
    if name == "constant":
        after = optax.constant_schedule(peak)
    elif name == "cosine":
        after = optax.cosine_decay_schedule(peak, decay_steps, alpha=fraction)
    elif name == "linear":
        after = optax.linear_schedule(peak, peak * fraction, decay_steps)
    else:
        raise ValueError(f"unknown config.optimizer.schedule={name!r}; choose one of {', '.join(SCHEDULES)}")
    if warmup <= 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


# --- L1/L2 penalties -------------------------------------------------------------------------


def weight_penalty(params: Any, l1: float = 0.0, l2: float = 0.0) -> jax.Array:
    """l1 * Σ|w| + l2 * Σw² over weight matrices (params with ndim >= 2; biases,
    vectors and scalars are not penalised). The chain adds its gradient
    (`penalty_gradient`); this value is for logging."""
    matrices = [p for p in jax.tree.leaves(params) if p.ndim >= 2]
    penalty = jnp.zeros((), jnp.float32)
    if l1:
        penalty += l1 * sum(jnp.abs(w).sum() for w in matrices)
    if l2:
        penalty += l2 * sum(jnp.square(w).sum() for w in matrices)
    return penalty


def penalty_gradient(params: Any, l1: float = 0.0, l2: float = 0.0) -> Any:
    """∂ weight_penalty / ∂ params: l1 * sign(w) + 2 * l2 * w on weight matrices,
    0 elsewhere. At w == 0 the L1 term is 0 (a subgradient), so exact zeros
    are not pushed off zero."""

    def grad(w):
        if w.ndim < 2:
            return jnp.zeros_like(w)
        return (l1 * jnp.sign(w) + 2.0 * l2 * w).astype(w.dtype)

    return jax.tree.map(grad, params)


def add_penalty_gradient(l1: float, l2: float) -> optax.GradientTransformation:
    """Adds `penalty_gradient(params, l1, l2)` to the gradients (needs `params`
    in `update`). Being part of the gradient, the penalty means the same under
    every optimiser and is clipped with the loss gradient."""

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("the L1/L2 penalty needs the params: call tx.update(grads, state, params)")
        return jax.tree.map(jnp.add, updates, penalty_gradient(params, l1, l2)), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


# --- freezing --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FreezeRule:
    """Parameters held fixed during training.

    Attributes:
      select: params tree -> the key paths (tuples of keys) of the frozen
        leaves. It is also called on gradient trees of the same structure
        while tracing, so it may read keys and shapes but not values.
      steps: None: frozen for good; N >= 0: frozen for the first N updates.
      source: what asked for the rule (a config key), named in errors.
    """

    select: Selector
    steps: int | None = None
    source: str = "freeze rule"

    def __post_init__(self):
        steps = self.steps
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
            raise ValueError(f"{self.source}: freeze steps must be None or an int >= 0, got {self.steps!r}")


class FreezeState(NamedTuple):
    count: jax.Array  # updates seen


def freeze(rules: Sequence[FreezeRule]) -> optax.GradientTransformation:
    """Zeroes the updates of the parameters each rule selects while the rule
    is in force (for good, or during its first `steps` updates).

    `build_optimizer` places it both before the optimiser (gradients) and
    after it (updates). `init` checks every rule against the params, so a
    rule that matches nothing fails before training starts.
    """
    rules = tuple(rules)

    def init(params):
        for rule in rules:
            _selected(rule, params)
        return FreezeState(jnp.zeros([], jnp.int32))

    def update(updates, state, params=None):
        del params
        frozen = _frozen_now(rules, updates, state.count)

        def hold(key_path, u):
            now = frozen.get(_path(key_path), False)
            if now is False:
                return u
            return jnp.zeros_like(u) if now is True else jnp.where(now, jnp.zeros_like(u), u)

        return jax.tree_util.tree_map_with_path(hold, updates), FreezeState(state.count + 1)

    return optax.GradientTransformation(init, update)


def _frozen_now(rules: Sequence[FreezeRule], tree: Any, count: jax.Array) -> dict[Path, Any]:
    """{path: frozen at update `count`} for every selected path: Python True
    when a for-good rule holds it (zeroed outright, no select in the
    compiled step), else a traced bool."""
    frozen: dict[Path, Any] = {}
    for rule in rules:
        in_force = True if rule.steps is None else count < rule.steps
        for path in _selected(rule, tree):
            before = frozen.get(path, False)
            frozen[path] = True if before is True or in_force is True else before | in_force
    return frozen


def _selected(rule: FreezeRule, tree: Any) -> set[Path]:
    """The paths `rule` selects in `tree`, checked to be leaves of it; errors
    name the rule's source."""
    try:
        paths = {tuple(p) for p in rule.select(tree)}
    except (KeyError, ValueError) as error:
        message = error.args[0] if error.args else error
        raise ValueError(f"{rule.source}: {message}") from error
    leaves = {_path(k) for k, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}
    unknown = sorted("/".join(p) for p in paths - leaves)
    if unknown:
        raise ValueError(f"{rule.source}: selects paths that are not parameters: {unknown}")
    return paths


def _path(key_path) -> Path:
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in key_path)


def modules(names: Sequence[str]) -> Selector:
    """Selector: every leaf under the top-level modules `names`. A name that
    is not a top-level module of the params is an error listing the modules."""
    names = tuple(names)

    def select(params) -> set[Path]:
        paths = {_path(k) for k, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
        top = sorted({p[0] for p in paths if p})
        missing = [n for n in names if n not in top]
        if missing:
            raise ValueError(f"module {missing[0]!r} is not in the model (its top-level modules: {top})")
        return {p for p in paths if p and p[0] in names}

    return select


def embedding_table(path: str | Sequence[str] | None = None) -> Selector:
    """Selector: the embedding table, located by `embeddings.find_embedding`."""
    return lambda params: {embeddings.find_embedding(params, path)}


def freeze_rules(config: ml_collections.ConfigDict) -> list[FreezeRule]:
    """The freeze rules a run config asks for:

    - `train.freeze_steps` = N > 0: the top-level modules `train.init_modules`
      (default ('embed', 'stack')) for the first N updates (transfer learning);
    - `model.freeze_embedding` = True: the word embedding table
      (`embeddings.WORD_EMBEDDING`) for good;
    - `model.freeze_embedding_steps` = N > 0: that table for N updates.
    """
    train = config.get("train") or ml_collections.ConfigDict()
    model = config.get("model") or ml_collections.ConfigDict()
    rules = []
    steps = train.get("freeze_steps", 0) or 0
    if steps > 0:
        names = tuple(train.get("init_modules", DEFAULT_INIT_MODULES))
        rules.append(FreezeRule(modules(names), steps, f"config.train.init_modules={names}"))
    forever = bool(model.get("freeze_embedding", False))
    embedding_steps = model.get("freeze_embedding_steps", 0) or 0
    if forever and embedding_steps:
        raise ValueError(
            "set config.model.freeze_embedding=True (frozen for good) or "
            f"config.model.freeze_embedding_steps={embedding_steps} (frozen for a while), not both"
        )
    if forever:
        rules.append(FreezeRule(embedding_table(embeddings.WORD_EMBEDDING), None, "config.model.freeze_embedding"))
    elif embedding_steps > 0:
        rules.append(
            FreezeRule(
                embedding_table(embeddings.WORD_EMBEDDING), embedding_steps, "config.model.freeze_embedding_steps"
            )
        )
    return rules
