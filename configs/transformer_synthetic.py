r"""Transformers on the synthetic tasks: a causal (decoder-only) Transformer on
the copy task, or an encoder classifier on the adding problem.

The copy task (seqjax.tasks.synthetic.CopyTask) asks for 10 symbols back
after a delay; a causal Transformer reads position t - delay - copy_len
directly, so unlike an RNN it needs no memory across the delay. The adding
problem regresses the sum of two marked values from an encoder's [CLS]
output.

Command:
  python -m experiments.train --config=configs/transformer_synthetic.py --workdir=runs/copy_transformer

Variants (comma-separated): lm (the default: transformer_lm on copy),
classifier (transformer_classifier on adding, T=100), seq2seq
(transformer_seq2seq on synthetic translation, numbers in digits -> words),
pre_ln, rotary, smoke (a few steps with tiny sizes, for tests).
Any field can be overridden: `--config.model.num_layers=4`.

Results on 2 shared CPU cores (seed 0, 1000 steps, batch 64):

  variant     task                      test metric                   wall
  lm          copy, delay 20, 10 symbols  copy_accuracy 1.0, loss 2.9e-4  2.1 min  (accuracy 1.0 by step 250)
  classifier  adding, T=100               mse 1.1e-4                      7.6 min  (LSTM default: 0.0030)
  seq2seq     numbers -> words, 9 digits  exact match 1.0, loss 0.0024    0.9 min  (1500 steps; eval exact
              0.60 / 0.94 / 0.99 at steps 250 / 500 / 1000; see configs/seq2seq_synthetic.py for RNNs)

  python -m experiments.train --config=configs/transformer_synthetic.py:<variant> --workdir=runs/<variant>
  python -m experiments.attention_maps --run_dir=runs/lm    # heatmaps of the trained heads
"""

import ml_collections

from seqjax import config as config_lib

VARIANTS = ("lm", "classifier", "seq2seq", "pre_ln", "rotary", "smoke")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # seeds parameters, dropout and the synthetic data stream

    config.task = ml_collections.ConfigDict()
    config.task.name = "copy"  # per-step classification: recall copy_len symbols
    config.task.seq_len = 20  # the delay between the symbols and their recall
    config.task.num_symbols = 8  # data symbols (plus blank and delimiter tokens)
    config.task.copy_len = 10  # symbols to remember

    config.model = ml_collections.ConfigDict()
    config.model.name = "transformer_lm"  # transformer_lm | transformer_classifier | transformer_seq2seq
    config.model.d_model = 64  # residual stream width
    config.model.num_heads = 4  # query heads (d_model / num_heads per head)
    config.model.num_kv_heads = 0  # key/value heads; 0 = num_heads, fewer = grouped-query attention
    config.model.num_layers = 2  # Transformer blocks
    config.model.d_ff = 256  # feed-forward hidden width
    config.model.dropout_rate = 0.0  # residual and embedding dropout (the paper: 0.1)
    config.model.attention_dropout_rate = 0.0  # dropout on attention weights
    config.model.positional = "sinusoidal"  # sinusoidal | learned | rotary | none
    config.model.max_len = 512  # size of the learned position table
    config.model.norm = "layer"  # layer | rms | batch
    config.model.norm_position = "post"  # post (the paper) | pre
    config.model.activation = "relu"  # relu | gelu
    config.model.tie_embeddings = False  # output layer = input embedding transposed
    config.model.attention_implementation = "auto"  # auto | xla | cudnn | pallas
    config.model.dtype = "float32"  # compute dtype: float32 | bfloat16 (params stay float32)

    config.optimizer = config_lib.optimizer_section()  # every key (see seqjax.config.OPTIMIZER_DEFAULTS)
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 1e-3  # peak learning rate
    config.optimizer.schedule = "cosine"  # after linear warm-up
    config.optimizer.warmup_steps = 100
    config.optimizer.end_lr_fraction = 0.01
    config.optimizer.weight_decay = 0.01  # decoupled
    config.optimizer.clip_global_norm = 1.0

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 64  # global batch, split over all devices
    config.train.num_steps = 1000
    config.train.log_every = 100
    config.train.eval_every = 250
    config.train.eval_batches = 8
    config.train.checkpoint_every = 500
    config.train.keep_checkpoints = 2
    config.train.progress = True
    config.train.best_metric = ""  # e.g. "eval_accuracy": also keep the best checkpoint by it ('' = off)
    config.train.early_stopping_patience = 0  # stop after this many evaluations without a better best_metric
    config.train.wandb_project = ""  # also log to this Weights & Biases project ('' = off; needs .[wandb])

    for name in filter(None, (variant or "").split(",")):
        if name not in VARIANTS:
            raise ValueError(
                f"unknown variant {name!r} of configs/transformer_synthetic.py; choose from {', '.join(VARIANTS)}"
            )
        _apply_variant(config, name)
    return config


def _apply_variant(config: ml_collections.ConfigDict, name: str) -> None:
    if name == "classifier":
        config.task = ml_collections.ConfigDict({"name": "adding", "seq_len": 100, "min_seq_len": 0})
        config.model.name = "transformer_classifier"
        config.model.pooling = "cls"  # cls | mean
    elif name == "seq2seq":
        # Synthetic translation (seqjax.tasks.translation): "40,017" -> "forty thousand seventeen".
        config.task = ml_collections.ConfigDict({"name": "translation", "kind": "numbers", "max_digits": 9})
        config.model.name = "transformer_seq2seq"
        config.model.num_decoder_layers = 2  # decoder blocks (0 = num_layers)
        config.train.num_steps = 1500
    elif name == "pre_ln":
        config.model.norm_position = "pre"
    elif name == "rotary":
        config.model.positional = "rotary"
    elif name == "smoke":
        config.model.d_model = 16
        config.model.d_ff = 32
        config.model.num_heads = 2
        config.model.num_layers = 1
        if "seq_len" in config.task:
            config.task.seq_len = min(config.task.seq_len, 10)
        if "max_digits" in config.task:
            config.task.max_digits = 3
        if "copy_len" in config.task:
            config.task.copy_len = 3
        config.train.batch_size = 8
        config.train.num_steps = 20
        config.optimizer.warmup_steps = 5  # a quarter of the run: a warm-up must end before training does
        config.train.log_every = 5
        config.train.eval_every = 10
        config.train.eval_batches = 2
        config.train.checkpoint_every = 10
        config.train.progress = False
