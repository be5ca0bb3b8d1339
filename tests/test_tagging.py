"""The tagging task and the BiLSTM-CRF tagger on CoNLL column files: tag
schemes converted on reading with entity scores unchanged, the POS and chunk
columns, character ids, word dropout, the CRF loss, and bad configs."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax import config as config_lib
from seqjax import models, tasks, training
from seqjax.data.builders.conll import read_conll
from seqjax.data.tokenizers import CharTokenizer
from seqjax.nn import crf
from seqjax.tasks import entities, tag_schemes
from seqjax.tasks.tagging import WordFeatures
from tests.helpers import REPO, load_config

CHUNK_TYPES = ("ADJP", "ADVP", "CONJP", "INTJ", "LST", "NP", "PP", "PRT", "SBAR", "VP")

DEV = os.path.join(REPO, "configs", "samples", "ner_dev.conll")


def ready_task(data_dir, variant="smoke", **data):
    config = load_config("conll_tagger", variant)
    config.data.source.data_dir = str(data_dir)
    config.data.update(**data)
    task = tasks.get(config.task, config.data)
    task.setup(None)
    return config, task


def eval_batches(task):
    iterator = task.eval_loader("eval", 8).iterator()
    try:
        return list(iterator)
    finally:
        iterator.close()


def test_tags_are_trained_in_iobes_and_entity_scores_do_not_change(data_dir):
    _, task = ready_task(data_dir)
    assert (task.source_scheme, task.tag_scheme) == ("IOB2", "IOBES")
    assert task.tag_names == tag_schemes.tag_names({"PER", "LOC", "ORG"}, "IOBES")
    gold_file = [tags for _, tags, _, _ in read_conll(DEV, 0, -1, None)]
    batches = eval_batches(task)
    targets = [
        [task.tag_names[t] for t in batch["targets"][row, :length]]
        for batch in batches
        for row, length in enumerate(batch["lengths"])
        if batch["weights"][row] > 0
    ]
    assert targets == [tag_schemes.convert(tags, "IOBES") for tags in gold_file]
    # Noisy predictions: the task's entity scores (in IOBES) equal conlleval's
    # reading of the same predictions written back in the files' IOB2.
    rng = np.random.default_rng(0)
    collected = []
    for batch in batches:
        noisy = np.where(rng.random(batch["targets"].shape) < 0.2, rng.integers(0, 13, batch["targets"].shape), 0)
        predicted = np.where(noisy > 0, noisy, batch["targets"])
        collected.append(dict(batch, predicted=predicted))
    ours = task.corpus_metrics(collected)
    predicted_file = [
        tag_schemes.convert([task.tag_names[t] for t in part["predicted"][row, :length]], "IOB2")
        for part in collected
        for row, length in enumerate(part["lengths"])
        if part["weights"][row] > 0
    ]
    reference = entities.entity_scores(gold_file, predicted_file)
    assert 0.2 < ours["f1"] < 0.99 and ours["f1"] == pytest.approx(reference["f1"], abs=1e-12)


def test_the_pos_and_chunk_variants_read_their_columns(data_dir):
    _, pos = ready_task(data_dir, "smoke,pos")
    assert pos.tag_names == [".", "NNP", "TO", "VBD"] and pos.tag_scheme is None
    assert pos.corpus_metrics(eval_batches(pos)) == {}
    _, chunk = ready_task(data_dir, "smoke,chunk")
    assert (chunk.source_scheme, chunk.tag_scheme) == ("IOB2", "IOBES")
    assert chunk.tag_names == tag_schemes.tag_names(CHUNK_TYPES, "IOBES")  # declared: more than the sample has
    with pytest.raises(ValueError, match=r"^config.data.tag_scheme='auto' and convert_tags_to='IOBES' are for chunk"):
        ready_task(data_dir, "smoke,pos", convert_tags_to="IOBES")


@pytest.mark.slow
def test_a_pos_tagger_trains_and_reports_token_accuracy_only(tmp_path, data_dir):
    config = load_config("conll_tagger", "smoke,pos")
    config.data.source.data_dir = str(data_dir)
    final = training.train_and_evaluate(config, str(tmp_path))
    assert final["test_token_accuracy"] > 0.5 and "test_f1" not in final
    assert final["best_step"] in (10, 20)


def write_conll(path, sentences):
    path.write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in s) for s in sentences) + "\n")
    return str(path)


def test_a_declared_scheme_the_training_file_breaks_is_refused(tmp_path, data_dir):
    iob1 = [[("Ada", "I-PER"), ("met", "O"), ("Alan", "I-PER"), ("Turing", "I-PER")], [("Oslo", "I-LOC")]]
    paths = dict(
        train=write_conll(tmp_path / "train.conll", iob1), validation=write_conll(tmp_path / "dev.conll", iob1)
    )
    config = load_config("conll_tagger", "smoke")
    config.data.source.data_dir = str(data_dir)
    config.data.source.paths = paths
    task = tasks.get(config.task, config.data)
    task.setup(None)
    assert (task.source_scheme, task.tag_scheme) == ("IOB1", "IOBES")
    config.data.tag_scheme = "IOB2"
    message = (
        r"^config.data.tag_scheme='IOB2', but training sentence 1 is not IOB2: chunk 1 \(PER, tokens 1-1\) is tagged "
        r"\['I-PER'\]. Set the scheme the files use, or 'auto' \(detected: IOB1\)$"
    )
    with pytest.raises(ValueError, match=message):
        tasks.get(config.task, config.data).setup(None)
    config.data.tag_scheme = "BIO"
    with pytest.raises(ValueError, match=r"^config.data.tag_scheme must be one of IOB1, IOB2, IOBES, got 'BIO'$"):
        tasks.get(config.task, config.data).setup(None)


def test_character_ids_keep_a_long_words_prefix_and_suffix(data_dir):
    chars = CharTokenizer().fit(["abcdefghijklmnopqrstuvwxyz"])
    features = WordFeatures(words=None, chars=chars, max_word_len=6)
    assert chars.decode(features.char_ids("internationalisation")) == "intion"
    assert chars.decode(features.char_ids("ration")) == "ration"
    assert WordFeatures(None, chars, 5).char_ids("abcdefg") == chars.encode("abcfg")
    _, task = ready_task(data_dir)
    batch = task.encode_raw(["Ada visited Lima .", ["Zyx"]])
    assert batch["chars"].shape == (2, 4, 12) and list(batch["lengths"]) == [4, 1]
    assert task.char_tokenizer.decode(batch["chars"][0, 1]) == "visited"
    assert task.char_tokenizer.decode(batch["chars"][1, 0]) == "<unk><unk>x"  # letters the training words lack
    assert np.all(batch["chars"][1, 1:] == 0)


def tagger_and_batch(data_dir, **model):
    config, task = ready_task(data_dir)
    config.model.update(**model)
    tagger = models.build(config.model, task)
    batch = eval_batches(task)[0]
    variables = tagger.init(jax.random.key(0), batch["inputs"], batch["lengths"], chars=batch["chars"])
    return task, tagger, variables, batch


def test_word_dropout_swaps_tokens_for_unk_only_while_training(data_dir):
    task, tagger, variables, batch = tagger_and_batch(data_dir, word_dropout=0.5)
    inputs = np.tile(batch["inputs"], (8, 1))
    table = np.asarray(variables["params"]["embed"]["embedding"])

    def embedded(deterministic, seed=0):
        _, state = tagger.apply(
            variables,
            inputs,
            chars=np.tile(batch["chars"], (8, 1, 1)),
            deterministic=deterministic,
            rngs={"dropout": jax.random.key(seed)},
            capture_intermediates=lambda module, _: module.name == "embed",
        )
        return np.asarray(state["intermediates"]["embed"]["__call__"][0])

    unk = task.tokenizer.unk_id
    assert np.array_equal(embedded(True), table[inputs])
    vectors = embedded(False)
    swapped = np.all(vectors == table[unk], axis=-1) & (inputs != unk)
    kept = np.all(vectors == table[inputs], axis=-1)
    assert np.all(swapped | kept) and not np.any(swapped[inputs == 0])
    assert 0.4 < swapped[inputs > 0].mean() < 0.6


def test_the_crf_taggers_loss_is_the_sentence_nll_per_token_and_it_predicts_viterbi_paths(data_dir):
    task, tagger, variables, batch = tagger_and_batch(data_dir)
    assert set(variables["params"]["crf"]) == {"transitions", "start", "end"}
    variables = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(1), p.shape), variables)
    scores = tagger.apply(variables, batch["inputs"], batch["lengths"], chars=batch["chars"])
    assert isinstance(scores, crf.Scores)
    loss, metrics = task.loss_and_metrics(scores, batch)
    allowed = tag_schemes.allowed_transitions(task.tag_names, "IOBES")
    params = variables["params"]["crf"]
    moves, start, end = (jnp.where(a, p, crf.FORBIDDEN) for a, p in zip(allowed, (params["transitions"],
                         params["start"], params["end"])))  # fmt: skip
    weights, lengths = batch["weights"], batch["lengths"]
    nll = crf.negative_log_likelihood(scores.emissions, batch["targets"], jnp.maximum(lengths, 1), moves, start, end)
    expected = float((nll * weights).sum() / (lengths * weights).sum())
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    paths, _ = crf.viterbi(scores.emissions, lengths, moves, start, end)
    assert np.array_equal(task.collect(scores, batch)["predicted"], paths)
    described = task.describe(jax.device_get(scores), batch)
    for row, length in enumerate(lengths):
        tags = [task.tag_names[t] for t in np.asarray(paths)[row, :length]]
        assert described[row]["tags"] == tag_schemes.convert(tags, "IOB2")


def test_bad_tagger_configs_are_refused(data_dir):
    config, task = ready_task(data_dir, max_word_len=0)
    with pytest.raises(ValueError, match=r"^config.model.char_encoder='lstm' reads character ids: set config.data"):
        models.build(config.model, task)
    config.model.char_encoder = "rnn"
    with pytest.raises(config_lib.ConfigError, match=r"config.model.char_encoder"):
        config_lib.validate(config)
    adding = load_config("default", "smoke")
    adding.model = config.model
    adding_task = tasks.get(adding.task)
    with pytest.raises(ValueError, match=r"^config.model.name='tagger' tags tokens; task AddingTask is not a tagging"):
        models.build(config.model, adding_task)


# ---------------------------------------------------------------- input tags (part-of-speech as an input)


def test_input_tags_are_the_files_pos_column_through_a_vocabulary_of_the_training_values(tmp_path, data_dir):
    _, task = ready_task(data_dir, "smoke,chunk,pos_input")
    vocabulary = task.input_tag_tokenizers["pos"]
    assert task.input_tag_keys == ("pos",) and task.input_tag_sizes == (vocabulary.vocab_size,)
    train_file = os.path.join(REPO, "configs", "samples", "ner_train.conll")
    seen = {p for _, _, _, columns in read_conll(train_file, 0, 2, None, [("pos", 1)]) for p in columns["pos"]}
    assert set(vocabulary.word_index) == seen | {"<unk>"}
    expected = sorted(
        tuple(p if p in seen else "<unk>" for p in columns["pos"])
        for _, _, _, columns in read_conll(DEV, 0, 2, None, [("pos", 1)])
    )
    got = []
    for batch in eval_batches(task):
        assert batch["input_tags"].shape == batch["inputs"].shape + (1,)
        for row in np.flatnonzero(batch["weights"] > 0):
            ids = batch["input_tags"][row, :, 0]
            length = batch["lengths"][row]
            assert np.all(ids[length:] == 0) and np.all(ids[:length] > 0)  # 0 pads, real tokens never
            got.append(tuple(vocabulary.index_word[int(i)] for i in ids[:length]))
    assert sorted(got) == expected
    # A run keeps the vocabulary, and a resumed run reads it back instead of refitting.
    task.save_assets(str(tmp_path))
    saved = tmp_path / "input_tags_pos.json"
    assert saved.exists()
    _, again = ready_task(data_dir, "smoke,chunk,pos_input")
    again.setup(str(tmp_path))
    assert again.input_tag_tokenizers["pos"].word_index == vocabulary.word_index


def test_an_input_tag_the_data_lacks_is_refused(data_dir):
    lacking = (
        r"^config.data.input_tag_keys: 'pos' is not a per-token feature of the data besides the tokens and the tags "
        r"it predicts \(it has \[\]\); for CoNLL column files name the column in config.data.source.input_columns"
    )
    with pytest.raises(ValueError, match=lacking):
        ready_task(data_dir, "smoke,chunk", input_tag_keys=("pos",))
    with pytest.raises(ValueError, match=r"^config.data.input_tag_keys: 'tags' is not a per-token feature"):
        ready_task(data_dir, "smoke,chunk,pos_input", input_tag_keys=("tags",))
    with pytest.raises(ValueError, match=r"^variants 'pos' and 'pos_input' conflict"):
        load_config("conll_tagger", "smoke,pos,pos_input")


def test_the_tagger_concatenates_an_embedding_of_each_input_tag_to_the_words(data_dir):
    # Against a plain-JAX reference: the same stack and output layer applied to
    # [word vector ; POS vector] looked up by hand.
    config, task = ready_task(data_dir, "smoke,chunk,pos_input,softmax", max_word_len=0)
    config.model.update(char_encoder="none", dropout_rate=0.0, word_dropout=0.0)
    tagger = models.build(config.model, task)
    batch = eval_batches(task)[0]
    variables = tagger.init(jax.random.key(0), batch["inputs"], batch["lengths"], input_tags=batch["input_tags"])
    params = variables["params"]
    assert params["input_tag_0"]["embedding"].shape == (task.input_tag_sizes[0], 25)
    logits = tagger.apply(variables, batch["inputs"], batch["lengths"], input_tags=batch["input_tags"])
    features = jnp.concatenate(
        [
            params["embed"]["embedding"][batch["inputs"]],
            params["input_tag_0"]["embedding"][batch["input_tags"][..., 0]],
        ],
        axis=-1,
    )
    outputs, _ = tagger.stack.apply({"params": params["stack"]}, features, batch["lengths"])
    expected = outputs @ params["output"]["kernel"] + params["output"]["bias"]
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(
        ValueError, match=r"^this tagger reads 1 input tag\(s\) per token: the batch needs 'input_tags'"
    ):
        tagger.apply(variables, batch["inputs"], batch["lengths"])
    with pytest.raises(ValueError, match=r"^input_tags\[\.\.\., 0\] holds token id 99 at position"):
        tagger.apply(variables, batch["inputs"], batch["lengths"], input_tags=np.full_like(batch["input_tags"], 99))


def test_raw_sentences_with_input_tags_are_dicts(data_dir):
    _, task = ready_task(data_dir, "smoke,chunk,pos_input")
    vocabulary = task.input_tag_tokenizers["pos"]
    batch = task.encode_raw(
        [
            {"tokens": ["Grace", "visited", "Zurich"], "pos": ["NNP", "VBD", "XYZ"]},
            {"tokens": "Hi .", "pos": ["NNP", "."]},
        ]
    )
    assert batch["input_tags"][:, :, 0].tolist() == [
        [vocabulary.word_index["NNP"], vocabulary.word_index["VBD"], vocabulary.unk_id],
        [vocabulary.word_index["NNP"], vocabulary.word_index["."], 0],
    ]
    with pytest.raises(ValueError, match=r"^input 0 \('Grace visited'\): this tagger also reads \['pos'\] per token: "
                       r"give each sentence as a dict like"):  # fmt: skip
        task.encode_raw(["Grace visited"])
    with pytest.raises(ValueError, match=r"^input 0: input tag 'pos': need one value per token \(2\), got 1 values$"):
        task.encode_raw([{"tokens": ["Grace", "visited"], "pos": ["NNP"]}])


@pytest.mark.slow
def test_the_default_tagger_starts_from_word2vec_vectors_of_its_own_training_words(tmp_path, data_dir):
    from seqjax import embeddings, runs

    config = load_config("conll_tagger", "smoke,pos_input")  # with a second table (the POS tags') beside the words'
    assert config.model.pretrained_embeddings == "word2vec"  # the default, as in the full config
    config.data.source.data_dir = str(data_dir)
    config.model.freeze_embedding = True  # so the trained table still holds the initial rows
    training.train_and_evaluate(config, str(tmp_path / "run"))
    vectors = embeddings.load_vectors(str(tmp_path / "run" / training.WORD2VEC_VECTORS))
    run = runs.load_run(str(tmp_path / "run"))
    index = run.trainer.task.tokenizer.word_index
    words = sorted({w for sentence in run.trainer.task.training_words() for w in sentence})
    assert sorted(vectors.words) == words == sorted(set(index) - {"<unk>"})  # min_count 1: every training word
    table = np.asarray(run.params["embed"]["embedding"])
    for word in words:
        np.testing.assert_array_equal(table[index[word]], vectors[word])
    np.testing.assert_array_equal(table[0], 0.0)


def test_a_bad_word2vec_setting_is_refused_before_anything_compiles(data_dir):
    config = load_config("conll_tagger", "smoke")
    config.data.source.data_dir = str(data_dir)
    config.model.word2vec.window_size = 3
    with pytest.raises(ValueError, match=r"^unknown config key config\.model\.word2vec\.window_size; known keys:"):
        training.Trainer(config)
    random_init = load_config("conll_tagger", "smoke,random_init")
    assert random_init.model.pretrained_embeddings == "" and "word2vec" not in random_init.model
