r"""Sentiment (many-to-one): an LSTM classifies GLUE SST-2 sentences.

Data: the GLUE SST-2 TSV files (train.tsv, dev.tsv; test.tsv has no labels,
so the final test evaluation reads dev.tsv). Point SEQJAX_DATA at the folder
holding `sst2/` (default: ~/seqjax_data).

Command:
  python -m experiments.train --config=configs/sst2.py --workdir=runs/sst2_lstm

Variants: `smoke` (the tiny sample in configs/samples, seconds; used by tests),
`imdb` (TFDS `imdb_reviews` by name: prepare it where there is network, or
give --config.data.source.data_dir a folder holding it prepared),
`imdb_local` (the same reviews from the extracted Stanford aclImdb folders,
$SEQJAX_DATA/aclImdb/{train,test}/{neg,pos}/*.txt, or
--config.data.source.paths=<aclImdb>; the folders are read in a fixed
shuffled order, so the validation slice train[90%:] holds both classes).

Transfer learning (the ULMFiT recipe, in one domain): first a word-level LSTM
language model on the training sentences, then a classifier that starts from
its embedding and LSTM and its tokenizer, frozen for the first 200 updates:

  python -m experiments.train --config=configs/sst2.py:lm_pretrain --workdir=runs/sst2_lm
  python -m experiments.train --config=configs/sst2.py:finetune --workdir=runs/sst2_finetune \
      --config.train.init_from=runs/sst2_lm --config.data.tokenizer_path=runs/sst2_lm/tokenizer.json
  (and the same classifier from scratch for comparison:
   python -m experiments.train --config=configs/sst2.py:finetune --workdir=runs/sst2_scratch)

Result (2 CPU cores shared with other jobs, 2000 steps, 24 min wall):
  dev accuracy 0.815 at step 500, 0.829 at step 1000, 0.827 at step 1500,
  0.812 at the end (step 2000; the model overfits in its second epoch,
  train accuracy 0.95). Checkpoints keep the last 2 steps only, so
  selecting step 1000 needs --config.train.num_steps=1000.
"""

import os

import ml_collections

from seqjax import config as config_lib
from seqjax import paths

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = paths.data_root()  # $SEQJAX_DATA, else ~/seqjax_data
SWEEPS = ("seeds",)
VARIANTS = ("smoke", "imdb", "imdb_local", "lm_pretrain", "finetune", "transformer")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.task = ml_collections.ConfigDict()
    config.task.name = "classification"
    config.task.loss = "ce"  # 'ce' (softmax over classes) or 'bce' (one logit, 2 classes)
    config.task.num_classes = 0  # 0: read from the dataset

    config.data = ml_collections.ConfigDict()
    config.data.source = ml_collections.ConfigDict()
    config.data.source.name = "local/classification"  # TFDS name or local/<kind> (docs/datasets.md)
    config.data.source.data_dir = ""  # where prepared datasets live ('' = TFDS default)
    config.data.source.paths = ml_collections.ConfigDict(
        dict(train=os.path.join(DATA, "sst2", "train.tsv"), validation=os.path.join(DATA, "sst2", "dev.tsv"))
    )
    config.data.splits = ml_collections.ConfigDict(dict(train="train", eval="validation", test="validation"))
    config.data.tokenizer = "word"  # word | char | subword
    config.data.vocab_size = 20000  # most frequent words kept (0 = all)
    config.data.lower = True
    config.data.text_key = "text"
    config.data.label_key = "label"
    config.data.max_len = 64  # tokens; longer sentences are truncated
    config.data.truncate = True
    config.data.pad_to_multiple = 8  # batches padded to a multiple of this (few compiled shapes)
    config.data.worker_count = 0  # grain worker processes

    config.model = ml_collections.ConfigDict()
    config.model.name = "recurrent"
    config.model.cell = "lstm"
    config.model.hidden_size = 128
    config.model.num_layers = 1
    config.model.bidirectional = True
    config.model.dropout_rate = 0.0
    config.model.embed_size = 128
    config.model.pretrained_embeddings = ""  # a vector file (word2vec, GloVe, fastText; '' = random init)
    config.model.pretrained_format = "auto"  # auto | one of seqjax.embeddings.FORMATS
    config.model.head = "last"

    config.optimizer = config_lib.optimizer_section()  # every key (see seqjax.config.OPTIMIZER_DEFAULTS)
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 2e-3
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 100
    config.optimizer.end_lr_fraction = 0.05
    config.optimizer.weight_decay = 1e-4
    config.optimizer.clip_global_norm = 1.0

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 64
    config.train.num_steps = 2000  # about 1.9 epochs of the 67k training phrases
    config.train.log_every = 100
    config.train.eval_every = 500
    config.train.eval_batches = 0  # 0: the whole eval split
    config.train.checkpoint_every = 500
    config.train.keep_checkpoints = 2
    config.train.progress = True
    config.train.best_metric = ""  # e.g. "eval_accuracy": also keep the best checkpoint by it ('' = off)
    config.train.early_stopping_patience = 0  # stop after this many evaluations without a better best_metric
    config.train.wandb_project = ""  # also log to this Weights & Biases project ('' = off; needs .[wandb])

    names = [name for name in (variant or "").split(",") if name]
    if "transformer" in names:  # the model first, so `smoke` can shrink it
        names = ["transformer"] + [name for name in names if name != "transformer"]
    for name in names:
        if name == "transformer":
            _use_transformer(config)
        elif name == "smoke":
            if config.data.source.name.startswith("local/"):
                config.data.source.paths = ml_collections.ConfigDict(
                    dict(
                        train=os.path.join(HERE, "samples", "sentiment_train.tsv"),
                        validation=os.path.join(HERE, "samples", "sentiment_dev.tsv"),
                    )
                )
            if config.model.name == "transformer_classifier":
                config.model.update(d_model=16, d_ff=32, num_heads=2, num_layers=1)
            else:
                config.model.hidden_size = 16
                config.model.embed_size = 16
            config.train.batch_size = 8
            config.train.num_steps = 20
            config.optimizer.warmup_steps = 5  # a quarter of the run: a warm-up must end before training does
            config.train.log_every = 10
            config.train.eval_every = 10
            config.train.checkpoint_every = 10
            config.train.progress = False
        elif name in ("imdb", "imdb_local"):
            if name == "imdb":
                source = dict(name="imdb_reviews", data_dir="", manual_dir="")
            else:
                source = dict(name="local/folders", paths=os.path.join(DATA, "aclImdb"), data_dir="")
            config.data.source = ml_collections.ConfigDict(source)
            config.data.splits = ml_collections.ConfigDict(dict(train="train[:90%]", eval="train[90%:]", test="test"))
            config.data.max_len = 256
        elif name == "lm_pretrain":
            config.task = ml_collections.ConfigDict(dict(name="language_model"))
            config.data.seq_len = 64
            config.model.bidirectional = False  # a language model only looks back
            config.model.head = "per_step"
            config.train.num_steps = 1500
        elif name == "finetune":
            config.model.bidirectional = False  # the shape of the pretrained LSTM
            config.train.init_from = ""  # workdir of the lm_pretrain run ('' = train from scratch)
            config.train.init_modules = ("embed", "stack")
            config.train.freeze_steps = 200
        elif name:
            raise ValueError(f"unknown variant {name!r}; choose from {VARIANTS}")
    return config


def _use_transformer(config: ml_collections.ConfigDict) -> None:
    """An encoder-only Transformer classifier in place of the BiLSTM."""
    config.model = ml_collections.ConfigDict()
    config.model.name = "transformer_classifier"
    config.model.pooling = "mean"  # mean over real tokens | cls (a learned [CLS] token prepended)
    config.model.d_model = 128
    config.model.num_heads = 4
    config.model.num_kv_heads = 0  # 0 = num_heads
    config.model.num_layers = 2
    config.model.d_ff = 256
    config.model.dropout_rate = 0.1
    config.model.attention_dropout_rate = 0.1
    config.model.positional = "sinusoidal"  # sinusoidal | learned | rotary | none
    config.model.max_len = config.data.max_len + 1  # room for [CLS]
    config.model.norm = "layer"  # layer | rms | batch (the LN vs BN ablation)
    config.model.norm_position = "pre"
    config.model.activation = "gelu"
    config.model.tie_embeddings = False
    config.model.attention_implementation = "auto"
    config.model.dtype = "float32"
    config.optimizer.learning_rate = 5e-4
    config.optimizer.weight_decay = 0.01


def get_sweep(name: str | None = None):
    """Sweeps of this config (`python -m experiments.sweep --config=configs/sst2.py --sweep=NAME`).

    seeds (the default): 3 seeds, the spread a reported accuracy needs; in
      `--mode=vmap` they train as one run of 3 replicas.
    """
    from seqjax import sweeps

    if name in (None, "seeds"):
        return sweeps.seeds(3)
    raise ValueError(f"unknown sweep {name!r} of configs/sst2.py; choose from {', '.join(SWEEPS)}")
