"""prompttune: few-shot prompt-based learning experiments under one protocol."""

__version__ = "0.1.0"
