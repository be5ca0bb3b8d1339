"""seqjax: sequence models in JAX/Flax (recurrent nets, attention, Transformers, seq2seq)."""

__version__ = "0.1.0"
