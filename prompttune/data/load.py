"""Entry points: a dataset config node in, a Corpus (pools) or few-shot Splits out."""

from collections.abc import Callable

from omegaconf import DictConfig

from prompttune.data.config import validate_dataset_config
from prompttune.data.conll import load_conll_corpus
from prompttune.data.facts import fact_examples, facts_of, is_fact_probing, relation_name, split_facts
from prompttune.data.hub import load_hub_corpus
from prompttune.data.local import load_lmbff_splits, load_local_corpus
from prompttune.data.package import load_package_corpus
from prompttune.data.records import Corpus, Example
from prompttune.data.splits import Splits, sample_train_dev, sample_unlabeled, subsample_test, without_test_texts
from prompttune.data.tagging import is_tagging, label_names, sample_sentences, subsample_sentences

CORPUS_LOADERS = {"package": load_package_corpus, "hub": load_hub_corpus, "local": load_local_corpus}


def load_corpus(dataset_cfg: DictConfig) -> Corpus:
    """The training pool and fixed test pool of the dataset, labels as indices into dataset_cfg.labels."""
    cfg = validate_dataset_config(dataset_cfg)
    if cfg.source == "local" and cfg.local.format == "conll":
        return load_conll_corpus(cfg)
    return CORPUS_LOADERS[cfg.source](cfg)


def load_splits(
    dataset_cfg: DictConfig,
    shots: int | str,
    seed: int,
    unlabeled_size: int = 0,
    keep_fact: Callable[[Example], bool] | None = None,
    model_name: str = "",
) -> Splits:
    """LM-BFF protocol: `shots` per class for train, another `shots` per class for dev, a fixed test set; and
    `unlabeled_size` unlabeled texts from the rest of the training pool (none for ready-made LM-BFF splits).
    A tagging dataset: `shots` sentences for train and as many for dev, or shots=all (data/tagging.py).
    A fact-probing dataset: the facts `keep_fact` keeps (a one-token object for model `model_name`), split once
    for every seed, `shots` of its training facts (data/facts.py)."""
    cfg = validate_dataset_config(dataset_cfg)
    if is_tagging(cfg):
        return load_sentence_splits(cfg, shots, seed)
    if is_fact_probing(cfg):
        facts = fact_examples(cfg.name, facts_of(cfg))
        keep = keep_fact or (lambda fact: True)
        train, dev, test, counts = split_facts(facts, keep, shots, seed, (cfg.name, model_name), cfg.test_size)
        return Splits(label_names(cfg), train, dev, test, facts={"relation": relation_name(cfg), **counts})
    labels = list(cfg.labels)
    if cfg.source == "local" and cfg.local.format == "lmbff":
        train, dev, test = load_lmbff_splits(cfg, shots, seed)
        unlabeled = []
    else:
        corpus = CORPUS_LOADERS[cfg.source](cfg)
        pool = without_test_texts(corpus.train, corpus.test)
        train, dev = sample_train_dev(pool, labels, shots, seed, cfg.name)
        test = corpus.test
        unlabeled = sample_unlabeled(pool, train + dev, unlabeled_size, seed) if unlabeled_size else []
    test = subsample_test(test, len(labels), cfg.test_size)
    return Splits(labels=labels, train=train, dev=dev, test=test, unlabeled=unlabeled)


def load_sentence_splits(cfg: DictConfig, shots: int | str, seed: int) -> Splits:
    """A tagging dataset's split: sentences drawn by seed from the training pool (less any sentence of the test
    pool), a fixed test set; no unlabeled pool."""
    corpus = load_corpus(cfg)
    train, dev = sample_sentences(without_test_texts(corpus.train, corpus.test), shots, seed, cfg.name)
    return Splits(label_names(cfg), train, dev, subsample_sentences(corpus.test, cfg.test_size))
