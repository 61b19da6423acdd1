"""The paired tests of the regression gate, and what they can decide on m discordant samples.

- :func:`mcnemar_exact`: top-1, top-5 and any per-sample right/wrong outcome (an attack's);
- :func:`paired_permutation_test`: class-weighted metrics (mean per-class recall), swapping each
  sample's pair of outcomes so that every sample stays in its class;
- :func:`smallest_p` and :func:`discordant_needed`: the smallest p either test can give with m
  discordant samples, and the m a decision at a significance level needs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
from scipy.stats import binomtest

PERMUTATION_SEED = 0
EXACT_UP_TO = 16  # discordant samples; beyond this the permutation test draws random swaps


def mcnemar_exact(ref_correct: np.ndarray, cand_correct: np.ndarray) -> tuple[int, int, float]:
    """(b, c, p) of two [n] bool arrays: b = right before and wrong now, c = the reverse; p of the exact
    two-sided test (the binomial test of min(b, c) in b + c draws at 1/2; 1 with no discordant sample)."""
    b = int(np.sum(ref_correct & ~cand_correct))
    c = int(np.sum(~ref_correct & cand_correct))
    p = 1.0 if b + c == 0 else float(binomtest(min(b, c), b + c, 0.5).pvalue)
    return b, c, p


def paired_permutation_test(
    ref: np.ndarray,
    cand: np.ndarray,
    weights: np.ndarray,
    resamples: int = 20000,
    seed: int = PERMUTATION_SEED,
    rounding: float = 0.0,
) -> tuple[float, int, str]:
    """Two-sided paired permutation (sign-flip) test of T = sum(weights * (cand - ref)).

    ``ref``, ``cand``: [n] per-sample outcomes (0/1 or real); ``weights``: [n]. Under the null
    hypothesis the two outcomes of a sample are exchangeable, so T* = sum(w * s * (cand - ref))
    with independent signs s = ±1. Returns (p, discordant samples, "exact" or "random").
    Exact over all 2**m sign patterns when m <= EXACT_UP_TO; otherwise ``resamples`` draws
    with ``seed`` and p = (1 + hits) / (1 + resamples): samples with equal |w * d| are pooled,
    so a draw is one binomial per pool.
    """
    contrib = np.asarray(weights, float) * (np.asarray(cand, float) - np.asarray(ref, float))
    contrib = contrib[contrib != 0]
    observed = abs(float(contrib.sum()))
    # float sums of equal values differ in ulps; ``rounding``: how far the statistic may be off because the outcomes
    # were rounded before they reached here (float32 scores), so that patterns that tie exactly are counted as ties
    slack = max(1e-9 * max(observed, float(np.abs(contrib).sum()), 1e-300), rounding)
    m = len(contrib)
    if m == 0:
        return 1.0, 0, "exact"
    if m <= EXACT_UP_TO:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=m)))
        stats = np.abs(signs @ contrib)
        return float(np.mean(stats >= observed - slack)), m, "exact"
    values, counts = np.unique(np.abs(contrib), return_counts=True)
    rng = np.random.default_rng(seed)
    hits, done = 0, 0
    while done < resamples:
        size = min(resamples - done, max(1, 2_000_000 // len(values)))
        heads = rng.binomial(counts[None, :], 0.5, size=(size, len(values)))
        stats = np.abs((2 * heads - counts[None, :]) @ values)
        hits += int(np.sum(stats >= observed - slack))
        done += size
    return (1 + hits) / (1 + resamples), m, "random"


#: how far a mean of per-sample scores in [0, 1] may be off for their float32 rounding (each score within 2**-25;
#: a difference of two within 2**-24; a weighted mean of differences too), with a margin of 4: 1 - f32(1/3) and
#: f32(2/3) differ by 3e-8, so without it tied sign patterns fell short of the observed sum and p came out too small
SCORE_ROUNDING = 4 * 2.0**-24


def paired_score_test(ref: np.ndarray, cand: np.ndarray, resamples: int = 20000) -> tuple[float, int, str]:
    """:func:`paired_permutation_test` of the mean of per-sample scores in [0, 1] kept as float32 (a Jaccard index
    per instance), every sample weighted 1 / n; sign patterns within :data:`SCORE_ROUNDING` of the observed
    change count as ties (a near-tie closer than that counts too: p errs larger, never smaller)."""
    uniform = np.full(len(ref), 1.0 / len(ref))
    return paired_permutation_test(ref, cand, uniform, resamples, rounding=SCORE_ROUNDING)


def paired_statistic_test(
    ref: np.ndarray,
    cand: np.ndarray,
    finish: Callable[[np.ndarray], np.ndarray],
    resamples: int = 20000,
    seed: int = PERMUTATION_SEED,
) -> tuple[float, int, str]:
    """Two-sided paired permutation test of a metric f(Σ_s v_s) of per-sample contribution vectors
    (:mod:`clipeval.results.statistics`: the worst group's top-k, macro F1).

    ``ref``, ``cand``: [n, G] each sample's contributions under the two runs; ``finish``: [r, G] totals -> [r]
    metric. Under the null hypothesis a sample's two contributions are exchangeable: each swap pattern gives
    T* = f(totals of the candidate's side) - f(the reference's side). Only the m samples whose contributions differ
    can change T*. Exact over all 2**m patterns when m <= EXACT_UP_TO, else ``resamples`` random patterns with
    ``seed`` and p = (1 + hits) / (1 + resamples). Returns (p, m, "exact" or "random").
    """
    ref, cand = np.asarray(ref, float), np.asarray(cand, float)
    differ = np.any(ref != cand, axis=1)
    m = int(differ.sum())
    if m == 0:
        return 1.0, 0, "exact"
    base = ref[~differ].sum(axis=0)
    a, b = ref[differ], cand[differ]
    side_a, side_b, swing = base + a.sum(axis=0), base + b.sum(axis=0), b - a
    observed = abs(float(finish(side_b[None])[0] - finish(side_a[None])[0]))
    slack = 1e-9 * max(observed, 1.0)

    def hits(masks: np.ndarray) -> int:  # masks [r, m]: 1 where the sample's two contributions are swapped
        delta = masks @ swing
        stats = np.abs(finish(side_b - delta) - finish(side_a + delta))
        return int(np.sum(stats >= observed - slack))

    chunk = max(1, 2_000_000 // max(1, m * ref.shape[1]))
    if m <= EXACT_UP_TO:
        patterns = np.array(list(itertools.product((0.0, 1.0), repeat=m)))
        return sum(hits(patterns[i : i + chunk]) for i in range(0, len(patterns), chunk)) / len(patterns), m, "exact"
    rng = np.random.default_rng(seed)
    found = sum(hits(rng.integers(0, 2, (min(chunk, resamples - i), m)).astype(float))
                for i in range(0, resamples, chunk))  # fmt: skip
    return (1 + found) / (1 + resamples), m, "random"


def smallest_p(discordant: int) -> float:
    """The smallest two-sided p McNemar's exact test, or the exact paired permutation test, can give with
    ``discordant`` samples: every one in the same direction, 2 * 0.5**m (1 with none)."""
    return min(1.0, 2.0 * 0.5**discordant)


def discordant_needed(alpha: float) -> int:
    """The fewest discordant samples whose most extreme split has p < ``alpha``."""
    return max(1, math.floor(math.log2(2.0 / alpha)) + 1)
