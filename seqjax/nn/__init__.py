"""Flax Linen modules for sequence models."""

from seqjax.nn.attention import MultiHeadAttention, dot_product_attention, init_cache, rotary_embedding
from seqjax.nn.cells import (
    GRUCell,
    LSTMCarry,
    LSTMCell,
    RecurrentCell,
    SimpleRNNCell,
    cell_names,
    identity_init,
    irnn_cell,
    make_cell,
    register_cell,
)
from seqjax.nn.heads import last_valid, masked_max, masked_mean, pool

# Importing minimal registers 'mingru' and 'minlstm' with make_cell.
from seqjax.nn.minimal import MinGRUCell, MinLSTMCell, parallel_scan
from seqjax.nn.porting import (
    check_params_compatible,
    import_keras_layer,
    import_keras_stack,
    import_torch_rnn,
    keras_layer_config,
    keras_stack_config,
    torch_rnn_config,
)
from seqjax.nn.recurrent import Bidirectional, Recurrent, RecurrentStack, scan_cell
from seqjax.nn.transformer import (
    TransformerClassifier,
    TransformerConfig,
    TransformerLM,
    TransformerSeq2Seq,
    init_decoding_cache,
    lm_decoder,
    seq2seq_decoder,
    sinusoidal_encoding,
)

__all__ = [
    "GRUCell",
    "LSTMCarry",
    "LSTMCell",
    "RecurrentCell",
    "SimpleRNNCell",
    "cell_names",
    "identity_init",
    "irnn_cell",
    "make_cell",
    "register_cell",
    "last_valid",
    "masked_max",
    "masked_mean",
    "pool",
    "Bidirectional",
    "Recurrent",
    "RecurrentStack",
    "scan_cell",
    "check_params_compatible",
    "import_keras_layer",
    "import_keras_stack",
    "import_torch_rnn",
    "keras_layer_config",
    "keras_stack_config",
    "torch_rnn_config",
    "MinGRUCell",
    "MinLSTMCell",
    "parallel_scan",
    "MultiHeadAttention",
    "dot_product_attention",
    "init_cache",
    "rotary_embedding",
    "TransformerClassifier",
    "TransformerConfig",
    "TransformerLM",
    "TransformerSeq2Seq",
    "init_decoding_cache",
    "lm_decoder",
    "seq2seq_decoder",
    "sinusoidal_encoding",
]
