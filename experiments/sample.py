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

from absl import app, flags, logging

from experiments import command
from seqjax import runs

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
    try:
        continuations = run.generate(
            _PROMPT.value,
            _LENGTH.value,
            temperature=_TEMPERATURE.value,
            top_k=_TOP_K.value,
            top_p=_TOP_P.value,
            num_samples=_NUM_SAMPLES.value,
            seed=_SEED.value,
        )
    except ValueError as error:
        raise app.UsageError(f"--run_dir={_RUN_DIR.value}: {error}") from error
    for continuation in continuations:
        print(_PROMPT.value + continuation)


def entry() -> None:
    command.start(main)


if __name__ == "__main__":
    entry()
