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
