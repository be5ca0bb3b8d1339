"""Greedy decoding with the KV cache against recomputing the whole prefix every step.

A decoder-only Transformer (seqjax.nn.TransformerLM, random weights: speed
does not depend on them) greedily extends a prompt by --steps tokens, three ways:

  kv_cache_scan   seqjax.decoding.decode (a lax.scan) in one jitted call;
                  each step feeds one token through transformer.lm_decoder's
                  tokens_to_logits (keys/values of earlier tokens come from
                  the cache)
  kv_cache_loop   a Python loop calling the jitted one-token step
  recompute       a Python loop calling the jitted full forward pass on the
                  prefix so far, padded up to a multiple of --bucket tokens
                  (so it compiles a few shapes, not one per length), reading
                  the logits at the last real position

kv_cache_loop and recompute both make one jitted call per token, so their
ratio compares the work per step; kv_cache_scan also drops the per-call
dispatch overhead, as a real decoder loop under jit does.

All three must produce the same tokens (checked). Reported: generated
tokens/s (batch * steps / seconds, median over --repeats; compilation
excluded) and the ratio to `recompute`.

  python -m experiments.benchmark_decode                 # 256 tokens, d_model 256, 4 layers
  python -m experiments.benchmark_decode --steps 64 --d_model 64 --layers 2 --repeats 1

stdout: one JSON object per cache case; stderr: a table.

Measured on 2 shared CPU cores (AMD EPYC, load ~1-3 from other jobs), d_model
256, 4 layers, 4 heads, vocab 65, prompt 16, 256 new tokens, 3 repeats:

  command                                             case           tokens/s  recompute  ratio
  python -m experiments.benchmark_decode              kv_cache_scan     811.5       66.6   12.2x
                                                      kv_cache_loop     664.9       66.6   10.0x
  python -m experiments.benchmark_decode --batch 8    kv_cache_scan    1241.6       82.5   15.1x
                                                      kv_cache_loop    1112.3       82.5   13.5x

At batch 1 a cached step is bound by reading the weights (~3M parameters
per token), so the ratio grows with the batch.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from experiments import timing
from seqjax import decoding
from seqjax.nn import transformer


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=16, help="prompt tokens")
    parser.add_argument("--steps", type=int, default=256, help="tokens generated greedily")
    parser.add_argument("--vocab", type=int, default=65)
    parser.add_argument("--d_model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--positional", default="sinusoidal")
    parser.add_argument("--bucket", type=int, default=32, help="recompute pads the prefix to a multiple of this")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; the median is reported")
    return parser.parse_args(argv)


def build_model(args) -> tuple[transformer.TransformerLM, dict]:
    cfg = transformer.TransformerConfig(
        vocab_size=args.vocab,
        d_model=args.d_model,
        num_heads=args.heads,
        num_layers=args.layers,
        d_ff=4 * args.d_model,
        dropout_rate=0.0,
        positional=args.positional,
        norm_position="pre",
        max_len=args.prompt + args.steps,
    )
    model = transformer.TransformerLM(cfg, args.vocab)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((args.batch, args.prompt), jnp.int32))
    return model, variables


def greedy_with_cache_scan(model, variables, prompt: np.ndarray, steps: int) -> Callable[[], np.ndarray]:
    """A no-argument callable returning the [B, steps] greedy continuation
    from seqjax.decoding.decode (a lax.scan); prefill and decoding are one
    compiled program."""
    prefill, tokens_to_logits = transformer.lm_decoder(model, variables, prompt.shape[1] + steps)

    @jax.jit
    def generate(prompt):
        tokens, _ = decoding.decode(tokens_to_logits, prefill(prompt), prompt[:, -1], steps)
        return tokens

    prompt = jnp.asarray(prompt)
    return lambda: np.asarray(generate(prompt))


def greedy_with_cache_loop(model, variables, prompt: np.ndarray, steps: int) -> Callable[[], np.ndarray]:
    """Python loop over steps, one jitted call per generated token (the
    cache is donated, so it is updated in place)."""
    prefill, tokens_to_logits = transformer.lm_decoder(model, variables, prompt.shape[1] + steps)
    prefill = jax.jit(prefill)

    @functools.partial(jax.jit, donate_argnums=1)
    def advance(token, cache):
        logits, cache = tokens_to_logits(token, cache)
        return jnp.argmax(logits, axis=-1).astype(jnp.int32), cache

    def generate():
        token, cache = jnp.asarray(prompt[:, -1]), prefill(jnp.asarray(prompt))
        tokens = []
        for _ in range(steps):
            token, cache = advance(token, cache)
            tokens.append(token)
        return np.stack([np.asarray(t) for t in tokens], axis=1)

    return generate


def greedy_recompute(model, variables, prompt: np.ndarray, steps: int, bucket: int) -> Callable[[], np.ndarray]:
    """Python loop over steps; each step runs the full causal forward pass on
    the prefix (padded to a multiple of `bucket`, padding after the real
    tokens, which the causal mask hides from them)."""

    @functools.partial(jax.jit, static_argnames="padded")
    def extend(variables, buffer, length, padded):
        logits = model.apply(variables, buffer[:, :padded])  # [B, padded, V]
        token = jnp.argmax(logits[:, length - 1], axis=-1).astype(jnp.int32)
        return buffer.at[:, length].set(token)

    def generate():
        batch, length = prompt.shape
        buffer = np.zeros((batch, -(-(length + steps) // bucket) * bucket), np.int32)
        buffer[:, :length] = prompt
        buffer = jnp.asarray(buffer)
        for position in range(length, length + steps):
            buffer = extend(variables, buffer, position, padded=-(-position // bucket) * bucket)
        return np.asarray(buffer[:, prompt.shape[1] : prompt.shape[1] + steps])

    return generate


def run(args) -> list[dict]:
    """Measures, checks the three cases agree, prints and returns the JSON records."""
    model, variables = build_model(args)
    prompt = np.asarray(jax.random.randint(jax.random.key(1), (args.batch, args.prompt), 0, args.vocab), np.int32)
    cases = {
        "kv_cache_scan": greedy_with_cache_scan(model, variables, prompt, args.steps),
        "kv_cache_loop": greedy_with_cache_loop(model, variables, prompt, args.steps),
        "recompute": greedy_recompute(model, variables, prompt, args.steps, args.bucket),
    }
    # The first, untimed call of each case compiles everything it needs; its tokens are checked.
    timings = timing.time_calls(cases, repeats=args.repeats)
    for name, measured in timings.items():
        if not np.array_equal(measured.result, timings["recompute"].result):
            raise AssertionError(f"{name} generated different tokens from recompute")
    seconds = {name: measured.median for name, measured in timings.items()}
    rate = {name: args.batch * args.steps / s for name, s in seconds.items()}
    common = {
        "batch": args.batch,
        "prompt": args.prompt,
        "steps": args.steps,
        "d_model": args.d_model,
        "layers": args.layers,
        "heads": args.heads,
        "vocab": args.vocab,
        "repeats": args.repeats,
    }
    records = [
        timing.emit(
            timing.measurement("greedy_decode", case, rate[case], "tokens/s", "recompute", rate["recompute"], **common)
        )
        for case in ("kv_cache_scan", "kv_cache_loop")
    ]
    print(f"{'case':<16}{'tokens/s':>12}{'seconds':>10}", file=sys.stderr)
    for name in cases:
        print(f"{name:<16}{rate[name]:>12.1f}{seconds[name]:>10.3f}", file=sys.stderr)
    return records


def main(argv=None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
