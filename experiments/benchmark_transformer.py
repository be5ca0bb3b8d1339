"""Training throughput of a small character-level GPT: seqjax attention
against the same model built on flax.linen.MultiHeadDotProductAttention.

Both models are seqjax.nn.TransformerLM with identical blocks, embeddings and
parameter layout; only `TransformerConfig.attention_cls` differs: seqjax's
MultiHeadAttention (causal mask from `causal=True`, softmax statistics in
float32, implementation 'auto') or an adapter around Flax's layer (causal
mask from `nn.make_causal_mask`). One case times one jitted AdamW training
step (forward, backward, update) on random tokens; cases run round-robin and
the median over --repeats is reported as training tokens/s
(batch * time / seconds).

  python -m experiments.benchmark_transformer                  # 32 x 128 tokens, d_model 128, 4 layers
  python -m experiments.benchmark_transformer --dtype bfloat16

stdout: one JSON object (ratio = seqjax / flax tokens/s); stderr: a table.
Measured on 2 shared CPU cores (AMD EPYC, load ~3), defaults (batch 32 x 128
tokens, d_model 128, 4 layers, 4 heads, pre-LN, GELU, tied embeddings):

  command                                                  seqjax tok/s  flax tok/s  ratio (median / best)
  python -m experiments.benchmark_transformer                      6999        7032  0.995 / 1.011
  python -m experiments.benchmark_transformer --dtype bfloat16 \
      --repeats 5                                                  6706        6753  0.993 / 1.025

i.e. parity: on XLA:CPU both are the same einsum + softmax program.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from experiments import timing
from seqjax.nn import transformer


class FlaxAttention(nn.Module):
    """flax.linen.MultiHeadDotProductAttention behind seqjax's attention call
    signature (self-attention with `causal`, no cache), as a drop-in
    `TransformerConfig.attention_cls`."""

    num_heads: int
    num_kv_heads: int | None = None
    dropout_rate: float = 0.0
    rotary: bool = False
    rotary_base: float = 10000.0
    implementation: str = "auto"
    sow_weights: bool = False
    dtype: object = None

    @nn.compact
    def __call__(
        self,
        inputs_q,
        inputs_kv=None,
        *,
        causal=False,
        kv_lengths=None,
        deterministic=True,
        decode=False,
        decode_lengths=None,
    ):
        if self.rotary or decode or (self.num_kv_heads or self.num_heads) != self.num_heads:
            raise ValueError("the Flax adapter covers plain multi-head attention only (no RoPE, cache or GQA)")
        mask = None
        if causal:
            mask = nn.make_causal_mask(jnp.ones(inputs_q.shape[:2]))
        if kv_lengths is not None:
            kv_len = (inputs_kv if inputs_kv is not None else inputs_q).shape[1]
            padding = (jnp.arange(kv_len) < kv_lengths[:, None])[:, None, None, :]
            mask = padding if mask is None else mask & padding
        return nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            dtype=self.dtype,
            dropout_rate=self.dropout_rate,
            deterministic=deterministic,
            name="attention",
        )(inputs_q, inputs_kv, mask=mask)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--time", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=65, help="tiny Shakespeare has 65 characters")
    parser.add_argument("--d_model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--dtype", default="float32", choices=tuple(transformer.DTYPES))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    return parser.parse_args(argv)


def char_gpt_config(args, attention_cls=None) -> transformer.TransformerConfig:
    cfg = transformer.TransformerConfig(
        vocab_size=args.vocab,
        d_model=args.d_model,
        num_heads=args.heads,
        num_layers=args.layers,
        d_ff=4 * args.d_model,
        dropout_rate=args.dropout,
        norm_position="pre",
        activation="gelu",
        dtype=args.dtype,
        tie_embeddings=True,
    )
    return dataclasses.replace(cfg, attention_cls=attention_cls) if attention_cls else cfg


def train_step_case(model: transformer.TransformerLM, args, seed: int = 0) -> Callable[[], None]:
    """A no-argument callable running one jitted AdamW step of next-token
    cross-entropy on a fixed random batch (compiled on its first call)."""
    tokens = jax.random.randint(jax.random.key(seed), (args.batch, args.time + 1), 0, args.vocab)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    params = jax.jit(model.init)(jax.random.key(1), inputs)["params"]
    tx = optax.adamw(3e-4)
    opt_state = tx.init(params)

    def loss(params, rng):
        logits = model.apply({"params": params}, inputs, deterministic=False, rngs={"dropout": rng})
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    @jax.jit
    def step(params, opt_state, rng):
        grads = jax.grad(loss)(params, rng)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    state = [params, opt_state]
    rng = jax.random.key(2)

    def run():
        state[0], state[1] = step(state[0], state[1], rng)
        return state  # the timer blocks on it

    return run


def measure(cases: dict[str, Callable[[], list]], args) -> dict[str, tuple[float, float]]:
    """(median, best) training tokens/s per case, cases timed round-robin."""
    timings = timing.time_calls(cases, repeats=args.repeats, warmup=args.warmup)
    tokens = args.batch * args.time
    return {name: (tokens / measured.median, tokens / measured.min) for name, measured in timings.items()}


def run(args) -> dict:
    cases = {
        "seqjax_attention": train_step_case(transformer.TransformerLM(char_gpt_config(args), args.vocab), args),
        "flax_mhdpa": train_step_case(
            transformer.TransformerLM(char_gpt_config(args, FlaxAttention), args.vocab), args
        ),
    }
    rates = measure(cases, args)
    record = timing.median_and_best(
        "char_gpt_train_step",
        "seqjax_attention",
        "tokens/s",
        "flax_mhdpa",
        rates,
        batch=args.batch,
        time=args.time,
        d_model=args.d_model,
        layers=args.layers,
        heads=args.heads,
        vocab=args.vocab,
        dtype=args.dtype,
        repeats=args.repeats,
    )
    timing.emit(record)
    print(f"{'case':<20}{'median tok/s':>14}{'best tok/s':>12}", file=sys.stderr)
    for name, (median, best_rate) in rates.items():
        print(f"{name:<20}{median:>14.0f}{best_rate:>12.0f}", file=sys.stderr)
    return record


def main(argv=None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
