import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from seqjax import parallel, tbptt, training


def copy_config(cell="lstm", seq_len=5, **train):
    config = default.get_config("copy,smoke")
    config.task.seq_len, config.task.copy_len = seq_len, 3  # T = seq_len + 6
    config.model.cell, config.model.hidden_size, config.model.num_layers = cell, 8, 2
    config.optimizer.name, config.optimizer.schedule, config.optimizer.warmup_steps = "sgd", "constant", 0
    config.optimizer.clip_global_norm, config.optimizer.momentum = 0.0, 0.0
    config.optimizer.learning_rate = 1.0  # so (before - after) / lr recovers the gradient precisely
    for key, value in train.items():
        config.train[key] = value
    return config


def one_step(config):
    trainer = training.Trainer(config, parallel.make_mesh(jax.devices()[:1]))
    state = trainer.init_state()
    before = jax.device_get(state.params)
    state, metrics = trainer.step(state)
    grads = jax.tree.map(lambda a, b: (a - b) / config.optimizer.learning_rate, before, jax.device_get(state.params))
    return grads, jax.device_get(metrics), trainer, before


def test_split_pads_the_ragged_last_chunk_and_masks_it():
    batch = {"inputs": np.arange(2 * 7).reshape(2, 7), "targets": np.ones((2, 7)), "lengths": np.array([7, 4])}
    chunks = tbptt.split_into_chunks(batch, 3)
    assert chunks["inputs"].shape == (3, 2, 3)
    np.testing.assert_array_equal(chunks["inputs"][2, 0], [6, 0, 0])
    np.testing.assert_array_equal(chunks["lengths"], [[3, 3], [3, 1], [1, 0]])
    np.testing.assert_array_equal(chunks["step_mask"][1], [[1, 1, 1], [1, 0, 0]])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_one_chunk_of_the_whole_sequence_is_full_bptt(cell):
    full_grads, full_metrics, _, _ = one_step(copy_config(cell))
    chunk_grads, chunk_metrics, _, _ = one_step(copy_config(cell, tbptt_len=11))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6), full_grads, chunk_grads)
    np.testing.assert_allclose(chunk_metrics["loss"], full_metrics["loss"], rtol=1e-6)


def hand_truncated_gradient(trainer, params, batch, chunk_len):
    """Σ_c ∂(loss of chunk c)/∂θ with the carry entering chunk c held constant, by a Python loop."""
    model = trainer.model
    time = batch["inputs"].shape[1]
    total = float(batch["targets"].size)
    carry, grads = None, jax.tree.map(jnp.zeros_like, params)
    for start in range(0, time, chunk_len):
        piece = {k: jnp.asarray(v[:, start : start + chunk_len]) for k, v in batch.items()}

        def chunk_loss(p, carry=carry, piece=piece):
            logits, new_carry = model.apply({"params": p}, piece["inputs"], initial_carry=carry, return_carry=True)
            log_probs = jax.nn.log_softmax(logits)
            xent = -jnp.take_along_axis(log_probs, piece["targets"][..., None], axis=-1)
            return xent.sum() / total, new_carry

        (_, carry), chunk_grads = jax.value_and_grad(chunk_loss, has_aux=True)(params)
        grads = jax.tree.map(jnp.add, grads, chunk_grads)
    return grads


@pytest.mark.parametrize("chunk_len", [3, 4])
def test_truncated_gradient_equals_the_hand_built_one(chunk_len):
    config = copy_config(tbptt_len=chunk_len)
    grads, _, trainer, params = one_step(config)
    batch = trainer.task.batch("train", 0, config.train.batch_size, config.seed)
    expected = hand_truncated_gradient(trainer, params, batch, chunk_len)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6), grads, expected)
    full, _, _, _ = one_step(copy_config())
    differs = jax.tree.map(lambda a, b: not np.allclose(a, b, rtol=1e-3, atol=1e-6), grads, full)
    assert any(jax.tree.leaves(differs)), "truncation must cut some gradient paths"


def test_carry_crosses_chunks_so_chunked_forward_equals_full_forward():
    config = copy_config()
    trainer = training.Trainer(config, parallel.make_mesh(jax.devices()[:1]))
    params = trainer.init_state().params
    batch = trainer.task.batch("train", 0, 4, config.seed)
    full = trainer.model.apply({"params": params}, batch["inputs"])
    chunks = tbptt.split_into_chunks(batch, 4)
    carry, pieces = None, []
    for c in range(chunks["inputs"].shape[0]):
        logits, carry = trainer.model.apply(
            {"params": params}, chunks["inputs"][c], chunks["lengths"][c], initial_carry=carry, return_carry=True
        )
        pieces.append(logits)
    chunked = jnp.concatenate(pieces, axis=1)[:, : full.shape[1]]
    np.testing.assert_allclose(chunked, full, rtol=1e-5, atol=1e-6)


def test_per_chunk_updates_step_once_per_chunk_and_train_end_to_end(tmp_path):
    config = copy_config(tbptt_len=4, tbptt_update="per_chunk")
    config.optimizer.name, config.optimizer.learning_rate = "adam", 1e-2
    final = training.train_and_evaluate(config, str(tmp_path), parallel.make_mesh(jax.devices()[:1]))
    assert final["step"] == config.train.num_steps and np.isfinite(final["test_loss"])
    trainer = training.Trainer(config, parallel.make_mesh(jax.devices()[:1]))
    state, _ = trainer.step(trainer.init_state())
    assert int(state.step) == 3 and trainer.batches_done(state) == 1  # T=11, K=4 -> 3 chunks


def test_bidirectional_and_many_to_one_models_are_refused():
    config = copy_config(tbptt_len=4)
    config.model.bidirectional = True
    with pytest.raises(ValueError, match="bidirectional layers .* cannot be truncated causally"):
        training.Trainer(config)
    adding = default.get_config("smoke")
    adding.train.tbptt_len = 5
    with pytest.raises(ValueError, match="TBPTT needs a per-step loss, but the model head is 'last'"):
        training.Trainer(adding)


# --- TBPTT(k1, k2): each update backpropagates through the last k2 >= k1 steps ---


def test_windows_reach_back_k2_steps_mask_the_warm_up_and_reset_at_step_0():
    batch = {"inputs": np.arange(1, 15).reshape(2, 7), "lengths": np.array([7, 4])}
    windows = tbptt.split_into_chunks(batch, 3, 5)  # k1 = 3, k2 = 5: windows start at -2, 1, 4
    assert windows["inputs"].shape == (3, 2, 5)
    np.testing.assert_array_equal(windows["inputs"][:, 0], [[0, 0, 1, 2, 3], [2, 3, 4, 5, 6], [5, 6, 7, 0, 0]])
    np.testing.assert_array_equal(windows["step_mask"][:, 1], [[0, 0, 1, 1, 1], [0, 0, 1, 0, 0], [0] * 5])
    np.testing.assert_array_equal(windows["lengths"], [[5, 5], [5, 3], [3, 0]])
    np.testing.assert_array_equal(windows["resets"][:, 0], [[0, 0, 1, 0, 0], [0] * 5, [0] * 5])
    # Every real step is in exactly one chunk's loss.
    assert windows["step_mask"].sum() == batch["lengths"].sum()
    same = tbptt.split_into_chunks(batch, 3, 3)
    plain = tbptt.split_into_chunks(batch, 3)
    assert "resets" not in same and same.keys() == plain.keys()
    for name in plain:
        np.testing.assert_array_equal(same[name], plain[name])


def rnn_reference_loss(params, inputs, targets, valid, stop, cut, carry=None, resets=None, start=0):
    """Plain-JAX Elman RNN (embedding -> tanh RNN -> dense), written step by
    step: Σ cross-entropy over steps [start, stop) where `valid`, with the
    hidden state entering step `cut` held constant (stop_gradient).

    inputs/targets/valid [B, T]; resets [B, T] zero the state before a step.
    Returns (loss sum, the hidden state entering step `stop`)."""
    embedded = params["embed"]["embedding"][inputs]
    cell, out = params["stack"]["layer_0"]["cell"], params["output"]
    hidden = jnp.zeros((inputs.shape[0], cell["bias"].shape[0])) if carry is None else carry
    total = 0.0
    for t in range(stop):
        if t == cut:
            hidden = jax.lax.stop_gradient(hidden)
        if resets is not None:
            hidden = jnp.where(resets[:, t : t + 1], 0.0, hidden)
        hidden = jnp.tanh(embedded[:, t] @ cell["input_kernel"] + cell["bias"] + hidden @ cell["recurrent_kernel"])
        if t >= start:
            log_probs = jax.nn.log_softmax(hidden @ out["kernel"] + out["bias"])
            xent = -jnp.take_along_axis(log_probs, targets[:, t, None], axis=-1)[:, 0]
            total = total + (xent * valid[:, t]).sum()
    return total, hidden


def reference_truncated_gradient(params, batch, chunk_len, backprop_len):
    """Σ_c ∂(loss of chunk c)/∂θ with the gradient cut k2 steps before the chunk ends."""
    time = batch["inputs"].shape[1]
    valid = (np.arange(time)[None, :] < batch["lengths"][:, None]).astype(np.float32)
    grads = jax.tree.map(jnp.zeros_like, params)
    for start in range(0, time, chunk_len):
        stop = min(start + chunk_len, time)
        cut = max(start + chunk_len - backprop_len, 0)

        def chunk_loss(p):
            return (
                rnn_reference_loss(p, batch["inputs"], batch["targets"], valid, stop, cut, start=start)[0] / valid.sum()
            )

        grads = jax.tree.map(jnp.add, grads, jax.grad(chunk_loss)(params))
    return grads


@pytest.mark.parametrize("chunk_len,backprop_len", [(3, 3), (3, 5), (2, 7)])
def test_k1_k2_gradient_equals_the_hand_built_one_on_a_plain_rnn(chunk_len, backprop_len):
    """Variable lengths and a ragged last chunk (T = 11); (3, 3) is the plain TBPTT(k1) path."""
    config = copy_config("rnn")
    config.model.num_layers = 1
    trainer = training.Trainer(config, parallel.make_mesh(jax.devices()[:1]))
    state = trainer.init_state()
    batch = trainer.task.batch("train", 0, 4, config.seed)
    batch["lengths"] = np.array([11, 9, 5, 1], np.int32)
    step = jax.jit(tbptt.make_train_step(trainer.task, "accumulate", chunk_len=chunk_len))
    windows = tbptt.split_into_chunks(batch, chunk_len, backprop_len)
    after, _ = step(state, jax.tree.map(jnp.asarray, windows), jax.random.key(0))
    grads = jax.tree.map(jnp.subtract, state.params, after.params)  # SGD with learning rate 1
    expected = reference_truncated_gradient(state.params, batch, chunk_len, backprop_len)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads, expected)
    if backprop_len > chunk_len:  # the longer window must change the gradient
        shorter = reference_truncated_gradient(state.params, batch, chunk_len, chunk_len)
        assert not np.allclose(
            grads["stack"]["layer_0"]["cell"]["recurrent_kernel"],
            shorter["stack"]["layer_0"]["cell"]["recurrent_kernel"],
            rtol=1e-3,
        )


@pytest.mark.parametrize("update", ["accumulate", "per_chunk"])
def test_backprop_len_equal_to_tbptt_len_is_plain_tbptt(update):
    base, _, _, _ = one_step(copy_config(tbptt_len=4, tbptt_update=update))
    same, _, _, _ = one_step(copy_config(tbptt_len=4, tbptt_backprop_len=4, tbptt_update=update))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), base, same)


def test_backprop_through_the_whole_sequence_is_full_bptt():
    """Stacked LSTM, k1 = 4, k2 = T = 12: every chunk's gradient reaches step 0,
    so the accumulated gradient is full BPTT's."""
    full_grads, full_metrics, _, _ = one_step(copy_config(seq_len=6))
    grads, metrics, _, _ = one_step(copy_config(seq_len=6, tbptt_len=4, tbptt_backprop_len=12))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6), full_grads, grads)
    np.testing.assert_allclose(metrics["loss"], full_metrics["loss"], rtol=1e-6)


def test_stateful_k1_k2_matches_a_hand_built_stream_reference():
    """Three updates on streams of 11-step episodes, k1 = 4, k2 = 7: update i
    backpropagates from steps [4i, 4i + 4) to step 4i - 3, entering from the
    carry that the previous parameters produced, and episode starts reset it."""
    chunk_len, backprop_len, batch_size = 4, 7, 2
    config = copy_config(
        "rnn", tbptt_len=chunk_len, tbptt_backprop_len=backprop_len, stateful=True, batch_size=batch_size
    )
    config.model.num_layers = 1
    trainer = training.Trainer(config, parallel.make_mesh(jax.devices()[:1]))
    state = trainer.init_state()
    stream = trainer.task.stream_batch("train", 0, batch_size, 3 * chunk_len, config.seed)
    inputs, targets, resets = (jnp.asarray(stream[k]) for k in ("inputs", "targets", "resets"))
    valid = jnp.ones(inputs.shape)
    history = []  # parameters of each update
    for index in range(3):
        history.append(jax.device_get(state.params))
        state, _ = trainer.step(state)
        grads = jax.tree.map(jnp.subtract, history[-1], jax.device_get(state.params))
        start, cut = index * chunk_len, max(index * chunk_len - (backprop_len - chunk_len), 0)
        carry, position = None, 0  # the carry entering step `cut`, each stretch under its update's parameters
        for earlier in range(index):
            stop = max((earlier + 1) * chunk_len - (backprop_len - chunk_len), 0)
            if stop > position:
                piece = slice(position, stop)
                carry = rnn_reference_loss(
                    history[earlier],
                    inputs[:, piece],
                    targets[:, piece],
                    valid[:, piece],
                    stop - position,
                    -1,
                    carry,
                    resets[:, piece],
                )[1]
                position = stop
        assert position == cut
        expected = jax.grad(
            lambda p: (
                rnn_reference_loss(
                    p,
                    inputs[:, cut:],
                    targets[:, cut:],
                    valid[:, cut:],
                    start + chunk_len - cut,
                    0,
                    carry,
                    resets[:, cut:],
                    start=start - cut,
                )[0]
                / (batch_size * chunk_len)
            )
        )(history[-1])
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads, expected)
