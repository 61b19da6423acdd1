"""The CI regression gate: candidate runs' results documents against a golden file (one too).

stats (the paired tests) -> documents (reading golden files and candidates) -> data (same scored
data) -> compare (the decision rule) -> table (the printed verdicts); record writes golden files;
cli is ``clipeval check``.
"""
