"""Tokenizers: Keras Tokenizer equality, hand-pinned semantics, round-trips, files and errors."""

import gzip
import importlib
import io
import json
import random

import numpy as np
import pytest
import sentencepiece as spm

from seqjax.data import tokenizers
from seqjax.data.tokenizers import CharTokenizer, NotFittedError, SubwordTokenizer, WordTokenizer, load, load_or_fit


@pytest.fixture(scope="module")
def KerasTokenizer():
    """Keras' Tokenizer, the reference: keras 3 keeps it under legacy/, tf_keras and keras 2 publicly.

    keras comes with tensorflow-cpu, a seqjax dependency, so this is found wherever seqjax installs.
    """
    for module in ("keras.src.legacy.preprocessing.text", "tf_keras.preprocessing.text", "keras.preprocessing.text"):
        try:
            return importlib.import_module(module).Tokenizer
        except (ImportError, AttributeError):
            continue
    pytest.skip("no Keras Tokenizer importable (keras 3, tf_keras or keras 2)")


SEED_DOCS = ["India", "Hi subbu", "How is Rohit"]
WORDS = ["the", "The", "cat", "sat", "on", "mat", "dog", "Dog!", "ran,", "a", "(big)", "end.", "x-ray", "naïve"]


def random_corpus(rng: random.Random, n: int) -> list[str]:
    seps = [" ", "  ", "\t", "\n", ", ", ": "]
    return ["".join(rng.choice(WORDS) + rng.choice(seps) for _ in range(rng.randint(0, 9))) for _ in range(n)]


# --- WordTokenizer: equality with Keras -------------------------------------------------------

KERAS_CONFIGS = [
    {},
    {"oov_token": "<OOV>"},
    {"num_words": 5},
    {"num_words": 4, "oov_token": "<unk>"},
    {"lower": False, "oov_token": "?"},
    {"char_level": True},
    {"char_level": True, "num_words": 8, "oov_token": "~"},
    {"filters": "", "split": ","},
    {"filters": "!.,", "lower": False, "split": " "},
]


@pytest.mark.parametrize("config", KERAS_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_word_tokenizer_equals_keras(KerasTokenizer, config):
    rng = random.Random(len(str(config)))
    fit_a, fit_b, unseen = random_corpus(rng, 30), random_corpus(rng, 10), random_corpus(rng, 10)
    unseen.append("zebra Quokka the")
    ours, theirs = WordTokenizer(**config), KerasTokenizer(**config)
    for texts in (fit_a, fit_b):  # a second fit adds to the counts
        ours.fit_on_texts(texts)
        theirs.fit_on_texts(texts)
        assert ours.word_index == theirs.word_index
        assert list(ours.word_counts.items()) == list(theirs.word_counts.items())
        assert ours.word_docs == dict(theirs.word_docs)
        assert ours.index_docs == dict(theirs.index_docs)
        assert ours.index_word == theirs.index_word
        assert ours.document_count == theirs.document_count
    for texts in (fit_a, unseen):
        assert ours.texts_to_sequences(texts) == theirs.texts_to_sequences(texts)
    ids = [[rng.randrange(len(ours.word_index) + 1) for _ in range(rng.randint(0, 8))] for _ in range(20)]
    assert ours.sequences_to_texts(ids) == theirs.sequences_to_texts(ids)


def test_word_tokenizer_pretokenized_lists_equal_keras(KerasTokenizer):
    sentences = [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"], ["the", "EU", "call", "."]]
    ours, theirs = WordTokenizer(oov_token="<UNK>"), KerasTokenizer(oov_token="<UNK>")
    ours.fit_on_texts(sentences)
    theirs.fit_on_texts(sentences)
    assert ours.word_index == theirs.word_index
    probe = [["German", "Peter", "unknown", "."]]
    assert ours.texts_to_sequences(probe) == theirs.texts_to_sequences(probe)
    # Tagging needs one id per input token, unknown ones included.
    assert len(ours.encode(probe[0])) == len(probe[0])


def test_word_tokenizer_reads_a_keras_json_file(KerasTokenizer):
    theirs = KerasTokenizer(num_words=6, oov_token="<OOV>")
    theirs.fit_on_texts(random_corpus(random.Random(3), 25))
    ours = WordTokenizer.from_keras_json(theirs.to_json())
    assert ours.word_index == theirs.word_index and ours.num_words == 6
    probe = random_corpus(random.Random(4), 5)
    assert ours.texts_to_sequences(probe) == theirs.texts_to_sequences(probe)


# --- WordTokenizer: semantics pinned by hand --------------------------------------------------


def test_word_tokenizer_seed_example():
    tok = WordTokenizer(oov_token="<nothing>").fit_on_texts(SEED_DOCS)
    assert tok.word_index == {"<nothing>": 1, "india": 2, "hi": 3, "subbu": 4, "how": 5, "is": 6, "rohit": 7}
    assert tok.word_counts == {"india": 1, "hi": 1, "subbu": 1, "how": 1, "is": 1, "rohit": 1}
    assert tok.document_count == 3
    assert tok.texts_to_sequences(SEED_DOCS) == [[2], [3, 4], [5, 6, 7]]
    assert tok.texts_to_sequences(["hi Ravi"]) == [[3, 1]]
    assert tok.vocab_size == 8 and tok.pad_id == 0 and tok.unk_id == 1


def test_word_index_ranks_by_count_then_first_appearance():
    tok = WordTokenizer().fit_on_texts(["b a", "a c b", "c d", "a"])
    # a:3; b, c: 2 each (b seen first); d: 1.
    assert tok.word_index == {"a": 1, "b": 2, "c": 3, "d": 4}
    assert tok.word_docs == {"b": 2, "a": 3, "c": 2, "d": 1}
    assert tok.index_docs == {2: 2, 1: 3, 3: 2, 4: 1}


def test_filters_lowercase_and_split():
    tok = WordTokenizer().fit_on_texts(["Hello, WORLD!\tsay\n(hello)"])
    assert list(tok.word_counts.items()) == [("hello", 2), ("world", 1), ("say", 1)]
    kept = WordTokenizer(lower=False, filters="", split="|").fit_on_texts(["A b|A b||c,"])
    assert kept.word_index == {"A b": 1, "c,": 2}
    assert tokenizers.text_to_word_sequence("Don't STOP-me.") == ["don't", "stop", "me"]


def test_num_words_keeps_only_smaller_ids():
    texts = ["a a a b b c"]
    with_oov = WordTokenizer(num_words=3, oov_token="<OOV>").fit_on_texts(texts)  # ids: oov 1, a 2, b 3, c 4
    assert with_oov.texts_to_sequences(["a b c zz"]) == [[2, 1, 1, 1]]
    assert with_oov.vocab_size == 3
    without = WordTokenizer(num_words=3).fit_on_texts(texts)  # a 1, b 2, c 3
    assert without.texts_to_sequences(["a b c zz"]) == [[1, 2]]
    # Keras-exact decoding maps ids >= num_words to the oov token; decode refuses them.
    assert with_oov.sequences_to_texts([[2, 3, 4, 0]]) == ["a <OOV> <OOV> <OOV>"]
    with pytest.raises(ValueError, match=r"id 3 at position 1 is outside the vocabulary \[0, 3\)"):
        with_oov.decode([2, 3])


def test_char_level_word_tokenizer():
    tok = WordTokenizer(char_level=True).fit_on_texts(["abba", "Cab!"])
    assert tok.word_index == {"a": 1, "b": 2, "c": 3, "!": 4}
    assert tok.texts_to_sequences(["bac?"]) == [[2, 1, 3]]
    assert tok.decode([2, 1, 3]) == "bac"  # characters join without spaces
    assert tok.sequences_to_texts([[2, 1, 3]]) == ["b a c"]  # as Keras


def test_oov_token_in_text_keeps_id_one():
    tok = WordTokenizer(oov_token="unk", filters="").fit_on_texts(["unk unk x", "y"])
    assert tok.word_index == {"unk": 1, "x": 2, "y": 3}  # Keras would give 'unk' id 2 and leave 1 empty
    assert tok.word_counts["unk"] == 2
    assert tok.index_word[1] == "unk"


def test_sos_eos_ids_follow_oov_and_frame_encodings():
    tok = WordTokenizer(oov_token="<unk>", sos_token="<sos>", eos_token="<eos>").fit_on_texts(["go now", "go"])
    assert tok.word_index == {"<unk>": 1, "<sos>": 2, "<eos>": 3, "go": 4, "now": 5}
    assert (tok.pad_id, tok.unk_id, tok.sos_id, tok.eos_id) == (0, 1, 2, 3)
    ids = tok.encode("Go home now", add_sos=True, add_eos=True)
    assert ids == [2, 4, 1, 5, 3]
    assert tok.decode(ids + [0, 0]) == "go <unk> now"  # control ids dropped, unknown rendered
    only_frame = WordTokenizer(sos_token="<s>", eos_token="</s>").fit_on_texts(["a"])
    assert (only_frame.unk_id, only_frame.sos_id, only_frame.eos_id) == (None, 1, 2)
    with pytest.raises(ValueError, match="has no sos token"):
        WordTokenizer().fit_on_texts(["a"]).encode("a", add_sos=True)


def test_word_tokenizer_argument_errors():
    with pytest.raises(ValueError, match="num_words must be None or an int >= 2"):
        WordTokenizer(num_words=1, oov_token="<OOV>")
    with pytest.raises(ValueError, match="must differ"):
        WordTokenizer(oov_token="<x>", sos_token="<x>")
    with pytest.raises(ValueError, match="split"):
        WordTokenizer(split="")


# --- CharTokenizer ----------------------------------------------------------------------------

SHAKESPEARE = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"


def test_char_vocab_is_specials_then_sorted_characters():
    tok = CharTokenizer().fit([SHAKESPEARE])
    assert tok.vocab[:4] == ["<pad>", "<unk>", "<sos>", "<eos>"]
    assert tok.vocab[4:] == sorted(set(SHAKESPEARE))
    assert tok.vocab_size == 4 + len(set(SHAKESPEARE))
    assert tok.encode("\n ")[:2] == [4, 5]  # '\n' < ' ' < everything else here
    assert tok.decode(tok.encode(SHAKESPEARE)) == SHAKESPEARE


def test_char_unknowns_specials_and_lower():
    tok = CharTokenizer().fit(["abc", "cd"])
    assert tok.encode("abz", add_sos=True, add_eos=True) == [2, 4, 5, 1, 3]
    assert tok.decode([2, 4, 5, 1, 3, 0, 0]) == "ab<unk>"
    lower = CharTokenizer(lower=True).fit(["ABc"])
    assert lower.vocab[4:] == ["a", "b", "c"] and lower.encode("CAB") == [6, 4, 5]


# --- SubwordTokenizer -------------------------------------------------------------------------


def subword_corpus(n=300, seed=0) -> list[str]:
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "té", "vo", "zü", "ing", "ed", "er"]
    words = "the quick brown fox jumps over lazy dog naïve café über straße".split() + [
        "".join(random.Random(k).choices(syllables, k=1 + k % 3)) for k in range(60)
    ]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(n)]


@pytest.mark.parametrize("model_type, vocab_size", [("bpe", 150), ("unigram", 90)])
def test_subword_round_trip_from_texts_and_files(tmp_path, model_type, vocab_size):
    corpus = subword_corpus()
    tok = SubwordTokenizer.train(corpus, vocab_size=vocab_size, model_type=model_type, input_sentence_size=500)
    assert tok.vocab_size == vocab_size and tok.model_type == model_type
    assert [tok.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<sos>", "<eos>"]
    for line in corpus + ["quick brown café"]:
        ids = tok.encode(line)
        assert all(4 <= i < vocab_size for i in ids)
        assert tok.decode(ids) == line
    # Subwords, not characters: the encoding is shorter than the text.
    assert sum(map(len, tok.encode_batch(corpus))) < 0.7 * sum(map(len, corpus))
    framed = tok.encode("the fox", add_sos=True, add_eos=True)
    assert framed[0] == 2 and framed[-1] == 3 and tok.decode(framed + [0]) == "the fox"
    assert tok.encode("the ☃ fox").count(tok.unk_id) == 1 and "<unk>" in tok.decode(tok.encode("☃"))
    # The same sentences from a .gz file train the same model (training is seeded).
    path = tmp_path / "corpus.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(corpus) + "\n")
    from_file = SubwordTokenizer.train(
        files=[str(path)], vocab_size=vocab_size, model_type=model_type, input_sentence_size=500
    )
    assert from_file.model_proto == tok.model_proto


def test_subword_identity_normalization_keeps_whitespace():
    corpus = ["a  b\tc", " lead and trail ", "tab\there"] * 20
    tok = SubwordTokenizer.train(
        corpus, vocab_size=30, model_type="bpe", normalization="identity", remove_extra_whitespaces=False
    )
    for line in corpus[:3]:
        assert tok.decode(tok.encode(line)) == line
    default = SubwordTokenizer.train(corpus, vocab_size=30, model_type="bpe")
    assert default.decode(default.encode("a  b")) == "a b"  # nmt_nfkc collapses whitespace


def test_subword_training_errors(tmp_path):
    with pytest.raises(ValueError, match="sentencepiece training failed.*[Vv]ocabulary size"):
        SubwordTokenizer.train(["abc def"] * 5, vocab_size=200, model_type="unigram")
    with pytest.raises(TypeError, match="text 1: expected str, got int"):
        SubwordTokenizer.train(["fine", 3], vocab_size=20)
    with pytest.raises(ValueError, match="no non-empty text"):
        SubwordTokenizer.train(["", " "], vocab_size=20)
    with pytest.raises(TypeError, match="got a single str; wrap it in a list"):
        SubwordTokenizer.train("one long text", vocab_size=20)
    with pytest.raises(ValueError, match="exactly one of"):
        SubwordTokenizer.train(vocab_size=20)
    with pytest.raises(ValueError, match="model_type"):
        SubwordTokenizer.train(["a"], vocab_size=20, model_type="wordpiece")
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        SubwordTokenizer.train(files=[str(missing)], vocab_size=20)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("good line\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=f"{latin1}, line 2: not UTF-8"):
        SubwordTokenizer.train(files=[str(latin1)], vocab_size=20)


def test_subword_refuses_a_model_with_other_special_ids():
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(subword_corpus(50)), model_writer=model, vocab_size=40, model_type="bpe", minloglevel=2
    )  # unk=0, bos=1, eos=2
    with pytest.raises(ValueError, match="pad id -1"):
        SubwordTokenizer(model.getvalue())
    with pytest.raises(ValueError, match="not a sentencepiece model"):
        SubwordTokenizer(b"not a model")


# --- shared interface: errors -----------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted():
    corpus = subword_corpus(100)
    return {
        "word": WordTokenizer(oov_token="<OOV>").fit_on_texts(corpus),
        "char": CharTokenizer().fit(corpus),
        "subword": SubwordTokenizer.train(corpus, vocab_size=50, model_type="bpe"),
    }


@pytest.mark.parametrize("kind", ["word", "char", "subword"])
def test_decode_rejects_ids_outside_the_vocabulary(fitted, kind):
    tok = fitted[kind]
    n = tok.vocab_size
    with pytest.raises(ValueError, match=rf"id {n} at position 1 is outside the vocabulary \[0, {n}\)"):
        tok.decode([4, n])
    with pytest.raises(ValueError, match="id -1 at position 0"):
        tok.decode([-1])
    with pytest.raises(TypeError, match="ids must be integers"):
        tok.decode([1.0, 2.0])
    with pytest.raises(ValueError, match="1-D"):
        tok.decode([[4, 5]])
    assert tok.decode([]) == ""
    assert tok.decode_batch(np.array([[4, 0], [5, 0]])) == [tok.decode([4]), tok.decode([5])]


@pytest.mark.parametrize("kind", ["word", "char", "subword"])
def test_encode_rejects_non_strings(fitted, kind):
    tok = fitted[kind]
    with pytest.raises(TypeError, match="got bytes; decode it first"):
        tok.encode(b"the fox")
    with pytest.raises(TypeError, match="expected str, got int"):
        tok.encode(7)
    with pytest.raises(TypeError, match="got a single str; wrap it in a list"):
        tok.encode_batch("the fox")


def test_use_before_fit_is_a_clear_error(tmp_path):
    for tok, action in [
        (WordTokenizer(), lambda t: t.encode("a")),
        (CharTokenizer(), lambda t: t.decode([1])),
        (WordTokenizer(), lambda t: t.texts_to_sequences(["a"])),
    ]:
        with pytest.raises(NotFittedError, match="before it is fitted"):
            action(tok)
    with pytest.raises(NotFittedError):
        CharTokenizer().save(str(tmp_path / "never.json"))
    assert not (tmp_path / "never.json").exists()
    with pytest.raises(ValueError, match="no texts"):
        WordTokenizer().fit_on_texts([])
    tok = WordTokenizer().fit_on_texts(["a b"])
    with pytest.raises(TypeError, match="text 1: expected str, got NoneType"):
        tok.fit_on_texts(["a c", None])
    assert tok.word_counts == {"a": 1, "b": 1} and tok.document_count == 1  # unchanged by the failed fit


# --- saving and loading -----------------------------------------------------------------------


def test_word_tokenizer_save_load_round_trip(tmp_path):
    tok = WordTokenizer(
        num_words=9, oov_token="<OOV>", sos_token="<s>", eos_token="</s>", filters="!?", lower=False
    ).fit_on_texts(random_corpus(random.Random(5), 40))
    path = tok.save(str(tmp_path / "run" / "tokenizer.json"))
    back = load(path)
    assert isinstance(back, WordTokenizer)
    for attribute in (
        "num_words",
        "filters",
        "lower",
        "split",
        "char_level",
        "oov_token",
        "sos_token",
        "eos_token",
        "document_count",
        "word_index",
        "index_word",
        "word_docs",
        "vocab_size",
    ):
        assert getattr(back, attribute) == getattr(tok, attribute), attribute
    assert list(back.word_counts.items()) == list(tok.word_counts.items())
    probe = random_corpus(random.Random(6), 10)
    assert back.texts_to_sequences(probe) == tok.texts_to_sequences(probe)


def test_char_and_subword_save_load_round_trip(tmp_path, fitted):
    for kind in ("char", "subword"):
        tok = fitted[kind]
        back = load(tok.save(str(tmp_path / f"{kind}.json")))
        assert type(back) is type(tok) and back.vocab_size == tok.vocab_size
        text = subword_corpus(5, seed=9)[0]
        assert back.encode(text) == tok.encode(text)
        assert back.decode(tok.encode(text)) == text
    assert load(str(tmp_path / "char.json")).vocab == fitted["char"].vocab
    assert load(str(tmp_path / "subword.json")).model_proto == fitted["subword"].model_proto
    assert (tmp_path / "subword.model").read_bytes() == fitted["subword"].model_proto  # usable by spm tools


def test_load_errors_name_the_file(tmp_path, fitted):
    missing = tmp_path / "missing.json"
    with pytest.raises(FileNotFoundError, match=f"no tokenizer file at {missing}"):
        load(str(missing))
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"kind": "word", ')
    with pytest.raises(ValueError, match=f"tokenizer file {bad_json} is corrupt"):
        load(str(bad_json))
    weird = tmp_path / "weird.json"
    weird.write_text(json.dumps({"kind": "bytes", "format_version": 1}))
    with pytest.raises(ValueError, match="unknown kind 'bytes'"):
        load(str(weird))
    with pytest.raises(ValueError, match="must end in .json"):
        fitted["char"].save(str(tmp_path / "tokenizer"))


def test_load_detects_tampered_or_truncated_files(tmp_path, fitted):
    path = fitted["word"].save(str(tmp_path / "word.json"))
    state = json.loads(open(path).read())
    state["word_index"]["the"] += 1
    open(path, "w").write(json.dumps(state))
    with pytest.raises(ValueError, match="disagrees with the word counts"):
        load(path)
    del state["word_counts"]
    open(path, "w").write(json.dumps(state))
    with pytest.raises(ValueError, match="missing field 'word_counts'"):
        load(path)
    state = json.loads(open(fitted["char"].save(str(tmp_path / "char.json"))).read())
    state["format_version"] = 99
    open(tmp_path / "char.json", "w").write(json.dumps(state))
    with pytest.raises(ValueError, match="format_version 99"):
        load(str(tmp_path / "char.json"))
    sub = fitted["subword"].save(str(tmp_path / "sub.json"))
    model = tmp_path / "sub.model"
    model.write_bytes(model.read_bytes()[:-10])
    with pytest.raises(ValueError, match=f"{model} does not match the sha256"):
        load(sub)
    model.unlink()
    with pytest.raises(FileNotFoundError, match=f"needs its sentencepiece model at {model}"):
        load(sub)


def test_load_or_fit_fits_once_then_reuses_the_saved_file(tmp_path):
    path = str(tmp_path / "tokenizer.json")
    calls = []

    def fit():
        calls.append(1)
        return CharTokenizer().fit(["hello"])

    first = load_or_fit(path, fit)
    second = load_or_fit(path, fit)
    assert len(calls) == 1 and second.vocab == first.vocab


def test_texts_to_words_are_the_words_fit_on_texts_counts_and_encodes():
    texts = ["The cat, the HAT!", "a cat"]
    tokenizer = WordTokenizer(oov_token="<unk>").fit_on_texts(texts)
    words = tokenizer.texts_to_words(texts)
    assert words == [["the", "cat", "the", "hat"], ["a", "cat"]]
    assert [[tokenizer.word_index[w] for w in sentence] for sentence in words] == tokenizer.texts_to_sequences(texts)
    tagged = WordTokenizer(lower=True, filters="").fit_on_texts([["U.S.", "Shares", ","]])
    assert tagged.texts_to_words([["U.S.", "Shares", ","]]) == [["u.s.", "shares", ","]]  # tokens as given, lower-cased
