"""Thin entry points of the subcommands: `prompttune train|eval|report|bench`."""
