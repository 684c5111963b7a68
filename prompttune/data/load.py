"""Entry points: a dataset config node in, a Corpus (pools) or few-shot Splits out."""

from omegaconf import DictConfig

from prompttune.data.config import validate_dataset_config
from prompttune.data.hub import load_hub_corpus
from prompttune.data.local import load_lmbff_splits, load_local_corpus
from prompttune.data.package import load_package_corpus
from prompttune.data.records import Corpus
from prompttune.data.splits import Splits, sample_train_dev, sample_unlabeled, subsample_test, without_test_texts

CORPUS_LOADERS = {"package": load_package_corpus, "hub": load_hub_corpus, "local": load_local_corpus}


def load_corpus(dataset_cfg: DictConfig) -> Corpus:
    """The training pool and fixed test pool of the dataset, labels as indices into dataset_cfg.labels."""
    cfg = validate_dataset_config(dataset_cfg)
    return CORPUS_LOADERS[cfg.source](cfg)


def load_splits(dataset_cfg: DictConfig, shots: int, seed: int, unlabeled_size: int = 0) -> Splits:
    """LM-BFF protocol: `shots` per class for train, another `shots` per class for dev, a fixed test set; and
    `unlabeled_size` unlabeled texts from the rest of the training pool (none for ready-made LM-BFF splits)."""
    cfg = validate_dataset_config(dataset_cfg)
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
