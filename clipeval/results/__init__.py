"""Records (the typed result of an evaluation), metrics with intervals, and the results store."""
