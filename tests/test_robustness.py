"""Effective robustness against a hand computation."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from clipeval.errors import ClipevalError
from clipeval.report.logit_fit import bootstrap_fits, effective_robustness, fit_baselines, inverse_logit, logit


def test_logit_and_inverse_are_inverses():
    p = np.array([0.01, 0.3, 0.5, 0.97])
    assert inverse_logit(logit(p)) == pytest.approx(p)
    assert logit(0.5) == 0


def test_fit_recovers_a_known_logit_line_and_reads_off_er():
    id_acc = np.array([0.6, 0.7, 0.8, 0.9, 0.95])
    shift = inverse_logit(0.8 * logit(id_acc) - 1.0)
    fit = fit_baselines(id_acc, shift)
    assert (fit.slope, fit.intercept, fit.n_models) == (pytest.approx(0.8), pytest.approx(-1.0), 5)
    # a model at 85% ID with 60% on the shift: the line predicts 1 / (1 + exp(-(0.8 logit(.85) - 1)))
    expected_pred = 1 / (1 + np.exp(-(0.8 * np.log(0.85 / 0.15) - 1.0)))
    assert effective_robustness(fit, 0.85, 0.60) == pytest.approx(0.60 - expected_pred)


def test_least_squares_by_hand_on_noisy_points():
    x = np.array([0.55, 0.62, 0.7, 0.81, 0.9])
    y = np.array([0.3, 0.33, 0.45, 0.5, 0.66])
    lx, ly = np.log(x / (1 - x)), np.log(y / (1 - y))
    slope = ((lx - lx.mean()) * (ly - ly.mean())).sum() / ((lx - lx.mean()) ** 2).sum()
    fit = fit_baselines(x, y)
    assert fit.slope == pytest.approx(slope)
    assert fit.intercept == pytest.approx(ly.mean() - slope * lx.mean())


def test_accuracies_of_zero_or_one_are_left_out_with_a_warning(caplog):
    caplog.set_level(logging.WARNING)
    x = np.array([0.6, 0.7, 0.8, 1.0])
    y = np.array([0.3, 0.4, 0.5, 0.0])
    fit = fit_baselines(x, y, names=["a", "b", "c", "perfect"])
    assert fit.n_models == 3
    assert "perfect" in caplog.text
    with pytest.raises(ClipevalError, match="at least two"):
        fit_baselines(np.array([0.5, 1.0]), np.array([0.2, 0.3]))


def test_each_bootstrap_fit_is_the_least_squares_line_of_its_resample():
    """The resamples are drawn one by one with the seed (a resample of one distinct model drawn again), and each
    line equals np.polyfit's on that resample."""
    x = np.array([0.60, 0.62, 0.70, 0.75, 0.80, 0.85])
    y = np.array([0.40, 0.45, 0.50, 0.52, 0.61, 0.66])
    fits = bootstrap_fits(x, y, resamples=200, seed=3)
    rng = np.random.default_rng(3)
    lx, ly = logit(x), logit(y)
    expected = []
    while len(expected) < 200:
        idx = rng.integers(0, len(x), len(x))
        if len(set(idx.tolist())) > 1:
            expected.append(np.polyfit(lx[idx], ly[idx], deg=1))
    np.testing.assert_allclose(fits, np.array(expected), rtol=1e-10, atol=1e-12)
