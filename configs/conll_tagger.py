r"""Sequence tagging (synchronous many-to-many): a BiLSTM-CRF with character
features tags named entities (or chunks, or part-of-speech) in CoNLL-2003.

Data: CoNLL column files (`token POS chunk NER` per line, a blank line
between sentences, -DOCSTART- lines skipped): $SEQJAX_DATA/conll2003/eng.train
and eng.testa (validation), or --config.data.source.paths.train=... (they are
not shipped with seqjax). The test split (eng.testb) is read only by the
variant `testb`; without it the final evaluation re-reads validation. TFDS's
`conll2003` works too (variant `tfds`, where it is prepared).

Model (seqjax.nn.tagger): word embedding (100, lower-cased words,
initialised from skip-gram word2vec vectors that the run first trains on its
own training words: seqjax.word2vec, min_count 2, 20 epochs, about 20 s, kept
in W/word2vec/) and a character BiLSTM (25 per direction, cased) per word,
dropout, a BiLSTM (100 per direction), per-token tag scores and a
linear-chain CRF whose transitions the tag scheme constrains; tags are
trained in IOBES (converted on reading; entities, and so entity scores, are
unchanged); word dropout trains the <unk> embedding. Entity precision /
recall / F1 are computed the conlleval way (seqjax.tasks.entities).

Command:
  seqjax-train --config=conll_tagger --workdir=runs/ner_bilstm_crf

Variants (combine with commas, e.g. `conll_tagger:pos,softmax`):
  full             the default model unchanged (the ablation's reference arm)
  random_init      a randomly initialised word embedding (no word2vec step)
  softmax          per-token softmax instead of the CRF
  words            no character features (and cased words: nothing else would see capitals)
  no_word_dropout  word_dropout 0
  char_cnn         a character CNN (30 filters of width 3, max-pooled) instead of the character BiLSTM
  pos, chunk       part-of-speech tags (token accuracy) or chunks (chunk F1) from the same files
  pos_input        the files' part-of-speech tags as a model input (e.g. `conll_tagger:chunk,pos_input`)
  testb            also read eng.testb as the test split
  smoke            the tiny generated sample in configs/samples (seconds; used by tests)
  tfds             TFDS conll2003 instead of the column files

Result (2 CPU cores, 15,000 steps; validation = eng.testa, best checkpoint
by the validation metric, last step in brackets):
  NER    (the default; sweep `seeds`) entity F1 0.9160 +- 0.0020 over seeds
         0, 1, 2 (0.9138, 0.9175, 0.9168) [0.9117 +- 0.0017]; P 0.9214, R 0.9107;
         33.6 min wall per run for seeds 0 and 1 run together, 19.8 min for
         seed 2 (docs/results/conll_default.md):
           seqjax-sweep --config=conll_tagger --sweep=seeds --sweep_dir=runs/conll_seeds --parallel=2
           seqjax-report --sweep_dir=runs/conll_seeds --metrics=best_test_f1,best_test_precision,best_test_recall,\
             test_f1
         With a random word embedding (`conll_tagger:random_init`): 0.9078 +- 0.0030
         (the ablation's `full` arm below); cased words, seed 0: 0.8951, 15.6 min on idle cores
  chunk  (seed 0) `conll_tagger:chunk,pos_input`: chunk F1 0.9450 at step 6,000
         [0.9425]; P 0.9448, R 0.9451; 28.5 min wall beside the pos run. Random
         init (`chunk,pos_input,random_init`): 0.9387 at step 3,000 [0.9376]; 34.5
         min beside a sweep run. Without the POS input (`chunk,random_init`): 0.8955
         at step 6,000 [0.8950]; 29.5 min beside a pos run
  pos    (seed 0) `conll_tagger:pos`: token accuracy 0.9537 at step 15,000
         [0.9537]; 28.0 min wall beside the chunk run. Random init
         (`pos,random_init`): 0.9524 at step 12,000 [0.9524]; 29.7 min

Sweep `ablation` (the default sweep): {full model, softmax, words,
no_word_dropout} x 3 seeds. Run on the random_init variant (each arm one part
removed from the randomly initialised model):
  seqjax-sweep --config=conll_tagger:random_init --sweep=ablation --sweep_dir=runs/conll_ablation --parallel=2
  seqjax-report --sweep_dir=runs/conll_ablation --metrics=best_test_f1,test_f1
Result (2 CPU cores, two runs at a time; validation entity F1, best
checkpoint [last step], mean +- std over seeds 0, 1, 2; docs/results/conll_ablation.md),
with the default for comparison:
  default (word2vec)  0.9160 +- 0.0020  [0.9117 +- 0.0017]  33.6 min per run
  full (random init)  0.9078 +- 0.0030  [0.9045 +- 0.0032]  27.3-28.1 min
  no_word_dropout     0.8966 +- 0.0007  [0.8931 +- 0.0022]  29.0 min
  softmax             0.8876 +- 0.0062  [0.8806 +- 0.0028]  28.2-28.8 min
  words               0.8785 +- 0.0029  [0.8760 +- 0.0004]  8.4-8.9 min
so the default is the best variant.
"""

import os

import ml_collections

from seqjax import config as config_lib
from seqjax import paths

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = paths.data_root()  # $SEQJAX_DATA, else ~/seqjax_data
VARIANTS = (
    "full",
    "random_init",
    "softmax",
    "words",
    "no_word_dropout",
    "char_cnn",
    "pos",
    "chunk",
    "pos_input",
    "testb",
    "smoke",
    "tfds",
)
SWEEPS = ("ablation", "seeds")
CHUNK_TYPES = ("ADJP", "ADVP", "CONJP", "INTJ", "LST", "NP", "PP", "PRT", "SBAR", "VP")  # CoNLL-2003's
ABLATION = ("full", "softmax", "words", "no_word_dropout")  # 'full' changes nothing: the default model


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
        )
    )
    config.data.source.tag_column = -1  # CoNLL-2003: 1 POS, 2 chunk, -1 (3) NER
    config.data.splits = ml_collections.ConfigDict(dict(train="train", eval="validation", test="validation"))
    config.data.tokenizer = "word"  # one id per token
    config.data.vocab_size = 0  # every training word
    # Lower-cased words (fewer, better-trained embeddings); capitalisation, the
    # strongest cue for names, reaches the model through the characters.
    config.data.lower = True
    config.data.text_key = "tokens"
    config.data.tags_key = "tags"
    config.data.tag_scheme = "auto"  # the files' chunk tag scheme: auto (detected) | IOB1 | IOB2 | IOBES
    config.data.convert_tags_to = "IOBES"  # train in this scheme ('' = as in the files)
    config.data.max_word_len = 20  # characters per word for the character encoder (0 = none)
    # Batches of sentences of similar length, padded to the bucket's bound:
    # less padding for the BiLSTM to run through, and 7 compiled shapes.
    config.data.bucket_boundaries = (8, 16, 24, 32, 48, 64, 128)

    config.model = ml_collections.ConfigDict()
    config.model.name = "tagger"
    config.model.cell = "lstm"
    config.model.hidden_size = 100  # per direction
    config.model.bidirectional = True  # a tag depends on the words after it too
    config.model.embed_size = 100
    # 'word2vec': skip-gram vectors trained on the training split's words at the
    # run's first start (kept in W/word2vec/); or a vector file (word2vec, GloVe,
    # fastText); '' = random init.
    config.model.pretrained_embeddings = "word2vec"
    config.model.pretrained_format = "auto"  # of a vector file: auto | one of seqjax.embeddings.FORMATS
    # Settings of seqjax.word2vec (the size is embed_size, the seed config.seed):
    # every word seen twice, 20 passes over eng.train's 204k tokens (about 20 s).
    config.model.word2vec = ml_collections.ConfigDict(dict(min_count=2, epochs=20))
    config.model.dropout_rate = 0.5  # on the token representations and the BiLSTM outputs
    config.model.word_dropout = 0.05  # a training token becomes <unk> with this probability
    config.model.char_encoder = "lstm"  # none | lstm | cnn
    config.model.char_embed_size = 25
    config.model.char_hidden_size = 25  # per direction (lstm) or filters (cnn)
    config.model.char_kernel_size = 3  # cnn only
    config.model.crf = True
    config.model.crf_constraints = True  # forbid the transitions the tag scheme rules out

    config.optimizer = config_lib.optimizer_section()  # every key (see seqjax.config.OPTIMIZER_DEFAULTS)
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 2e-3
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 200
    config.optimizer.end_lr_fraction = 0.05
    config.optimizer.clip_global_norm = 5.0

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 32
    config.train.num_steps = 15000  # 34 epochs of the 14,041 training sentences
    config.train.log_every = 250
    config.train.eval_every = 1500
    config.train.eval_batches = 0  # the whole split
    config.train.checkpoint_every = 1500
    config.train.keep_checkpoints = 2
    config.train.progress = True
    config.train.best_metric = "eval_f1"  # keep the best checkpoint by validation entity F1
    config.train.early_stopping_patience = 0  # stop after this many evaluations without a better best_metric
    config.train.wandb_project = ""  # also log to this Weights & Biases project ('' = off; needs .[wandb])

    names = (variant or "").split(",")
    if "pos" in names and "pos_input" in names:
        raise ValueError("variants 'pos' and 'pos_input' conflict: a POS tagger cannot read the POS tags it predicts")
    for name in names:
        if name in ("", "full"):
            continue
        if name == "random_init":  # the embedding from random values (no word2vec settings to keep)
            config.model.pretrained_embeddings = ""
            del config.model.word2vec
        elif name == "softmax":
            config.model.crf = False
        elif name == "words":  # words alone, cased: nothing else would see capitals
            config.model.char_encoder = "none"
            config.data.max_word_len = 0
            config.data.lower = False
        elif name == "no_word_dropout":
            config.model.word_dropout = 0.0
        elif name == "char_cnn":
            config.model.char_encoder = "cnn"
            config.model.char_embed_size = 30
            config.model.char_hidden_size = 30
        elif name == "pos":  # part-of-speech tags are not chunk tags: no scheme, scored by token accuracy
            config.data.source.tag_column = 1
            config.data.convert_tags_to = ""
            config.train.best_metric = "eval_token_accuracy"
        elif name == "chunk":
            config.data.source.tag_column = 2
            # Declared, because eng.testa has a tag eng.train lacks (I-PRT).
            config.data.source.tag_names = ["O"] + sorted(f"{p}-{kind}" for kind in CHUNK_TYPES for p in "BI")
        elif name == "pos_input":  # the files' part-of-speech column as an input (an embedding of 25 per tag)
            if config.data.source.name == "local/conll":
                config.data.source.input_columns = ml_collections.ConfigDict(dict(pos=1))
            config.data.input_tag_keys = ("pos",)
            config.model.input_tag_embed_size = 25
        elif name == "testb":
            config.data.source.paths.test = os.path.join(DATA, "conll2003", "eng.testb")
            config.data.splits.test = "test"
        elif name == "smoke":
            config.data.source.paths = ml_collections.ConfigDict(
                dict(
                    train=os.path.join(HERE, "samples", "ner_train.conll"),
                    validation=os.path.join(HERE, "samples", "ner_dev.conll"),
                )
            )
            config.data.splits.test = "validation"
            config.data.max_word_len = 12
            config.model.hidden_size = 16
            config.model.embed_size = 16
            config.model.char_embed_size = 8
            config.model.char_hidden_size = 8
            config.model.dropout_rate = 0.1
            config.train.batch_size = 8
            config.train.num_steps = 20
            config.optimizer.learning_rate = 1e-2
            config.optimizer.warmup_steps = 5  # a quarter of the run: a warm-up must end before training does
            config.train.log_every = 10
            config.train.eval_every = 10
            config.train.checkpoint_every = 10
            config.train.progress = False
            if "word2vec" in config.model:
                config.model.word2vec.update(min_count=1, epochs=1, batch_size=64, steps_per_call=4)
        elif name == "tfds":
            config.data.source = ml_collections.ConfigDict(dict(name="conll2003", data_dir="", manual_dir=""))
            config.data.splits.test = "test"
            config.data.tags_key = "ner"
        else:
            raise ValueError(f"unknown variant {name!r}; choose from {VARIANTS}")
    return config


def get_sweep(name: str | None = None):
    """Sweeps of this config (`seqjax-sweep --config=conll_tagger --sweep=NAME`).

    ablation (the default): the full model against one part removed at a
      time (softmax instead of the CRF, no characters, no word dropout),
      3 seeds each (12 runs); the recorded one ran on `conll_tagger:random_init`.
    seeds: the config as given, seeds 0, 1, 2 (the default's result).
    """
    from seqjax import sweeps

    if name in (None, "ablation"):
        return sweeps.product(sweeps.variants(ABLATION), sweeps.seeds(3))
    if name == "seeds":
        return sweeps.seeds(3)
    raise ValueError(f"unknown sweep {name!r} of configs/conll_tagger.py; choose from {', '.join(SWEEPS)}")
