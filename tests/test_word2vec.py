"""word2vec: loss and updates vs numpy, subsampling, noise, windows, Huffman codes, planted structure."""

import gzip
import itertools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from seqjax import parallel
from seqjax import word2vec as w2v


def _np_logistic(h, u, labels, weights):
    """Loss and gradients of word2vec's output layer, written out by hand."""
    scores = np.einsum("bd,bmd->bm", h, u)
    sign = np.where(labels > 0, -1.0, 1.0)
    loss = np.sum(weights * np.logaddexp(0.0, sign * scores))
    d_scores = weights * (1.0 / (1.0 + np.exp(-scores)) - labels)  # d loss / d score
    return loss, np.einsum("bm,bmd->bd", d_scores, u), d_scores[..., None] * h[:, None, :]


def test_logistic_loss_and_gradients_match_numpy():
    rng = np.random.default_rng(0)
    h, u = rng.normal(size=(6, 5)), rng.normal(size=(6, 4, 5))
    labels = np.zeros((6, 4))
    labels[:, 0] = 1
    weights = (rng.random((6, 4)) < 0.8).astype(float)
    loss, (g_h, g_u) = jax.value_and_grad(w2v.logistic_loss, (0, 1))(
        *(jnp.asarray(x, jnp.float32) for x in (h, u, labels, weights))
    )
    ref_loss, ref_h, ref_u = _np_logistic(h, u, labels, weights)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(g_h, ref_h, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g_u, ref_u, rtol=1e-4, atol=1e-6)


def _toy_step(architecture):
    """One sgd_step and the same step in numpy (np.add.at sums duplicate rows)."""
    rng = np.random.default_rng(1)
    vocab, dim, batch = 7, 4, 5
    settings = w2v.Settings(architecture=architecture, dim=dim, negative=3, window=2, batch_size=batch)
    params = {
        "embed": rng.normal(size=(vocab, dim)).astype(np.float32),
        "output": rng.normal(size=(vocab, dim)).astype(np.float32),
    }
    cdf = np.cumsum(w2v.noise_distribution(np.arange(1, vocab + 1))).astype(np.float32)
    data = {"center": np.array([0, 1, 1, 3, 6], np.int32), "weight": np.array([1, 1, 1, 1, 0], np.float32)}
    if architecture == "cbow":
        data["context"] = rng.integers(0, vocab, (batch, 4)).astype(np.int32)
        data["mask"] = np.array([[1, 1, 0, 0], [1, 0, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1], [1, 0, 0, 0]], np.float32)
    else:
        data["context"] = np.array([2, 2, 0, 1, 5], np.int32)
    key, lr = jax.random.key(3), 0.1
    new, loss = jax.jit(w2v.sgd_step, static_argnums=5)(params, data, lr, key, {"cdf": cdf}, settings)
    predicted = data["center"] if architecture == "cbow" else data["context"]
    targets, labels, weights = (
        np.asarray(x) for x in w2v.output_targets(key, jnp.asarray(predicted), {"cdf": cdf}, settings)
    )
    weights = weights * data["weight"][:, None]
    embed, output = params["embed"].astype(np.float64), params["output"].astype(np.float64)
    if architecture == "cbow":
        m = data["mask"]
        h = np.einsum("bcd,bc->bd", embed[data["context"]], m) / np.maximum(m.sum(1, keepdims=True), 1)
    else:
        h = embed[data["center"]]
    ref_loss, g_h, g_u = _np_logistic(h, output[targets], labels, weights)
    np.add.at(output, targets, -lr * g_u)
    if architecture == "cbow":
        np.add.at(embed, data["context"], -lr * g_h[:, None, :] * data["mask"][..., None])
    else:
        np.add.at(embed, data["center"], -lr * g_h)
    return new, loss, {"embed": embed, "output": output}, ref_loss, targets, labels, weights


@pytest.mark.parametrize("architecture", ["skipgram", "cbow"])
def test_sgd_step_matches_numpy_batched_update(architecture):
    new, loss, ref, ref_loss, targets, labels, weights = _toy_step(architecture)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    for name in ("embed", "output"):
        np.testing.assert_allclose(new[name], ref[name], rtol=1e-5, atol=1e-6)
    assert (labels[:, 0] == 1).all() and (labels[:, 1:] == 0).all()
    # A negative equal to the true word is skipped; padding rows weigh nothing.
    assert np.all(weights[:, 1:][targets[:, 1:] == targets[:, :1]] == 0)
    assert np.all(weights[-1] == 0)


def test_keep_probabilities_hand_computed():
    counts = np.array([900, 90, 10])  # frequencies 0.9, 0.09, 0.01
    code = w2v.keep_probabilities(counts, 0.01, "code")
    np.testing.assert_allclose(code, [(np.sqrt(90) + 1) / 90, 4 / 9, 1.0])
    paper = w2v.keep_probabilities(counts, 0.01, "paper")
    np.testing.assert_allclose(paper, [np.sqrt(1 / 90), 1 / 3, 1.0])
    np.testing.assert_array_equal(w2v.keep_probabilities(counts, 0.0), [1, 1, 1])
    with pytest.raises(ValueError, match="subsample formula"):
        w2v.keep_probabilities(counts, 0.01, "mikolov")


def test_subsampling_keeps_words_at_their_probability():
    keep = np.array([0.1, 0.5, 1.0])
    ids = np.repeat(np.arange(3), 20000)
    kept = w2v.subsample(ids, keep, np.random.default_rng(0))
    rates = np.array([kept[ids == i].mean() for i in range(3)])
    np.testing.assert_allclose(rates, keep, atol=0.012)


def test_noise_distribution_and_sampler():
    counts = np.array([16, 1, 81, 0])
    noise = w2v.noise_distribution(counts, 0.75)
    np.testing.assert_allclose(noise, np.array([8, 1, 27, 0]) / 36)
    np.testing.assert_allclose(w2v.noise_distribution(counts, 0.0), [0.25] * 4)
    cdf = jnp.asarray(np.cumsum(noise), jnp.float32)
    draws = np.asarray(w2v.sample_negatives(jax.random.key(0), cdf, (200, 1000))).ravel()
    frequency = np.bincount(draws, minlength=4) / draws.size
    sigma = np.sqrt(noise * (1 - noise) / draws.size)
    assert np.all(np.abs(frequency - noise) <= 5 * sigma + 1e-9), (frequency, noise)
    assert frequency[3] == 0  # a word of probability 0 is never drawn


def _reference_pairs(ids, sentence, reach):
    pairs = []
    for i in range(len(ids)):
        for j in range(max(0, i - reach[i]), min(len(ids), i + reach[i] + 1)):
            if j != i and sentence[j] == sentence[i]:
                pairs.append((ids[i], ids[j]))
    return sorted(pairs)


def test_skipgram_pairs_follow_each_words_dynamic_window():
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 50, 300).astype(np.int32)
    sentence = np.repeat(np.arange(30), rng.multinomial(300, [1 / 30] * 30))[:300].astype(np.int32)
    examples = w2v.skipgram_examples(ids, sentence, 4, np.random.default_rng(9))
    reach = np.random.default_rng(9).integers(1, 5, size=300)  # the draw skipgram_examples makes first
    assert sorted(zip(examples["center"].tolist(), examples["context"].tolist())) == _reference_pairs(
        ids.tolist(), sentence.tolist(), reach.tolist()
    )


def test_dynamic_window_weights_distance_d_by_window_minus_d_plus_one():
    ids = np.arange(100000, dtype=np.int32)  # one long sentence, word id = position
    examples = w2v.skipgram_examples(ids, np.zeros_like(ids), 5, np.random.default_rng(0))
    distance = np.abs(examples["center"] - examples["context"])
    share = np.bincount(distance, minlength=6)[1:] / np.sum(distance == 1)
    np.testing.assert_allclose(share, [1, 0.8, 0.6, 0.4, 0.2], atol=0.015)


def test_cbow_contexts_match_skipgram_windows():
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 20, 60).astype(np.int32)
    sentence = np.repeat(np.arange(6), 10).astype(np.int32)
    sentence[:3] = -1  # a 3-word sentence
    examples = w2v.cbow_examples(ids, sentence, 3, np.random.default_rng(4))
    reach = np.random.default_rng(4).integers(1, 4, size=60)
    got = sorted(
        (c, x)
        for c, row, m in zip(examples["center"], examples["context"], examples["mask"])
        for x, used in zip(row, m)
        if used
    )
    assert got == _reference_pairs(ids.tolist(), sentence.tolist(), reach.tolist())
    assert examples["context"].shape == (len(examples["center"]), 6)
    assert examples["mask"].any(axis=1).all()  # no example without context


def test_huffman_codes_are_optimal_prefix_codes():
    counts = np.array([40, 20, 15, 10, 8, 4, 2, 1])
    points, codes, lengths = w2v.huffman_codes(counts)
    words = ["".join(map(str, codes[i, : lengths[i]])) for i in range(len(counts))]
    assert not any(a != b and b.startswith(a) for a, b in itertools.permutations(words, 2))  # prefix-free
    assert sum(2.0**-lengths) == 1.0  # a full binary tree
    # Huffman cost = the sum of all merged weights, computed independently.
    heap, cost = sorted(counts.tolist()), 0
    while len(heap) > 1:
        a, b = heap.pop(0), heap.pop(0)
        cost += a + b
        heap = sorted(heap + [a + b])
    assert int(np.sum(counts * lengths)) == cost
    assert np.all(np.diff(lengths) >= 0)  # rarer words, longer codes
    assert np.all(points[:, 0] == len(counts) - 2)  # every path starts at the root
    assert points.max() <= len(counts) - 2
    tables = {"points": points, "codes": codes, "lengths": lengths}
    settings = w2v.Settings(objective="hierarchical_softmax")
    targets, labels, weights = (np.asarray(x) for x in w2v.output_targets(None, jnp.array([7, 0]), tables, settings))
    np.testing.assert_array_equal(weights.sum(1), lengths[[7, 0]])  # padding of shorter paths masked
    np.testing.assert_array_equal(targets[0], points[7])
    np.testing.assert_array_equal(labels[0, : lengths[7]], 1 - codes[7, : lengths[7]])  # word2vec.c's label


def test_vocab_min_count_order_and_max_size():
    corpus = [["b", "a", "c"], ["a", "b", "d"], ["a", "e"]]
    vocab = w2v.Vocab.build(corpus, min_count=2)
    assert vocab.words == ("a", "b") and vocab.counts.tolist() == [3, 2] and vocab.total == 5
    assert w2v.Vocab.build(corpus, min_count=1).words == ("a", "b", "c", "d", "e")  # ties: first seen
    assert w2v.Vocab.build(corpus, min_count=1, max_size=3).words == ("a", "b", "c")
    np.testing.assert_array_equal(vocab.encode(["a", "zzz", "b"]), [0, 1])
    with pytest.raises(ValueError, match="min_count=9"):
        w2v.Vocab.build(corpus, min_count=9)


def test_learning_rate_decays_linearly_to_the_floor():
    vocab = w2v.Vocab.from_counts({"a": 3, "b": 2}, min_count=1)
    model = w2v.Word2Vec(vocab, w2v.Settings(dim=4, batch_size=8), parallel.make_mesh(jax.devices()[:1]))
    np.testing.assert_allclose(
        model.learning_rate(np.array([0.0, 0.5, 1.0, 3.0])), [0.025, 0.025 - 0.5 * (0.025 - 1e-4), 1e-4, 1e-4]
    )
    assert w2v.Settings(architecture="cbow").initial_learning_rate == 0.05


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="architecture"):
        w2v.Settings(architecture="glove")
    with pytest.raises(ValueError, match="window"):
        w2v.Settings(window=0)
    vocab = w2v.Vocab.from_counts({"a": 3, "b": 2}, min_count=1)
    with pytest.raises(ValueError, match="divisible"):
        w2v.Word2Vec(vocab, w2v.Settings(batch_size=12), parallel.make_mesh())  # 8 devices


def _planted_corpus(pairs=8, sentences=3000, seed=0):
    """Synonym pairs (x_i, y_i): both appear only between the context words of pair i,
    so each has the other as its only word with the same contexts."""
    rng = np.random.default_rng(seed)
    corpus = []
    for _ in range(sentences):
        i = rng.integers(pairs)
        word = f"{'xy'[rng.integers(2)]}{i}"
        left, right = rng.choice([f"c{i}k{k}" for k in range(3)], 2)
        corpus.append([left, word, right])
    return corpus


def _check_planted_pairs(model):
    vectors = model.vectors()
    for i in range(8):
        assert vectors.most_similar(f"x{i}", 1)[0][0] == f"y{i}"
        assert vectors.most_similar(f"y{i}", 1)[0][0] == f"x{i}"


PLANTED = dict(dim=16, window=2, sample=0, min_count=1, epochs=3, batch_size=256, steps_per_call=4, chunk_words=4000)


@pytest.mark.parametrize(
    "architecture,objective", [("cbow", "negative_sampling"), ("skipgram", "hierarchical_softmax")]
)
def test_planted_synonyms_are_nearest_neighbours(architecture, objective):
    corpus = _planted_corpus()
    settings = w2v.Settings(architecture=architecture, objective=objective, **PLANTED)
    model, stats = w2v.train(corpus, settings, mesh=parallel.make_mesh(jax.devices()[:1]))
    assert stats.words == 3 * 9000 and stats.seconds > 0 and stats.examples > 0
    _check_planted_pairs(model)


def test_divergence_stops_training_with_advice():
    corpus = _planted_corpus()
    settings = w2v.Settings(architecture="cbow", learning_rate=1e4, **PLANTED)  # same program as above
    with pytest.raises(FloatingPointError, match="lower batch_size"):
        w2v.train(corpus, settings, mesh=parallel.make_mesh(jax.devices()[:1]))


def test_eight_devices_train_the_same_vectors_as_one_and_recover_planted_pairs():
    corpus = _planted_corpus()
    vocab = w2v.Vocab.build(corpus, min_count=1)
    models = []
    for devices in (jax.devices()[:1], jax.devices()[:8]):
        models.append(w2v.Word2Vec(vocab, w2v.Settings(**PLANTED), parallel.make_mesh(devices)))
        models[-1].train(corpus)
    assert models[1].mesh.devices.size == 8
    for name in ("embed", "output"):
        np.testing.assert_allclose(models[0].params[name], models[1].params[name], rtol=1e-4, atol=1e-5)
    _check_planted_pairs(models[1])


def test_corpora_from_files_and_sources(tmp_path):
    plain, packed = tmp_path / "a.txt", tmp_path / "b.txt.gz"
    plain.write_text("The cat sat.\n\nOn the mat!\n", encoding="utf-8")
    with gzip.open(packed, "wt", encoding="utf-8") as f:
        f.write("A dog\n")
    assert list(w2v.text_file_corpus([str(plain), str(packed)])) == [
        ["the", "cat", "sat"],
        ["on", "the", "mat"],
        ["a", "dog"],
    ]
    source = [{"text": b"One two\nthree"}, {"text": "Four"}]
    assert list(w2v.source_corpus(source)) == [["one", "two"], ["three"], ["four"]]
    with pytest.raises(KeyError, match="no feature 'sentence'"):
        list(w2v.source_corpus(source, feature="sentence"))
    data = ml_collections.ConfigDict({"files": f"{plain}, {packed}", "lower": False})
    assert list(w2v.corpus_from_config(data))[0] == ["The", "cat", "sat"]
    with pytest.raises(ValueError, match="config.data.path"):
        w2v.corpus_from_config(ml_collections.ConfigDict({"path": "x"}))


def test_token_sequences_are_sentences_of_exactly_those_words(tmp_path):
    """A tagged corpus's tokens are its words: never split at punctuation nor filtered."""
    source = [{"tokens": [b"U.S.", b"shares", b","]}, {"tokens": np.array(["Rose", "5.2"])}, {"tokens": []}]
    assert list(w2v.source_corpus(source, feature="tokens")) == [["u.s.", "shares", ","], ["rose", "5.2"]]
    assert list(w2v.source_corpus(source, feature="tokens", lower=False))[1] == ["Rose", "5.2"]
    # configs/word2vec.py:conll reads local/conll's tokens; here on the bundled sample file.
    from configs import word2vec as config_file

    config = config_file.get_config("conll")
    config.data.source.paths.train = os.path.join(config_file.HERE, "samples", "ner_train.conll")
    config.data.source.data_dir = str(tmp_path)
    sentences = list(w2v.corpus_from_config(config.data))
    with open(config.data.source.paths.train, encoding="utf-8") as f:
        blocks = [b.splitlines() for b in f.read().split("\n\n") if b.strip()]
    expected = [
        [line.split()[0].lower() for line in block] for block in blocks if not block[0].startswith("-DOCSTART-")
    ]
    assert sentences == expected


def test_experiment_smoke_run_writes_vectors_and_report(tmp_path):
    from configs import word2vec as config_file
    from tests.conftest import import_experiment

    experiment = import_experiment("word2vec")
    from seqjax import embeddings

    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(" ".join(s) for s in _planted_corpus(sentences=300)), encoding="utf-8")
    analogies = tmp_path / "questions.txt"
    analogies.write_text(": pairs\nx0 y0 x1 y1\nx0 y0 x1 unknownword\n", encoding="utf-8")
    config = config_file.get_config("smoke")
    config.data.files = str(text)
    # The 8-device program of the test above: compiled once per process.
    for key, value in PLANTED.items():
        (config.train if key in w2v.TRAIN_KEYS else config.model)[key] = value
    config.train.epochs = 1
    config.eval.probe_words = "x0,nothere"
    config.eval.analogy_file = str(analogies)
    config.eval.plot_words = "x0,y0,x1,y1"
    config.eval.formats = "word2vec,word2vec_binary,glove"
    metrics = experiment.run(config, str(tmp_path / "run"))
    run = tmp_path / "run"
    assert metrics["words"] == 900 and metrics["analogy_answered"] == 1 and metrics["analogy_oov"] == 1
    assert json.loads((run / "metrics.json").read_text())["vocab_size"] == metrics["vocab_size"]
    report = (run / "neighbours.txt").read_text()
    assert report.startswith("x0: ") and "nothere: (not in the vocabulary)" in report
    text_vectors = embeddings.load_vectors(str(run / "vectors.txt"))
    for name in ("vectors.bin", "vectors.glove.txt"):
        other = embeddings.load_vectors(str(run / name))
        np.testing.assert_array_equal(other.vectors, text_vectors.vectors)
    assert (run / "pca.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "vocab.txt").read_text().splitlines()[0].split(" ")[1].isdigit()


def test_initial_vectors_follow_word2vec_c():
    params = w2v.init_params(50, w2v.Settings(dim=20, init_range=0.5))
    assert np.abs(params["embed"]).max() <= 0.5 / 20 and np.abs(params["embed"]).max() > 0.45 / 20
    assert not params["output"].any() and params["output"].shape == (50, 20)
    hs = w2v.init_params(50, w2v.Settings(dim=20, objective="hierarchical_softmax", init_range=1.0))
    assert hs["output"].shape == (49, 20) and np.abs(hs["embed"]).max() > 0.9 / 20  # V - 1 inner nodes


# --- vectors for a training run (config.model.pretrained_embeddings='word2vec') ----------------


def test_a_runs_word2vec_settings_are_its_section_with_the_embedding_size_and_the_runs_seed():
    model = ml_collections.ConfigDict(dict(embed_size=24, word2vec=dict(min_count=2, epochs=7, architecture="cbow")))
    settings = w2v.settings_for_run(model, seed=3)
    assert settings == w2v.Settings(dim=24, seed=3, min_count=2, epochs=7, architecture="cbow")
    assert w2v.settings_for_run(ml_collections.ConfigDict(dict(embed_size=8)), seed=0) == w2v.Settings(dim=8)
    model.word2vec.dim = 50
    with pytest.raises(
        ValueError, match=r"^unknown config key config\.model\.word2vec\.dim; known keys: architecture, "
    ):
        w2v.settings_for_run(model, seed=3)


def test_a_runs_vectors_are_trained_once_kept_exactly_and_read_back_by_a_later_start(tmp_path, monkeypatch):
    corpus = _planted_corpus(sentences=600)
    settings = w2v.Settings(**dict(PLANTED, epochs=1))
    path = str(tmp_path / "word2vec" / "vectors.bin")
    first = w2v.vectors_for_run(lambda: corpus, settings, path)
    alone, _ = w2v.train(corpus, settings, mesh=parallel.make_mesh(jax.devices()[:1]))
    assert first.words == list(alone.vocab.words)
    np.testing.assert_array_equal(first.vectors, np.asarray(alone.params["embed"]))  # float32, no rounding
    assert os.listdir(tmp_path / "word2vec") == ["vectors.bin"]  # no partial file left

    def no_training(*args, **kwargs):
        raise AssertionError("a start that finds the run's vectors must not train again")

    monkeypatch.setattr(w2v, "train", no_training)
    again = w2v.vectors_for_run(lambda: pytest.fail("the corpus is not read either"), settings, path)
    assert again.words == first.words
    np.testing.assert_array_equal(again.vectors, first.vectors)
