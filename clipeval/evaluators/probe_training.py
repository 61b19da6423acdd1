"""Linear probes on frozen image features: the CLIP paper's protocol, and few-shot sampling.

Multinomial logistic regression (scikit-learn, L-BFGS, up to 1,000 iterations) with the L2
strength chosen on held-out data by a coarse-to-fine search over a log-spaced range
(C = 10^-6 .. 10^6 by decades, then eight steps across the decade on either side of the
best), and refitted on all the training data at the chosen C.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

COARSE = np.logspace(-6, 6, 13)
MAX_ITER = 1000


def fit(x: np.ndarray, y: np.ndarray, c: float) -> LogisticRegression:
    """L-BFGS multinomial logistic regression at inverse L2 strength ``c``."""
    model = LogisticRegression(C=c, max_iter=MAX_ITER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x, y)


def accuracy(model: LogisticRegression, x: np.ndarray, y: np.ndarray) -> float:
    return float((model.predict(x) == y).mean())


def search_c(x_train, y_train, x_val, y_val, grid: Sequence[float] = COARSE) -> float:
    """Coarse-to-fine search for the C with the best validation accuracy (ties: stronger regularisation)."""

    def best(candidates):
        scores = [accuracy(fit(x_train, y_train, c), x_val, y_val) for c in candidates]
        return candidates[int(np.argmax(scores))]

    coarse = best(list(grid))
    return best(list(coarse * np.logspace(-1, 1, 9)))


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices, ``fraction`` of each class (at least one, leaving at least one) to val."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = min(max(1, round(fraction * len(idx))), len(idx) - 1) if len(idx) > 1 else 0
        val += idx[:n_val].tolist()
        train += idx[n_val:].tolist()
    return np.array(sorted(train)), np.array(sorted(val))


def kshot(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Exactly ``k`` indices per class present in ``y``, drawn without replacement, the same for the same seed.

    Raises ValueError when a class has fewer than ``k`` examples (see :func:`too_small`).
    """
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) < k:
            raise ValueError(f"class {c} has {len(idx)} examples, fewer than k={k}")
        picks += rng.choice(idx, size=k, replace=False).tolist()
    return np.array(sorted(picks))


def too_small(y: np.ndarray, k: int) -> dict[int, int]:
    """{class: its number of examples} for each class present in ``y`` with fewer than ``k`` examples."""
    classes, counts = np.unique(y, return_counts=True)
    return {int(c): int(n) for c, n in zip(classes, counts, strict=True) if n < k}


@dataclass(frozen=True)
class ProbeFit:
    model: LogisticRegression
    c: float

    @property
    def converged(self) -> bool:
        """Whether L-BFGS stopped before MAX_ITER (the CLIP paper's 1,000); the C search's fits are not checked."""
        return bool(np.max(self.model.n_iter_) < MAX_ITER)


def train_probe(x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int) -> ProbeFit:
    """Choose C on a validation split carved from (x, y) only, then refit on all of (x, y)."""
    train, val = stratified_split(y, val_fraction, seed)
    if len(val) == 0 or len(np.unique(y[train])) < len(np.unique(y)):
        c = 1.0  # one example per class: nothing to validate on; scikit-learn's default strength
    else:
        c = search_c(x[train], y[train], x[val], y[val])
    return ProbeFit(fit(x, y, c), c)


def matching_k(ks: Sequence[int], means: Sequence[float], target: float) -> float | None:
    """The k at which the mean accuracy reaches ``target``, interpolated on log2(k); None if never."""
    ks, means = np.asarray(ks, float), np.asarray(means, float)
    if means[0] >= target:
        return float(ks[0])
    for i in range(1, len(ks)):
        if means[i] >= target:
            t = (target - means[i - 1]) / (means[i] - means[i - 1])
            return float(2 ** (np.log2(ks[i - 1]) + t * (np.log2(ks[i]) - np.log2(ks[i - 1]))))
    return None
