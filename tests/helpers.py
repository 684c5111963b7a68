"""Helpers shared by the tests (imported as tests.helpers; conftest.py only holds fixtures)."""

from hydra import compose, initialize_config_dir

from prompttune.data.records import Example
from prompttune.paths import CONFIG_DIR
from prompttune.runs.lifecycle import build


def compose_config(*overrides: str, name: str = "train"):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def build_method(*overrides: str, has_text_b: bool = False):
    """A method on a tiny model, built from the real configs."""
    return build(compose_config(*overrides, "trainer.device=cpu"), has_text_b).method


def toy_examples(n: int = 16) -> list[Example]:
    """A learnable task: the label is which word the text repeats."""
    words = ["awful", "great"]
    return [Example(f"toy-{i}", " ".join([words[i % 2]] * 3) + " film", i % 2) for i in range(n)]
