"""Generate text from a trained language model.

  python -m experiments.sample --run_dir=runs/shakespeare_lstm --prompt="ROMEO:" \
      [--length=300] [--temperature=0.8] [--top_k=0] [--top_p=1.0] [--num_samples=1] [--seed=0]

Temperature 0 decodes greedily; otherwise tokens are sampled from
softmax(logits / temperature), optionally restricted to the top-k tokens or
the top-p nucleus. Each sample is printed as prompt + continuation.

Recurrent LMs carry their state through any length. Transformer LMs decode
with a KV cache over windows of the training length (config.data.seq_len):
when a window fills up, decoding goes on from its last half
(seqjax.decoding.generate_windowed).
"""

import jax
import jax.numpy as jnp
from absl import app, flags, logging

from experiments import command
from seqjax import decoding, runs
from seqjax.nn import transformer

_RUN_DIR = command.define_run_dir("The language-model run to sample from.")
_PROMPT = flags.DEFINE_string("prompt", "\n", "Text to continue.")
_LENGTH = flags.DEFINE_integer("length", 300, "Tokens to generate.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "0 = greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Sample among the k most likely tokens (0: all).")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Sample within the nucleus of this probability (1: all).")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "Independent samples (decoded as one batch).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    run = runs.load_run(_RUN_DIR.value)
    tokenizer = run.trainer.task.tokenizer
    if run.trainer.task.head != "per_step" or tokenizer is None:
        raise app.UsageError(f"{_RUN_DIR.value} is not a language-model run (task {run.config.task.name!r})")
    prompt_ids = tokenizer.encode(_PROMPT.value)
    if not prompt_ids:
        raise app.UsageError(f"the prompt {_PROMPT.value!r} has no tokens the model knows")
    prompt = jnp.tile(jnp.asarray(prompt_ids, jnp.int32)[None], (_NUM_SAMPLES.value, 1))
    generated = continue_prompts(run, prompt, jax.random.key(_SEED.value))
    for row in tokenizer.decode_batch(jax.device_get(generated)):
        print(_PROMPT.value + row)


def continue_prompts(run: runs.Run, prompt: jax.Array, rng: jax.Array) -> jax.Array:
    """[B, P] prompts -> [B, --length] generated token ids."""
    sampling = dict(temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value)
    model = run.trainer.model
    if isinstance(model, transformer.TransformerLM):
        context = run.config.data.get("seq_len", 0) or model.config.max_len
        prefill, tokens_to_logits = transformer.lm_decoder(model, run.variables, context)
        return decoding.generate_windowed(
            jax.jit(prefill), tokens_to_logits, prompt, _LENGTH.value, context, rng, **sampling
        )
    prefill, tokens_to_logits = decoding.recurrent_decoder(model, run.params)
    generate = jax.jit(
        lambda cache, first, key: decoding.decode(tokens_to_logits, cache, first, _LENGTH.value, key, **sampling)[0]
    )
    return generate(prefill(prompt), prompt[:, -1], rng)


def entry() -> None:
    command.start(main)


if __name__ == "__main__":
    entry()
