"""How a task is evaluated; one small module per protocol."""

from __future__ import annotations

from collections.abc import Sequence

from clipeval.contracts import EvaluationContext


def present_datasets(chosen: Sequence[str] | None, ctx: EvaluationContext) -> list[str]:
    """The datasets an evaluator scores: those it was given (all of the task's by default), less the optional ones
    whose data is absent (the task has said so)."""
    available = ctx.datasets()
    return [d for d in (chosen or available) if d in available]
