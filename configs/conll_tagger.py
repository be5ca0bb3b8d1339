r"""Sequence tagging (synchronous many-to-many): a BiLSTM tagger for
named entities in CoNLL column files.

Data: CoNLL-format files (token ... tag per line, blank line between
sentences, -DOCSTART- lines skipped), e.g. CoNLL-2003 `eng.train` /
`eng.testa` / `eng.testb`: point --config.data.source.paths at yours (they
are not shipped with seqjax). TFDS's `conll2003` works too (variant `tfds`,
where it is prepared). Entity-level precision / recall / F1 are computed the
conlleval way (seqjax.tasks.entities).

Command:
  python -m experiments.train --config=configs/conll_tagger.py --workdir=runs/ner_bilstm \
      --config.data.source.paths.train=/data/conll2003/eng.train \
      --config.data.source.paths.validation=/data/conll2003/eng.testa \
      --config.data.source.paths.test=/data/conll2003/eng.testb

Variants: `smoke` (the tiny generated sample in configs/samples; used by tests), `tfds`.
"""

import os

import ml_collections

from seqjax import config as config_lib
from seqjax import paths

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = paths.data_root()  # $SEQJAX_DATA, else ~/seqjax_data
VARIANTS = ("smoke", "tfds")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.task = ml_collections.ConfigDict()
    config.task.name = "tagging"

    config.data = ml_collections.ConfigDict()
    config.data.source = ml_collections.ConfigDict()
    config.data.source.name = "local/conll"
    config.data.source.data_dir = ""
    config.data.source.paths = ml_collections.ConfigDict(
        dict(
            train=os.path.join(DATA, "conll2003", "eng.train"),
            validation=os.path.join(DATA, "conll2003", "eng.testa"),
            test=os.path.join(DATA, "conll2003", "eng.testb"),
        )
    )
    config.data.splits = ml_collections.ConfigDict(dict(train="train", eval="validation", test="test"))
    config.data.tokenizer = "word"  # one id per token
    config.data.vocab_size = 0  # every training word
    config.data.lower = False  # capitalisation is the strongest cue for names
    config.data.text_key = "tokens"
    config.data.tags_key = "tags"
    config.data.pad_to_multiple = 8

    config.model = ml_collections.ConfigDict()
    config.model.name = "recurrent"
    config.model.cell = "lstm"
    config.model.hidden_size = 128
    config.model.bidirectional = True  # a tag depends on the words after it too
    config.model.embed_size = 100
    config.model.pretrained_embeddings = ""  # a vector file (word2vec, GloVe, fastText; '' = random init)
    config.model.pretrained_format = "auto"  # auto | one of seqjax.embeddings.FORMATS
    config.model.head = "per_step"

    config.optimizer = config_lib.optimizer_section()  # every key (see seqjax.config.OPTIMIZER_DEFAULTS)
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 2e-3
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 100
    config.optimizer.end_lr_fraction = 0.05
    config.optimizer.clip_global_norm = 1.0

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 32
    config.train.num_steps = 3000
    config.train.log_every = 100
    config.train.eval_every = 500
    config.train.eval_batches = 0  # the whole split
    config.train.checkpoint_every = 500
    config.train.keep_checkpoints = 2
    config.train.progress = True
    config.train.best_metric = ""  # e.g. "eval_accuracy": also keep the best checkpoint by it ('' = off)
    config.train.early_stopping_patience = 0  # stop after this many evaluations without a better best_metric
    config.train.wandb_project = ""  # also log to this Weights & Biases project ('' = off; needs .[wandb])

    for name in (variant or "").split(","):
        if name == "smoke":
            config.data.source.paths = ml_collections.ConfigDict(
                dict(
                    train=os.path.join(HERE, "samples", "ner_train.conll"),
                    validation=os.path.join(HERE, "samples", "ner_dev.conll"),
                )
            )
            config.data.splits.test = "validation"
            config.model.hidden_size = 16
            config.model.embed_size = 16
            config.train.batch_size = 8
            config.train.num_steps = 20
            config.optimizer.warmup_steps = 5  # a quarter of the run: a warm-up must end before training does
            config.train.log_every = 10
            config.train.eval_every = 10
            config.train.checkpoint_every = 10
            config.train.progress = False
        elif name == "tfds":
            config.data.source = ml_collections.ConfigDict(dict(name="conll2003", data_dir="", manual_dir=""))
            config.data.tags_key = "ner"
        elif name:
            raise ValueError(f"unknown variant {name!r}; choose from {VARIANTS}")
    return config
