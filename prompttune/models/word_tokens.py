"""Word tokenisation for the word-level networks, matched to the word vectors they look words up in.

English and other space-separated scripts: lowercased (GloVe 6B is), then split roughly as the Stanford tokenizer
GloVe was built with splits: clitics apart ("don't" -> "do", "n't"; "it's" -> "it", "'s"), hyphenated words,
numbers and dotted abbreviations ("u.s.") kept whole, every other punctuation mark a token of its own ("..." and
"--" whole). Chinese: jieba's segmentation, case kept (the Chinese word2vec is cased). Other unspaced scripts
(Japanese): one token per character.
"""

import logging
import re
from collections.abc import Callable
from functools import cache

from omegaconf import OmegaConf

from prompttune.models.loading import cache_root

ENGLISH_TOKEN = re.compile(
    r"""\w+(?=n't\b)              # do|n't, ca|n't
    | n't\b
    | '(?:s|re|ve|ll|d|m)\b       # clitics
    | (?:[^\W\d_]\.){2,}          # u.s., e.g.
    | \d+(?:[.,:/]\d+)+           # 3.5, 1,000, 10:30
    | \w+(?:-\w+)*                # words, well-known
    | \.\.\.|--                   # ellipsis, dash
    | [^\w\s]                     # any other mark
    """,
    re.VERBOSE,
)


CURLY_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})


def english_words(text: str) -> list[str]:
    return ENGLISH_TOKEN.findall(text.lower().translate(CURLY_QUOTES))


def chinese_words(text: str) -> list[str]:
    return [word for word in _jieba().lcut(text) if not word.isspace()]


def characters(text: str) -> list[str]:
    return [char for char in text if not char.isspace()]


def word_tokenizer(language: str) -> Callable[[str], list[str]]:
    """The tokenizer for a dataset's language (its `dataset.language`)."""
    if language == "zh":
        return chinese_words
    if language == "ja":
        return characters
    return english_words


@cache
def _jieba():
    """A jieba tokenizer of our own: jieba caches its dictionary with marshal, by default in the shared temporary
    directory, where anyone could plant the file it loads; ours lives in the project's cache."""
    import jieba

    logging.getLogger("jieba").setLevel(logging.WARNING)  # its "Building prefix dict" chatter on every start
    tokenizer = jieba.Tokenizer()
    folder = cache_root(OmegaConf.create({})) / "jieba"
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.tmp_dir = str(folder)
    return tokenizer
