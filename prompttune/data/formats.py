"""The formats of a user's files (`dataset.local.format`). They live apart from the schema (data/config.py) so
that the readers (data/local.py) check against the same list: the schema imports the readers, through
data/facts.py, so the readers cannot import the schema."""

from enum import StrEnum


class LocalFormat(StrEnum):
    csv = "csv"
    tsv = "tsv"
    jsonl = "jsonl"
    lmbff = "lmbff"  # LM-BFF's k-shot/<TASK> folder with ready-made <K>-<seed>/{train,dev,test}.tsv
    conll = "conll"  # token_classification: one `token tag` per line, a blank line between sentences (data/conll.py)


FACT_FORMATS = (LocalFormat.csv, LocalFormat.tsv, LocalFormat.jsonl)  # a user's facts: one per record
