"""The CI regression gate: reruns pass, a degraded checkpoint fails, mismatches are usage errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import run_in_process
from safetensors.torch import load_file, save_file

from clipeval.check.cli import main
from clipeval.check.stats import mcnemar_exact
from clipeval.config.paths import asset
from clipeval.results.samples import Samples
from clipeval.results.store import KIND, SCHEMA_VERSION


def check(*argv: str) -> int:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    return info.value.code


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    """A reference run of the tiny model on the digits, and its golden file."""
    folder = tmp_path_factory.mktemp("golden")
    with pytest.MonkeyPatch.context() as env:  # the autouse store and cache are per test, set up after this
        env.setenv("CLIPEVAL_STORE", str(folder / "store"))
        env.setenv("CLIPEVAL_CACHE", str(folder / "cache"))
        run_in_process(["task=digits"], folder / "ref")
    main(["record", str(folder / "ref"), "--out", str(folder / "golden.json")])
    return folder / "golden.json"


def test_mcnemar_against_a_hand_computed_case():
    ref = np.array([True] * 10 + [False] * 2 + [True] * 20 + [False] * 5)
    cand = np.array([False] * 10 + [True] * 2 + [True] * 20 + [False] * 5)
    b, c, p = mcnemar_exact(ref, cand)
    # exact two-sided: 2 * P(X <= 2), X ~ Binomial(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert (b, c) == (10, 2) and p == pytest.approx(2 * 79 / 4096)
    assert mcnemar_exact(ref, ref)[2] == 1.0


def test_outcomes_survive_the_golden_file():
    bits = np.array([True, False, True, True, False, False, True, False, True])
    outcomes = Samples("abc", len(bits), correct={"clean": bits})
    again = Samples.from_json(json.loads(json.dumps(outcomes.to_json())))
    assert again.ids_sha256 == "abc" and np.array_equal(again.outcome("clean_top1", "clean"), bits)


def test_the_same_checkpoint_evaluated_again_passes(golden, tmp_path, capsys):
    run_in_process(["task=digits"], tmp_path / "again")
    assert check("compare", "--golden", str(golden), str(tmp_path / "again")) == 0
    out = capsys.readouterr().out
    assert "McNemar p=1 (0 lost, 0 gained)" in out and "0 regressed" in out
    assert "paired permutation p=1 (0 discordant samples" in out  # mean per-class recall, paired too
    assert "tolerance" not in out  # every metric of a zero-shot run has per-sample outcomes
    recorded = json.loads(golden.read_text())
    assert (recorded["kind"], recorded["schema_version"]) == (KIND, SCHEMA_VERSION)  # the golden file is the document
    run = json.loads((golden.parent / "ref" / "results.json").read_text())
    assert {k: v for k, v in recorded.items() if k != "source"} == run and recorded["samples"]


def test_a_degraded_checkpoint_fails_and_names_the_rows(golden, tmp_path, capsys):
    weights = load_file(asset("tiny_digits.safetensors"))
    gen = torch.Generator().manual_seed(0)
    noisy = {
        k: (v.float() + 0.3 * v.float().std() * torch.randn(v.shape, generator=gen)).half()
        if v.is_floating_point() and v.numel() > 1 else v
        for k, v in weights.items()
    }  # fmt: skip
    save_file(noisy, str(tmp_path / "degraded.safetensors"))
    doc = run_in_process(["task=digits", f"model.pretrained={tmp_path / 'degraded.safetensors'}"], tmp_path / "bad")
    top1 = next(r["value"] for r in doc["records"] if r["metric"] == "top1")
    reference = next(r["value"] for r in json.loads(golden.read_text())["records"] if r["metric"] == "top1")
    assert reference - top1 > 0.03  # several points lost
    assert check("compare", "--golden", str(golden), str(tmp_path / "bad")) == 1
    out = capsys.readouterr().out
    assert "REGRESSED" in out and "Regressed: digits/test top1" in out


def test_a_different_sample_set_is_a_usage_error(golden, tmp_path, capsys):
    run_in_process(["task=digits", "runtime.limit=100"], tmp_path / "small")
    assert check("compare", "--golden", str(golden), str(tmp_path / "small")) == 2
    assert "different set of samples" in capsys.readouterr().err


def test_missing_datasets_and_files_are_usage_errors(golden, tmp_path, capsys):
    assert check("compare", "--golden", str(tmp_path / "none.json"), str(tmp_path)) == 2
    assert "does not exist" in capsys.readouterr().err
    run_in_process(["task=digits_sketch"], tmp_path / "sketch")
    assert check("compare", "--golden", str(golden), str(tmp_path / "sketch")) == 2
    assert "have no top1 on 'digits/test'" in capsys.readouterr().err


def results(records: list[dict], **extra) -> dict:
    """A results document (schema 3) of task t holding ``records``."""
    return {"kind": KIND, "schema_version": SCHEMA_VERSION, "model": {"name": "m"},
            "selection": {"name": "t", "version": "1", "kind": "task", "tasks": {"t": "1"}},
            "records": records, **extra}  # fmt: skip


def test_published_numbers_use_tolerances_and_lower_is_better_metrics(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    doc = results([
        {"task": "t", "dataset": "d", "metric": "top1", "value": 0.70, "n": 100, "ci": [0.6, 0.79]},
        {"task": "t", "dataset": "d", "metric": "k_matching_zero_shot", "value": 6.0, "n": 3, "ci": [6.0, 6.0]},
    ])  # fmt: skip
    (run / "results.json").write_text(json.dumps(doc))
    golden = results([
        {"task": "t", "dataset": "d", "metric": "top1", "value": 0.71, "n": 100, "ci": [0.61, 0.8]},
        {"task": "t", "dataset": "d", "metric": "k_matching_zero_shot", "value": 4.0, "n": 3, "ci": [4.0, 4.0],
         "tolerance": 1.0},
    ], tolerance=0.02)  # fmt: skip
    (tmp_path / "g.json").write_text(json.dumps(golden))
    assert check("compare", "--golden", str(tmp_path / "g.json"), str(run)) == 1
    out = capsys.readouterr().out
    assert "Regressed: t/d k_matching_zero_shot" in out  # needing more shots is worse
    assert "t/d          top1" in out and "tolerance 0.02" in out


def test_a_store_copied_to_another_machine_is_gated_without_the_run_directories(tmp_path, capsys):
    """Only the store entries travel: the golden file is recorded from one, the candidates are others."""
    run_in_process(["task=digits"], tmp_path / "ref")
    run_in_process(["task=digits"], tmp_path / "again")
    moved = tmp_path / "elsewhere" / "store"
    moved.mkdir(parents=True)
    for entry in (tmp_path / "store").glob("*.json"):
        shutil.copy(entry, moved)
    for folder in ("ref", "again", "store"):  # nothing of the runs is left but the copied entries
        shutil.rmtree(tmp_path / folder)
    ref, again = sorted(moved.glob("*.json"), key=lambda p: json.loads(p.read_text())["run_dir"].endswith("again"))
    assert main(["record", str(ref), "--out", str(tmp_path / "golden.json")]) is None
    assert check("compare", "--golden", str(tmp_path / "golden.json"), str(again)) == 0
    out = capsys.readouterr().out
    assert "McNemar p=1 (0 lost, 0 gained)" in out and "paired permutation p=1" in out and "3 checked" in out
    assert "tolerance" not in out  # paired from the per-sample data inside the entries
    assert check("compare", "--golden", str(tmp_path / "golden.json"), str(again), str(ref)) == 2
    assert "is in both" in capsys.readouterr().err  # the same records twice: which would be checked?
