"""Attacks and probes never report a number that means something else, and a failing evaluator
does not take the records of those that finished with it.

- APGD-T (targeted DLR loss) needs 4 classes, as in AutoAttack: below that it is not run, the
  run says so (log and results.json "notes"), and the worst case combines the attacks that ran.
- Robust top-1 counts only samples that are also right clean (never above clean top-1).
- Few-shot skips a k that a class is too small for, naming the class; no k left is an error.
- An evaluator that raises ends the run after results.json and the store are written with the
  finished records and the failure: ClipevalError -> exit 2, anything else keeps its traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from array_context import ArrayContext
from conftest import QUIET, compose_config, make_image_folder, run_in_process
from omegaconf import OmegaConf
from test_probe import blobs

from clipeval.errors import ClipevalError
from clipeval.evaluators.adversarial import Adversarial
from clipeval.evaluators.attacks import apgd, dlr_targeted, pgd
from clipeval.evaluators.linear_probe import FewShot, LinearProbe
from clipeval.results.store import load_store
from clipeval.run.runner import run

TESTS = Path(__file__).parent


class Boom:
    """An evaluator with a bug."""

    def evaluate(self, ctx):
        raise RuntimeError("boom: a bug in an evaluator")


COLOUR_MODEL = ["model=custom", "model._target_=user_model.ColourModel"]


def folder_run(tmp_path: Path, classes, per_class, evaluators: dict[str, str], model=COLOUR_MODEL) -> list[str]:
    """Overrides for task=folder on a fresh image folder, with extra evaluators ``name -> {...}``."""
    root = make_image_folder(tmp_path / "images", classes=classes, per_class=per_class)
    return [*model, "task=folder", f"task.root={root}", *(f"+task.evaluators.{k}={v}" for k, v in evaluators.items())]


# ---------------------------------------------------------------- attacks


def test_targeted_dlr_is_refused_below_four_classes_and_is_autoattacks_loss_from_four():
    y, target = torch.tensor([0]), torch.tensor([1])
    for classes in (2, 3):
        logits = torch.randn(1, classes)
        with pytest.raises(ValueError, match="at least 4 classes"):
            dlr_targeted(logits, y, target)
        f = torch.nn.Linear(4, classes)
        with pytest.raises(ValueError, match="at least 4 classes"):
            apgd(f, torch.rand(1, 4), y, 0.1, 2, loss="dlr-t", target=target)
    z = torch.tensor([[3.0, 1.0, 2.0, -1.0, 0.5]])  # sorted: 3, 2, 1, 0.5, -1
    assert dlr_targeted(z, y, target).item() == pytest.approx(-(3.0 - 1.0) / (3.0 - (1.0 + 0.5) / 2))


@pytest.mark.parametrize("bad", [{"eps": -0.1}, {"eps": float("nan")}, {"steps": 0}])
def test_attack_functions_refuse_a_meaningless_budget(bad):
    f, x, y = torch.nn.Linear(4, 3), torch.rand(2, 4), torch.tensor([0, 1])
    args = {"eps": 0.1, "steps": 2} | bad
    for attack in (pgd, apgd):
        with pytest.raises(ValueError, match="eps >= 0 and at least one step"):
            attack(f, x, y, args["eps"], args["steps"])


@pytest.mark.parametrize(
    ("classes", "targets", "runs", "note"),
    [
        (2, 9, ["pgd", "apgd-ce"], "apgd-t was not run"),
        (3, 9, ["pgd", "apgd-ce"], "needs at least 4 classes and the classifier has 3"),
        (4, 9, ["pgd", "apgd-ce", "apgd-t"], "attacks all 3 wrong classes: targets=9 was asked"),
        (10, 9, ["pgd", "apgd-ce", "apgd-t"], None),
    ],
)
def test_attacks_follow_autoattacks_class_count_rule(classes, targets, runs, note):
    notes = []
    attacks, n_targets = Adversarial("test", targets=targets).plan(classes, lambda m, **d: notes.append(m))
    assert attacks == runs and n_targets == min(targets, classes - 1)
    assert (note is None and notes == []) or (len(notes) == 1 and note in notes[0])


def test_one_class_cannot_be_attacked():
    with pytest.raises(ClipevalError, match="at least 2 classes"):
        Adversarial("test").plan(1, lambda m, **d: None)


@pytest.mark.parametrize(
    "bad",
    [{"eps": [-1]}, {"eps": [4, 4.0]}, {"eps": []}, {"attacks": []}, {"attacks": ["pgd", "pgd"]}, {"steps": 0},
     {"limit": 0}, {"targets": 0}, {"eps_scale": 0}],
)  # fmt: skip
def test_settings_that_would_give_meaningless_records_are_refused(bad):
    with pytest.raises(ClipevalError, match="Adversarial evaluation of 'test'"):
        Adversarial("test", **bad)


def test_robust_top1_counts_only_samples_that_are_right_clean():
    """A classifier that is wrong exactly at the clean image and right everywhere around it: the
    attack cannot make it wrong, but the sample was never right, so it is not robust."""
    x = torch.full((1, 3, 4, 4), 0.5)

    def f(images):
        away = (images - x).flatten(1).abs().amax(1)  # 0 at the clean image
        return torch.stack([away * 1e4 - 1, torch.zeros_like(away)], 1)  # class 0 wins away from it

    y = torch.tensor([0])
    assert f(x).argmax(1).item() == 1  # wrong clean
    quiet = types.SimpleNamespace(progress=False, log_every=30)
    outcomes = Adversarial("test", eps=[8], steps=3, attacks=["pgd"])._attack(f, x, y, ["pgd"], 1, quiet)
    assert not outcomes["clean"].any() and not outcomes["pgd@8"].any() and not outcomes["worst@8"].any()


def test_apgd_t_is_not_run_on_two_classes_and_the_worst_case_combines_what_ran(tmp_path):
    """The issue's case: with two classes APGD-T's loss is constant, so it used to report clean top-1
    as robust top-1 (1.0 here, where APGD-CE gives 0.0)."""
    adversarial = "{_target_:clipeval.evaluators.adversarial.Adversarial,dataset:test,eps:[0,255],steps:5}"
    overrides = folder_run(tmp_path, ["red_square", "green_circle"], 3, {"adversarial": adversarial})
    doc = run_in_process(overrides, tmp_path / "run")
    attacked = [r for r in doc["records"] if r["metric"] in ("clean_top1", "robust_top1")]
    rec = {(r["dataset"], r["metric"], r.get("params", {}).get("attack"), r.get("params", {}).get("eps")): r["value"]
           for r in attacked}  # fmt: skip
    assert not [key for key in rec if key[2] == "apgd-t"]
    assert rec[("test", "clean_top1", None, None)] == 1.0
    assert rec[("test", "robust_top1", "apgd-ce", 255.0)] == 0.0 == rec[("test", "robust_top1", "worst", 255.0)]
    assert rec[("test", "robust_top1", "worst", 0.0)] == 1.0
    (note,) = doc["notes"]
    assert note["evaluator"] == "adversarial" and note["not_run"] == ["apgd-t"]
    assert note["worst_over"] == ["pgd", "apgd-ce"] and "needs at least 4 classes" in note["message"]
    frame = pd.read_parquet(tmp_path / "run" / "predictions" / "folder" / "test.adversarial.parquet")
    assert (
        "apgd-t@255" not in frame
        and (frame["worst@255"] == frame["clean"] & frame["pgd@255"] & frame["apgd-ce@255"]).all()
    )


# ---------------------------------------------------------------- probes


def test_few_shot_skips_the_ks_a_class_is_too_small_for_and_names_it():
    x, y = blobs(20, 3, 8, 0.5, seed=0)
    keep = np.flatnonzero(y != 1)[:40].tolist() + np.flatnonzero(y == 1)[:3].tolist()  # class 1 has 3 examples
    ctx = ArrayContext({"train": (x[keep], y[keep]), "test": blobs(10, 3, 8, 0.5, seed=0)},
                       classnames=["cat", "dog", "fox"])  # fmt: skip
    records = FewShot("train", "test", ks=[1, 2, 4, 8], seeds=2).evaluate(ctx)
    assert [r.params["k"] for r in records if r.metric == "top1"] == [0, 1, 2]  # k = 0: the zero-shot reference
    (note,) = ctx.notes
    assert note["skipped_ks"] == [4, 8] and note["too_small"] == [["dog", 3]] and "'dog' (3)" in note["message"]


def test_few_shot_with_no_k_left_is_a_user_error_naming_the_class():
    x, y = blobs(5, 3, 8, 0.5, seed=0)
    ctx = ArrayContext({"train": (x, y), "test": (x, y)}, classnames=["cat", "dog", "fox"])
    with pytest.raises(ClipevalError, match=r"cannot run any of ks=\[8, 16\].*'cat' \(5\)"):
        FewShot("train", "test", ks=[8, 16]).evaluate(ctx)


def test_a_class_without_training_examples_is_named_in_a_note():
    x, y = blobs(10, 3, 8, 0.5, seed=0)
    names = ["cat", "dog", "fox", "owl"]  # no owl in the data
    ctx = ArrayContext({"train": (x, y), "test": (x, y)}, classnames=names)
    FewShot("train", "test", ks=[1], seeds=1).evaluate(ctx)
    LinearProbe("train", ["test"]).evaluate(ctx)
    assert [n["classes_without_examples"] for n in ctx.notes] == [["owl"], ["owl"]]
    assert "chooses among the 3 others and never predicts them: 'owl' (0)" in ctx.notes[0]["message"]


@pytest.mark.parametrize("ks", [[], [0, 1], [4, 2], [2, 2]])
def test_few_shot_ks_must_increase_from_one(ks):
    with pytest.raises(ClipevalError, match="ks increasing"):
        FewShot("train", "test", ks=ks)


def test_a_probe_needs_two_classes():
    x, y = blobs(10, 1, 8, 0.5, seed=0)
    with pytest.raises(ClipevalError, match="at least 2 classes"):
        LinearProbe("train", ["train"]).evaluate(ArrayContext({"train": (x, y)}))


# ---------------------------------------------------------------- a failing evaluator


FEW_SHOT = "{_target_:clipeval.evaluators.linear_probe.FewShot,train:test,test:test,ks:%s,seeds:1}"


def test_few_shot_skip_is_a_note_in_results_json(tmp_path):
    overrides = folder_run(
        tmp_path, ["red_square", "green_circle", "blue_triangle"], 3, {"few_shot": FEW_SHOT % "[1,2,4]"}
    )
    doc = run_in_process(overrides, tmp_path / "run")
    shots = [r for r in doc["records"] if r["metric"] == "top1" and r.get("params", {}).get("probe") == "few-shot"]
    assert [(r["dataset"], r["params"]["k"]) for r in shots] == [("test", 0), ("test", 1), ("test", 2)]
    (note,) = doc["notes"]
    assert note["evaluator"] == "few_shot" and note["skipped_ks"] == [4] and "'red square' (3)" in note["message"]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["notes"] == doc["notes"]


def finished(run_dir: Path, store: Path) -> tuple[dict, dict]:
    """(results.json, the store's only entry)."""
    (stored,) = load_store(store)
    return json.loads((run_dir / "results.json").read_text()), stored.raw


def test_a_user_error_in_an_evaluator_keeps_the_finished_records_and_exits_2(tmp_path):
    overrides = folder_run(tmp_path, ["red_square", "green_circle"], 3, {"few_shot": FEW_SHOT % "[8]"})
    with pytest.raises(
        ClipevalError, match="Evaluator 'few_shot' of task 'folder' failed: Few-shot .*'red square' \\(3\\)"
    ):
        run_in_process(overrides, tmp_path / "run")
    doc, stored = finished(tmp_path / "run", tmp_path / "store")
    assert doc == stored
    assert {r["metric"] for r in doc["records"]} == {"top1", "mean_per_class_recall"}  # the zero-shot evaluator's
    (failure,) = doc["failures"]
    assert failure["evaluator"] == "few_shot" and failure["type"] == "ClipevalError" and "ks=[8]" in failure["error"]


def test_a_bug_in_an_evaluator_keeps_its_traceback_after_writing(tmp_path):
    overrides = folder_run(tmp_path, ["red_square", "green_circle"], 3, {"boom": f"{{_target_:{__name__}.Boom}}"})
    with pytest.raises(RuntimeError, match="boom") as raised:
        run_in_process(overrides, tmp_path / "run")
    assert raised.traceback[-1].name == "evaluate"  # raised again as it was: the bug's own frame is last
    doc, _ = finished(tmp_path / "run", tmp_path / "store")
    assert {r["metric"] for r in doc["records"]} == {"top1", "mean_per_class_recall"}
    assert doc["failures"] == [
        {"task": "folder", "evaluator": "boom", "type": "RuntimeError", "error": "boom: a bug in an evaluator"}
    ]


def test_a_later_task_of_a_suite_failing_keeps_the_earlier_tasks_records(tmp_path):
    overrides = folder_run(tmp_path, ["red_square", "green_circle"], 3, {})
    cfg = compose_config([*QUIET, *overrides])
    OmegaConf.set_struct(cfg, False)
    failing = OmegaConf.merge(cfg.task, {"name": "second", "evaluators": {"boom": {"_target_": f"{__name__}.Boom"}}})
    cfg.suite = {"name": "two_tasks", "version": "1", "tasks": {"first": cfg.task, "second": failing}}
    cfg.task = None
    with pytest.raises(RuntimeError, match="boom"):
        run(cfg, tmp_path / "run")
    doc, _ = finished(tmp_path / "run", tmp_path / "store")
    # the first task, and the zero-shot evaluator that ran before the bug in the second
    assert {(r["task"], r["dataset"]) for r in doc["records"]} == {("folder", "test"), ("second", "test")}
    assert doc["failures"][0]["task"] == "second" and "not computed" not in json.dumps(doc)


@pytest.mark.slow
def test_the_command_line_writes_finished_records_then_exits_2(tmp_path):
    overrides = folder_run(
        tmp_path,
        ["red_square", "green_circle"],
        3,
        {"few_shot": FEW_SHOT % "[8]"},
        model=["model=custom", "model._target_=user_model.MeanColourEncoder"],
    )
    out = tmp_path / "out"
    env = {**os.environ, "CLIPEVAL_CACHE": str(tmp_path / "cache"), "CLIPEVAL_STORE": str(tmp_path / "store")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "clipeval", *overrides, *QUIET, f"hydra.run.dir={out}"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Evaluator 'few_shot' of task 'folder' failed" in proc.stderr and "'red square' (3)" in proc.stderr
    doc, stored = finished(out, tmp_path / "store")
    assert doc == stored and doc["failures"][0]["evaluator"] == "few_shot"
    assert {r["metric"] for r in doc["records"]} == {"top1", "mean_per_class_recall"}


def test_the_gate_refuses_a_run_that_did_not_finish(tmp_path):
    """A failed run's records are incomplete: neither a golden file nor a candidate can come from it."""
    from clipeval.check.documents import load_run
    from clipeval.check.record import record_golden

    overrides = folder_run(tmp_path, ["red_square", "green_circle"], 3, {"boom": f"{{_target_:{__name__}.Boom}}"})
    with pytest.raises(RuntimeError, match="boom"):
        run_in_process(overrides, tmp_path / "run")
    with pytest.raises(ClipevalError, match="did not finish: folder/boom: boom: a bug in an evaluator"):
        record_golden(tmp_path / "run", tmp_path / "golden.json")
    with pytest.raises(ClipevalError, match="did not finish"):
        load_run(tmp_path / "run")  # how clipeval check reads a candidate (and a golden file)
