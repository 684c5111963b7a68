"""Where the project's configs live (the top-level configs/ folder beside the package)."""

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
GROUPS = ("method", "dataset", "model", "trainer", "experiment")
