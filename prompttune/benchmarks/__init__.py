"""`prompttune bench`: every method against its PEFT peer, one process per cell."""
