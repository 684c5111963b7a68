"""Schemas: the top-level run config (run.py) and the helpers every group schema uses (schema.py)."""
