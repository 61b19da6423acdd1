"""The CI regression gate: stored runs against a golden file."""
