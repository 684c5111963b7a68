"""Datasets from the Hugging Face Hub, through datasets.load_dataset (needs network or a filled cache)."""

import os
import socket
from typing import Any
from urllib.parse import urlsplit

from omegaconf import DictConfig

from prompttune.data.labels import LabelResolver
from prompttune.data.records import Corpus, Example
from prompttune.errors import UserError

OFFLINE_DATASETS = "mr, subj, chn_sentiment, bbc_news"
PROBE_TIMEOUT_S = 5.0
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def load_hub_corpus(cfg: DictConfig) -> Corpus:
    dataset_dict = _fetch(cfg)
    resolver = LabelResolver(list(cfg.labels), cfg.hub.label_map, "dataset.hub.label_map")
    train = _examples(cfg, dataset_dict, "train_split", resolver)
    test = _examples(cfg, dataset_dict, "test_split", resolver)
    return Corpus(labels=list(cfg.labels), train=train, test=test)


def _call_text(cfg: DictConfig) -> str:
    args = [cfg.hub.path] if cfg.hub.name is None else [cfg.hub.path, cfg.hub.name]
    return f"load_dataset({', '.join(repr(a) for a in args)})"


def _fetch(cfg: DictConfig) -> Any:
    import datasets

    # Without network, load_dataset retries for about 25 s before failing: probe the Hub first.
    if not datasets.config.HF_HUB_OFFLINE:
        reason = hub_unreachable_reason()
        if reason is not None:
            raise _network_error(cfg, reason)
    try:
        return datasets.load_dataset(cfg.hub.path, cfg.hub.name)
    except ConnectionError as err:
        raise _network_error(cfg, _short(err)) from None
    except Exception as err:  # noqa: BLE001 - anything load_dataset raises is reported as a config problem
        raise UserError(
            f"dataset {cfg.name}: {_call_text(cfg)} failed: {_short(err)}; check dataset.hub.path and dataset.hub.name"
        ) from None


def hub_unreachable_reason() -> str | None:
    """None if a TCP connection to the Hub endpoint opens (or a proxy is configured), else why not."""
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return None
    from huggingface_hub import constants

    endpoint = urlsplit(constants.ENDPOINT)
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as err:
        return f"cannot reach {host}:{port}: {err.strerror or err}"


def _network_error(cfg: DictConfig, reason: str) -> UserError:
    return UserError(
        f"dataset {cfg.name} needs network access to the Hugging Face Hub "
        f"({_call_text(cfg)} failed: {reason}); "
        f"use an offline dataset ({OFFLINE_DATASETS}) or local files (dataset=local)"
    )


def _short(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _examples(cfg: DictConfig, dataset_dict: Any, split_setting: str, resolver: LabelResolver) -> list[Example]:
    split = cfg.hub[split_setting]
    if split not in dataset_dict:
        raise UserError(
            f"dataset {cfg.name}: {_call_text(cfg)} has no split {split!r} (it has {sorted(dataset_dict)}): "
            f"set dataset.hub.{split_setting}"
        )
    dataset = dataset_dict[split]
    _check_columns(cfg, dataset, split)
    columns = {key: list(dataset[cfg.hub[key]]) for key in ("text_a", "text_b", "label") if cfg.hub[key]}
    examples = []
    for i, raw_label in enumerate(columns["label"]):
        where = f"dataset {cfg.name}, split {split!r} row {i}"
        if raw_label == -1 and cfg.hub.label_map is None:
            raise UserError(
                f"{where}: label -1 means the split's labels are hidden (as in GLUE test sets): "
                "set dataset.hub.test_split to a labelled split such as validation"
            )
        text_b = columns["text_b"][i] if "text_b" in columns else None
        examples.append(Example(f"{split}-{i}", str(columns["text_a"][i]), resolver(raw_label, where), text_b))
    return examples


def _check_columns(cfg: DictConfig, dataset: Any, split: str) -> None:
    for key in ("text_a", "text_b", "label"):
        column = cfg.hub[key]
        if column is not None and column not in dataset.column_names:
            raise UserError(
                f"dataset {cfg.name}: split {split!r} has no column {column!r} "
                f"(columns: {dataset.column_names}): set dataset.hub.{key}"
            )
    class_names = getattr(dataset.features.get(cfg.hub.label), "names", None)
    if class_names is not None and cfg.hub.label_map is None and len(class_names) != len(cfg.labels):
        raise UserError(
            f"dataset {cfg.name}: column {cfg.hub.label!r} has {len(class_names)} classes {class_names} but "
            f"dataset.labels has {len(cfg.labels)}: list one label name per class, in that order"
        )
