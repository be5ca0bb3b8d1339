"""Flax Linen modules for sequence models."""

from seqjax.nn.cells import (CELL_NAMES, GRUCell, LSTMCarry, LSTMCell, RecurrentCell,
                             SimpleRNNCell, identity_init, irnn_cell, make_cell)
from seqjax.nn.minimal import MinGRUCell, MinLSTMCell, parallel_scan
from seqjax.nn.heads import last_valid, masked_max, masked_mean, pool
from seqjax.nn.porting import (check_params_compatible, import_keras_layer, import_keras_stack,
                               import_torch_rnn, keras_layer_config, keras_stack_config,
                               torch_rnn_config)
from seqjax.nn.recurrent import Bidirectional, Recurrent, RecurrentStack, scan_cell

__all__ = [
    "CELL_NAMES", "GRUCell", "LSTMCarry", "LSTMCell", "RecurrentCell", "SimpleRNNCell",
    "identity_init", "irnn_cell", "make_cell", "last_valid", "masked_max", "masked_mean",
    "pool", "Bidirectional", "Recurrent", "RecurrentStack", "scan_cell",
    "check_params_compatible", "import_keras_layer", "import_keras_stack", "import_torch_rnn",
    "keras_layer_config", "keras_stack_config", "torch_rnn_config",
    "MinGRUCell", "MinLSTMCell", "parallel_scan",
]
