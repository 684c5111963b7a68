"""Training: the loop, optimiser and precision, resumable state, metrics, FLOP counts, stop signals."""
