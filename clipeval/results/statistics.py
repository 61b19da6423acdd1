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
    each row of totals. ``all_samples``: the record's n is every sample (else a part, as the worst group's)."""

    vectors: Callable[[Samples, str | None], tuple[np.ndarray, np.ndarray] | None]
    finish: Callable[[np.ndarray, np.ndarray], np.ndarray]
    all_samples: bool = True

    def value(self, samples: Samples, outcome: str | None) -> float:
        v, fixed = self.vectors(samples, outcome)
        return float(self.finish(v.sum(axis=0)[None], fixed)[0])


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
    "worst_group_top1": SumStatistic(_group_vectors, _worst_group, all_samples=False),
    "worst_group_top5": SumStatistic(_group_vectors, _worst_group, all_samples=False),
    "macro_f1": SumStatistic(_f1_vectors, _macro_f1),
}
