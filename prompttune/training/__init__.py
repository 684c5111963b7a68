"""Training: the loop, optimiser and precision, resumable state, metrics, FLOP counts, stop signals."""

from prompttune.training import (
    probing_metrics,  # noqa: F401 -- registers the fact_probing metrics
    tagging_metrics,  # noqa: F401 -- registers the token_classification metrics
)
