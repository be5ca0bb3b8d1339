r"""word2vec (Mikolov et al. 2013): skip-gram or CBOW with negative sampling on English captions.

Corpus: the English side of Multi30k train (29,000 Flickr captions, 377k
tokens; 335k in-vocabulary tokens and 3,267 words with min_count=5).
Settings are word2vec.c's defaults except `sample` (1e-3, gensim's default)
and the 5 epochs.

Command (each run writes vectors.txt, vectors.bin, vocab.txt, neighbours.txt,
analogies.json, pca.png and metrics.json into the workdir):

  python -m experiments.word2vec --config=configs/word2vec.py:skipgram --workdir=runs/w2v_sg
  python -m experiments.word2vec --config=configs/word2vec.py:cbow --workdir=runs/w2v_cbow

Variants: skipgram (the default), cbow, hs (hierarchical softmax instead of
negative sampling; combine: `cbow,hs`), shakespeare (tinyshakespeare instead
of Multi30k), conll (the tokens of CoNLL-2003's eng.train, one word per token
as configs/conll_tagger.py reads them, to study the vectors on their own;
the tagger's default trains the same kind for itself, see
`config.model.pretrained_embeddings='word2vec'`), smoke (tiny sizes on the bundled
configs/samples/corpus.txt, for tests). Data files are under $SEQJAX_DATA
(default ~/seqjax_data). Any field can be overridden, e.g. `--config.data.files=/data/text8 --config.model.dim=300`.

The analogy file is the small Multi30k questions-words file the benchmark
writes (`python -m experiments.benchmark_word2vec --write_analogies=PATH`;
add `--config.eval.analogy_file=PATH`): no standard analogy set is available
offline, and the Google set's capital/currency questions do not occur in
captions. Its sections are gender (man : woman), noun plurals (dog : dogs),
verb -s -> -ing (plays : playing) and base -> -ing (play : playing): 1,892
questions, none OOV at min_count 5.

Results on the shared 2-core CPU (XLA CPU, 1 device, seed 0, 5 epochs,
batch 512 x 128 steps per call, load average 1.4-6.6 from other jobs;
command as above plus --config.eval.analogy_file=/tmp/multi30k_analogies.txt
--config.train.progress=False). The same seed gives the same vectors on a rerun.

  variant   train   compile  words/s   wall (incl. start-up)  analogy acc  final loss
  skipgram  8.8 s   2.4 s    190k      16 s                    0.418        2.463
  cbow      4.3 s   2.6 s    394k      12 s                    0.448        2.461

  per section (skipgram / cbow): gender 0.506 / 0.654, noun-plural 0.282 / 0.245,
  verb-s-ing 0.674 / 0.748, verb-base-ing 0.407 / 0.479.

  skipgram neighbours (cosine):
    man: guy 0.81, person 0.78, gentleman 0.75, tie 0.74, mustache 0.73, beard 0.73
    woman: lady 0.89, mustache 0.76, girl 0.75, robe 0.75, gentleman 0.75, floral 0.74
    dog: bird 0.79, stick 0.77, collar 0.77, dogs 0.76, puppy 0.75, shepherd 0.74
    red: blue 0.91, green 0.87, purple 0.86, yellow 0.85, khaki 0.84, gray 0.83
    playing: play 0.84, plays 0.81, club 0.62, singing 0.61, hugging 0.61, song 0.60
    guitar: drums 0.92, acoustic 0.92, electric 0.90, violin 0.90, keyboard 0.90, piano 0.90
  cbow neighbours:
    man: guy 0.80, person 0.78, lady 0.70, jeans 0.68, suit 0.67, gentleman 0.67
    woman: lady 0.86, suit 0.72, girl 0.70, scarf 0.70, sunglasses 0.68, purse 0.67
    dog: collar 0.74, bird 0.72, puppy 0.72, dogs 0.70, cow 0.66, bull 0.65
    red: blue 0.93, yellow 0.92, purple 0.89, green 0.88, pink 0.83, white 0.82
    playing: plays 0.84, play 0.81, performing 0.62, singing 0.57, dancing 0.55, acoustic 0.55
    guitar: drums 0.88, keyboard 0.86, piano 0.85, violin 0.83, flute 0.81, accordion 0.81

  Hierarchical softmax (variants `hs`, `cbow,hs`): skip-gram 9.5 s, 177k words/s,
  analogy 0.451; CBOW 5.3 s, 317k words/s, analogy 0.443.

  With init_range=1.0 (gensim 4's initialisation) the analogy accuracy rises
  to 0.430 (skip-gram) and 0.456 (CBOW), the mean of 3 seeds, equal to
  gensim's 0.432 and 0.456 on the same file (experiments/benchmark_word2vec.py).
"""

import os

import ml_collections

from seqjax import paths

VARIANTS = ("skipgram", "cbow", "hs", "shakespeare", "conll", "smoke")
HERE = os.path.dirname(os.path.abspath(__file__))
MULTI30K_EN = paths.data_path("multi30k", "train.en.gz")  # under $SEQJAX_DATA, else ~/seqjax_data
SHAKESPEARE = paths.data_path("tinyshakespeare", "input.txt")
CONLL_TRAIN = paths.data_path("conll2003", "eng.train")
SAMPLE = os.path.join(HERE, "samples", "corpus.txt")  # the bundled sample, for smoke runs


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # seeds the initial vectors, subsampling, windows, shuffling and negatives

    config.data = ml_collections.ConfigDict()
    config.data.files = MULTI30K_EN  # text files (comma-separated; .gz ok), one sentence per line; '' = use source
    # or a dataset: load_source keywords, e.g. {'name': 'local/text', 'paths': 'x.txt', 'unit': 'line'}
    config.data.source = ml_collections.ConfigDict({"name": ""})
    config.data.split = "train"  # split of the source
    config.data.feature = "text"  # feature holding the text ('en' for local/parallel)
    config.data.lower = True  # lower-case (tokens are Keras text_to_word_sequence words)

    config.model = ml_collections.ConfigDict()
    config.model.architecture = "skipgram"  # skipgram | cbow
    config.model.dim = 100  # vector size
    config.model.window = 5  # maximum context distance; each word draws its reach from [1, window]
    config.model.objective = "negative_sampling"  # negative_sampling | hierarchical_softmax
    config.model.negative = 5  # negatives per positive example
    config.model.ns_exponent = 0.75  # noise distribution: unigram counts ** ns_exponent
    config.model.sample = 1e-3  # subsampling threshold t (0 turns subsampling off)
    config.model.subsample_formula = "code"  # code: keep (sqrt(f/t)+1) t/f (word2vec.c); paper: sqrt(t/f)
    config.model.min_count = 5  # words seen fewer times are dropped
    config.model.max_vocab = 0  # keep only the most frequent words (0 = no limit)
    config.model.init_range = 0.5  # input vectors uniform in +-init_range/dim (word2vec.c 0.5; gensim 4 uses 1.0)

    config.train = ml_collections.ConfigDict()
    config.train.epochs = 5  # passes over the corpus
    config.train.learning_rate = 0.0  # initial SGD rate (0: 0.025 skip-gram, 0.05 CBOW)
    config.train.min_learning_rate = 1e-4  # reached linearly at the end of the last epoch
    config.train.batch_size = 512  # examples per SGD step, split over all devices (large batches diverge)
    config.train.steps_per_call = 128  # SGD steps per device call (lax.scan)
    config.train.chunk_words = 200_000  # corpus words turned into examples at a time
    config.train.max_sentence_length = 10_000  # longer sentences are cut
    config.train.cache_corpus = True  # keep the encoded corpus after epoch 1 (4 bytes/word) instead of re-reading
    config.train.progress = True  # tqdm bar with words/s

    config.eval = ml_collections.ConfigDict()
    config.eval.probe_words = "man,woman,dog,red,playing,water,street,guitar"  # neighbours.txt
    config.eval.topn = 8  # neighbours per probe word
    config.eval.analogy_file = ""  # questions-words file ('' skips)
    config.eval.similarity_file = ""  # word<TAB>word<TAB>score file ('' skips)
    config.eval.restrict_vocab = 30000  # analogy candidates: the most frequent words
    config.eval.plot_words = (
        "man,woman,boy,girl,men,women,dog,dogs,cat,horse,red,blue,green,black,white,"
        "playing,running,walking,sitting,standing"
    )  # pca.png ('' skips)
    config.eval.formats = "word2vec,word2vec_binary"  # vector files written: word2vec, word2vec_binary, glove

    for name in filter(None, (variant or "").split(",")):
        if name not in VARIANTS:
            raise ValueError(f"unknown variant {name!r} of configs/word2vec.py; choose from {', '.join(VARIANTS)}")
        _apply_variant(config, name)
    return config


def _apply_variant(config: ml_collections.ConfigDict, name: str) -> None:
    if name in ("skipgram", "cbow"):
        config.model.architecture = name
    elif name == "hs":
        config.model.objective = "hierarchical_softmax"
    elif name == "shakespeare":
        config.data.files = SHAKESPEARE
        config.eval.probe_words = "king,love,lord,good,night,romeo,sword,death"
        config.eval.plot_words = (
            "king,queen,prince,duke,lord,lady,father,mother,son,daughter,brother,sister,"
            "love,hate,death,life,sword,blood,heaven,hell"
        )
    elif name == "conll":
        # The tokens of CoNLL-2003's training file, as configs/conll_tagger.py reads
        # them (one word per token, lower-cased): vectors for its word embedding.
        config.data.files = ""
        config.data.source = ml_collections.ConfigDict(dict(name="local/conll", paths=dict(train=CONLL_TRAIN)))
        config.data.feature = "tokens"
        config.eval.probe_words = "germany,monday,police,shares,minister,league,million,said"
        config.eval.plot_words = (
            "germany,france,britain,russia,china,japan,monday,tuesday,friday,sunday,"
            "january,march,june,october,police,army,minister,president,shares,market"
        )
    elif name == "smoke":
        config.data.files = SAMPLE
        config.model.dim = 16
        config.model.min_count = 1
        config.train.epochs = 1
        config.train.batch_size = 64
        config.train.steps_per_call = 2
        config.train.chunk_words = 1000
        config.train.progress = False
        config.eval.topn = 3
