"""How a task is evaluated; one small module per protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from clipeval.contracts import EvaluationContext

if TYPE_CHECKING:
    from clipeval.features.encode import FeatureSet


def present_datasets(chosen: Sequence[str] | None, ctx: EvaluationContext) -> list[str]:
    """The datasets an evaluator scores: those it was given (all of the task's by default), less the optional ones
    whose data is absent (the task has said so)."""
    available = ctx.datasets()
    return [d for d in (chosen or available) if d in available]


def checked_logits(ctx: EvaluationContext, dataset: str) -> tuple[FeatureSet, torch.Tensor]:
    """``dataset``'s features and zero-shot logits ([N, C]), its labels checked against the C classes first
    (ClipevalError naming the dataset when a label is out of range)."""
    fs = ctx.features(dataset)
    logits = ctx.zero_shot_logits(dataset)
    ctx.check_labels(dataset, fs.labels, logits.shape[1])
    return fs, logits


class TieExactScores:
    """``queries @ keys.T`` in which identical keys score bit-identically, so that a rule for ties sees every tie.

    A float32 matrix product may give two identical rows of ``keys`` (the same caption twice, a duplicate image)
    results an ulp apart, depending on where they fall in the kernel's tiles: a tie with a wrong candidate would then
    count or not by position. The keys are made unique once (``torch.unique``), each query is scored against the
    unique keys, and the scores are spread back: identical keys share one computed number. ``keys``: [K, D];
    ``scores(queries)``: [Q, K].
    """

    def __init__(self, keys: torch.Tensor):
        self.unique, self.inverse = torch.unique(keys, dim=0, return_inverse=True)
        self.same = len(self.unique) == len(keys)
        self.keys = keys

    def scores(self, queries: torch.Tensor) -> torch.Tensor:
        if self.same:  # no two keys alike: nothing to tie
            return queries @ self.keys.T
        return (queries @ self.unique.T)[:, self.inverse]
