r"""RNN encoder-decoders on synthetic translation: numbers written in digits
-> English words ("40,017" -> "forty thousand seventeen"), with and without
attention.

The task (seqjax.tasks.translation) needs no data; eval/test numbers are never
seen in training. The 2014 model must squeeze the source into its final state;
Bahdanau and Luong attention read every source position at every step.

Command:
  python -m experiments.train --config=configs/seq2seq_synthetic.py:bahdanau --workdir=runs/s2s_bahdanau
  python -m experiments.decode --run_dir=runs/s2s_bahdanau --beam_size=4
  python -m experiments.translate --run_dir=runs/s2s_bahdanau --source="40,017" --plot=0

Variants (comma-separated, e.g. `--config=configs/seq2seq_synthetic.py:luong_general,reverse`):
  none (the default: no attention), bahdanau, luong_dot, luong_general,
  luong_concat, transformer (the encoder-decoder Transformer and optimiser
  of configs/transformer_synthetic.py:seq2seq on this task, for the
  ablation), reverse (read the source backwards), scheduled (scheduled
  sampling, inverse-sigmoid decay to a 0.75 teacher forcing ratio), dates
  (date formats -> yyyy-mm-dd instead of numbers), captioning (the one-to-many
  task: a vector_to_sequence decoder describes a scene from a feature
  vector), smoke (a few steps with tiny sizes, for tests).
Any field can be overridden: `--config.model.hidden_size=256`.

Results (seed 0, defaults: LSTM 128, embeddings 64, one layer each, 9-digit
numbers, batch 64, 1500 steps; 2 CPU cores shared with other jobs, so wall
times are upper bounds, CPU = user time of the training process). exact =
exact match on 512 held-out test sentences (greedy; the teacher-forced
test_exact_match of final_metrics.json agrees exactly), BLEU = sacrebleu
corpus BLEU of the same 512 (signature nrefs:1|case:mixed|eff:no|tok:13a|
smooth:exp|version:2.6.0; tok:char for dates):

  python -m experiments.train --config=configs/seq2seq_synthetic.py:<variant> --workdir=runs/s2s_<variant>
  python -m experiments.decode --run_dir=runs/s2s_<variant> [--beam_size=4]

  variant          wall   CPU   eval exact @250/500/1000   exact  BLEU   beam4 exact  BLEU
  none             163s   60s   0.572 / 0.895 / 0.975      0.984  96.39  0.984        96.23
  bahdanau         210s  116s   0.932 / 1.000 / 1.000      1.000  100.0  1.000        100.0
  luong_general     58s   70s   0.805 / 0.996 / 1.000      1.000  100.0  1.000        100.0
  luong_dot         53s   64s   0.844 / 0.990 / 1.000      1.000  100.0  1.000        100.0
  luong_concat      53s   74s   0.688 / 1.000 / 1.000      1.000  100.0  1.000        100.0
  dates,none        61s   59s   0.236 / 0.859 / 1.000      1.000  100.0  1.000        100.0
  dates,bahdanau   361s  144s   1.000 / 1.000 / 1.000      1.000  100.0  1.000        100.0
  captioning        59s   31s   0.295 / 0.547 / 0.682      0.682  57.52  0.688        58.36

The attention ablation through the sweep machinery (get_sweep below; 3 seeds,
2 runs at a time on 2 CPU cores; exact / BLEU: greedy decoding of the same 512
test numbers at the end of training, config.task.decode_test):

  python -m experiments.sweep --config=configs/seq2seq_synthetic.py --sweep=attention_ablation \
      --sweep_dir=runs/s2s_ablation --parallel=2
  python -m experiments.report --sweep_dir=runs/s2s_ablation \
      --metrics=test_greedy_exact_match,test_bleu --curve_metric=eval_exact_match

  variant          exact           BLEU          eval exact @250   wall per run
  none             0.976 ± 0.016   93.5 ± 4.6    0.48 ± 0.08        70 s
  bahdanau         1.000 ± 0       100.0 ± 0     0.97 ± 0.03       176 s
  luong_general    0.999 ± 0.002   99.8 ± 0.4    0.71 ± 0.12       130 s
  transformer      1.000 ± 0       100.0 ± 0     0.55 ± 0.07        81 s

(docs/results/s2s_attention_ablation.{md,tex,png}.)

Every model solves these tasks within the budget; attention's gain shows in
how fast (at step 250 the attention models are at 0.69-0.93 on numbers, 1.00
on dates, against 0.57 and 0.24 without) and in the last 1.6% of numbers the
no-attention model still gets wrong. The alignments are monotone,
digit-to-word ("hundred" and "thousand" attend to the digit that opens their
group); see experiments/translate.py --plot. Captioning generalises worse to
held-out colour/shape/count combinations (train exact 0.97, test 0.68).
"""

import os

import ml_collections

from seqjax import config as config_lib

ATTENTION_VARIANTS = ("none", "bahdanau", "luong_dot", "luong_general", "luong_concat")
SWEEPS = ("attention_ablation",)
VARIANTS = ATTENTION_VARIANTS + ("transformer", "reverse", "scheduled", "dates", "captioning", "smoke")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # seeds parameters, dropout and the synthetic data stream

    config.task = ml_collections.ConfigDict()
    config.task.name = "translation"  # translation | captioning (seqjax.tasks.translation)
    config.task.kind = "numbers"  # numbers (digits -> words) | dates (any format -> yyyy-mm-dd)
    config.task.max_digits = 9  # numbers up to 10**max_digits - 1
    config.task.teacher_forcing_ratio = 1.0  # final probability of reading the true previous token
    config.task.teacher_forcing_schedule = "constant"  # constant | linear | exponential | inverse_sigmoid
    config.task.teacher_forcing_decay_steps = 1000  # time scale of the decay (see seq2seq.teacher_forcing_ratio)
    config.task.decode_test = True  # greedy-decode the test batches at the end: test_bleu, test_greedy_exact_match

    config.model = ml_collections.ConfigDict()
    config.model.name = "seq2seq"  # seq2seq | vector_to_sequence (captioning) | transformer_seq2seq
    config.model.attention = "none"  # none | bahdanau | luong_dot | luong_general | luong_concat
    config.model.cell = "lstm"  # encoder and decoder cell
    config.model.hidden_size = 128  # decoder units per layer (H)
    config.model.encoder_hidden_size = 0  # encoder units per direction; 0 = hidden_size
    config.model.embed_size = 64  # source and target embedding width
    config.model.encoder_layers = 1  # stacked encoder layers
    config.model.decoder_layers = 1  # stacked decoder layers
    config.model.bidirectional_encoder = False  # Bahdanau variants switch it on
    config.model.attention_size = 0  # additive / concat alignment layer width; 0 = hidden_size
    config.model.input_feeding = True  # Luong: feed the attentional state h~ into the next step
    config.model.reverse_source = False  # read each source backwards (Sutskever et al. 2014)
    config.model.bridge = "auto"  # encoder final state -> decoder initial state: auto | dense | none
    config.model.tie_embeddings = False  # softmax weights = target embedding transposed
    config.model.dropout_rate = 0.0  # on embeddings, between encoder layers, before the softmax
    config.model.forget_bias = 1.0  # LSTM forget-gate bias at init
    config.model.implementation = "auto"  # encoder recurrence: auto | scan | fused

    config.optimizer = config_lib.optimizer_section()  # every key (see seqjax.config.OPTIMIZER_DEFAULTS)
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 3e-3  # peak learning rate
    config.optimizer.schedule = "cosine"  # after linear warm-up
    config.optimizer.warmup_steps = 100
    config.optimizer.end_lr_fraction = 0.01
    config.optimizer.clip_global_norm = 1.0

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 64  # global batch, split over all devices
    config.train.num_steps = 1500
    config.train.log_every = 100
    config.train.eval_every = 250
    config.train.eval_batches = 8  # batches of 64 held-out sentences per evaluation
    config.train.checkpoint_every = 500
    config.train.keep_checkpoints = 2
    config.train.progress = True
    config.train.best_metric = ""  # e.g. "eval_accuracy": also keep the best checkpoint by it ('' = off)
    config.train.early_stopping_patience = 0  # stop after this many evaluations without a better best_metric
    config.train.wandb_project = ""  # also log to this Weights & Biases project ('' = off; needs .[wandb])

    names = [name for name in (variant or "").split(",") if name]
    for name in names:
        if name not in VARIANTS:
            raise ValueError(
                f"unknown variant {name!r} of configs/seq2seq_synthetic.py; choose from {', '.join(VARIANTS)}"
            )
    # smoke shrinks whichever model the other variants chose, so it goes last.
    for name in sorted(names, key=lambda n: n == "smoke"):
        _apply_variant(config, name)
    return config


def get_sweep(name: str | None = None):
    """Sweeps of this config (`python -m experiments.sweep --config=configs/seq2seq_synthetic.py --sweep=NAME`).

    attention_ablation (the default): numbers -> words with no attention,
      Bahdanau, Luong (general) and the Transformer, 3 seeds each (12 runs);
      report test_bleu, test_greedy_exact_match and the eval curves.
    """
    from seqjax import sweeps

    if name in (None, "attention_ablation"):
        return sweeps.product(sweeps.variants(["none", "bahdanau", "luong_general", "transformer"]), sweeps.seeds(3))
    raise ValueError(f"unknown sweep {name!r} of configs/seq2seq_synthetic.py; choose from {', '.join(SWEEPS)}")


def _apply_variant(config: ml_collections.ConfigDict, name: str) -> None:
    if name in ATTENTION_VARIANTS:
        config.model.attention = name
        config.model.bidirectional_encoder = name == "bahdanau"
    elif name == "transformer":
        # The encoder-decoder Transformer of configs/transformer_synthetic.py:seq2seq, with its optimiser.
        reference = _sibling_config("transformer_synthetic.py", "seq2seq")
        config.model, config.optimizer = reference.model, reference.optimizer
    elif name == "reverse":
        config.model.reverse_source = True
    elif name == "scheduled":
        config.task.teacher_forcing_ratio = 0.75
        config.task.teacher_forcing_schedule = "inverse_sigmoid"
        config.task.teacher_forcing_decay_steps = 100  # ratio 0.5 of the way down by step ~460
    elif name == "dates":
        config.task.kind = "dates"
        del config.task.max_digits
    elif name == "captioning":
        config.task = ml_collections.ConfigDict(
            {
                "name": "captioning",
                "feature_size": 32,
                "noise": 0.05,
                "teacher_forcing_ratio": 1.0,
                "teacher_forcing_schedule": "constant",
                "teacher_forcing_decay_steps": 1000,
            }
        )
        keep = (
            "name",
            "cell",
            "hidden_size",
            "embed_size",
            "decoder_layers",
            "tie_embeddings",
            "dropout_rate",
            "forget_bias",
        )
        config.model = ml_collections.ConfigDict({key: config.model[key] for key in keep})
        config.model.name = "vector_to_sequence"
    elif name == "smoke":
        if config.model.name == "transformer_seq2seq":
            config.model.update(d_model=16, d_ff=32, num_heads=2, num_layers=1, num_decoder_layers=1)
        else:
            config.model.hidden_size = 16
            config.model.embed_size = 8
        if "max_digits" in config.task:
            config.task.max_digits = 3
        config.train.batch_size = 8
        config.train.num_steps = 20
        config.optimizer.warmup_steps = 5  # a quarter of the run: a warm-up must end before training does
        config.train.log_every = 5
        config.train.eval_every = 10
        config.train.eval_batches = 2
        config.train.checkpoint_every = 10
        config.train.progress = False


def _sibling_config(file_name: str, variant: str) -> ml_collections.ConfigDict:
    """The config `file_name:variant` of another config file in this directory."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), file_name)
    return config_lib.load_config(f"{path}:{variant}")
