"""The CI regression gate: reruns pass, a degraded checkpoint fails, mismatches are usage errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_in_process
from safetensors.torch import load_file, save_file

from clipeval.check.gate import Samples, main, mcnemar_exact
from clipeval.config.paths import asset


def check(*argv: str) -> int:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    return info.value.code


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    """A reference run of the tiny model on the digits, and its golden file."""
    folder = tmp_path_factory.mktemp("golden")
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
    outcomes = Samples("abc", len(bits), correct={"clean_top1": bits})
    again = Samples.from_json(json.loads(json.dumps(outcomes.to_json())))
    assert again.ids_sha256 == "abc" and np.array_equal(again.outcome("clean_top1"), bits)


def test_the_same_checkpoint_evaluated_again_passes(golden, tmp_path, capsys):
    run_in_process(["task=digits"], tmp_path / "again")
    assert check("compare", "--golden", str(golden), str(tmp_path / "again")) == 0
    out = capsys.readouterr().out
    assert "McNemar p=1 (0 lost, 0 gained)" in out and "0 regressed" in out
    assert "paired permutation p=1 (0 discordant samples" in out  # mean per-class recall, paired too
    assert "tolerance" not in out  # every metric of a zero-shot run has per-sample outcomes
    assert json.loads(golden.read_text())["format_version"] == 2


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


def test_published_numbers_use_tolerances_and_lower_is_better_metrics(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    doc = {"task": {"name": "t", "version": "1"}, "records": [
        {"dataset": "d", "metric": "top1", "value": 0.70, "n": 100, "ci": [0.6, 0.79]},
        {"dataset": "d", "metric": "k_matching_zero_shot", "value": 6.0, "n": 3, "ci": [6.0, 6.0]},
    ]}  # fmt: skip
    (run / "results.json").write_text(json.dumps(doc))
    golden = {"kind": "clipeval-golden", "tolerance": 0.02, "records": [
        {"task": "t", "dataset": "d", "metric": "top1", "value": 0.71},
        {"task": "t", "dataset": "d", "metric": "k_matching_zero_shot", "value": 4.0, "tolerance": 1.0},
    ]}  # fmt: skip
    (tmp_path / "g.json").write_text(json.dumps(golden))
    assert check("compare", "--golden", str(tmp_path / "g.json"), str(run)) == 1
    out = capsys.readouterr().out
    assert "Regressed: t/d k_matching_zero_shot" in out  # needing more shots is worse
    assert "t/d          top1" in out and "tolerance 0.02" in out
