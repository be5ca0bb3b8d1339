"""The Pallas kernel on the hot path: a jit-compiled Transformer training
step with attention_implementation='pallas' (interpret mode on CPU) gives
the losses and parameters of the XLA path."""

import jax
import numpy as np
import pytest

from configs import transformer_synthetic
from seqjax import parallel, training
from seqjax.nn import attention
from tests import helpers


def train(variant, implementation, num_steps=1):
    config = transformer_synthetic.get_config(f"{variant},smoke")
    config.model.attention_implementation = implementation
    return helpers.run_steps(training.Trainer(config, parallel.make_mesh(jax.devices()[:1])), num_steps)


# seq2seq covers every mask the kernel takes in a Transformer: source padding
# (kv_lengths) in the encoder and in cross-attention with T != S, and causal
# decoder self-attention. Interpret mode is slow, so one update: the
# parameters after it compare the gradients.
@pytest.mark.parametrize("variant", ["seq2seq"])
def test_pallas_training_steps_match_the_xla_path(variant, monkeypatch):
    xla_losses, xla_params = train(variant, "xla")
    traced = []
    kernel = attention.pallas_attention
    monkeypatch.setattr(attention, "pallas_attention", lambda *args: traced.append(1) or kernel(*args))
    pallas_losses, pallas_params = train(variant, "pallas")
    assert traced, "the training step must reach the Pallas kernel"
    np.testing.assert_allclose(pallas_losses, xla_losses, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), pallas_params, xla_params)
