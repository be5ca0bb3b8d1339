"""Synthetic translation and captioning tasks: generators, batches, metrics,
BLEU, and training through the real entry points."""

import datetime
import json
import math
import os
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import seq2seq_synthetic
from seqjax import config as config_lib
from seqjax import models
from seqjax.data.tokenizers import EOS_ID, PAD_ID, SOS_ID, UNK_ID
from seqjax.nn import transformer
from seqjax.nn.encoder_decoder import EncoderDecoder
from seqjax.tasks import translation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def numbers_task(**overrides):
    return translation.TranslationTask(
        ml_collections.ConfigDict({"name": "translation", "kind": "numbers", **overrides})
    )


WORD_VALUES = {word: value for value, word in enumerate(translation.ONES)}
WORD_VALUES.update({word: 10 * i for i, word in enumerate(translation.TENS) if word})


def words_to_number(text):
    """An independent reader of the words: accumulate within groups, scale at scale words."""
    total, group = 0, 0
    for word in text.split():
        if word in WORD_VALUES:
            group += WORD_VALUES[word]
        elif word == "hundred":
            group *= 100
        else:
            total += group * 1000 ** translation.SCALES.index(word)
            group = 0
    return total + group


def test_numbers_are_written_out_in_words():
    assert translation.number_to_words(0) == "zero"
    assert translation.number_to_words(40017) == "forty thousand seventeen"
    assert translation.number_to_words(1_000_000) == "one million"
    assert translation.number_to_words(110) == "one hundred ten"
    rng = np.random.default_rng(0)
    for n in rng.integers(0, 10**12, 300).tolist() + [10**9 + 1, 999_999, 20, 19]:
        assert words_to_number(translation.number_to_words(n)) == n
    with pytest.raises(ValueError, match="covers 0 <= n < 10"):
        translation.number_to_words(-1)


def test_dates_in_every_format():
    date = datetime.date(1994, 3, 3)  # a Thursday
    rendered = [translation.write_date(date, style) for style in translation.DATE_FORMATS]
    assert rendered == [
        "3 march 1994",
        "march 3, 1994",
        "mar 3 1994",
        "03.03.1994",
        "03/03/1994",
        "thursday, march 3, 1994",
    ]


def test_batches_are_pure_and_eval_sentences_are_never_trained_on():
    task = numbers_task(max_digits=4)
    first, again = task.batch("train", 3, 32, seed=5), task.batch("train", 3, 32, seed=5)
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["inputs"], task.batch("train", 4, 32, seed=5)["inputs"])
    train = {t for _, t in task.pairs(np.random.default_rng(0), 400, held_out=False)}
    test = set(task.detokenize(task.batch("test", 0, 200, seed=0)["targets"]))
    small = {translation.number_to_words(n) for n in range(100)}  # the vocabulary: in both pools
    assert train - small and test - small and not (train & test) - small
    assert all(translation.is_held_out(t) for t in test - small)
    assert "zero" in {t for _, t in task.pairs(np.random.default_rng(1), 2000, held_out=False)}


def test_batch_layout_shifts_targets_behind_sos():
    task = numbers_task(max_digits=6)
    batch = task.batch("train", 0, 16, seed=0)
    lengths = batch["target_lengths"]
    for row in range(16):
        n = lengths[row]
        assert batch["decoder_inputs"][row, 0] == SOS_ID
        np.testing.assert_array_equal(batch["decoder_inputs"][row, 1:n], batch["targets"][row, : n - 1])
        assert batch["targets"][row, n - 1] == EOS_ID
        assert np.all(batch["targets"][row, n:] == PAD_ID) and np.all(batch["decoder_inputs"][row, n:] == PAD_ID)
        source = "".join(task.source_vocab.decode(batch["inputs"][row]))
        assert len(source) == batch["lengths"][row]
        assert words_to_number(task.detokenize(batch["targets"][row : row + 1])[0]) == int(source.replace(",", ""))
    assert batch["inputs"].shape == (16, task.max_source_len) and batch["targets"].shape == (16, task.target_len)
    np.testing.assert_array_equal(batch["teacher_forcing_ratio"], 1.0)


def test_teacher_forcing_schedule_reaches_train_batches_only():
    task = numbers_task(teacher_forcing_ratio=0.5, teacher_forcing_schedule="linear", teacher_forcing_decay_steps=10)
    assert task.batch("train", 0, 2, 0)["teacher_forcing_ratio"][0] == 1.0
    np.testing.assert_allclose(task.batch("train", 4, 2, 0)["teacher_forcing_ratio"], 0.8)
    np.testing.assert_allclose(task.batch("train", 50, 2, 0)["teacher_forcing_ratio"], 0.5)
    np.testing.assert_allclose(task.batch("eval", 50, 2, 0)["teacher_forcing_ratio"], 1.0)


def test_metrics_count_valid_steps_only():
    task = numbers_task(max_digits=3)
    batch = {k: jnp.asarray(v) for k, v in task.batch("eval", 0, 8, seed=0).items()}
    targets, lengths = np.asarray(batch["targets"]), np.asarray(batch["target_lengths"])
    logits = jax.nn.one_hot(targets, task.target_vocab_size) * 20.0
    loss, metrics = task.loss_and_metrics(logits, batch)
    assert float(metrics["exact_match"]) == 1.0 and float(metrics["token_accuracy"]) == 1.0
    assert float(loss) < 1e-6
    wrong = np.array(logits)
    wrong[0, 0] = np.roll(wrong[0, 0], 1)  # a valid step of row 0 is now wrong
    wrong[1, lengths[1] :] = np.roll(wrong[1, lengths[1] :], 1, axis=-1)  # padding of row 1: ignored
    loss, metrics = task.loss_and_metrics(jnp.asarray(wrong), batch)
    np.testing.assert_allclose(metrics["exact_match"], 7 / 8)
    np.testing.assert_allclose(metrics["token_accuracy"], 1 - 1 / lengths.sum())
    valid = np.arange(targets.shape[1])[None] < lengths[:, None]
    log_p = wrong - np.log(np.exp(wrong).sum(-1, keepdims=True))
    expected = -np.take_along_axis(log_p, targets[..., None], -1)[..., 0][valid].mean()
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    finalized = task.finalize_metrics({name: float(value) for name, value in metrics.items()})
    np.testing.assert_allclose(finalized["perplexity"], math.exp(expected), rtol=1e-5)


def test_bleu_matches_a_hand_computation():
    # Sentence 1: clipped n-gram matches 5/6, 3/5, 2/4, 1/3. Sentence 2 ("a
    # cat" vs "the cat is here"): 1/2, 0/1, 0/0, 0/0 with hypothesis length 2
    # against reference length 4. Corpus BLEU sums the counts before dividing.
    hypotheses = ["the cat sat on the mat", "a cat"]
    references = ["the cat sat on a mat", "the cat is here"]
    precisions = [(5 + 1) / (6 + 2), (3 + 0) / (5 + 1), 2 / 4, 1 / 3]
    brevity = math.exp(1 - 10 / 8)
    expected = 100 * brevity * math.exp(sum(math.log(p) for p in precisions) / 4)
    score, signature = translation.corpus_bleu(hypotheses, references)
    np.testing.assert_allclose(score, expected, rtol=1e-9)
    assert "tok:13a" in signature and "nrefs:1" in signature and "version:" in signature
    assert translation.corpus_bleu(["x"], ["x"], "char")[1].count("tok:char") == 1
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        translation.corpus_bleu(hypotheses, references[:1])


def test_detokenize_stops_at_eos_and_drops_control_ids():
    task = numbers_task()
    ids = [task.target_vocab.index[w] for w in ("forty", "two")]
    rows = np.array([[SOS_ID, ids[0], PAD_ID, ids[1], EOS_ID, ids[0]], [EOS_ID, ids[0], 0, 0, 0, 0]])
    assert task.detokenize(rows) == ["forty two", ""]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        task.detokenize(np.array([[task.target_vocab_size]]))


def test_source_text_errors_and_unknown_characters():
    task = numbers_task(max_digits=3)
    inputs, lengths, unknown = task.encode_texts(["  12 ", "9!9"])
    np.testing.assert_array_equal(lengths, [2, 3])
    assert unknown == 1 and inputs[1, 1] == UNK_ID
    with pytest.raises(ValueError, match="source 0 is empty"):
        task.encode_texts(["   "])
    with pytest.raises(ValueError, match=r"has 6 characters; the task allows at most 3"):
        task.encode_texts(["123456"])
    with pytest.raises(ValueError, match="config.task.kind must be one of"):
        numbers_task(kind="poems")
    with pytest.raises(ValueError, match="max_digits must lie in"):
        numbers_task(max_digits=13)


def test_dates_task_targets_are_iso_dates():
    task = translation.TranslationTask(ml_collections.ConfigDict({"name": "translation", "kind": "dates"}))
    for source, target in task.texts("test", 20, seed=0):
        assert datetime.date.fromisoformat(target).year in range(1950, 2050)
        assert translation.is_held_out(target)
        assert len(source) <= task.max_source_len
    batch = task.batch("train", 0, 8, seed=0)
    texts = task.detokenize(batch["targets"])
    assert all(len(t) == 10 and t[4] == "-" for t in texts)
    assert task.bleu_tokenize == "char"


def test_captions_describe_the_scene_in_the_features():
    task = translation.CaptioningTask(ml_collections.ConfigDict({"name": "captioning", "noise": 0.0}))
    assert translation.describe_scene([(2, 2, 3), (1, 0, 0)]) == "one red circle and two blue stars"
    features, caption = task.sample(np.random.default_rng(0), held_out=False)
    counts = features @ np.linalg.pinv(task.projection)  # without noise the counts come back
    words = caption.split()
    color, shape = translation.COLORS.index(words[1]), translation.SHAPES.index(words[2].rstrip("s"))
    np.testing.assert_allclose(counts.reshape(4, 4)[color, shape], translation.ONES.index(words[0]), atol=1e-4)
    batch = task.batch("test", 0, 16, seed=0)
    assert batch["inputs"].shape == (16, 32) and batch["inputs"].dtype == np.float32
    assert "lengths" not in batch
    assert all(translation.is_held_out(t) for t in task.detokenize(batch["targets"]))


@pytest.mark.parametrize("variant", seq2seq_synthetic.VARIANTS)
def test_every_config_variant_validates_and_builds(variant):
    from seqjax import tasks

    config = seq2seq_synthetic.get_config(variant)
    config_lib.validate(config)
    task = tasks.get(config.task)
    model = models.build(config.model, task)
    batch = task.batch("train", 0, 2, config.seed)
    kwargs = {name: batch[name] for name in model.batch_inputs}
    shapes = jax.eval_shape(model.init, jax.random.key(0), batch["inputs"], batch.get("lengths"), **kwargs)
    logits = jax.eval_shape(model.apply, shapes, batch["inputs"], batch.get("lengths"), **kwargs)
    assert logits.shape == batch["targets"].shape + (task.target_vocab_size,)


def test_models_refuse_tasks_they_do_not_fit():
    from seqjax import tasks

    captioning = tasks.get(ml_collections.ConfigDict({"name": "captioning"}))
    with pytest.raises(ValueError, match="use 'vector_to_sequence'"):
        models.build(ml_collections.ConfigDict({"name": "seq2seq"}), captioning)
    with pytest.raises(ValueError, match="use 'seq2seq'"):
        models.build(ml_collections.ConfigDict({"name": "vector_to_sequence"}), numbers_task())
    adding = tasks.get(ml_collections.ConfigDict({"name": "adding", "seq_len": 5}))
    with pytest.raises(ValueError, match="generates target sequences"):
        models.build(ml_collections.ConfigDict({"name": "seq2seq"}), adding)


@pytest.mark.slow
def test_a_short_training_run_learns_and_teacher_forced_exact_match_is_greedy_exact_match():
    task = numbers_task(max_digits=2)
    config = ml_collections.ConfigDict(
        {"name": "seq2seq", "attention": "luong_general", "hidden_size": 32, "embed_size": 16, "implementation": "scan"}
    )
    model = models.build(config, task)
    example = task.batch("train", 0, 64, 0)
    params = model.init(
        jax.random.key(0), example["inputs"], example["lengths"], decoder_inputs=example["decoder_inputs"]
    )["params"]
    tx = optax.adam(1e-2)

    @jax.jit
    def train_step(params, opt_state, batch):
        def loss(p):
            logits = model.apply(
                {"params": p}, batch["inputs"], batch["lengths"], decoder_inputs=batch["decoder_inputs"]
            )
            return task.loss_and_metrics(logits, batch)[0]

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, value

    opt_state, losses = tx.init(params), []
    for step in range(150):
        params, opt_state, value = train_step(params, opt_state, task.batch("train", step, 64, 0))
        losses.append(float(value))
    assert losses[-1] < 0.3 * losses[0], losses[::25]
    test = task.batch("test", 0, 64, 0)
    logits = model.apply({"params": params}, test["inputs"], test["lengths"], decoder_inputs=test["decoder_inputs"])
    forced_exact = float(task.loss_and_metrics(logits, test)[1]["exact_match"])
    greedy = translation.generate(model, params, test["inputs"], test["lengths"], max_len=task.target_len)
    greedy_exact = np.mean(np.array(task.detokenize(greedy)) == np.array(task.detokenize(test["targets"])))
    assert forced_exact > 0.2
    assert forced_exact == greedy_exact


def test_alignment_heatmaps_are_drawn_from_the_decoded_output(tmp_path):
    from tests.conftest import import_experiment

    translate = import_experiment("translate")

    task = numbers_task(max_digits=3)
    model = models.build(
        ml_collections.ConfigDict(
            {"name": "seq2seq", "attention": "bahdanau", "hidden_size": 8, "embed_size": 4, "implementation": "scan"}
        ),
        task,
    )
    example = task.batch("train", 0, 2, 0)
    shapes = jax.eval_shape(
        model.init, jax.random.key(0), example["inputs"], example["lengths"], decoder_inputs=example["decoder_inputs"]
    )["params"]
    rng = np.random.default_rng(0)  # some weights, without compiling an init
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.5, s.shape), s.dtype), shapes)
    inputs, lengths, _ = task.encode_texts(["417", "9"])
    outputs = np.asarray(translation.generate(model, params, inputs, lengths, max_len=task.target_len))
    alpha = np.asarray(translation.source_attention(model, params, inputs, lengths, outputs))
    # The weights are the ones the decoder used: its teacher-forced logits on its own output pick that output.
    decoder_inputs = translation.shift_right(outputs)
    logits = model.apply({"params": params}, inputs, lengths, decoder_inputs=jnp.asarray(decoder_inputs))
    for row, text in enumerate(["417", "9"]):
        steps = translate.emitted_steps(outputs[row])
        np.testing.assert_array_equal(np.asarray(logits[row, :steps]).argmax(-1), outputs[row, :steps])
        np.testing.assert_allclose(alpha[row, :steps].sum(-1), 1.0, rtol=1e-5)
        assert (alpha[row, :, len(text) :] == 0).all()  # padded source positions get no weight
        assert task.token_strings(inputs[row, : lengths[row]]) == list(text)
        assert steps == task.target_len or outputs[row, steps - 1] == EOS_ID
    translate.save_heatmap(
        list("417"), task.token_strings(outputs[0, :3], "target"), alpha[0, :3, :3], str(tmp_path / "a.png"), "title"
    )
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    no_attention = models.build(
        ml_collections.ConfigDict({"name": "seq2seq", "attention": "none", "hidden_size": 8, "embed_size": 4}), task
    )
    with pytest.raises(ValueError, match="has no attention over the source"):
        translation.source_attention(no_attention, params, inputs, lengths, outputs)


class Countdown(EncoderDecoder):
    """A made-up encoder-decoder for the generation interface: row b emits
    tokens inputs[b, 0], inputs[b, 0] - 1, ... and <eos> after token 4; its
    "attention" is uniform over the valid source."""

    target_vocab_size: int = 12

    @nn.nowrap
    def incremental_decoder(self, variables, max_len):
        def start(inputs, lengths=None):
            return {"next": jnp.asarray(inputs)[:, 0]}

        def tokens_to_logits(tokens, cache):
            logits = jax.nn.one_hot(cache["next"], self.target_vocab_size) * 10.0
            next_token = jnp.where(cache["next"] <= 4, EOS_ID, cache["next"] - 1)
            return logits, {"next": next_token}

        return start, tokens_to_logits

    @nn.nowrap
    def source_attention(self, variables, inputs, lengths, decoder_inputs):
        valid = (jnp.arange(inputs.shape[1])[None, :] < lengths[:, None]).astype(jnp.float32)
        alpha = valid / valid.sum(-1, keepdims=True)
        return jnp.broadcast_to(alpha[:, None, :], (inputs.shape[0], decoder_inputs.shape[1], inputs.shape[1]))


def test_generation_asks_the_model_for_its_decoder_and_attention_so_a_new_model_needs_no_task_change():
    inputs, lengths = jnp.array([[7, 1, 1], [5, 9, 0]]), jnp.array([3, 2])
    tokens = translation.generate(Countdown(), {}, inputs, lengths, max_len=6)
    np.testing.assert_array_equal(tokens, [[7, 6, 5, 4, EOS_ID, PAD_ID], [5, 4, EOS_ID, PAD_ID, PAD_ID, PAD_ID]])
    beam = translation.generate(Countdown(), {}, inputs, lengths, max_len=6, beam_size=2)
    np.testing.assert_array_equal(beam, tokens)
    alpha = translation.source_attention(Countdown(), {}, inputs, lengths, tokens)
    np.testing.assert_allclose(alpha[1], np.tile([0.5, 0.5, 0.0], (6, 1)))


def test_generation_refuses_a_model_that_is_not_an_encoder_decoder():
    lm = transformer.TransformerLM(transformer.TransformerConfig(vocab_size=8, d_model=8, num_heads=2), 8)
    expected = (
        "generation needs an encoder-decoder model (a seqjax.nn.encoder_decoder.EncoderDecoder), got TransformerLM"
    )
    with pytest.raises(TypeError, match=f"^{re.escape(expected)}$"):
        translation.generate(lm, {}, jnp.zeros((1, 3), jnp.int32), max_len=4)
    with pytest.raises(TypeError, match=f"^{re.escape(expected)}$"):
        translation.source_attention(lm, {}, jnp.zeros((1, 3), jnp.int32), None, np.zeros((1, 4), np.int32))


def test_a_captioning_decoder_has_no_source_attention():
    task = translation.CaptioningTask(ml_collections.ConfigDict({"name": "captioning"}))
    model = models.build(ml_collections.ConfigDict({"name": "vector_to_sequence", "hidden_size": 8}), task)
    expected = "VectorToSequence conditions on one feature vector and has no attention over source positions"
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        translation.source_attention(model, {}, np.zeros((1, 32), np.float32), None, np.zeros((1, 4), np.int32))


@pytest.mark.slow
def test_train_and_decode_entry_points(tmp_path):
    train = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.train",
            "--config=configs/seq2seq_synthetic.py:bahdanau,smoke",
            f"--workdir={tmp_path}",
            "--config.train.num_steps=10",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert train.returncode == 0, train.stderr[-2000:]
    final = json.loads(train.stdout.strip().splitlines()[-1])
    assert final["step"] == 10 and 0.0 <= final["test_exact_match"] <= 1.0 and np.isfinite(final["test_loss"])
    # config.task.decode_test: greedy decoding of the same test batches; on them teacher-forced exact
    # match is greedy exact match (see the short training run above).
    assert final["test_greedy_exact_match"] == final["test_exact_match"] and 0.0 <= final["test_bleu"] <= 100.0
    decode = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.decode",
            f"--run_dir={tmp_path}",
            "--beam_size=2",
            "--num_batches=1",
            "--batch_size=8",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert decode.returncode == 0, decode.stderr[-2000:]
    result = json.loads(decode.stdout.strip().splitlines()[-1])
    assert result["search"] == "beam2" and result["sentences"] == 8 and 0.0 <= result["bleu"] <= 100.0
    assert "BLEU = " in decode.stderr and "tok:13a" in result["bleu_signature"]
    assert json.loads((tmp_path / "decode_test_beam2.json").read_text())["step"] == 10
