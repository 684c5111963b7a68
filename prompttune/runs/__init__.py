"""A run's lifecycle and its files: build, train or evaluate (lifecycle), the run dir, metrics.json, the
checkpoint, predictions, tracking, and the job wrapper around each Hydra job."""
