"""The regression gate's decision rule on hand-built runs: finite numbers only, paired tests for every
metric with per-sample outcomes on both sides, tolerances for published numbers only."""

from __future__ import annotations

import itertools
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import permutation_test

from clipeval.check.gate import Samples, class_weights, main, paired_permutation_test
from clipeval.results.metrics import classification_records

CLASSES = 10


def check(*argv: str) -> int:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    return info.value.code


def write_run(folder: Path, labels: np.ndarray, topk: np.ndarray, dataset: str = "d") -> Path:
    """A run folder as clipeval writes it: results.json with the metrics of ``topk`` and its predictions."""
    folder.mkdir(parents=True)
    records = classification_records(dataset, torch.from_numpy(topk), torch.from_numpy(labels), CLASSES)
    doc = {"task": {"name": "t", "version": "1"}, "model": {"name": "m"}, "created": "now",
           "clipeval_version": "test", "records": [r.to_json() for r in records]}  # fmt: skip
    (folder / "results.json").write_text(json.dumps(doc))
    (folder / "predictions").mkdir()
    ids = [f"img{i:05d}" for i in range(len(labels))]
    pd.DataFrame({"sample_id": ids, "label": labels, "topk": list(topk)}).to_parquet(
        folder / "predictions" / f"{dataset}.parquet"
    )
    return folder


def predictions(labels: np.ndarray, right: np.ndarray) -> np.ndarray:
    """[n, 5] ranked predictions: the label first where ``right``, else second (so top-5 is always right)."""
    ranked = np.stack([(labels + j) % CLASSES for j in range(5)], axis=1)
    ranked[~right, :2] = ranked[~right, 1::-1]
    return ranked


def degraded_pair(lost: int, gained: int, per_class: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """labels, reference and candidate top-1 correctness: 80% right, then ``lost`` and ``gained``
    samples spread evenly over the classes (so top-1 and mean per-class recall move alike)."""
    labels = np.repeat(np.arange(CLASSES), per_class)
    ref = np.tile(np.arange(per_class) < 0.8 * per_class, CLASSES)
    cand = ref.copy()
    right, wrong = np.flatnonzero(ref), np.flatnonzero(~ref)
    cand[right[np.argsort(right % per_class * CLASSES + right // per_class)][:lost]] = False
    cand[wrong[np.argsort(wrong % per_class * CLASSES + wrong // per_class)][:gained]] = True
    return labels, ref, cand


def gate(tmp_path: Path, lost: int, gained: int) -> int:
    """Record a reference run, then compare a candidate that lost and gained that many samples."""
    labels, ref, cand = degraded_pair(lost, gained)
    write_run(tmp_path / "ref", labels, predictions(labels, ref))
    write_run(tmp_path / "cand", labels, predictions(labels, cand))
    main(["record", str(tmp_path / "ref"), "--out", str(tmp_path / "golden.json")])
    return check("compare", "--golden", str(tmp_path / "golden.json"), str(tmp_path / "cand"))


def rows(out: str) -> dict[str, str]:
    """metric -> its line of the gate's table."""
    return {line.split()[1]: line for line in out.splitlines() if line.startswith("t/d ")}


def test_a_noise_level_drop_gets_the_same_verdict_on_every_metric(tmp_path, capsys):
    # 60 lost, 41 gained of 1000: -1.9 pp on top-1 and on mean per-class recall, p ~ 0.07.
    # The old gate said "ok" for top-1 (McNemar) and "REGRESSED" for mean per-class recall (tolerance 0.01).
    code = gate(tmp_path, lost=60, gained=41)
    out = capsys.readouterr().out
    table = rows(out)
    assert set(table) == {"top1", "top5", "mean_per_class_recall"}
    assert "-0.0190" in table["top1"] and "-0.0190" in table["mean_per_class_recall"]
    assert all(" ok " in line for line in table.values()), out
    p = 2 * sum(math.comb(101, k) for k in range(42)) / 2**101  # exact two-sided sign test, by hand
    assert f"McNemar p={p:.3g} (60 lost, 41 gained)" in table["top1"]
    # equal class sizes: the permutation test's statistic is McNemar's, so p agrees up to its random swaps
    perm = float(table["mean_per_class_recall"].split("permutation p=")[1].split()[0])
    assert perm == pytest.approx(p, abs=0.005)
    assert "tolerance" not in out
    assert code == 0


def test_a_real_drop_regresses_on_every_metric(tmp_path, capsys):
    code = gate(tmp_path, lost=60, gained=10)  # -5 pp, p < 1e-8
    table = rows(capsys.readouterr().out)
    assert code == 1
    assert "REGRESSED" in table["top1"] and "REGRESSED" in table["mean_per_class_recall"]
    assert "paired permutation p=5e-05" in table["mean_per_class_recall"]  # (1 + 0) / (1 + 20000)
    assert " ok " in table["top5"] and "McNemar p=1 (0 lost, 0 gained)" in table["top5"]  # label in every top-5


def test_class_weighting_counts_a_small_class_fully(tmp_path, capsys):
    """Losing 6 of a 10-sample class: -0.6 pp top-1 but -6 pp mean per-class recall; exact tests agree."""
    labels = np.concatenate([np.repeat(np.arange(9), 100), np.full(10, 9)])
    ref = np.ones(len(labels), bool)
    cand = ref.copy()
    cand[-6:] = False
    write_run(tmp_path / "ref", labels, predictions(labels, ref))
    write_run(tmp_path / "cand", labels, predictions(labels, cand))
    main(["record", str(tmp_path / "ref"), "--out", str(tmp_path / "golden.json")])
    assert check("compare", "--golden", str(tmp_path / "golden.json"), str(tmp_path / "cand")) == 1
    table = rows(capsys.readouterr().out)
    assert "REGRESSED" in table["top1"] and "REGRESSED" in table["mean_per_class_recall"]
    assert "+0.0000" not in table["mean_per_class_recall"] and "-0.0600" in table["mean_per_class_recall"]
    # 6 discordant samples: every one of the 64 swaps, 2 of them as extreme (p = 1/32), as McNemar's
    assert "paired permutation p=0.0312 (6 discordant samples, by class; all swaps)" in table["mean_per_class_recall"]
    assert "McNemar p=0.0312" in table["top1"]


def brute_force_p(labels: np.ndarray, ref_pred: np.ndarray, cand_pred: np.ndarray) -> float:
    """Swap the two models' predictions on every subset of samples and recompute mean per-class recall."""

    def mpcr(pred: np.ndarray) -> float:
        return float(np.mean([np.mean(pred[labels == c] == c) for c in np.unique(labels)]))

    observed = abs(mpcr(cand_pred) - mpcr(ref_pred))
    extreme = 0
    for swap in itertools.product((False, True), repeat=len(labels)):
        s = np.array(swap)
        a, b = np.where(s, cand_pred, ref_pred), np.where(s, ref_pred, cand_pred)
        extreme += abs(mpcr(b) - mpcr(a)) >= observed - 1e-12
    return extreme / 2 ** len(labels)


def test_permutation_test_equals_a_brute_force_over_every_swap():
    rng = np.random.default_rng(3)
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    ref_pred = np.where(rng.random(12) < 0.7, labels, (labels + 1) % 3)
    cand_pred = np.where(rng.random(12) < 0.5, labels, (labels + 2) % 3)
    expected = brute_force_p(labels, ref_pred, cand_pred)
    p, m, how = paired_permutation_test(ref_pred == labels, cand_pred == labels, class_weights(labels))
    assert how == "exact" and 0 < m <= 12
    assert p == pytest.approx(expected, abs=1e-12)
    assert 0 < p < 1


def test_random_swaps_agree_with_scipys_exact_paired_permutation_test():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, 20)
    ref = np.arange(20) % 2 == 0  # every sample discordant: 20 > 16, so random swaps
    cand = ~ref
    cand[:3] = True
    ref[:3] = False
    w = class_weights(labels)
    p, m, how = paired_permutation_test(ref, cand, w, resamples=20000)
    exact = permutation_test(
        (ref.astype(float), cand.astype(float)),
        lambda x, y, axis: np.sum(w * (y - x), axis=axis),
        permutation_type="samples",
        n_resamples=math.inf,
        alternative="two-sided",
        vectorized=True,
    ).pvalue
    assert how == "random" and m == 20
    assert p == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / 20000) + 1e-4)
    assert paired_permutation_test(ref, cand, w, resamples=20000) == (p, m, how)  # seeded: deterministic


def published_golden(tmp_path: Path, value: object = 0.9, tolerance: object = 0.01, top: dict | None = None) -> Path:
    path = tmp_path / "golden.json"
    golden = {"kind": "clipeval-golden", **(top or {}),
              "records": [{"task": "t", "dataset": "d", "metric": "top1", "value": value, "tolerance": tolerance}]}  # fmt: skip
    path.write_text(json.dumps(golden))  # json writes NaN and Infinity, and reads them back
    return path


@pytest.mark.parametrize(
    "golden_args, expected",
    [
        ({"tolerance": float("nan")}, "golden file: record t/d top1: tolerance is nan"),
        ({"tolerance": float("inf")}, "golden file: record t/d top1: tolerance is inf"),
        ({"value": float("nan")}, "golden file: record t/d top1: value is nan"),
        ({"value": None}, "golden file: record t/d top1: value is None"),
        ({"top": {"tolerance": float("nan")}}, "golden file: tolerance is nan"),
    ],
)
def test_nan_or_inf_in_the_golden_file_is_exit_2(tmp_path, capsys, golden_args, expected):
    labels, _, cand = degraded_pair(lost=570, gained=0)  # 80% -> 23%: a drop of 57 points
    run = write_run(tmp_path / "cand", labels, predictions(labels, cand))
    assert check("compare", "--golden", str(published_golden(tmp_path, **golden_args)), str(run)) == 2
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize("field, bad", [("value", float("nan")), ("ci", [0.1, float("inf")])])
def test_nan_or_inf_in_a_candidates_records_is_exit_2(tmp_path, capsys, field, bad):
    labels, _, cand = degraded_pair(lost=0, gained=0)
    run = write_run(tmp_path / "cand", labels, predictions(labels, cand))
    doc = json.loads((run / "results.json").read_text())
    doc["records"][2][field] = bad  # mean per-class recall, a metric the golden file does not check
    (run / "results.json").write_text(json.dumps(doc))
    assert check("compare", "--golden", str(published_golden(tmp_path, value=0.8)), str(run)) == 2
    assert "record t/d mean_per_class_recall" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--tolerance", "--alpha", "--min-effect"])
@pytest.mark.parametrize("bad", ["nan", "inf", "-1"])
def test_nan_inf_or_negative_options_are_exit_2(tmp_path, capsys, option, bad):
    labels, _, cand = degraded_pair(lost=570, gained=0)
    run = write_run(tmp_path / "cand", labels, predictions(labels, cand))
    assert check("compare", "--golden", str(published_golden(tmp_path)), str(run), option, bad) == 2
    assert option in capsys.readouterr().err


def test_published_numbers_still_use_their_tolerance_and_a_drop_of_57_points_fails(tmp_path, capsys):
    labels, _, cand = degraded_pair(lost=570, gained=0)
    run = write_run(tmp_path / "cand", labels, predictions(labels, cand))
    assert check("compare", "--golden", str(published_golden(tmp_path)), str(run)) == 1
    assert "tolerance 0.01" in capsys.readouterr().out


def test_a_published_golden_value_on_other_samples_is_exit_2(tmp_path, capsys):
    labels, ref, _ = degraded_pair(lost=0, gained=0)
    run = write_run(tmp_path / "cand", labels, predictions(labels, ref))
    golden = {"kind": "clipeval-golden", "tolerance": 0.01,
              "records": [{"task": "t", "dataset": "d", "metric": "top1", "value": 0.8, "n": 50000}]}  # fmt: skip
    (tmp_path / "g.json").write_text(json.dumps(golden))
    assert check("compare", "--golden", str(tmp_path / "g.json"), str(run)) == 2
    assert "n = 50000" in capsys.readouterr().err


def test_predictions_that_disagree_with_the_results_are_exit_2(tmp_path, capsys):
    labels, ref, cand = degraded_pair(lost=30, gained=0)
    write_run(tmp_path / "ref", labels, predictions(labels, ref))
    run = write_run(tmp_path / "cand", labels, predictions(labels, cand))
    main(["record", str(tmp_path / "ref"), "--out", str(tmp_path / "golden.json")])
    pd.DataFrame({"sample_id": [f"img{i:05d}" for i in range(len(labels))], "label": labels,
                  "topk": list(predictions(labels, ref))}).to_parquet(run / "predictions" / "d.parquet")  # fmt: skip
    assert check("compare", "--golden", str(tmp_path / "golden.json"), str(run)) == 2
    assert "the per-sample data give 0.800000, the record says 0.770000" in capsys.readouterr().err


def test_relabelled_samples_are_exit_2(tmp_path, capsys):
    labels, ref, _ = degraded_pair(lost=0, gained=0)
    write_run(tmp_path / "ref", labels, predictions(labels, ref))
    other = labels.copy()
    other[:5] = (other[:5] + 1) % CLASSES
    write_run(tmp_path / "cand", other, predictions(other, ref))
    main(["record", str(tmp_path / "ref"), "--out", str(tmp_path / "golden.json")])
    assert check("compare", "--golden", str(tmp_path / "golden.json"), str(tmp_path / "cand")) == 2
    assert "5 of the same samples have other labels" in capsys.readouterr().err


def test_golden_files_of_format_1_still_gate_top1_by_mcnemar(tmp_path, capsys, caplog):
    """Format 1 stored top-1 bits only: top-1 stays paired, the rest falls back to the tolerance, with a warning."""
    labels, ref, cand = degraded_pair(lost=60, gained=41)
    write_run(tmp_path / "ref", labels, predictions(labels, ref))
    write_run(tmp_path / "cand", labels, predictions(labels, cand))
    main(["record", str(tmp_path / "ref"), "--out", str(tmp_path / "v2.json")])
    v2 = json.loads((tmp_path / "v2.json").read_text())
    top1 = Samples.from_json(v2["samples"]["t/d"]).outcome("top1")
    v1 = {k: v for k, v in v2.items() if k != "format_version"}
    v1["samples"] = {"t/d": {"ids_sha256": v2["samples"]["t/d"]["ids_sha256"], "n": 1000,
                             "top1_correct": __import__("base64").b64encode(np.packbits(top1)).decode()}}  # fmt: skip
    (tmp_path / "v1.json").write_text(json.dumps(v1))
    caplog.set_level(logging.WARNING)
    assert check("compare", "--golden", str(tmp_path / "v1.json"), str(tmp_path / "cand")) == 1
    table = rows(capsys.readouterr().out)
    p = 2 * sum(math.comb(101, k) for k in range(42)) / 2**101
    assert f"McNemar p={p:.3g}" in table["top1"] and " ok " in table["top1"]
    assert "tolerance 0.01" in table["mean_per_class_recall"] and "REGRESSED" in table["mean_per_class_recall"]
    assert "record the golden file again" in caplog.text


def test_samples_survive_the_golden_file_compactly():
    rng = np.random.default_rng(0)
    samples = Samples("abc", 1000, rng.integers(0, 1000, 1000), rng.integers(0, 1000, (1000, 5)))
    text = json.dumps(samples.to_json())
    again = Samples.from_json(json.loads(text))
    assert np.array_equal(again.labels, samples.labels) and np.array_equal(again.topk, samples.topk)
    assert len(text) < 6 * 2 * 1000 * 4 / 3 + 400  # 16-bit ids, base64: no bigger than the raw data


def test_the_repositorys_published_golden_file_is_read(tmp_path):
    golden = json.loads((Path(__file__).parents[1] / "reports" / "golden" / "vit_b32_openai.json").read_text())
    from clipeval.check.gate import _golden_records

    records = _golden_records(golden)
    assert len(records) == 6 and all(0 < r["value"] < 1 for r in records)


def test_an_attacks_clean_and_robust_accuracies_are_paired_by_mcnemar(tmp_path, capsys):
    """Per-sample attack outcomes (predictions/adversarial_<dataset>.parquet) pair every attack record."""
    import shutil

    from conftest import run_in_process

    run_in_process(
        ["task=digits_adversarial", "task.evaluators.adversarial.eps=[8]", "task.evaluators.adversarial.steps=3",
         "task.evaluators.adversarial.limit=40", "task.evaluators.adversarial.targets=2"],
        tmp_path / "ref",
    )  # fmt: skip
    main(["record", str(tmp_path / "ref"), "--out", str(tmp_path / "golden.json")])
    shutil.copytree(tmp_path / "ref", tmp_path / "cand")
    outcomes = tmp_path / "cand" / "predictions" / "adversarial_test.parquet"
    frame = pd.read_parquet(outcomes)
    frame["clean"] = False  # every sample now wrong on clean images
    frame.to_parquet(outcomes, index=False)
    doc = json.loads((tmp_path / "cand" / "results.json").read_text())
    clean = next(r for r in doc["records"] if r["metric"] == "clean_top1")
    was = round(clean["value"] * 40)
    clean["value"] = 0.0
    (tmp_path / "cand" / "results.json").write_text(json.dumps(doc))
    capsys.readouterr()
    assert check("compare", "--golden", str(tmp_path / "golden.json"), str(tmp_path / "cand")) == 1
    out = capsys.readouterr().out
    lines = {line.split()[1]: line for line in out.splitlines() if "top1" in line}
    assert f"McNemar p={2 / 2**was:.3g} ({was} lost, 0 gained)" in lines["clean_top1"]
    assert "REGRESSED" in lines["clean_top1"]
    robust = [line for metric, line in lines.items() if metric.startswith("robust_top1:")]
    assert len(robust) == 4 and all("McNemar p=1 (0 lost, 0 gained)" in line for line in robust)
    assert "tolerance" not in out


def test_an_old_golden_average_effective_robustness_is_not_compared_with_a_new_number(tmp_path, capsys):
    """The record once named 'average' (the mean of per-shift values) is no longer produced under that name."""
    labels, ref, _ = degraded_pair(lost=0, gained=0)
    run = write_run(tmp_path / "cand", labels, predictions(labels, ref))
    golden = {"kind": "clipeval-golden", "tolerance": 0.01,
              "records": [{"key": "t/average", "metric": "effective_robustness", "value": 0.24}]}  # fmt: skip
    (tmp_path / "g.json").write_text(json.dumps(golden))
    assert check("compare", "--golden", str(tmp_path / "g.json"), str(run)) == 2
    assert "'mean_of_per_shift_er'" in capsys.readouterr().err


def add_effective_robustness(run: Path, top1: float) -> None:
    """An effective-robustness record as a suite writes it: the shift's top-1 minus a fixed baseline prediction."""
    doc = json.loads((run / "results.json").read_text())
    er = top1 - 0.5
    doc["records"].append({"dataset": "shift", "metric": "effective_robustness", "value": er, "n": 1000,
                           "ci": [er - 0.1, er + 0.1], "ci_method": "clopper-pearson+bootstrap-band"})  # fmt: skip
    (run / "results.json").write_text(json.dumps(doc))


def test_effective_robustness_moves_with_its_top1_and_is_not_failed_by_a_fixed_tolerance(tmp_path, capsys):
    """A noise-level change (-1.9 pp, McNemar ok) moves effective robustness by the same -1.9 pp; a 1 pp tolerance
    on it would fail what the paired test on the top-1 it is computed from passes."""
    labels, ref, cand = degraded_pair(lost=60, gained=41)
    for name, right in (("ref", ref), ("cand", cand)):
        write_run(tmp_path / name, labels, predictions(labels, right))
        add_effective_robustness(tmp_path / name, right.mean())
    main(["record", str(tmp_path / "ref"), "--out", str(tmp_path / "golden.json")])
    capsys.readouterr()
    assert check("compare", "--golden", str(tmp_path / "golden.json"), str(tmp_path / "cand")) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("t/shift "))
    assert "-0.0190" in line and " derived " in line and "gated there by paired tests" in line
    # a published number with its own tolerance is still gated by it
    golden = json.loads((tmp_path / "golden.json").read_text())
    (er,) = [r for r in golden["records"] if r["metric"] == "effective_robustness"]
    er["tolerance"] = 0.01
    (tmp_path / "golden.json").write_text(json.dumps(golden))
    assert check("compare", "--golden", str(tmp_path / "golden.json"), str(tmp_path / "cand")) == 1
