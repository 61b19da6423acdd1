"""Metrics that are not a mean of per-sample outcomes but a function of per-sample sums: the worst group's top-k and
macro F1 (:mod:`clipeval.evaluators.groups`).

Each is f(Σ_s v_s): every sample contributes a vector v_s (its hit in its group's slot; its true positive in its
class's slot and its prediction in the predicted class's slot), and the metric is a function of the total. Written
so, the metric can be recomputed from a results document's per-sample data (:meth:`Samples.value`), and a gate can
swap two runs' contributions sample by sample and recompute it in one matrix product per batch of swaps
(:func:`clipeval.check.stats.paired_statistic_test`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from clipeval.results.samples import Samples


@dataclass(frozen=True)
class SumStatistic:
    """``vectors(samples, outcome)``: ([n, G] float per-sample contributions, [G] side-independent totals such as
    group sizes), None when the samples lack what it needs; ``finish(totals [r, G], fixed [G])``: [r] the metric of
    each row of totals. ``part``: (totals [G], fixed [G]) -> the record's n when it is a part of the samples (the
    worst group's size); None: every sample."""

    vectors: Callable[[Samples, str | None], tuple[np.ndarray, np.ndarray] | None]
    finish: Callable[[np.ndarray, np.ndarray], np.ndarray]
    part: Callable[[np.ndarray, np.ndarray], int] | None = None

    def value(self, samples: Samples, outcome: str | None) -> float:
        v, fixed = self.vectors(samples, outcome)
        return float(self.finish(v.sum(axis=0)[None], fixed)[0])

    def n(self, samples: Samples, outcome: str | None) -> int:
        """The record's n that the samples give: all of them, or the part the metric is of."""
        if self.part is None:
            return samples.n
        v, fixed = self.vectors(samples, outcome)
        return self.part(v.sum(axis=0), fixed)


def _one_hot(index: np.ndarray, size: int, weight: np.ndarray | None = None) -> np.ndarray:
    out = np.zeros((len(index), size))
    out[np.arange(len(index)), index] = 1.0 if weight is None else weight
    return out


def _group_vectors(samples: Samples, outcome: str | None) -> tuple[np.ndarray, np.ndarray] | None:
    hits = samples.outcome("", outcome) if outcome is not None else None
    if hits is None or samples.labels is None:
        return None
    groups, index = np.unique(samples.labels, return_inverse=True)
    return _one_hot(index, len(groups), hits.astype(np.float64)), np.bincount(index, minlength=len(groups))


def _worst_group(totals: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    return (totals / sizes).min(axis=1)


def _worst_group_size(totals: np.ndarray, sizes: np.ndarray) -> int:
    """The size of the worst group (on a tie, the smallest group value's, as the evaluator picks it)."""
    return int(sizes[int(np.argmin(totals / sizes))])


def _f1_vectors(samples: Samples, outcome: str | None) -> tuple[np.ndarray, np.ndarray] | None:
    if samples.topk is None or samples.labels is None:
        return None
    pred, labels = samples.topk[:, 0], samples.labels
    classes = np.unique(labels)
    index = np.searchsorted(classes, labels)
    tp = _one_hot(index, len(classes), (pred == labels).astype(np.float64))
    known = np.isin(pred, classes)  # a prediction of a class absent from the labels is no class's TP + FP
    predicted = _one_hot(np.searchsorted(classes, np.where(known, pred, classes[0])), len(classes), known * 1.0)
    return np.hstack([tp, predicted]), np.bincount(index, minlength=len(classes))


def _macro_f1(totals: np.ndarray, support: np.ndarray) -> np.ndarray:
    c = len(support)
    tp, predicted = totals[:, :c], totals[:, c:]
    return (2 * tp / (support + predicted)).mean(axis=1)


#: the metrics computed from per-sample sums, by name
STATISTICS: dict[str, SumStatistic] = {
    "worst_group_top1": SumStatistic(_group_vectors, _worst_group, _worst_group_size),
    "worst_group_top5": SumStatistic(_group_vectors, _worst_group, _worst_group_size),
    "macro_f1": SumStatistic(_f1_vectors, _macro_f1),
}
