"""Metrics of per-sample scores: calibration of confidences, detection of anomalies, and their bootstrap intervals.

Calibration (Guo et al. 2017, "On Calibration of Modern Neural Networks", section 2): the expected
calibration error of confidences p_i (the largest softmax probability) and right/wrong outcomes
c_i puts the samples into M equal-width bins of confidence, ((m-1)/M, m/M] (a confidence of 0 in
the first; the edges are ``numpy.linspace(0, 1, M + 1)``), and sums, over the bins B_m, |B_m| / n * |acc(B_m) - conf(B_m)|, with acc the share of
right samples in the bin and conf their mean confidence. M = 15 by default, as Guo et al. (and
the torchmetrics, netcal and CLIP-robustness literature after them) use. Empty bins count nothing.

Detection (Hendrycks et al. 2021, "Natural Adversarial Examples", ImageNet-O; the code of
hendrycks/natural-adv-examples, ``calibration_tools.get_measures``): the anomalies are the
positive class and the score is the anomaly score (there: minus the maximum softmax
probability). AUPR is average precision, sum over thresholds of (R_k - R_{k-1}) P_k, as
``sklearn.metrics.average_precision_score`` computes it (no interpolation); AUROC the area under
the ROC curve with ties counted one half; FPR at 95% TPR as that code's ``fpr_and_fdr_at_recall``: the
curve of (recall, false positives) over the distinct thresholds is cut at the first (highest) threshold
that reaches full recall (its ``last_ind``, as sklearn's ``precision_recall_curve``), read from there
towards the high thresholds with the point (recall 1, no false positive) appended, and the first point
whose recall is closest to 0.95 in that order gives the false-positive rate (its false positives over
all negatives).

Intervals: a seeded percentile bootstrap, stratified when the metric has groups whose sizes are
fixed by design (in-distribution and anomalies): each resample draws n_g samples with replacement
within each group g. A percentile interval of a biased statistic (ECE is biased upwards) need not
contain the estimate; the interval is then widened to reach it, so that a record always lies in
its own interval (clipeval.results.validate), and the method's name says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from clipeval.results.metrics import CONFIDENCE

#: how many bins the expected calibration error uses unless told otherwise (Guo et al. 2017)
ECE_BINS = 15
#: bootstrap resamples and seed of every interval here
RESAMPLES = 1000
SEED = 0


def bootstrap_method(resamples: int = RESAMPLES, seed: int = SEED, stratified: bool = False) -> str:
    """The ``ci_method`` of a record whose interval :func:`bootstrap_interval` drew."""
    how = f"bootstrap-percentile ({resamples} resamples, seed {seed}; widened to include the estimate)"
    return f"stratified {how}" if stratified else how


BOOTSTRAP = bootstrap_method()


def calibration_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS):
    """(count, mean confidence, accuracy) of each of ``bins`` equal-width bins ((m-1)/M, m/M] of confidence;
    mean confidence and accuracy are NaN in an empty bin."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)  # c in (edge[m], edge[m+1]]
    count = np.bincount(index, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / count
        accuracy = np.bincount(index, weights=correct, minlength=bins) / count
    return count.astype(np.int64), mean_confidence, accuracy


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Guo et al.'s ECE (module docstring): sum over bins of |B_m| / n * |acc(B_m) - conf(B_m)|."""
    count, conf, acc = calibration_bins(confidence, correct, bins)
    used = count > 0
    return float(np.sum(count[used] / count.sum() * np.abs(acc[used] - conf[used])))


def _ranked(labels: np.ndarray, scores: np.ndarray):
    """Cumulative true and false positives at each distinct score, from the highest score down."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    s, y = np.asarray(scores, dtype=np.float64)[order], np.asarray(labels, dtype=bool)[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last sample of each run of equal scores
    tps = np.cumsum(y)[last]
    return tps, last + 1 - tps


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUPR as average precision, sum_k (R_k - R_{k-1}) P_k over the distinct thresholds (positives: ``labels``)."""
    tps, fps = _ranked(labels, scores)
    precision, recall = tps / (tps + fps), tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a positive scores above a negative, ties counting one half."""
    tps, fps = _ranked(labels, scores)
    tpr, fpr = np.r_[0.0, tps / tps[-1]], np.r_[0.0, fps / fps[-1]]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def fpr_at_recall(labels: np.ndarray, scores: np.ndarray, recall: float = 0.95) -> float:
    """The false-positive rate at the threshold whose true-positive rate is closest to ``recall`` (module docstring)."""
    tps, fps = _ranked(labels, scores)
    full = int(np.searchsorted(tps, tps[-1]))  # the first threshold reaching full recall: the curve stops there
    tpr = np.r_[tps[: full + 1][::-1] / tps[-1], 1.0]  # from that threshold up, then the reference's point (1, 0)
    fp = np.r_[fps[: full + 1][::-1], 0]
    cutoff = int(np.argmin(np.abs(tpr - recall)))  # the first of equally close ones in this order
    return float(fp[cutoff] / fps[-1])


def bootstrap_interval(
    statistic: Callable[[np.ndarray], float],
    estimate: float,
    groups: Sequence[np.ndarray] | int,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """A seeded percentile interval of ``statistic(indices)``, resampling indices with replacement.

    ``groups``: the sample count n (one group), or the indices of each group, resampled within it (a
    stratified bootstrap). Widened to include ``estimate`` (module docstring). Equal inputs, equal interval.
    """
    strata = [np.arange(groups)] if isinstance(groups, int) else [np.asarray(g) for g in groups]
    rng = np.random.default_rng(seed)
    values = np.empty(resamples)
    for b in range(resamples):
        draw = np.concatenate([g[rng.integers(0, len(g), len(g))] for g in strata])
        values[b] = statistic(draw)
    alpha = 1.0 - confidence
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(min(lo, estimate)), float(max(hi, estimate))
