"""Word vectors: evaluation on hand-computed toys, exact file round trips, bad files, pretrained tables,
and the embedding table frozen by the optimiser chain (config.model.freeze_embedding[_steps])."""

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from seqjax import embeddings as emb
from seqjax import optim
from seqjax.data.tokenizers import WordTokenizer
from seqjax.models import RecurrentModel
from seqjax.nn.recurrent import RecurrentStack


def _unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def _analogy_vectors():
    """man=e1, woman=e2, king=e3; regina lies exactly on woman - man + king, queen
    just off it; regina is the least frequent word (last)."""
    e = np.eye(5)
    target = _unit(e[1] - e[0] + e[2])
    words = ["man", "woman", "king", "queen", "prince", "apple", "regina"]
    vectors = [e[0], e[1], e[2], _unit(target + 0.1 * e[3]), e[3], e[4], target]
    return emb.WordVectors(words, np.stack(vectors))


ANALOGIES = """: royal
Man Woman King Queen
man woman man woman

: other
man woman king zebra
man woman apple regina
"""


def test_analogies_3cosadd_with_sections_restriction_and_oov(tmp_path):
    path = tmp_path / "questions.txt"
    path.write_text(ANALOGIES)
    vectors = _analogy_vectors()
    # Top 6 words: regina is no candidate, so queen answers question 1; question 2's
    # answer is one of its own words, which are excluded; 3 and 4 are OOV.
    top6 = emb.evaluate_analogies(vectors, str(path), restrict_vocab=6)
    assert [s.as_dict() for s in top6.sections] == [
        {"section": "royal", "correct": 1, "answered": 2, "oov": 0, "accuracy": 0.5},
        {
            "section": "other",
            "correct": 0,
            "answered": 0,
            "oov": 2,
            "accuracy": pytest.approx(float("nan"), nan_ok=True),
        },
    ]
    assert (top6.total.correct, top6.total.answered, top6.total.oov) == (1, 2, 2)
    # All 7 words: regina (cos 1) beats queen in question 1 and answers question 4.
    top7 = emb.evaluate_analogies(vectors, str(path), restrict_vocab=7)
    assert [(s.correct, s.answered, s.oov) for s in top7.sections] == [(0, 2, 0), (1, 1, 1)]
    assert top7.total.accuracy == pytest.approx(1 / 3)
    assert "total" in top7.table()


def test_analogy_file_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text(": s\na b c d\na b c\n")
    with pytest.raises(emb.VectorFileError, match="line 3: an analogy question has 4 words"):
        emb.evaluate_analogies(_analogy_vectors(), str(path))


def test_nearest_neighbours_by_cosine():
    vectors = emb.WordVectors(["a", "b", "c", "d"], np.array([[1, 0], [10, 1], [0, 3], [-1, 0]]))
    assert [w for w, _ in vectors.most_similar("a", 3)] == ["b", "c", "d"]
    ((word, score),) = vectors.most_similar("a", 1)
    assert score == pytest.approx(10 / np.sqrt(101))
    assert vectors.most_similar(np.array([0, 1.0]), 1)[0][0] == "c"
    assert [w for w, _ in vectors.most_similar("c", 2, restrict=2)] == ["b", "a"]
    assert vectors.similarity("a", "d") == pytest.approx(-1)
    with pytest.raises(KeyError, match="'z' is not in the vocabulary"):
        vectors.most_similar("z")


def test_similarity_spearman_hand_computed(tmp_path):
    angles = np.radians([0, 10, 30, 60, 90])
    vectors = emb.WordVectors(list("abcde"), np.stack([np.cos(angles), np.sin(angles)], 1))
    path = tmp_path / "pairs.tsv"
    path.write_text("word1\tword2\tscore\n# comment\na\tb\t9\na\tc\t7\nA\td\t8\na\te\t2\na\tzzz\t5\n")
    result = emb.evaluate_similarity(vectors, str(path))
    # cosine ranks ab > ac > ad > ae; human ranks ab > ad > ac > ae: sum d^2 = 2, n = 4.
    assert result.spearman == pytest.approx(1 - 6 * 2 / (4 * 15))
    cos = np.cos(np.radians([10, 30, 60, 90]))
    assert result.pearson == pytest.approx(np.corrcoef([9, 7, 8, 2], cos)[0, 1])
    assert (result.pairs, result.oov) == (4, 1)
    path.write_text("a\tb\t9\na\tc\tlots\n")
    with pytest.raises(emb.VectorFileError, match="line 2: score 'lots' is not a number"):
        emb.evaluate_similarity(vectors, str(path))


def _edge_vectors():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(5, 6)).astype(np.float32)
    vectors[0] = [0.0, -0.0, 1e-45, -3.4028235e38, 1.1754944e-38, np.float32(1) / 3]
    return emb.WordVectors(["the", "café", "日本", "don't", "</s>"], vectors, counts=np.arange(5))


@pytest.mark.parametrize("fmt", emb.FORMATS)
def test_save_load_round_trip_is_bit_exact(tmp_path, fmt):
    original = _edge_vectors()
    path = str(tmp_path / ("v.bin" if fmt == "word2vec_binary" else "v.txt"))
    original.save(path, fmt)
    assert emb.detect_format(path) == fmt
    loaded = emb.load_vectors(path)
    assert loaded.words == original.words
    np.testing.assert_array_equal(loaded.vectors.view(np.uint32), original.vectors.view(np.uint32))


def test_reads_word2vec_c_layouts(tmp_path):
    text = tmp_path / "c.txt"
    text.write_text("2 3\nfoo 1.000000 2.000000 3.000000 \nbar -1 0.5 0 \n")  # trailing spaces
    np.testing.assert_array_equal(emb.load_vectors(str(text))["bar"], [-1, 0.5, 0])
    binary = tmp_path / "c.bin"
    rows = np.arange(6, dtype="<f4").reshape(2, 3)
    binary.write_bytes(b"2 3\nfoo " + rows[0].tobytes() + b"bar " + rows[1].tobytes())  # no newlines
    loaded = emb.load_vectors(str(binary))
    assert loaded.words == ["foo", "bar"]
    np.testing.assert_array_equal(loaded.vectors, rows)


@pytest.mark.parametrize(
    "content,fmt,message",
    [
        ("2 3\na 1 2 3\nb 1 2\n", "word2vec", "line 3: expected a word and 3 values, got 2"),
        ("a 1 2\nb 1 x\n", "glove", "line 2: 'x' is not a number"),
        ("3 2\na 1 2\nb 3 4\n", "word2vec", "header announces 3 words but the file has 2"),
        ("two 3\na 1 2 3\n", "word2vec", "line 1: a word2vec file starts with the header"),
        ("a 1 2\na 3 4\n", "glove", "word 'a' appears twice"),
        ("", "glove", "empty"),
    ],
)
def test_malformed_text_files_name_the_problem(tmp_path, content, fmt, message):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(emb.VectorFileError, match=message):
        emb.load_vectors(str(path), fmt)


def test_truncated_binary_names_the_entry(tmp_path):
    path = tmp_path / "bad.bin"
    path.write_bytes(b"2 2\na " + np.ones(2, "<f4").tobytes() + b"\nb " + b"\x00" * 5)
    with pytest.raises(emb.VectorFileError, match=r"entry 2 \('b'\): the file ends after 5 of its 8"):
        emb.load_vectors(str(path))


def test_saving_a_word_with_whitespace_fails(tmp_path):
    vectors = emb.WordVectors(["new york"], np.ones((1, 2)))
    with pytest.raises(ValueError, match="'new york'.*whitespace"):
        vectors.save(str(tmp_path / "v.txt"))


def test_pca_projection_matches_eigendecomposition_and_plots(tmp_path):
    rng = np.random.default_rng(0)
    points = rng.normal(size=(12, 6)) * np.array([5, 3, 1, 0.5, 0.2, 0.1])
    coords = emb.pca_2d(points)
    centred = points - points.mean(0)
    values, vecs = np.linalg.eigh(centred.T @ centred)
    reference = centred @ vecs[:, ::-1][:, :2]
    np.testing.assert_allclose(np.abs(coords), np.abs(reference), atol=1e-9)
    np.testing.assert_allclose(np.var(coords, axis=0) * 12, values[::-1][:2], rtol=1e-9)
    vectors = emb.WordVectors([f"w{i}" for i in range(12)], points)
    out = tmp_path / "pca.png"
    plotted = emb.plot_words(vectors, [f"w{i}" for i in range(12)], str(out))
    np.testing.assert_allclose(plotted, emb.pca_2d(points.astype(np.float32)), atol=1e-5)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(KeyError, match="nope"):
        emb.plot_words(vectors, ["w0", "w1", "nope"], str(out))


def _model_params(vocab_size, dim=4):
    """Parameters shaped like a seqjax RecurrentModel's (filled from numpy: tracing
    only, no compilation), and the model."""
    model = RecurrentModel(
        stack=RecurrentStack(cell="rnn", hidden_size=3, parent=None),
        output_size=2,
        vocab_size=vocab_size,
        embed_size=dim,
    )
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((2, 5), jnp.int32))["params"]
    rng = np.random.default_rng(0)
    return model, jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)


def test_init_embedding_puts_vectors_at_the_tokenizer_ids():
    tokenizer = WordTokenizer(oov_token="<unk>", lower=False).fit_on_texts(
        ["the cat sat on the mat", "The dog ate a bone"]
    )
    vectors = {"the": np.full(4, 1.0), "cat": np.arange(4.0), "dog": -np.ones(4), "xylophone": np.ones(4)}
    _, params = _model_params(tokenizer.vocab_size)
    new, report = emb.init_embedding(params, tokenizer.word_index, vectors, seed=3)
    table = np.asarray(new["embed"]["embedding"])
    index = tokenizer.word_index
    np.testing.assert_array_equal(table[index["cat"]], np.arange(4.0))
    np.testing.assert_array_equal(table[index["The"]], np.full(4, 1.0))  # via lower case
    np.testing.assert_array_equal(table[0], 0)
    words = len(index)
    assert (report.words, report.found, report.lowercase_matches, report.oov) == (words, 4, 1, words - 4)
    assert "<unk>" in report.oov_words and report.path == "embed/embedding"
    again, _ = emb.init_embedding(params, index, vectors, seed=3)
    other, _ = emb.init_embedding(params, index, vectors, seed=4)
    sat = index["sat"]
    np.testing.assert_array_equal(again["embed"]["embedding"][sat], table[sat])  # fixed seed
    assert not np.allclose(other["embed"]["embedding"][sat], table[sat])
    # Same tree, shapes and dtypes; every other parameter untouched.
    assert jax.tree.structure(new) == jax.tree.structure(params)
    changed = jax.tree_util.tree_map_with_path(
        lambda path, a, b: (
            jax.tree_util.keystr(path),
            a.shape == b.shape and a.dtype == b.dtype,
            np.array_equal(a, b),
        ),
        new,
        params,
    )
    for path, same_shape, equal in jax.tree.leaves(changed, is_leaf=lambda x: isinstance(x, tuple)):
        assert same_shape and equal == (path != "['embed']['embedding']"), path


def test_init_embedding_counts_ids_beyond_the_table_and_checks_dims():
    tokenizer = WordTokenizer(num_words=4).fit_on_texts(["a a a b b c d e"])
    _, params = _model_params(tokenizer.vocab_size)  # 4 rows: padding, a, b, c
    new, report = emb.init_embedding(params, tokenizer.word_index, {"a": np.ones(4)})
    assert (report.rows, report.words, report.beyond_table, report.found, report.oov) == (4, 3, 2, 1, 2)
    with pytest.raises(ValueError, match=r"dim 5 but the embedding table embed/embedding is \[4, 4\]"):
        emb.init_embedding(params, tokenizer.word_index, {"a": np.ones(5)})


def test_find_embedding_paths():
    two = {"source_embedder": {"embedding": np.zeros((3, 2))}, "target_embedder": {"embedding": np.zeros((4, 2))}}
    with pytest.raises(ValueError, match="2 embedding tables"):
        emb.find_embedding(two)
    assert emb.find_embedding(two, "target_embedder") == ("target_embedder", "embedding")
    assert emb.find_embedding({"embedder": {"embedding": np.zeros((3, 2))}}) == ("embedder", "embedding")
    with pytest.raises(ValueError, match="no 2-D parameter named 'embedding'"):
        emb.find_embedding({"dense": {"kernel": np.zeros((2, 2))}})


def _run_updates(tx, steps, embed_grad=1.0, dense_grad=1.0):
    params = {"embed": {"embedding": jnp.ones((3, 2))}, "dense": {"kernel": jnp.ones((2, 2))}}
    grads = {"embed": {"embedding": jnp.full((3, 2), embed_grad)}, "dense": {"kernel": jnp.full((2, 2), dense_grad)}}
    state, history, update = tx.init(params), [], jax.jit(tx.update)
    for _ in range(steps):
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
        history.append(jax.tree.map(np.asarray, params))
    return history


def embedding_optimizer(**fields):
    """`optim.build_optimizer` for a run whose config.model carries the freeze keys in `fields`
    (the rest go to config.optimizer)."""
    model = {k: fields.pop(k) for k in ("freeze_embedding", "freeze_embedding_steps") if k in fields}
    optimizer = {"name": "adamw", "learning_rate": 0.1, "weight_decay": 0.1, **fields}
    config = ml_collections.ConfigDict({"optimizer": optimizer, "train": {}, "model": model})
    return optim.build_optimizer(config, num_updates=10)


def test_freeze_embedding_for_some_steps_then_train():
    history = _run_updates(embedding_optimizer(freeze_embedding_steps=2), 3)
    np.testing.assert_array_equal(history[1]["embed"]["embedding"], 1.0)  # frozen for updates 1 and 2
    assert np.all(history[2]["embed"]["embedding"] < 1.0)  # trains from update 3
    assert np.all(history[0]["dense"]["kernel"] < 1.0)
    forever = _run_updates(embedding_optimizer(freeze_embedding=True), 3)
    np.testing.assert_array_equal(forever[-1]["embed"]["embedding"], 1.0)
    assert np.all(forever[-1]["dense"]["kernel"] < forever[0]["dense"]["kernel"])


def test_a_frozen_embedding_keeps_zero_adam_moments():
    tx = embedding_optimizer(freeze_embedding_steps=2)
    params = {"embed": {"embedding": jnp.ones((3, 2))}, "dense": {"kernel": jnp.ones((2, 2))}}
    state = tx.init(params)
    for step in range(1, 4):
        _, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
        mu = optax.tree_utils.tree_get(state, "mu")
        assert np.any(mu["embed"]["embedding"]) == (step > 2) and np.all(mu["dense"]["kernel"] > 0)


def test_frozen_gradients_do_not_count_in_global_norm_clipping():
    clipped = dict(name="sgd", learning_rate=1.0, clip_global_norm=1.0)
    history = _run_updates(embedding_optimizer(freeze_embedding=True, **clipped), 1, embed_grad=100.0, dense_grad=0.1)
    np.testing.assert_allclose(history[0]["dense"]["kernel"], 0.9)  # norm 0.2 < 1: not clipped
    unfrozen = _run_updates(embedding_optimizer(**clipped), 1, embed_grad=100.0, dense_grad=0.1)
    assert np.all(unfrozen[0]["dense"]["kernel"] > 0.999)  # the table's gradient dominates the norm


def test_embedding_freeze_config_errors():
    with pytest.raises(ValueError, match=r"config.model.freeze_embedding_steps=5 \(frozen for a while\), not both"):
        embedding_optimizer(freeze_embedding=True, freeze_embedding_steps=5)
    tx = embedding_optimizer(freeze_embedding=True)
    message = "config.model.freeze_embedding: no parameter at embed/embedding; parameters: ['dense/kernel']"
    with pytest.raises(ValueError, match=re.escape(message)):
        tx.init({"dense": {"kernel": jnp.ones((2, 2))}})  # at init, before any step


def test_embedding_labels_for_multi_transform():
    params = {"embed": {"embedding": jnp.ones((3, 2))}, "dense": {"kernel": jnp.ones((2, 2))}}
    labels = emb.embedding_labels(params)
    assert labels == {"embed": {"embedding": "embedding"}, "dense": {"kernel": "other"}}
    tx = optax.multi_transform({"embedding": optax.set_to_zero(), "other": optax.sgd(1.0)}, labels)
    history = _run_updates(tx, 1)
    np.testing.assert_array_equal(history[0]["embed"]["embedding"], 1.0)
