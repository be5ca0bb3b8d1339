"""Word vectors: neighbours, evaluation, file formats, plots, and pretrained embedding tables.

WordVectors                 words + [V, D] vectors (most frequent first), cosine neighbours
evaluate_analogies          questions-words files: sections, 3CosAdd, top-N vocabulary, OOV counted
evaluate_similarity         tab-separated word pairs: Spearman (and Pearson) correlation
save_vectors / load_vectors word2vec text, word2vec binary, GloVe text; exact round trip
pca_2d / plot_words         2-D PCA projection, PNG
init_embedding              fill a model's embedding table from vectors (OOV rows random, counted)
find_embedding              the key path of the embedding table (also what optim's freeze rules
                            of config.model.freeze_embedding / freeze_embedding_steps hold)
"""

from __future__ import annotations

import dataclasses
import mmap
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

FORMATS = ("word2vec", "word2vec_binary", "glove")


class VectorFileError(ValueError):
    """A vector, analogy or similarity file is malformed (the message names the file and line)."""


# --- word vectors ----------------------------------------------------------------------------


class WordVectors:
    """Words and their vectors, in file order (word2vec writes most frequent first).

    Args:
      words: V distinct words.
      vectors: [V, D] float32.
      counts: optional [V] corpus counts.
    """

    def __init__(self, words: Sequence[str], vectors: np.ndarray, counts: np.ndarray | None = None):
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be [words, dim], got shape {vectors.shape}")
        if len(words) != len(vectors):
            raise ValueError(f"{len(words)} words but {len(vectors)} vectors")
        not_finite = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
        if not_finite.size:
            first = int(not_finite[0])
            value = vectors[first][~np.isfinite(vectors[first])][0]
            raise ValueError(
                f"the vector of word {words[first]!r} (entry {first}) holds {value} "
                f"({not_finite.size} such vectors): every component must be a finite number"
            )
        self.words = list(words)
        self.vectors = vectors
        self.counts = None if counts is None else np.asarray(counts)
        self.index: dict[str, int] = {}
        for i, word in enumerate(self.words):
            if not isinstance(word, str) or not word:
                raise ValueError(f"word {i} must be a non-empty string, got {word!r}")
            if word in self.index:
                raise ValueError(f"word {word!r} appears twice (entries {self.index[word]} and {i})")
            self.index[word] = i
        self._unit: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def __getitem__(self, word: str) -> np.ndarray:
        if word not in self.index:
            raise KeyError(f"word {word!r} is not in the vocabulary ({len(self)} words)")
        return self.vectors[self.index[word]]

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    @property
    def unit(self) -> np.ndarray:
        """[V, D] vectors scaled to unit length (zero vectors stay zero)."""
        if self._unit is None:
            norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
            self._unit = self.vectors / np.where(norms > 0, norms, 1.0)
        return self._unit

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two words."""
        return float(self.unit[self.index[a]] @ self.unit[self._row(b)])

    def most_similar(
        self, query: str | np.ndarray, topn: int = 10, restrict: int | None = None, exclude: Iterable[str] = ()
    ) -> list[tuple[str, float]]:
        """The `topn` words of highest cosine similarity to a word (itself excluded) or a vector,
        among the first `restrict` words when given."""
        if isinstance(query, str):
            target, exclude = self.unit[self._row(query)], set(exclude) | {query}
        else:
            target = np.asarray(query, np.float32)
            target = target / (np.linalg.norm(target) or 1.0)
        candidates = self.unit[:restrict] if restrict else self.unit
        scores = candidates @ target
        for word in exclude:
            if word in self.index and self.index[word] < len(candidates):
                scores[self.index[word]] = -np.inf
        top = np.argsort(-scores, kind="stable")[:topn]
        return [(self.words[i], float(scores[i])) for i in top if np.isfinite(scores[i])]

    def _row(self, word: str) -> int:
        if word not in self.index:
            raise KeyError(f"word {word!r} is not in the vocabulary ({len(self)} words)")
        return self.index[word]

    def save(self, path: str, format: str = "word2vec") -> None:
        save_vectors(self, path, format)


# --- file formats ----------------------------------------------------------------------------


def _check_savable(words: Sequence[str]) -> None:
    for i, word in enumerate(words):
        if any(c.isspace() for c in word):
            raise ValueError(
                f"word {i} ({word!r}) contains whitespace, which these text/binary formats "
                "use as the separator; replace it before saving"
            )


def save_vectors(vectors: WordVectors, path: str, format: str = "word2vec") -> None:
    """Writes `vectors` in one of FORMATS.

    word2vec: header `V D`, then `word v_1 ... v_D` per line. word2vec_binary:
    the same header, then per word `word<space>` + D little-endian float32 +
    newline (word2vec.c's -binary 1). glove: `word v_1 ... v_D` lines, no
    header. Text values are written with 9 significant digits, which reads
    back to the identical float32.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown vector format {format!r}; choose one of {FORMATS}")
    _check_savable(vectors.words)
    values = vectors.vectors.astype("<f4")
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        if format != "glove":
            f.write(f"{len(vectors)} {vectors.dim}\n".encode())
        if format == "word2vec_binary":
            for word, row in zip(vectors.words, values):
                f.write(word.encode("utf-8") + b" " + row.tobytes() + b"\n")
        else:
            line = " ".join(["%.9g"] * vectors.dim)
            for word, row in zip(vectors.words, values.astype(np.float64)):
                f.write(f"{word} {line % tuple(row)}\n".encode())
    os.replace(tmp, path)


def detect_format(path: str) -> str:
    """'word2vec_binary' for a .bin file; else 'word2vec' if the first line is
    a `count dim` header, 'glove' otherwise."""
    if path.endswith(".bin"):
        return "word2vec_binary"
    with open(path, "rb") as f:
        first = f.readline().split()
    if len(first) == 2 and all(part.isdigit() for part in first):
        return "word2vec"
    return "glove"


def load_vectors(path: str, format: str = "auto") -> WordVectors:
    """Reads a vector file written in one of FORMATS ('auto': `detect_format`).

    A malformed file raises VectorFileError naming the file and the line (or entry).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"vector file {path} does not exist")
    if os.path.getsize(path) == 0:
        raise VectorFileError(f"{path}: the file is empty")
    format = detect_format(path) if format == "auto" else format
    if format == "word2vec_binary":
        return _load_binary(path)
    if format not in FORMATS:
        raise ValueError(f"unknown vector format {format!r}; choose one of {FORMATS} or 'auto'")
    return _load_text(path, header=format == "word2vec")


def _parse_header(line: bytes, path: str) -> tuple[int, int]:
    parts = line.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or int(parts[1]) == 0:
        raise VectorFileError(
            f"{path}: line 1: a word2vec file starts with the header '<word count> <dim>', got {line[:80]!r}"
        )
    return int(parts[0]), int(parts[1])


def _load_text(path: str, header: bool) -> WordVectors:
    words, rows, dim, count = [], [], None, None
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if header and number == 1:
                count, dim = _parse_header(raw, path)
                continue
            try:
                line = raw.decode("utf-8").rstrip()  # word2vec.c ends each line with a space
            except UnicodeDecodeError as error:
                raise VectorFileError(
                    f"{path}: line {number} is not valid UTF-8 ({error.reason} at byte {error.start})"
                ) from None
            if not line:
                continue
            parts = line.split(" ")
            dim = len(parts) - 1 if dim is None else dim
            if len(parts) - 1 != dim or dim == 0:
                raise VectorFileError(
                    f"{path}: line {number}: expected a word and {dim} values, got {len(parts) - 1} value(s)"
                )
            try:
                rows.append(np.array(parts[1:], np.float32))
            except ValueError:
                bad = next(p for p in parts[1:] if not _is_number(p))
                raise VectorFileError(f"{path}: line {number}: {bad!r} is not a number") from None
            words.append(parts[0])
    if header and count != len(words):
        raise VectorFileError(f"{path}: the header announces {count} words but the file has {len(words)}")
    if not words:
        raise VectorFileError(f"{path}: the file holds no vectors")
    return _vectors(words, np.stack(rows), path)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _load_binary(path: str) -> WordVectors:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        end = data.find(b"\n")
        count, dim = _parse_header(data[: end if end >= 0 else 80], path)
        size, position = dim * 4, end + 1
        words, vectors = [], np.empty((count, dim), np.float32)
        for entry in range(count):
            while position < len(data) and data[position : position + 1] in (b"\n", b"\r"):
                position += 1  # the newline word2vec.c writes after each vector
            space = data.find(b" ", position)
            if space < 0:
                raise VectorFileError(
                    f"{path}: entry {entry + 1} of {count}: the file ends before its word "
                    "(the header announces more entries than there are)"
                )
            try:
                word = data[position:space].decode("utf-8")
            except UnicodeDecodeError:
                raise VectorFileError(
                    f"{path}: entry {entry + 1}: the word at byte {position} is not valid "
                    "UTF-8 (is this a text file? pass format='word2vec')"
                ) from None
            start = space + 1
            if start + size > len(data):
                raise VectorFileError(
                    f"{path}: entry {entry + 1} ({word!r}): the file ends after "
                    f"{len(data) - start} of its {size} vector bytes"
                )
            vectors[entry] = np.frombuffer(data[start : start + size], "<f4")
            words.append(word)
            position = start + size
        if data[position:].strip():
            raise VectorFileError(
                f"{path}: {len(data) - position} bytes follow the {count} entries the header announces"
            )
    return _vectors(words, vectors, path)


def _vectors(words: list[str], vectors: np.ndarray, path: str) -> WordVectors:
    try:
        return WordVectors(words, vectors)
    except ValueError as error:
        raise VectorFileError(f"{path}: {error}") from None


def as_word_vectors(vectors: WordVectors | Mapping[str, Any] | str | os.PathLike) -> WordVectors:
    """WordVectors from WordVectors, a {word: vector} dict, or a file path (format detected)."""
    if isinstance(vectors, WordVectors):
        return vectors
    if isinstance(vectors, (str, os.PathLike)):
        return load_vectors(os.fspath(vectors))
    if isinstance(vectors, Mapping):
        if not vectors:
            raise ValueError("the vector dict is empty")
        words = list(vectors)
        rows = [np.asarray(vectors[w], np.float32) for w in words]
        dims = {r.shape for r in rows}
        if len(dims) != 1 or len(rows[0].shape) != 1:
            raise ValueError(f"the vector dict's values must all be 1-D of one length, got shapes {sorted(dims)}")
        return WordVectors(words, np.stack(rows))
    raise TypeError(f"expected WordVectors, a dict or a path, got {type(vectors).__name__}")


# --- evaluation ------------------------------------------------------------------------------


@dataclasses.dataclass
class SectionScore:
    """Analogy results of one section: `correct` of `answered` questions; `oov` skipped."""

    name: str
    correct: int = 0
    answered: int = 0
    oov: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.answered if self.answered else float("nan")

    def as_dict(self) -> dict:
        return {
            "section": self.name,
            "correct": self.correct,
            "answered": self.answered,
            "oov": self.oov,
            "accuracy": self.accuracy,
        }


@dataclasses.dataclass
class AnalogyResult:
    sections: list[SectionScore]
    total: SectionScore
    restrict_vocab: int

    def as_dict(self) -> dict:
        return {
            "restrict_vocab": self.restrict_vocab,
            "total": self.total.as_dict(),
            "sections": [s.as_dict() for s in self.sections],
        }

    def table(self) -> str:
        lines = [f"{'section':<28} {'correct':>8} {'answered':>9} {'oov':>6} {'accuracy':>9}"]
        for s in self.sections + [self.total]:
            lines.append(f"{s.name:<28} {s.correct:>8} {s.answered:>9} {s.oov:>6} {s.accuracy:>9.4f}")
        return "\n".join(lines)


def read_analogies(path: str, lower: bool = True) -> list[tuple[str, list[tuple[int, tuple[str, ...]]]]]:
    """[(section, [(line number, (a, b, c, d)), ...]), ...] of a questions-words
    file (`: section` lines, then `a b c d` lines: a is to b as c is to d)."""
    sections: list = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            if line.startswith(":"):
                sections.append((line[1:].strip(), []))
                continue
            words = tuple(line.lower().split() if lower else line.split())
            if len(words) != 4:
                raise VectorFileError(
                    f"{path}: line {number}: an analogy question has 4 words (a b c d), got {len(words)}: {line[:80]!r}"
                )
            if not sections:
                sections.append(("", []))
            sections[-1][1].append((number, words))
    if not any(questions for _, questions in sections):
        raise VectorFileError(f"{path}: no analogy questions found")
    return sections


def evaluate_analogies(
    vectors: WordVectors, path: str, restrict_vocab: int = 30000, lower: bool = True, block: int = 1024
) -> AnalogyResult:
    """Analogy accuracy with 3CosAdd: the answer to `a : b :: c : ?` is the word
    maximising cos(w, b - a + c) over unit vectors, among the first
    `restrict_vocab` words, a, b and c excluded. A question with a word outside
    those first words is counted as OOV and not answered (as gensim does)."""
    unit = vectors.unit[:restrict_vocab]
    known: dict[str, int] = {}
    for i, word in enumerate(vectors.words[:restrict_vocab]):
        known.setdefault(word.lower() if lower else word, i)  # the more frequent spelling wins
    results = []
    for name, questions in read_analogies(path, lower):
        score = SectionScore(name)
        rows = [[known[w] for w in q] for _, q in questions if all(w in known for w in q)]
        score.oov = len(questions) - len(rows)
        ids = np.asarray(rows, np.int64).reshape(-1, 4)
        for start in range(0, len(ids), block):
            part = ids[start : start + block]
            scores = (unit[part[:, 1]] - unit[part[:, 0]] + unit[part[:, 2]]) @ unit.T  # [Q, N]
            np.put_along_axis(scores, part[:, :3], -np.inf, axis=1)
            score.correct += int(np.sum(np.argmax(scores, axis=1) == part[:, 3]))
        score.answered = len(ids)
        results.append(score)
    total = SectionScore(
        "total", sum(s.correct for s in results), sum(s.answered for s in results), sum(s.oov for s in results)
    )
    return AnalogyResult(results, total, restrict_vocab)


@dataclasses.dataclass
class SimilarityResult:
    spearman: float
    pearson: float
    pairs: int  # pairs with both words known
    oov: int  # pairs skipped

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def read_word_pairs(path: str, lower: bool = True) -> list[tuple[str, str, float]]:
    """(word, word, score) rows of a tab-separated file; blank and '#' lines
    are skipped, and so is a first line whose score is not a number (a header)."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 3:
                raise VectorFileError(
                    f"{path}: line {number}: expected 'word<TAB>word<TAB>score', got "
                    f"{len(fields)} field(s): {line.strip()[:80]!r}"
                )
            if not _is_number(fields[2]):
                if not pairs and number == 1:
                    continue
                raise VectorFileError(f"{path}: line {number}: score {fields[2]!r} is not a number")
            a, b = fields[0].strip(), fields[1].strip()
            pairs.append((a.lower(), b.lower(), float(fields[2])) if lower else (a, b, float(fields[2])))
    if not pairs:
        raise VectorFileError(f"{path}: no word pairs found")
    return pairs


def evaluate_similarity(vectors: WordVectors, path: str, lower: bool = True) -> SimilarityResult:
    """Spearman (and Pearson) correlation between human scores and cosine
    similarities over the pairs whose two words are known; the rest are counted as OOV."""
    from scipy import stats

    known = {}
    for i, word in enumerate(vectors.words):
        known.setdefault(word.lower() if lower else word, i)
    pairs = read_word_pairs(path, lower)
    used = [(known[a], known[b], s) for a, b, s in pairs if a in known and b in known]
    if len(used) < 2:
        raise ValueError(
            f"{path}: only {len(used)} of {len(pairs)} pairs have both words in the vocabulary; "
            "a correlation needs at least 2"
        )
    a, b, human = (np.array(column) for column in zip(*used))
    cosine = np.sum(vectors.unit[a] * vectors.unit[b], axis=1)
    return SimilarityResult(
        float(stats.spearmanr(human, cosine)[0]),
        float(stats.pearsonr(human, cosine)[0]),
        len(used),
        len(pairs) - len(used),
    )


# --- projection plot -------------------------------------------------------------------------


def pca_2d(points: np.ndarray) -> np.ndarray:
    """[N, D] -> [N, 2]: coordinates on the two leading principal axes (each
    axis signed so that its largest loading is positive, for stable plots)."""
    centred = np.asarray(points, np.float64) - np.mean(points, axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    axes = axes[:2]
    axes *= np.sign(axes[np.arange(len(axes)), np.argmax(np.abs(axes), axis=1)])[:, None]
    return centred @ axes.T


def plot_words(vectors: WordVectors, words: Sequence[str], path: str, title: str = "") -> np.ndarray:
    """Saves a PNG of `words` on their 2-D PCA projection; returns the [N, 2] coordinates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    missing = [w for w in words if w not in vectors]
    if missing:
        raise KeyError(f"words not in the vocabulary: {missing}")
    if len(words) < 3:
        raise ValueError(f"a PCA plot needs at least 3 words, got {len(words)}")
    coords = pca_2d(np.stack([vectors[w] for w in words]))
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.scatter(coords[:, 0], coords[:, 1], s=12)
    for word, (x, y) in zip(words, coords):
        ax.annotate(word, (x, y), fontsize=9, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title or f"PCA of {len(words)} word vectors")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return coords


# --- pretrained embedding tables -------------------------------------------------------------

Path = tuple[str, ...]
# Where seqjax's word-level models (RecurrentModel, Tagger) keep the word
# embedding, the table config.model.pretrained_embeddings fills and
# freeze_embedding holds (a tagger may have more tables: input tags, characters).
WORD_EMBEDDING: Path = ("embed", "embedding")


def _leaves(tree: Any, prefix: Path = ()) -> Iterable[tuple[Path, Any]]:
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from _leaves(value, prefix + (str(key),))
    else:
        yield prefix, tree


def find_embedding(params: Any, path: str | Sequence[str] | None = None) -> Path:
    """The key path of the embedding table in a params tree.

    `path` may be a tuple of keys, 'a/b/embedding', or a module name ('embed',
    meaning ('embed', 'embedding')). None finds the one 2-D leaf named
    'embedding' (RecurrentModel: embed/embedding, Transformers: embedder/embedding).
    """
    leaves = dict(_leaves(params))
    if path is not None:
        keys = tuple(path.split("/")) if isinstance(path, str) else tuple(path)
        for candidate in (keys, keys + ("embedding",)):
            if candidate in leaves:
                return candidate
        raise KeyError(f"no parameter at {'/'.join(keys)}; parameters: {sorted('/'.join(k) for k in leaves)}")
    found = [k for k, v in leaves.items() if k and k[-1] == "embedding" and np.ndim(v) == 2]
    if len(found) != 1:
        what = "no 2-D parameter named 'embedding'" if not found else f"{len(found)} embedding tables"
        raise ValueError(
            f"found {what} in the params ({sorted('/'.join(k) for k in (found or leaves))}); pass path= to choose one"
        )
    return found[0]


def _replace(tree: Any, path: Path, fn: Callable[[Any], Any]) -> Any:
    if not path:
        return fn(tree)
    return {k: (_replace(v, path[1:], fn) if str(k) == path[0] else v) for k, v in tree.items()}


@dataclasses.dataclass
class InitReport:
    """What `init_embedding` did to a [rows, dim] table."""

    path: str
    rows: int
    words: int  # word_index entries with an id inside the table (id 0 excluded)
    found: int  # rows filled from the vectors
    oov: int  # rows of words without a vector, drawn at random
    lowercase_matches: int  # found only after lower-casing the word
    beyond_table: int  # word_index ids >= rows (e.g. cut by num_words), ignored
    oov_words: list[str]  # the first 20 OOV words

    def summary(self) -> str:
        return (
            f"embedding {self.path} [{self.rows} rows]: {self.found} of {self.words} words from pretrained "
            f"vectors ({self.lowercase_matches} via lower case), {self.oov} OOV rows random"
            + (f", e.g. {self.oov_words[:5]}" if self.oov_words else "")
        )


def init_embedding(
    params: Any,
    word_index: Mapping[str, int],
    vectors: WordVectors | Mapping[str, Any] | str | os.PathLike,
    *,
    path: str | Sequence[str] | None = None,
    seed: int = 0,
    oov_scale: float | None = None,
    zero_padding: bool = True,
) -> tuple[Any, InitReport]:
    """Params with the embedding table's rows set from pretrained vectors.

    Row `word_index[w]` gets the vector of w (or of w.lower()). Rows of words
    without one are drawn from N(0, oov_scale^2) with `np.random.default_rng(seed)`
    (oov_scale None: the standard deviation of the pretrained vectors), row 0
    (padding) is zero when `zero_padding`, and rows no word maps to keep their
    values. The table keeps its dtype and sharding.

    Args:
      params: a params tree holding one [rows, dim] embedding table (`find_embedding`).
      word_index: {word: id}, e.g. `WordTokenizer.word_index`.
      vectors: WordVectors, {word: vector}, or a vector file path.

    Returns:
      (new params, InitReport).
    """
    vectors = as_word_vectors(vectors)
    key = find_embedding(params, path)
    table = dict(_leaves(params))[key]
    rows, dim = np.shape(table)
    if vectors.dim != dim:
        raise ValueError(
            f"the pretrained vectors have dim {vectors.dim} but the embedding table "
            f"{'/'.join(key)} is [{rows}, {dim}]; make the model's embedding size {vectors.dim}"
        )
    new = np.array(jax.device_get(table), np.float32)
    scale = float(np.std(vectors.vectors)) if oov_scale is None else oov_scale
    rng = np.random.default_rng(seed)
    items = sorted((i, w) for w, i in word_index.items() if 0 < i)
    inside = [(i, w) for i, w in items if i < rows]
    found = lowercase = 0
    oov_words = []
    for i, word in inside:
        if word in vectors.index:
            new[i] = vectors[word]
            found += 1
        elif word.lower() in vectors.index:
            new[i] = vectors[word.lower()]
            found, lowercase = found + 1, lowercase + 1
        else:
            new[i] = rng.normal(0.0, scale, dim)
            oov_words.append(word)
    if zero_padding:
        new[0] = 0.0
    report = InitReport(
        "/".join(key), rows, len(inside), found, len(oov_words), lowercase, len(items) - len(inside), oov_words[:20]
    )

    def put(old):
        value = jnp.asarray(new, dtype=old.dtype)
        sharding = getattr(old, "sharding", None)
        return jax.device_put(value, sharding) if sharding is not None else value

    return _replace(params, key, put), report


def embedding_labels(params: Any, path: str | Sequence[str] | None = None) -> Any:
    """A tree like `params` labelled 'embedding' at the table and 'other'
    elsewhere, for `optax.multi_transform`."""
    key = find_embedding(params, path)
    return jax.tree_util.tree_map_with_path(
        lambda p, _: "embedding" if tuple(_key_name(k) for k in p) == key else "other", params
    )


def _key_name(entry) -> str:
    return str(getattr(entry, "key", getattr(entry, "name", entry)))
