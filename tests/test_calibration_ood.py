"""Calibration (ECE) and out-of-distribution detection (ImageNet-O's AUPR, AUROC, FPR at 95% recall): each metric
against an independent computation (plain loops, scikit-learn), their seeded bootstrap intervals, the evaluators on
feature arrays, and the per-sample scores that the reliability diagram is drawn from."""

from __future__ import annotations

import json
import types

import matplotlib
import numpy as np
import pytest
import torch
from array_context import ArrayContext
from test_figures import check_paper_rules, data_axes, errorbar_spans

from clipeval.errors import ClipevalError
from clipeval.evaluators.ood import OutOfDistribution, neg_log_msp
from clipeval.evaluators.zeroshot import ZeroShot
from clipeval.report import figures
from clipeval.results.metrics import clopper_pearson
from clipeval.results.samples import Samples
from clipeval.results.scores import (
    auroc,
    average_precision,
    bootstrap_interval,
    calibration_bins,
    expected_calibration_error,
    fpr_at_recall,
)

sk = pytest.importorskip("sklearn.metrics")


def ece_by_loop(confidence, correct, bins=15) -> float:
    """Guo et al. 2017, eq. (3), one sample at a time: bin m holds the confidences in (m/M, (m+1)/M] (0 in the first)."""
    edges = [m / bins for m in range(bins + 1)]
    total = 0.0
    for m in range(bins):
        members = [i for i, c in enumerate(confidence) if (edges[m] < c <= edges[m + 1]) or (m == 0 and c == edges[0])]
        if members:
            accuracy = sum(bool(correct[i]) for i in members) / len(members)
            mean_confidence = sum(float(confidence[i]) for i in members) / len(members)
            total += len(members) / len(confidence) * abs(accuracy - mean_confidence)
    return total


def over_confident(n=400, seed=0):
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.05, 1.0, n)
    correct = rng.uniform(size=n) < confidence**2  # right less often than it is confident
    return confidence, correct


@pytest.mark.parametrize("bins", [15, 10, 1])
def test_ece_equals_a_plain_loop_over_samples(bins):
    confidence, correct = over_confident()
    confidence[:5] = [0.0, 1.0, 1 / 15, 2 / 15, 0.5]  # the edges go to the lower bin, 0 to the first
    assert expected_calibration_error(confidence, correct, bins) == pytest.approx(
        ece_by_loop(confidence, correct, bins), abs=1e-12
    )


def test_ece_is_zero_when_accuracy_matches_confidence_in_every_bin_and_counts_bin_sizes():
    confidence = np.array([0.95] * 20 + [0.55] * 20)
    correct = np.array([True] * 19 + [False] + [True] * 11 + [False] * 9)
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.0, abs=1e-12)
    count, mean_conf, acc = calibration_bins(confidence, correct)
    assert count.sum() == 40 and np.isnan(acc[0]) and acc[14] == pytest.approx(0.95)


def anomaly_scores(n_in=300, n_out=60, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(n_in, bool), np.ones(n_out, bool)]
    scores = np.r_[rng.normal(0, 1, n_in), rng.normal(1, 1, n_out)]
    return labels, np.round(scores, 1) if ties else scores


def sklearn_fpr_at_95(labels, scores) -> float:
    fpr, tpr, _ = sk.roc_curve(labels, scores, drop_intermediate=False)
    fpr, tpr = fpr[1:], tpr[1:]  # sklearn adds the (0, 0) point at an infinite threshold
    gap = np.abs(tpr - 0.95)
    return float(fpr[np.flatnonzero(gap == gap.min())[-1]])


@pytest.mark.parametrize("ties", [False, True])
def test_detection_metrics_equal_scikit_learn(ties):
    labels, scores = anomaly_scores(ties=ties)
    assert average_precision(labels, scores) == pytest.approx(sk.average_precision_score(labels, scores), abs=1e-12)
    assert auroc(labels, scores) == pytest.approx(sk.roc_auc_score(labels, scores), abs=1e-12)
    assert fpr_at_recall(labels, scores, 0.95) == pytest.approx(sklearn_fpr_at_95(labels, scores), abs=1e-12)


def test_fpr95_takes_the_lowest_threshold_of_those_closest_to_95_percent_recall_as_the_reference_code():
    """hendrycks/natural-adv-examples' fpr_and_fdr_at_recall walks the thresholds from the lowest up and takes the
    first whose recall is closest to 0.95: of equal recalls, the one with the most false positives."""
    labels = np.r_[np.ones(20, bool), np.zeros(10, bool)]
    scores = np.r_[np.arange(20, 0, -1), np.linspace(1.5, 19.5, 10)]  # 19 anomalies >= 2: recall 0.95 at 2 and 1.5
    assert fpr_at_recall(labels, scores) == pytest.approx(np.mean(scores[~labels] >= 1.5)) == 1.0
    scores[20] = 0.5  # the lowest negative below the last anomaly: recall 0.95 at 2 only
    assert fpr_at_recall(labels, scores) == pytest.approx(np.mean(scores[~labels] >= 2)) == 0.9


def test_bootstrap_intervals_are_seeded_stratified_and_contain_the_estimate():
    labels, scores = anomaly_scores()
    groups = [np.flatnonzero(~labels), np.flatnonzero(labels)]
    value = average_precision(labels, scores)
    stat = lambda i: average_precision(labels[i], scores[i])  # noqa: E731
    drawn = []

    def counting(i):
        drawn.append(int(labels[i].sum()))
        return stat(i)

    first = bootstrap_interval(counting, value, groups, resamples=200)
    assert set(drawn) == {60}  # each resample keeps the 60 anomalies' count: stratified
    assert bootstrap_interval(stat, value, groups, resamples=200) == first  # same seed, same interval
    assert bootstrap_interval(stat, value, groups, resamples=200, seed=1) != first
    assert first[0] <= value <= first[1] and first[1] - first[0] > 0.02
    confidence, correct = over_confident(n=60)
    ece = expected_calibration_error(confidence, correct)
    lo, hi = bootstrap_interval(lambda i: expected_calibration_error(confidence[i], correct[i]), ece, 60, 200)
    assert lo <= ece <= hi  # ECE is biased upwards under resampling; the interval is widened to reach it


# ---------------------------------------------------------------- the evaluators on feature arrays


def blobs(n_per_class=30, classes=3, seed=0, noise=0.6):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    return np.eye(classes)[y] + rng.normal(scale=noise, size=(len(y), classes)), y


MODEL = types.SimpleNamespace(name="stub", logit_scale=30.0)


def test_zero_shot_ece_is_the_softmax_confidence_at_the_models_logit_scale():
    x, y = blobs()
    ctx = ArrayContext({"test": (x, y)}, model=MODEL)
    records = ZeroShot(calibration=True).evaluate(ctx)
    (ece,) = [r for r in records if r.metric == "ece"]
    cos = ctx.zero_shot_logits("test").double().numpy()
    probs = np.exp(30 * cos) / np.exp(30 * cos).sum(axis=1, keepdims=True)  # the softmax by hand
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == y
    assert ece.value == pytest.approx(ece_by_loop(confidence, correct), abs=1e-6)
    assert ece.params == {"bins": 15} and ece.n == 90 and ece.ci[0] <= ece.value <= ece.ci[1]
    assert ece.ci_method.startswith("bootstrap-percentile (1000 resamples, seed 0")
    kept = ctx.kept[ece.samples]  # the predictions carry each sample's confidence, float32
    np.testing.assert_allclose(kept.scores["confidence"], confidence, rtol=1e-6)
    again = Samples.from_json(json.loads(json.dumps(kept.to_json())))
    np.testing.assert_array_equal(again.scores["confidence"], kept.scores["confidence"])
    assert expected_calibration_error(again.scores["confidence"], again.outcome("top1")) == ece.value
    # the scale matters: a cooler softmax is less confident
    cooler = ZeroShot(calibration=True).evaluate(ArrayContext({"test": (x, y)}, model=types.SimpleNamespace(
        name="stub", logit_scale=3.0)))  # fmt: skip
    assert next(r for r in cooler if r.metric == "ece").value != ece.value


def test_zero_shot_writes_no_ece_unless_asked():
    x, y = blobs()
    records = ZeroShot().evaluate(ArrayContext({"test": (x, y)}))
    assert [r.metric for r in records] == ["top1", "mean_per_class_recall"]


def test_a_broken_logit_scale_is_refused_by_name():
    x, y = blobs()
    ctx = ArrayContext({"test": (x, y)}, model=types.SimpleNamespace(name="broken", logit_scale=float("nan")))
    with pytest.raises(ClipevalError, match="Model 'broken': logit_scale is nan"):
        ZeroShot(calibration=True).evaluate(ctx)


def test_ood_detection_of_one_dataset_among_another_equals_scikit_learn_on_minus_msp():
    x_in, y_in = blobs(noise=0.3)
    x_out = np.random.default_rng(5).normal(scale=1.0, size=(40, 3))  # no class in particular
    model = types.SimpleNamespace(name="stub", logit_scale=5.0)  # no MSP within float64 rounding of 1 here
    ctx = ArrayContext({"val": (x_in, y_in), "odd": (x_out, np.zeros(40, int))}, prototypes_from="val", model=model)
    records = {r.metric: r for r in OutOfDistribution("odd", "val", in_distribution_labels="subset").evaluate(ctx)}
    cos = np.r_[ctx.zero_shot_logits("val").double().numpy(), ctx.zero_shot_logits("odd").double().numpy()]
    msp = (np.exp(5 * cos) / np.exp(5 * cos).sum(axis=1, keepdims=True)).max(axis=1)
    anomaly = np.r_[np.zeros(90, bool), np.ones(40, bool)]
    assert records["ood_aupr"].value == pytest.approx(sk.average_precision_score(anomaly, -msp), abs=1e-6)
    assert records["ood_auroc"].value == pytest.approx(sk.roc_auc_score(anomaly, -msp), abs=1e-6)
    assert records["ood_fpr95"].value == pytest.approx(sklearn_fpr_at_95(anomaly, -msp), abs=1e-6)
    assert records["ood_aupr"].value > 40 / 130  # better than chance (the anomalies' share)
    for r in records.values():
        assert r.n == 130 and r.ci[0] <= r.value <= r.ci[1] and r.params == {"score": "msp"}
        assert r.ci_method.startswith("stratified bootstrap-percentile")
    kept = ctx.kept[records["ood_aupr"].samples]
    assert kept.correct["anomaly"].sum() == 40 and len(kept.scores["neg_log_msp"]) == 130


def test_near_certain_confidences_at_clips_scale_do_not_tie():
    """At a logit scale of 100 the MSPs of two confident samples round to the same float32 (and, closer still, the
    same float64); minus the log MSP keeps them apart, in the same order."""
    cos = torch.tensor([[0.30, 0.10, 0.08], [0.32, 0.10, 0.08], [0.20, 0.19, 0.0]])
    msp32 = torch.softmax(100 * cos, dim=1).amax(dim=1)
    assert msp32[0] == msp32[1] == 1.0
    score = neg_log_msp(cos, 100.0)
    assert score[1] < score[0] < score[2] and len(set(score.tolist())) == 3


def test_ood_restricted_to_a_class_subset_keeps_only_in_distribution_samples_of_those_classes():
    x_in, y_in = blobs(classes=4, noise=0.3)
    x_out = np.random.default_rng(5).normal(size=(10, 4))
    ctx = ArrayContext({"val": (x_in, y_in), "odd": (x_out, np.zeros(10, int))}, prototypes_from="val", model=MODEL)
    records = OutOfDistribution("odd", "val", class_subset=[1, 3], in_distribution_labels="full").evaluate(ctx)
    assert {r.n for r in records} == {60 + 10}  # classes 1 and 3 of val (30 each) and the 10 anomalies
    kept = ctx.kept[records[0].samples]
    assert set(kept.labels[~kept.correct["anomaly"]]) == {0, 1}  # as positions in the subset


# ---------------------------------------------------------------- the reliability diagram


def test_the_reliability_diagram_draws_each_bin_with_its_interval_and_the_tables_ece_in_the_title():
    x, y = blobs()
    ctx = ArrayContext({"test": (x, y), "other": blobs(seed=1, noise=1.0)}, model=MODEL)
    records = ZeroShot(calibration=True).evaluate(ctx)
    panels = []
    for r in (r for r in records if r.metric == "ece"):
        kept = ctx.kept[r.samples]
        panels.append((r.label, r, kept.scores["confidence"], kept.outcome("top1")))
    fig = figures.reliability_figure(panels, "a model with a rather long name · open_clip ViT-B-32 laion2b_s34b_b79k")
    check_paper_rules(fig)
    axes = data_axes(fig)
    assert len(axes) == 2
    for ax, (label, r, confidence, correct) in zip(axes, panels, strict=True):
        assert label in ax.get_title().replace("\n", " ") and ax.get_xlim() == ax.get_ylim() == (0, 100)
        lo, hi = (f"{100 * v:.2f}" for v in r.ci)
        assert f"ECE {100 * r.value:.2f}% [{lo}, {hi}]" in ax.get_title() and f"n {r.n}" in ax.get_title()
        count, _, acc = calibration_bins(confidence, correct)
        used = count > 0
        (points,) = [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
        expected = [clopper_pearson(int(round(a * k)), int(k)) for a, k in zip(acc[used], count[used], strict=True)]
        np.testing.assert_allclose(errorbar_spans(points), 100 * np.array(expected), atol=1e-9)
    matplotlib.pyplot.close(fig)


def test_confidences_that_are_not_finite_float32_are_refused_when_read():
    samples = Samples.from_arrays(["a", "b"], [0, 1], np.array([[0], [1]]), scores={"confidence": [0.5, 0.9]})
    data = samples.to_json()
    data["scores"]["confidence"]["shape"] = [3]
    with pytest.raises(ClipevalError, match=r"scores.confidence is not 2 packed float32 numbers"):
        Samples.from_json(data, "samples.t/d")
    bad = Samples.from_arrays(["a", "b"], [0, 1], np.array([[0], [1]]), scores={"confidence": [np.nan, 0.9]}).to_json()
    with pytest.raises(ClipevalError, match="NaN or infinite"):
        Samples.from_json(bad, "samples.t/d")


def test_stored_scores_are_read_back_through_a_torch_free_round_trip():
    values = torch.rand(7).numpy()
    samples = Samples.from_arrays([str(i) for i in range(7)], np.arange(7), np.arange(7)[:, None],
                                  scores={"confidence": values})  # fmt: skip
    again = Samples.from_json(json.loads(json.dumps(samples.to_json())))
    np.testing.assert_array_equal(again.scores["confidence"], values.astype(np.float32))
