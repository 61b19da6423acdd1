"""Linear probe and few-shot: the protocol, the sampler, and agreement with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from array_context import ArrayContext
from sklearn.linear_model import LogisticRegression

from clipeval.evaluators.linear_probe import FewShot, LinearProbe
from clipeval.evaluators.probe_training import kshot, matching_k, stratified_split, train_probe
from clipeval.report.figures import record_figures
from clipeval.results.metrics import clopper_pearson


def blobs(n_per_class: int, classes: int, dim: int, spread: float, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 3
    y = np.repeat(np.arange(classes), n_per_class)
    return centres[y] + rng.normal(scale=spread, size=(len(y), dim)), y


def test_separable_features_are_learned_and_noise_stays_at_chance():
    x, y = blobs(60, 5, 16, 0.3, seed=0)
    xt, yt = blobs(40, 5, 16, 0.3, seed=0)  # same centres (same seed), fresh noise below
    xt = xt + np.random.default_rng(9).normal(scale=0.3, size=xt.shape)
    ctx = ArrayContext({"train": (x, y), "test": (xt, yt)})
    top1 = {r.dataset: r for r in LinearProbe("train", ["test"]).evaluate(ctx) if r.metric == "top1"}
    assert top1["test"].params == {"probe": "linear", "train": "train"}
    assert top1["test"].value >= 0.99
    rng = np.random.default_rng(1)
    noise = {
        "train": (rng.normal(size=(300, 16)), rng.integers(0, 5, 300)),
        "test": (rng.normal(size=(1000, 16)), rng.integers(0, 5, 1000)),
    }
    record = next(r for r in LinearProbe("train", ["test"]).evaluate(ArrayContext(noise)) if r.metric == "top1")
    lo, hi = clopper_pearson(200, 1000, confidence=0.999)
    assert lo <= record.value <= hi  # chance is 1/5


def test_kshot_sampler_is_exact_deterministic_and_seeded():
    y = np.repeat(np.arange(4), 30)
    for k in (1, 2, 8):
        idx = kshot(y, k, seed=3)
        assert np.bincount(y[idx]).tolist() == [k] * 4
        assert np.array_equal(idx, kshot(y, k, seed=3))
    assert not np.array_equal(kshot(y, 8, seed=0), kshot(y, 8, seed=1))
    with pytest.raises(ValueError, match="fewer than k"):
        kshot(y, 31, seed=0)


def test_validation_never_leaves_the_kshot_pool():
    y = np.repeat(np.arange(4), 30)
    pool = kshot(y, 8, seed=0)
    train, val = stratified_split(y[pool], 0.25, seed=0)
    assert set(pool[train]) | set(pool[val]) == set(pool) and not set(pool[train]) & set(pool[val])
    assert np.bincount(y[pool][val]).tolist() == [2] * 4
    assert len(stratified_split(y[kshot(y, 1, 0)], 0.25, 0)[1]) == 0  # one shot: nothing to hold out


def test_probe_equals_scikit_learn_at_the_same_c():
    x, y = blobs(40, 4, 8, 2.0, seed=2)
    xt, yt = blobs(30, 4, 8, 2.0, seed=2)
    probe = train_probe(x, y, 0.2, seed=0)
    by_hand = LogisticRegression(C=probe.c, max_iter=1000).fit(x, y)
    assert np.array_equal(probe.model.predict(xt), by_hand.predict(xt))
    assert np.allclose(probe.model.coef_, by_hand.coef_)


def test_few_shot_records_mean_std_and_the_matching_k(tmp_path):
    x, y = blobs(40, 4, 8, 1.5, seed=4)
    xt, yt = blobs(50, 4, 8, 1.5, seed=4)
    ctx = ArrayContext({"train": (x, y), "test": (xt, yt)}, prototypes_from="train")
    records = FewShot("train", "test", ks=[1, 2, 4], seeds=3).evaluate(ctx)
    top1 = [r for r in records if r.metric == "top1"]
    assert [(r.dataset, r.params["k"]) for r in top1] == [("test", 0), ("test", 1), ("test", 2), ("test", 4)]
    assert all(r.params["probe"] == "few-shot" and r.params["train"] == "train" for r in top1)
    shots = top1[1:]  # k = 0 is the zero-shot classifier on the same test set
    assert all(r.std is not None and r.n == 200 for r in shots)
    # the seeds score the same 200 samples: the interval is for the mean on n = 200, not 600
    assert all(r.ci == clopper_pearson(round(r.value * 200), 200) for r in shots)
    # the figure is drawn from the records alone, once the run has them (clipeval.report.figures)
    (figure,) = record_figures([r.with_task("probe") for r in records], "model", tmp_path)
    assert figure == tmp_path / "few_shot.png" and figure.stat().st_size > 10_000


def test_matching_k_interpolates_on_log2():
    assert matching_k([1, 2, 4, 8], [0.2, 0.4, 0.6, 0.8], 0.5) == pytest.approx(2 * 2**0.5)
    assert matching_k([1, 2], [0.9, 0.95], 0.5) == 1
    assert matching_k([1, 2], [0.1, 0.2], 0.5) is None
