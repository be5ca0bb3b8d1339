r"""Forecasting: an LSTM predicts a time series from its recent past.

Default: monthly airline passengers 1949-1960 (144 values; Box & Jenkins),
from `airline-passengers.csv` in $SEQJAX_DATA/timeseries (default
~/seqjax_data): 12 months in, the next month out,
70/15/15 split in time order. The `synthetic` variant needs no files.

Command:
  python -m experiments.train --config=configs/forecast.py --workdir=runs/airline_lstm
  python -m experiments.train --config=configs/forecast.py:synthetic,many_to_many --workdir=runs/sine_m2m

Variants: `synthetic` (two sines + trend + noise), `many_to_many` (predict the
next value at every step), `sunspots` (yearly sunspot numbers), `smoke`
(synthetic, a few steps; used by tests).

Reported next to the model's MAE/RMSE (in the series' units): the naive
last-value forecast's, and their ratios (< 1 beats the baseline).
Result: see RESULTS below.
"""

import os

import ml_collections

from seqjax import config as config_lib
from seqjax import paths

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = paths.data_root()  # $SEQJAX_DATA, else ~/seqjax_data
VARIANTS = ("synthetic", "many_to_many", "sunspots", "smoke")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.task = ml_collections.ConfigDict()
    config.task.name = "forecast"
    config.task.series = os.path.join(DATA, "timeseries", "airline-passengers.csv")  # or 'synthetic'
    config.task.column = "Passengers"  # CSV column to forecast
    config.task.data_dir = ""  # where the CSV is prepared as a TFDS dataset ("" = TFDS default)
    config.task.input_len = 12  # past steps the model sees
    config.task.horizon = 1  # future steps it predicts (many_to_one)
    config.task.mode = "many_to_one"  # many_to_one | many_to_many
    config.task.split = (0.7, 0.15, 0.15)  # train / eval / test, in time order

    config.model = ml_collections.ConfigDict()
    config.model.name = "recurrent"
    config.model.cell = "lstm"
    config.model.hidden_size = 32
    config.model.num_layers = 1

    config.optimizer = config_lib.optimizer_section()  # every key (see seqjax.config.OPTIMIZER_DEFAULTS)
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 3e-3
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 50
    config.optimizer.end_lr_fraction = 0.05
    config.optimizer.clip_global_norm = 1.0

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 16
    config.train.num_steps = 1500
    config.train.log_every = 100
    config.train.eval_every = 500
    config.train.eval_batches = 0  # forecasting evaluates every window of the split
    config.train.checkpoint_every = 500
    config.train.keep_checkpoints = 2
    config.train.progress = True
    config.train.best_metric = ""  # e.g. "eval_accuracy": also keep the best checkpoint by it ('' = off)
    config.train.early_stopping_patience = 0  # stop after this many evaluations without a better best_metric
    config.train.wandb_project = ""  # also log to this Weights & Biases project ('' = off; needs .[wandb])

    for name in (variant or "").split(","):
        if name in ("synthetic", "smoke"):
            config.task.series = "synthetic"
            config.task.series_len = 2000
            config.task.series_seed = 0
            config.task.noise = 0.1
            config.task.input_len = 48
        if name == "smoke":
            config.task.series_len = 400
            config.model.hidden_size = 8
            config.train.batch_size = 8
            config.train.num_steps = 20
            config.optimizer.warmup_steps = 5  # a quarter of the run: a warm-up must end before training does
            config.train.log_every = 10
            config.train.eval_every = 10
            config.train.checkpoint_every = 10
            config.train.progress = False
        elif name == "many_to_many":
            config.task.mode = "many_to_many"
        elif name == "sunspots":
            config.task.series = os.path.join(DATA, "timeseries", "statsmodels_sunspots_yearly.csv")
            config.task.column = "SUNACTIVITY"
            config.task.input_len = 22  # two solar cycles
        elif name not in ("", "synthetic"):
            raise ValueError(f"unknown variant {name!r}; choose from {VARIANTS}")
    return config
