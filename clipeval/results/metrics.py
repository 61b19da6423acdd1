"""Classification metrics with their uncertainty.

Accuracies are binomial proportions and get exact Clopper–Pearson intervals, as in
imagenet-testbed. Mean per-class recall is an average of C independent per-class
proportions; its interval is the normal approximation around the estimate, with each class's
variance taken at its Jeffreys-smoothed proportion (k_c + 1/2) / (n_c + 1). The smoothing
keeps a class that is all right or all wrong from counting as certain, so the interval never
collapses to a point the way a bootstrap does for a model that always predicts one class.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from scipy.special import betaincinv, ndtri  # beta.ppf and norm.ppf without importing scipy.stats (0.5 s)

from clipeval.results.record import ParamValue, Record

CONFIDENCE = 0.95


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact two-sided interval for a binomial proportion k / n."""
    if n <= 0:
        raise ValueError("an interval needs at least one sample")
    alpha = 1.0 - confidence
    lo = 0.0 if k == 0 else float(betaincinv(k, n - k + 1, alpha / 2))
    hi = 1.0 if k == n else float(betaincinv(k + 1, n - k, 1 - alpha / 2))
    return lo, hi


def clustered_variance(influence: np.ndarray) -> float:
    """The variance of an estimate from each cluster's influence on it (sum of squares, times C / (C - 1))."""
    c = len(influence)
    return float(np.sum(influence**2) * c / (c - 1)) if c > 1 else 0.0


def korn_graubard(p: float, variance: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Clopper–Pearson at the effective sample size n* = p(1 - p) / ``variance`` (at most ``n``, at least 1; ``n``
    when the variance is 0 or p is 0 or 1), with p·n* "successes" (Korn & Graubard 1998)."""
    n_eff = float(n) if variance <= 0 or p <= 0 or p >= 1 else min(float(n), max(1.0, p * (1 - p) / variance))
    x, alpha = p * n_eff, 1.0 - confidence
    lo = 0.0 if x <= 0 else float(betaincinv(x, n_eff - x + 1, alpha / 2))
    hi = 1.0 if x >= n_eff else float(betaincinv(x + 1, n_eff - x, 1 - alpha / 2))
    return min(lo, p), max(hi, p)


def per_class_recall(pred: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(correct count, sample count) for each class present in ``labels``."""
    classes, counts = np.unique(labels, return_counts=True)
    correct = np.array([np.sum(pred[labels == c] == c) for c in classes])
    return correct, counts


def mean_recall_interval(
    correct: np.ndarray, counts: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    estimate = float(np.mean(correct / counts))
    smoothed = (correct + 0.5) / (counts + 1.0)
    se = float(np.sqrt(np.sum(smoothed * (1 - smoothed) / counts))) / len(counts)
    half = float(ndtri(0.5 + confidence / 2)) * se
    return max(0.0, estimate - half), min(1.0, estimate + half)


def classification_records(
    dataset: str,
    topk: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    params: Mapping[str, ParamValue] | None = None,
    samples: str | None = None,
) -> list[Record]:
    """top1, top5 (with more than 5 classes: with 5 or fewer it is 1 by construction) and mean per-class recall.

    ``topk``: [N, k] ranked class indices; ``labels``: [N]; ``params`` and ``samples`` go into every record.
    """
    extra = {"params": dict(params or {}), "samples": samples}
    topk_np, labels_np = topk.cpu().numpy(), labels.cpu().numpy()
    n = len(labels_np)
    hits = topk_np == labels_np[:, None]
    records = []
    for k in (1, 5):
        if k > 1 and num_classes <= k:
            continue
        correct = int(hits[:, :k].any(axis=1).sum())
        records.append(Record(dataset, f"top{k}", correct / n, n, clopper_pearson(correct, n), **extra))
    correct_c, counts_c = per_class_recall(topk_np[:, 0], labels_np)
    records.append(
        Record(
            dataset,
            "mean_per_class_recall",
            float(np.mean(correct_c / counts_c)),
            n,
            mean_recall_interval(correct_c, counts_c),
            "normal-smoothed",
            **extra,
        )
    )
    return records
