"""Configuration: the Hydra registry, `_target_` construction, runtime settings, paths."""
