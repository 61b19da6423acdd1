"""Effective robustness (Taori et al. 2020): shift accuracy beyond what ID accuracy predicts.

Over a set of baseline models, fit logit(shift accuracy) = slope * logit(ID accuracy) +
intercept by least squares. A model's effective robustness on the shift is its shift
accuracy minus the fit's prediction at its ID accuracy. Accuracies are fractions here;
reports show percentage points.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from clipeval.errors import ClipevalError

log = logging.getLogger(__name__)


def logit(p: np.ndarray | float) -> np.ndarray:
    """ln(p / (1 - p)); -inf at 0 and +inf at 1, without a warning (callers decide what to do)."""
    p = np.asarray(p, dtype=float)
    with np.errstate(divide="ignore"):
        return np.log(p / (1 - p))


def inverse_logit(z: np.ndarray | float) -> np.ndarray:
    return 1 / (1 + np.exp(-np.asarray(z, dtype=float)))


@dataclass(frozen=True)
class LogitFit:
    slope: float
    intercept: float
    n_models: int

    def predict(self, id_accuracy: float | np.ndarray) -> np.ndarray:
        """Shift accuracy the baselines predict at the given ID accuracy."""
        return inverse_logit(self.slope * logit(id_accuracy) + self.intercept)


def fit_baselines(id_acc: np.ndarray, shift_acc: np.ndarray, names: list[str] | None = None) -> LogitFit:
    """Least-squares line in logit space; models at exactly 0 or 1 have no logit and are left out."""
    id_acc, shift_acc = np.asarray(id_acc, float), np.asarray(shift_acc, float)
    finite = (id_acc > 0) & (id_acc < 1) & (shift_acc > 0) & (shift_acc < 1)
    if not finite.all():
        dropped = [names[i] if names else str(i) for i in np.flatnonzero(~finite)]
        log.warning(
            "Left out of the baseline fit (accuracy of exactly 0 or 100%%, no logit): %s",
            ", ".join(dropped),
        )
    if finite.sum() < 2:
        raise ClipevalError(
            f"A baseline fit needs at least two models with accuracies strictly between 0 and 1; "
            f"{int(finite.sum())} of the {len(finite)} given have them. Check the baseline table's columns and "
            "minimum in-distribution accuracy (min_x) for this shift."
        )
    slope, intercept = np.polyfit(logit(id_acc[finite]), logit(shift_acc[finite]), deg=1)
    return LogitFit(float(slope), float(intercept), int(finite.sum()))


def effective_robustness(fit: LogitFit, id_accuracy: float, shift_accuracy: float) -> float:
    return float(shift_accuracy - fit.predict(id_accuracy))


BOOTSTRAP_RESAMPLES = 1000


def bootstrap_fits(
    id_acc: np.ndarray, shift_acc: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> np.ndarray:
    """[resamples, 2] (slope, intercept) of the fit on baseline models drawn with replacement."""
    x, y = logit(id_acc), logit(shift_acc)  # 0 and 1 have no finite logit; fit_baselines has said so
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    rng = np.random.default_rng(seed)
    draws = []
    while len(draws) < resamples:
        idx = rng.integers(0, len(x), len(x))
        if np.ptp(x[idx]) == 0:  # a resample of one distinct model has no line; draw again
            continue
        draws.append(idx)
    # every resample's least-squares line at once, in closed form (np.polyfit's, to rounding, 50x faster: a suite
    # of 75 ImageNet-C settings fits 75,000 lines per report)
    xs, ys = x[np.array(draws)], y[np.array(draws)]
    dx, dy = xs - xs.mean(axis=1, keepdims=True), ys - ys.mean(axis=1, keepdims=True)
    slope = (dx * dy).sum(axis=1) / (dx * dx).sum(axis=1)
    return np.stack([slope, ys.mean(axis=1) - slope * xs.mean(axis=1)], axis=1)


def band(fits: np.ndarray, id_accuracy: np.ndarray | float, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile band of the bootstrap fits' predictions at the given ID accuracies."""
    z = logit(np.atleast_1d(id_accuracy))
    preds = inverse_logit(fits[:, :1] * z[None, :] + fits[:, 1:])
    alpha = 1 - confidence
    return np.quantile(preds, alpha / 2, axis=0), np.quantile(preds, 1 - alpha / 2, axis=0)
