"""CoNLL files (dataset.local.format=conll) and tag schemes: each file loads, or stops with one line naming the
file, the line and the fix; IOB1 is read as IOB2 and broken BMES spans are repaired, with a warning."""

import logging
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from prompttune.data import load_corpus, load_splits
from prompttune.data.tagging import TagReader, tag_names
from prompttune.errors import UserError

GOOD = "EU B-ORG\nrejects O\nGerman B-MISC\ncall O\n\nPeter\tB-PER\nBlackburn\tI-PER\n"


def conll_cfg(path: Path, labels=("PER", "ORG", "MISC"), scheme: str = "bio", test: Path | None = None) -> DictConfig:
    return OmegaConf.create(
        {
            "name": "mine",
            "source": "local",
            "task": "token_classification",
            "tag_scheme": scheme,
            "labels": list(labels),
            "local": {"format": "conll", "train": str(path), "test": str(test or path)},
            "patterns": [],
        }
    )


def write(tmp_path: Path, text: str, name: str = "train.conll") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def tags_of(example, labels=("PER", "ORG", "MISC"), scheme="bio") -> list[str]:
    names = tag_names(labels, scheme)
    return [names[t] for t in example.tags]


def one_line_error(path: Path, match: str, **cfg) -> str:
    with pytest.raises(UserError, match=match) as info:
        load_corpus(conll_cfg(path, **cfg))
    assert "\n" not in str(info.value)
    return str(info.value)


def test_a_conll_file_loads_with_space_or_tab_columns(tmp_path):
    text = "-DOCSTART- -X- O\n\n\n" + GOOD.replace("\n", "\r\n") + "\n\n\n"
    train = load_corpus(conll_cfg(write(tmp_path, text))).train
    assert [e.tokens for e in train] == [("EU", "rejects", "German", "call"), ("Peter", "Blackburn")]
    assert tags_of(train[0]) == ["B-ORG", "O", "B-MISC", "O"] and tags_of(train[1]) == ["B-PER", "I-PER"]
    assert train[0].text_a == "EU rejects German call" and train[0].label == -1


def test_a_tab_separated_token_may_hold_a_space(tmp_path):
    train = load_corpus(conll_cfg(write(tmp_path, "New York\tB-ORG\nrocks\tO\n"))).train
    assert train[0].tokens == ("New York", "rocks")


def test_three_columns_where_two_are_expected_names_the_file_and_line(tmp_path):
    path = write(tmp_path, "EU NNP B-ORG\nrejects VBZ O\n")
    message = one_line_error(path, "line 1 has 3 columns")
    assert str(path) in message and "keep only the token and its tag" in message


def test_a_tag_outside_the_label_set_names_the_line_and_the_fix(tmp_path):
    path = write(tmp_path, GOOD + "\nParis B-LOC\n")
    message = one_line_error(path, "line 9: tag 'B-LOC' has the type 'LOC'")
    assert "dataset.labels" in message


def test_tags_that_are_not_bio_are_an_error(tmp_path):
    path = write(tmp_path, "Peter B-PER\nBlackburn E-PER\n")
    one_line_error(path, r"line 2: tag 'E-PER' is not BIO .*dataset.tag_scheme")
    one_line_error(write(tmp_path, "Peter PER\n", "bare.conll"), "tag 'PER' is not BIO")


def test_an_empty_sentence_is_an_error(tmp_path):
    one_line_error(write(tmp_path, GOOD + "\n\tO\n\tO\n"), "line 9 has an empty token")
    one_line_error(write(tmp_path, "\n\n \t\n", "blank.conll"), "holds no sentence")


def test_iob1_is_read_as_iob2_with_a_warning(tmp_path, caplog):
    path = write(tmp_path, "Peter I-PER\nBlackburn I-PER\nin O\nEU I-ORG\nPeter B-PER\n")
    with caplog.at_level(logging.WARNING):
        train = load_corpus(conll_cfg(path)).train
    assert tags_of(train[0]) == ["B-PER", "I-PER", "O", "B-ORG", "B-PER"]
    assert "2 I-X tags with no B-X before them (IOB1) read as B-X" in caplog.text and "line 1" in caplog.text


def test_a_bad_file_stops_the_config_check_before_a_run(tmp_path):
    """The check of the dataset config reads the files (validate runs it before anything is written)."""
    from prompttune.data import validate_dataset_config

    with pytest.raises(UserError, match="line 1 has 3 columns"):
        validate_dataset_config(conll_cfg(write(tmp_path, "a b c\n")))


def test_conll_only_for_token_classification(tmp_path):
    cfg = conll_cfg(write(tmp_path, GOOD))
    cfg.task = "classification"
    cfg.labels = ["a", "b"]
    with pytest.raises(UserError, match="dataset.task=classification is invalid; allowed: token_classification"):
        load_corpus(cfg)


@pytest.mark.parametrize(
    "raw, repaired",
    [
        (["M-PER", "E-PER", "O"], ["B-PER", "E-PER", "O"]),  # an entity cut at the start of a piece
        (["O", "B-LOC"], ["O", "S-LOC"]),  # ... and at its end
        (["B-PER", "M-PER"], ["B-PER", "E-PER"]),
        (["E-ORG", "B-ORG", "E-ORG"], ["S-ORG", "B-ORG", "E-ORG"]),
        (["B-PER", "E-LOC"], ["S-PER", "S-LOC"]),
        (["B-PER", "M-PER", "E-PER", "S-LOC"], ["B-PER", "M-PER", "E-PER", "S-LOC"]),  # valid: unchanged
    ],
)
def test_bmes_spans_cut_by_a_sentence_break_are_repaired(raw, repaired):
    reader = TagReader(["PER", "LOC", "ORG"], "bmes", "")
    names = tag_names(["PER", "LOC", "ORG"], "bmes")
    assert [names[t] for t in reader(raw, str)] == repaired
    assert reader.repaired == sum(a != b for a, b in zip(raw, repaired, strict=True))


def test_a_bmes_file_splits_into_sentences_by_seed(tmp_path):
    sentences = [f"{'上海' if i % 2 else '北京'}很{i}" for i in range(12)]
    lines = "\n\n".join("\n".join([f"{s[0]} B-LOC", f"{s[1]} E-LOC", *(f"{c} O" for c in s[2:])]) for s in sentences)
    path = write(tmp_path, lines + "\n")
    cfg = conll_cfg(path, labels=("LOC",), scheme="bmes", test=write(tmp_path, "天 O\n津 O\n", "test.conll"))
    splits = load_splits(cfg, 3, 13)
    assert len(splits.train) == len(splits.dev) == 3 and len(splits.test) == 1
    assert not {e.guid for e in splits.train} & {e.guid for e in splits.dev}
    assert splits.labels == ["O", "B-LOC", "M-LOC", "E-LOC", "S-LOC"]
    assert load_splits(cfg, 3, 13).train == splits.train and load_splits(cfg, 3, 21).train != splits.train
    everything = load_splits(cfg, "all", 13)
    assert len(everything.dev) == 1 and len(everything.train) == 11
    with pytest.raises(UserError, match="shots=7 needs 14 sentences .* at most 6, or use shots=all"):
        load_splits(cfg, 7, 13)
