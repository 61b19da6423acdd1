"""The regression gate's decision rule on hand-built runs: finite numbers only, paired tests for every
metric with per-sample outcomes on both sides, tolerances for published numbers only."""

from __future__ import annotations

import itertools
import json
import logging
import math
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import permutation_test
from test_imagenet_tasks import data_root  # noqa: F401  (tiny copies of the ImageNet-family layouts)

from clipeval.check.cli import main
from clipeval.check.documents import load_golden
from clipeval.check.stats import paired_permutation_test
from clipeval.results.metrics import classification_records, clopper_pearson
from clipeval.results.samples import Samples
from clipeval.results.store import KIND, SCHEMA_VERSION, results_document, write_json

CLASSES = 10
GOLDEN = Path(__file__).parents[1] / "reports" / "golden" / "vit_b32_openai.json"


def check(*argv: str) -> int:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    return info.value.code


def write_run(folder: Path, labels: np.ndarray, topk: np.ndarray, dataset: str = "d") -> Path:
    """A run folder as clipeval writes it: results.json with the metrics of ``topk`` and their per-sample data."""
    folder.mkdir(parents=True)
    key = f"t/{dataset}"
    ids = [f"img{i:05d}" for i in range(len(labels))]
    records = classification_records(dataset, torch.from_numpy(topk), torch.from_numpy(labels), CLASSES, samples=key)
    doc = results_document(
        model=SimpleNamespace(name="m", fingerprint="f" * 32),
        selection=SimpleNamespace(name="t", version="1", is_suite=False, task_versions={"t": "1"}),
        records=[r.with_task("t") for r in records],
        samples={key: Samples.from_arrays(ids, labels, topk)},
        config={},
        extra={"data": {"t": {dataset: {"key": "folder:0123456789abcdef01234567", "limit": None}}}},
    )
    write_json(folder / "results.json", doc)
    return folder


def class_weights(labels: np.ndarray) -> np.ndarray:
    """[n] weight 1 / (C * n_c) of each sample: mean per-class recall = sum(w * correct)."""
    return Samples("ids", len(labels), labels=labels).weights()


def golden_document(records: list[dict], **extra) -> dict:
    """A hand-written golden file (a results document of task t) holding ``records``."""
    return {"kind": KIND, "schema_version": SCHEMA_VERSION, "model": {"name": "m"},
            "selection": {"name": "t", "version": "1", "kind": "task", "tasks": {"t": "1"}},
            "records": records, **extra}  # fmt: skip


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
    """A golden file of one published number: its sample count unknown (n null), so gated by its tolerance."""
    path = tmp_path / "golden.json"
    record = {"task": "t", "dataset": "d", "metric": "top1", "value": value, "n": None, "ci": [0.85, 0.95],
              "tolerance": tolerance}  # fmt: skip
    path.write_text(json.dumps(golden_document([record], **(top or {}))))  # json writes NaN and Infinity, reads them
    return path


@pytest.mark.parametrize(
    "golden_args, expected",
    [
        ({"tolerance": float("nan")}, "records[0] (t/d top1): tolerance is NaN"),  # values as the JSON file has them
        ({"tolerance": float("inf")}, "records[0] (t/d top1): tolerance is Infinity"),
        ({"value": float("nan")}, "records[0] (t/d top1): value is NaN"),
        ({"value": None}, "records[0] (t/d top1): value is null"),
        ({"top": {"tolerance": float("nan")}}, "tolerance is NaN"),
    ],
)
def test_nan_or_inf_in_the_golden_file_is_exit_2(tmp_path, capsys, golden_args, expected):
    labels, _, cand = degraded_pair(lost=570, gained=0)  # 80% -> 23%: a drop of 57 points
    run = write_run(tmp_path / "cand", labels, predictions(labels, cand))
    golden = published_golden(tmp_path, **golden_args)
    assert check("compare", "--golden", str(golden), str(run)) == 2
    assert f"{golden}: {expected}" in capsys.readouterr().err  # the file and the field


@pytest.mark.parametrize("field, bad", [("value", float("nan")), ("ci", [0.1, float("inf")])])
def test_nan_or_inf_in_a_candidates_records_is_exit_2(tmp_path, capsys, field, bad):
    labels, _, cand = degraded_pair(lost=0, gained=0)
    run = write_run(tmp_path / "cand", labels, predictions(labels, cand))
    doc = json.loads((run / "results.json").read_text())
    doc["records"][2][field] = bad  # mean per-class recall, a metric the golden file does not check
    (run / "results.json").write_text(json.dumps(doc))
    assert check("compare", "--golden", str(published_golden(tmp_path, value=0.8)), str(run)) == 2
    said = {"value": "value is NaN", "ci": "'ci' must be a pair [low, high] of finite numbers (got [0.1, Infinity])"}[
        field
    ]
    assert f"{run / 'results.json'}: records[2] (t/d mean_per_class_recall): {said}" in capsys.readouterr().err


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
    golden = golden_document(
        [{"task": "t", "dataset": "d", "metric": "top1", "value": 0.8, "n": 50000, "ci": [0.79, 0.81]}], tolerance=0.01
    )
    (tmp_path / "g.json").write_text(json.dumps(golden))
    assert check("compare", "--golden", str(tmp_path / "g.json"), str(run)) == 2
    assert "n = 50000" in capsys.readouterr().err


def test_predictions_that_disagree_with_the_results_are_exit_2(tmp_path, capsys):
    labels, ref, cand = degraded_pair(lost=30, gained=0)
    write_run(tmp_path / "ref", labels, predictions(labels, ref))
    run = write_run(tmp_path / "cand", labels, predictions(labels, cand))
    main(["record", str(tmp_path / "ref"), "--out", str(tmp_path / "golden.json")])
    doc = json.loads((run / "results.json").read_text())
    doc["samples"]["t/d"] = json.loads((tmp_path / "ref" / "results.json").read_text())["samples"]["t/d"]
    (run / "results.json").write_text(json.dumps(doc))  # the reference's per-sample data under the candidate's records
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


def test_a_golden_file_with_top1_outcomes_only_still_gates_top1_by_mcnemar(tmp_path, capsys, caplog):
    """Per-sample data of top-1 right/wrong only (no labels or rankings): top-1 stays paired, the rest falls back
    to the tolerance, with a warning."""
    labels, ref, cand = degraded_pair(lost=60, gained=41)
    write_run(tmp_path / "ref", labels, predictions(labels, ref))
    write_run(tmp_path / "cand", labels, predictions(labels, cand))
    main(["record", str(tmp_path / "ref"), "--out", str(tmp_path / "full.json")])
    golden = json.loads((tmp_path / "full.json").read_text())
    full = Samples.from_json(golden["samples"]["t/d"])
    golden["samples"]["t/d"] = Samples(full.ids_sha256, full.n, correct={"top1": full.outcome("top1")}).to_json()
    for record in golden["records"]:
        record["outcome"] = "top1" if record["metric"] == "top1" else None
    (tmp_path / "top1.json").write_text(json.dumps(golden))
    caplog.set_level(logging.WARNING)
    assert check("compare", "--golden", str(tmp_path / "top1.json"), str(tmp_path / "cand")) == 1
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


def test_the_repositorys_published_golden_file_is_read():
    golden = load_golden(GOLDEN)
    records = golden.records
    assert len(records) == 6 and all(0 < r.value < 1 for r in records)
    assert golden.raw["kind"] == KIND and golden.selection["name"] == "natural_shifts" and not golden.raw.get("samples")
    assert all(r.tolerance == 0.005 and r.ci[0] <= r.value <= r.ci[1] for r in records)
    (unknown,) = [r for r in records if r.n is None]  # ObjectNet: its sources do not state n
    assert unknown.task == "objectnet" and unknown.ci == (unknown.value, unknown.value)
    assert "null" in golden.raw["source"] and "CLIP_benchmark" in golden.raw["source"]


def test_a_sample_count_may_be_unknown_only_for_a_record_with_its_own_tolerance(tmp_path, capsys):
    raw = json.loads(GOLDEN.read_text())
    del raw["records"][5]["tolerance"]  # ObjectNet, n null
    (tmp_path / "g.json").write_text(json.dumps(raw | {"tolerance": 0.005}))
    labels, ref, _ = degraded_pair(lost=0, gained=0)
    run = write_run(tmp_path / "cand", labels, predictions(labels, ref))
    assert check("compare", "--golden", str(tmp_path / "g.json"), str(run)) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'g.json'}: records[5] (objectnet/objectnet top1): 'n' must be a whole number" in err
    assert "its own 'tolerance'" in err


def test_the_published_golden_file_gates_a_natural_shifts_run(tiny_open_clip, request, tmp_path, capsys):
    """A natural_shifts run's records match the published ones by (task, dataset, metric); the published sample
    counts guard against comparing other data, and a record of unknown n is gated by its tolerance alone."""
    from conftest import open_clip_overrides, run_in_process

    images = request.getfixturevalue("data_root")  # test_imagenet_tasks' tiny ImageNet-family data
    templates = [f"suite.tasks.{t}.templates=['a photo of a {{c}}.']" for t in load_golden(GOLDEN).selection["tasks"]]
    run_in_process([*open_clip_overrides(tiny_open_clip), "suite=natural_shifts", f"data_root={images}",
                    "~suite.robustness", *templates], tmp_path / "run")  # fmt: skip
    assert check("compare", "--golden", str(GOLDEN), str(tmp_path / "run")) == 2
    assert "'imagenet/val' top1: the golden value is on n = 50000 samples" in capsys.readouterr().err
    # the same published numbers, as if measured on this run's (tiny) data
    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    n = {(r["task"], r["dataset"]): r["n"] for r in doc["records"] if r["metric"] == "top1"}
    golden = json.loads(GOLDEN.read_text())
    for record in golden["records"]:
        if record["n"] is not None:
            record["n"] = n[(record["task"], record["dataset"])]
    (tmp_path / "golden.json").write_text(json.dumps(golden))
    assert check("compare", "--golden", str(tmp_path / "golden.json"), str(tmp_path / "run")) == 1
    out = capsys.readouterr().out
    table = {line.split()[0]: line for line in out.splitlines() if " top1 " in line}
    assert set(table) == {f"{r['task']}/{r['dataset']}" for r in golden["records"]}
    assert all("tolerance 0.005" in line and "REGRESSED" in line for line in table.values())  # a random tiny model
    assert "6 checked: 6 regressed" in out


def test_an_attacks_clean_and_robust_accuracies_are_paired_by_mcnemar(tmp_path, capsys):
    """Per-sample attack outcomes (the document's samples, named by each record's outcome) pair every attack record."""
    import shutil

    from conftest import run_in_process

    run_in_process(
        ["task=digits_adversarial", "task.evaluators.adversarial.eps=[8]", "task.evaluators.adversarial.steps=3",
         "task.evaluators.adversarial.limit=40", "task.evaluators.adversarial.targets=2"],
        tmp_path / "ref",
    )  # fmt: skip
    main(["record", str(tmp_path / "ref"), "--out", str(tmp_path / "golden.json")])
    shutil.copytree(tmp_path / "ref", tmp_path / "cand")
    doc = json.loads((tmp_path / "cand" / "results.json").read_text())
    clean = next(r for r in doc["records"] if r["metric"] == "clean_top1")
    outcomes = Samples.from_json(doc["samples"][clean["samples"]])
    outcomes.correct[clean["outcome"]][:] = False  # every sample now wrong on clean images
    doc["samples"][clean["samples"]] = outcomes.to_json()
    was = round(clean["value"] * 40)
    clean["value"] = 0.0
    clean["ci"] = list(clopper_pearson(0, 40))
    (tmp_path / "cand" / "results.json").write_text(json.dumps(doc))
    capsys.readouterr()
    assert check("compare", "--golden", str(tmp_path / "golden.json"), str(tmp_path / "cand")) == 1
    out = capsys.readouterr().out
    where = f"{clean['task']}/{clean['dataset']}"
    lines = [line for line in out.splitlines() if line.startswith(f"{where} ")]
    (clean_line,) = [line for line in lines if " clean_top1 " in line]
    assert f"McNemar p={2 / 2**was:.3g} ({was} lost, 0 gained)" in clean_line
    assert "REGRESSED" in clean_line
    robust = [line for line in lines if " robust_top1 " in line]
    assert len(robust) == 4 and all("McNemar p=1 (0 lost, 0 gained)" in line for line in robust)
    assert all(" attack=" in line and " eps=8 " in line for line in robust)  # told apart by their params
    assert "tolerance" not in out


def test_an_old_golden_average_effective_robustness_is_not_compared_with_a_new_number(tmp_path, capsys):
    """The record once named 'average' (the mean of per-shift values) is no longer produced under that name."""
    labels, ref, _ = degraded_pair(lost=0, gained=0)
    run = write_run(tmp_path / "cand", labels, predictions(labels, ref))
    golden = golden_document([{"task": "t", "dataset": "average", "metric": "effective_robustness", "value": 0.24,
                               "n": None, "ci": [0.2, 0.28], "tolerance": 0.01}])  # fmt: skip
    (tmp_path / "g.json").write_text(json.dumps(golden))
    assert check("compare", "--golden", str(tmp_path / "g.json"), str(run)) == 2
    assert "'mean_of_per_shift_er'" in capsys.readouterr().err


def add_effective_robustness(run: Path, top1: float) -> None:
    """An effective-robustness record as a suite writes it: the shift's top-1 minus a fixed baseline prediction."""
    doc = json.loads((run / "results.json").read_text())
    er = top1 - 0.5
    doc["records"].append({"task": "t", "dataset": "shift", "metric": "effective_robustness", "value": er, "n": 1000,
                           "ci": [er - 0.1, er + 0.1], "ci_method": "clopper-pearson+bootstrap-band",
                           "params": {"baselines": "testbed"}})  # fmt: skip
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


def test_each_derived_metric_says_what_it_is_computed_from():
    from clipeval.check.compare import derived_evidence

    assert derived_evidence("mean_recall@5") == (
        "computed from its text_retrieval_recall@5 and image_retrieval_recall@5 rows (gated there by paired tests); "
        "not gated"
    )
    assert "top-1" not in derived_evidence("mean_recall@1") and "top-1" not in derived_evidence("benchmark_average")
    assert "main-metric row" in derived_evidence("benchmark_average")
    assert "few-shot and zero-shot top-1 rows" in derived_evidence("k_matching_zero_shot")
    assert "zero-shot top-1 rows" in derived_evidence("effective_robustness")
    assert derived_evidence("some_new_derived") == "computed from other rows of the run (gated there); not gated"


def test_a_derived_record_the_candidate_lacks_is_printed_as_absent_not_as_nan(tmp_path, capsys):
    labels, ref, _ = degraded_pair(lost=5, gained=5)
    write_run(tmp_path / "ref", labels, predictions(labels, ref))
    add_effective_robustness(tmp_path / "ref", ref.mean())
    write_run(tmp_path / "cand", labels, predictions(labels, ref))  # no effective robustness
    main(["record", str(tmp_path / "ref"), "--out", str(tmp_path / "golden.json")])
    capsys.readouterr()
    assert check("compare", "--golden", str(tmp_path / "golden.json"), str(tmp_path / "cand")) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("t/shift "))
    assert "nan" not in line and "—" in line and "not in the candidate" in line


def exact_sign_flip_p(ref: list[Fraction], cand: list[Fraction]) -> float:
    """Two-sided p of the paired sign-flip test, every pattern enumerated in exact rational arithmetic."""
    d = [c - r for r, c in zip(ref, cand, strict=True) if c != r]
    observed = abs(sum(d))
    hits = sum(abs(sum(s * x for s, x in zip(signs, d, strict=True))) >= observed
               for signs in itertools.product((1, -1), repeat=len(d)))  # fmt: skip
    return hits / 2 ** len(d)


@pytest.mark.parametrize("seed", range(8))
def test_the_test_of_per_sample_scores_sees_ties_that_float32_rounding_broke(seed):
    """Jaccard indices are kept as float32: 1 - f32(1/3) and f32(2/3) differ by 3e-8, so tied sign patterns fell
    short of the observed sum and p came out too small (a breaker's case: 0.0469 where the exact p is 0.0586)."""
    from clipeval.check.stats import paired_score_test

    rng = np.random.default_rng(seed)
    values = [Fraction(0), Fraction(1, 3), Fraction(1, 2), Fraction(2, 3), Fraction(1), Fraction(1, 5), Fraction(3, 5)]
    ref = [values[i] for i in rng.integers(0, len(values), 10)]
    cand = [values[i] for i in rng.integers(0, len(values), 10)]
    as_kept = lambda xs: np.array([float(x) for x in xs], np.float32).astype(np.float64)  # noqa: E731
    p, _, how = paired_score_test(as_kept(ref), as_kept(cand))
    assert how == "exact" and p == pytest.approx(exact_sign_flip_p(ref, cand), abs=1e-12)


def test_candidate_runs_of_different_models_are_refused(tmp_path, capsys):
    """One candidate is one model's results, perhaps over several runs; two models' runs were compared silently."""
    labels, ref, _ = degraded_pair(lost=5, gained=5)
    write_run(tmp_path / "ref", labels, predictions(labels, ref))
    write_run(tmp_path / "a", labels, predictions(labels, ref), dataset="d")
    write_run(tmp_path / "b", labels, predictions(labels, ref), dataset="e")
    doc = json.loads((tmp_path / "b" / "results.json").read_text())
    doc["model"]["fingerprint"] = "0" * 32
    (tmp_path / "b" / "results.json").write_text(json.dumps(doc))
    main(["record", str(tmp_path / "ref"), "--out", str(tmp_path / "golden.json")])
    capsys.readouterr()
    assert check("compare", "--golden", str(tmp_path / "golden.json"), str(tmp_path / "a"), str(tmp_path / "b")) == 2
    assert "The candidate runs are of 2 different models" in capsys.readouterr().err
