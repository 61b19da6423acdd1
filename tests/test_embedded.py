"""The embedded suite: deterministic data, the committed tiny CLIP, and the default run."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import torch
from conftest import compose_config, run_in_process

from clipeval.config.paths import asset
from clipeval.embedded import digits, train
from clipeval.embedded.source import DigitsSource
from clipeval.embedded.zoo import members
from clipeval.models.open_clip import OpenClipEncoder

ALL_SHIFTS = [("renditions", None), ("sketch", None), ("rotated", None)] + [
    (c, s) for c in digits.CORRUPTIONS for s in digits.SEVERITIES
]


def test_splits_are_stratified_disjoint_and_cover_the_real_digits():
    from sklearn.datasets import load_digits

    parts = digits.splits()
    assert {k: len(v[1]) for k, v in parts.items()} == {"train": 1078, "val": 359, "test": 360}
    # every original image lands in exactly one split
    flat = sorted(im.tobytes() for x, _ in parts.values() for im in x)
    assert flat == sorted(im.astype(np.float32).tobytes() for im in load_digits().images)
    for x, y in parts.values():
        assert np.bincount(y, minlength=10).min() >= 0.09 * len(y)
        assert x.min() >= 0 and x.max() <= 16


@pytest.mark.parametrize(("shift", "severity"), ALL_SHIFTS[:4] + ALL_SHIFTS[-1:])
def test_generated_shifts_are_deterministic_and_in_the_digits_format(shift, severity):
    x, y = digits.load(shift, severity=severity)
    (
        digits.renditions.cache_clear(),
        digits.sketches.cache_clear(),
        digits.rotated.cache_clear(),
        digits.corrupted.cache_clear(),
    )
    x2, y2 = digits.load(shift, severity=severity)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert x.shape[1:] == (8, 8) and x.min() >= 0 and x.max() <= 16
    assert set(np.unique(y)) == set(range(10))


def test_renditions_use_several_fonts_and_every_digit():
    x, y = digits.renditions()
    assert len(digits.font_files()) >= 12
    assert len(y) == 10 * 3 * len(digits.font_files())


def test_corruption_severity_increases_the_damage():
    clean, _ = digits.splits()["test"]
    for kind in digits.CORRUPTIONS:
        damage = [np.abs(digits.corrupted(kind, s)[0] - clean).mean() for s in digits.SEVERITIES]
        assert damage == sorted(damage), kind


def test_digits_source_keys_follow_the_data():
    keys = {DigitsSource(shift, severity=sev).key for shift, sev in ALL_SHIFTS} | {DigitsSource(split="test").key}
    assert len(keys) == len(ALL_SHIFTS) + 1
    assert DigitsSource("sketch").key == DigitsSource("sketch").key


def test_committed_checkpoint_matches_its_recorded_hash():
    path = asset("tiny_digits.safetensors")
    recorded = (train.ASSETS / "tiny_digits.sha256").read_text().split()[0]
    with open(path, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == recorded
    assert train.CHECKPOINT.stat().st_size < 16 * 2**20


def test_tiny_digits_loads_through_the_open_clip_adapter_and_classifies_zero_shot():
    cfg = compose_config(["model=tiny_digits"])
    model = OpenClipEncoder(**{k: v for k, v in cfg.model.items() if k != "_target_"})
    x, y = digits.splits()["test"]
    templates = train.ASSETS.parents[2] / "tasks" / "digits" / "templates.txt"
    prompts = templates.read_text().split("\n") if templates.exists() else ["a photo of the number {c}."]
    prompts = [p for p in prompts if p]
    assert not set(prompts) & set(train.CAPTIONS)  # zero-shot: the prompts are not training captions
    with torch.no_grad():
        protos = torch.stack(
            [
                model.encode_text(model.tokenize([p.replace("{c}", c) for p in prompts])).mean(0)
                for c in digits.CLASSNAMES
            ]
        )
        protos = protos / protos.norm(dim=-1, keepdim=True)
        feats = model.encode_image(torch.stack([model.preprocess(digits.to_pil(im)) for im in x]))
    accuracy = float(((feats @ protos.T).argmax(1).numpy() == y).mean())
    assert accuracy >= 0.85


def test_training_is_deterministic():
    first = train.train(steps=3, batch_size=16)
    again = train.train(steps=3, batch_size=16)
    for (name, a), (_, b) in zip(first.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_baseline_zoo_has_at_least_15_members_of_several_families():
    zoo = members()
    assert len(zoo) >= 15
    assert len({family for family, _ in zoo.values()}) >= 5


def test_the_zoo_trains_and_scores_on_one_thread_whatever_the_machine_has(monkeypatch):
    """Its CNNs summed in an order that depends on the thread count, so the baselines (and the effective
    robustness intervals) moved between machines; two threads were also slower under load."""
    from clipeval.embedded import zoo
    from clipeval.embedded.source import DigitsSource

    seen = []

    def fit(x, y):
        seen.append(torch.get_num_threads())
        return lambda z: (seen.append(torch.get_num_threads()), np.zeros(len(z), dtype=int))[1]

    monkeypatch.setattr(zoo, "members", lambda: {"spy": ("CNN", fit)})
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        table = zoo.compute_table({"in_distribution": [DigitsSource(split="test")]}, DigitsSource(split="train"))
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 1] and table.loc["spy", "in_distribution"] > 0


def test_default_run_is_the_digits_suite_with_effective_robustness(tmp_path):
    doc = run_in_process([], tmp_path / "run")
    assert doc["model"]["name"] == "tiny_digits" and doc["selection"]["name"] == "digits_shifts"
    assert doc["selection"]["kind"] == "suite" and "digits_corruptions" in doc["selection"]["tasks"]
    top1 = {(r["task"], r["dataset"]): r for r in doc["records"] if r["metric"] == "top1" and not r.get("params")}
    assert top1[("digits", "test")]["value"] >= 0.85 and top1[("digits", "test")]["n"] == 360
    assert len([d for t, d in top1 if t == "digits_corruptions"]) == 20
    report = doc["effective_robustness"]
    rows = {row["shift"]: row for row in report["shifts"]}
    assert set(rows) == {"renditions", "sketch", "rotated", "corruptions"}
    corr = rows["corruptions"]
    refs = [(ref["task"], ref["dataset"]) for ref in doc["robustness"]["shifts"]["corruptions"]["datasets"]]
    assert len(refs) == len(corr["datasets"]) == 20
    pooled = sum(top1[ref]["value"] * top1[ref]["n"] for ref in refs) / corr["n"]
    assert corr["top1"] == pytest.approx(pooled) and corr["n"] == 7200
    for row in rows.values():
        assert row["effective_robustness"] == pytest.approx(row["top1"] - row["baseline_prediction"])
        lo, hi = row["effective_robustness_ci"]
        assert lo < row["effective_robustness"] < hi
        assert row["fit"]["n_models"] >= 15
        assert row["in_distribution"]["datasets"] == ["digits/test"]
    assert report["mean_of_per_shift_effective_robustness"] == pytest.approx(
        np.mean([r["effective_robustness"] for r in rows.values()])
    )
    er = {r["dataset"]: r for r in doc["records"] if r["metric"] == "effective_robustness"}
    shifts = {"renditions", "sketch", "rotated", "corruptions"}
    assert er.keys() == shifts | {"average_over_shifts", "mean_of_per_shift_er"}
    assert {r["task"] for r in er.values()} == {"digits_shifts"}  # the suite's records
    for figure in ("effective_robustness.png", "effective_robustness_bars.png", "average_over_shifts.png"):
        assert (tmp_path / "run" / figure).stat().st_size > 20_000, figure
    average = report["average_over_shifts"]
    assert average["top1"] == pytest.approx(np.mean([r["top1"] for r in rows.values()]))
    assert average["fit"]["n_models"] >= 15
    assert average["effective_robustness"] == pytest.approx(average["top1"] - average["baseline_prediction"])
    headline = report["headline"]["effective_robustness"]
    assert er["average_over_shifts"]["value"] == average["effective_robustness"] == headline
    assert (tmp_path / "run" / "predictions" / "digits_sketch" / "sketch.parquet").is_file()
    json.dumps(doc)  # the whole document is JSON


def test_a_failing_robustness_report_still_writes_the_results(tmp_path, monkeypatch):
    from clipeval.errors import ClipevalError
    from clipeval.report import robustness

    # A suite naming a task it does not run is refused before anything runs (tests/test_config_schema.py);
    # what can still fail once the tasks are evaluated is the report itself.
    def failing_report(*args, **kwargs):
        raise ClipevalError("The baselines have no points for shift(s) ['extra']")

    monkeypatch.setattr(robustness, "build_report", failing_report)
    with pytest.raises(ClipevalError, match="no points for shift"):
        run_in_process(
            ["~suite.tasks.digits_probe", "~suite.tasks.digits_adversarial"],
            tmp_path / "run",
        )
    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "no points for shift(s) ['extra']" in doc["effective_robustness_error"]
    assert any((r["task"], r["dataset"]) == ("digits", "test") for r in doc["records"])


def test_the_digits_are_encoded_without_worker_processes(monkeypatch, tmp_path):
    """Its images are in memory: forking a loader worker per dataset made the default job slower."""
    import torch.utils.data

    from clipeval.cache import TensorCache
    from clipeval.config.runtime import Runtime
    from clipeval.embedded.source import DigitsSource
    from clipeval.features.encode import image_features
    from clipeval.models.open_clip import OpenClipEncoder

    workers = []

    class Spy(torch.utils.data.DataLoader):
        def __init__(self, *args, **kwargs):
            workers.append(kwargs.get("num_workers", 0))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(torch.utils.data, "DataLoader", Spy)
    model = OpenClipEncoder(
        "tiny-digits-vit", pretrained=asset("tiny_digits.safetensors"), model_config=asset("tiny-digits-vit.json")
    )
    runtime = Runtime.create(device="cpu", workers=2, limit=20, progress=False)
    fs = image_features(model, DigitsSource(split="test"), runtime, TensorCache(tmp_path, enabled=False))
    assert len(fs) == 20 and workers == [0]


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, "10000"), ({"OMP_WAIT_POLICY": "ACTIVE"}, None), ({"GOMP_SPINCOUNT": "5"}, "5")],
)
def test_openmp_threads_spin_briefly_unless_the_user_chose(env, expected):
    """Spinning idle threads burned the cores other processes needed (the zoo took minutes under load)."""
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    code = "import os, clipeval; print(os.environ.get('GOMP_SPINCOUNT'))"
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(expected)
