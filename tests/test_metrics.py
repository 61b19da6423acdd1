"""Metrics against independent calculations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from clipeval.results.metrics import classification_records, clopper_pearson, mean_recall_interval


@pytest.mark.parametrize(("k", "n"), [(0, 10), (10, 10), (3, 10), (712, 1000), (1, 7)])
def test_clopper_pearson_matches_scipy_exact_binomial_interval(k, n):
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert clopper_pearson(k, n) == pytest.approx((expected.low, expected.high), abs=1e-10)


def test_clopper_pearson_closed_forms_at_the_edges():
    # With no successes the upper bound solves (1 - p)^n = alpha / 2.
    assert clopper_pearson(0, 10) == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)))
    assert clopper_pearson(10, 10) == pytest.approx((0.025 ** (1 / 10), 1.0))


def test_classification_records_by_hand():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 4, 5, 5])
    # top-5 rankings: first column is the prediction
    topk = torch.tensor(
        [
            [0, 1, 2, 3, 4],  # right
            [1, 0, 2, 3, 4],  # wrong, in top-5
            [1, 2, 3, 4, 5],  # wrong, not in top-5
            [1, 0, 2, 3, 4],  # right
            [0, 2, 3, 4, 5],  # wrong, not in top-5
            [2, 0, 1, 3, 4],  # right
            [3, 0, 1, 2, 4],  # right
            [0, 1, 2, 3, 5],  # wrong, not in top-5
            [5, 0, 1, 2, 3],  # right
            [0, 5, 1, 2, 3],  # wrong, in top-5
        ]
    )
    records = {r.metric: r for r in classification_records("d", topk, labels, num_classes=6)}
    assert records["top1"].value == pytest.approx(5 / 10)
    assert records["top5"].value == pytest.approx(7 / 10)
    recall = np.mean([1 / 3, 1 / 2, 1, 1, 0, 1 / 2])
    assert records["mean_per_class_recall"].value == pytest.approx(recall)
    assert all(r.n == 10 for r in records.values())
    assert records["top1"].ci == pytest.approx(clopper_pearson(5, 10))


def test_no_top5_with_five_classes_or_fewer():
    records = classification_records("d", torch.tensor([[0, 1], [1, 0]]), torch.tensor([0, 0]), num_classes=2)
    assert [r.metric for r in records] == ["top1", "mean_per_class_recall"]
    # with exactly 5 classes every top-5 holds every label: a top-5 of 1.0 would say nothing
    topk = torch.tensor([[4, 3, 2, 1, 0], [0, 1, 2, 3, 4]])
    records = classification_records("d", topk, torch.tensor([0, 1]), num_classes=5)
    assert [r.metric for r in records] == ["top1", "mean_per_class_recall"]


def test_mean_recall_interval_covers_the_estimate_and_narrows_with_more_data():
    correct, counts = np.array([7, 3]), np.array([10, 10])
    lo, hi = mean_recall_interval(correct, counts)
    assert lo < 0.5 < hi
    lo_big, hi_big = mean_recall_interval(correct * 100, counts * 100)
    assert hi_big - lo_big < (hi - lo) / 5
    # Its width agrees with a stratified bootstrap of the same counts, computed independently.
    rng = np.random.default_rng(0)
    boot = rng.binomial([1000, 1000], [0.7, 0.3], size=(20000, 2)).mean(axis=1) / 1000
    assert hi_big - lo_big == pytest.approx(np.subtract(*np.quantile(boot, [0.975, 0.025])), rel=0.05)


def test_mean_recall_interval_does_not_collapse_when_classes_are_all_or_nothing():
    lo, hi = mean_recall_interval(np.array([0, 30, 0]), np.array([30, 30, 30]))
    assert lo < 1 / 3 < hi and hi - lo > 0.02
    assert mean_recall_interval(np.array([0, 0]), np.array([50, 50]))[0] == 0.0


def test_mean_recall_interval_is_deterministic():
    assert mean_recall_interval(np.array([5, 6]), np.array([9, 9])) == mean_recall_interval(
        np.array([5, 6]), np.array([9, 9])
    )
