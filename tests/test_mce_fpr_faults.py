"""Faults found in the mCE evaluator, FPR at 95% TPR and the ImageNet-C data paths (session 7), each checked
against an independent computation.

- The mCE interval pairs images across settings even when a few images are missing from one setting.
- Relative mCE may be negative: its interval is not clipped at 0, and its records pass validation.
- One invalid record of an evaluator never loses that evaluator's other records.
- FPR at 95% TPR equals hendrycks/natural-adv-examples' ``fpr_and_fdr_at_recall`` (transcribed here).
- Every absent ImageNet-C setting is named; a partial mCE says how many corruptions it averages;
  CorruptedSource refuses a crop larger than its resize.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import compose_config, make_image_folder, run_in_process, synthetic_image

from clipeval.data import corruptions as C
from clipeval.data.corrupted import CorruptedSource
from clipeval.data.folder import ImageFolderSource
from clipeval.errors import ClipevalError, PartialRecords
from clipeval.evaluators.corruption_error import ALEXNET_PUBLISHED, CorruptionError
from clipeval.results.record import Record, metric_info
from clipeval.results.scores import fpr_at_recall
from clipeval.results.validate import check_records
from clipeval.run.task import load_task

WNIDS = (Path(__file__).parents[1] / "tasks" / "imagenet" / "wnids.txt").read_text().split()


class IdContext:
    """Zero-shot logits predicting given classes, each dataset with its own sample ids (images)."""

    def __init__(self, predictions: dict[str, dict[str, int]], labels: dict[str, int]):
        self.predictions, self.labels, self.notes = predictions, labels, []

    def datasets(self):
        return list(self.predictions)

    def features(self, dataset):
        ids = list(self.predictions[dataset])
        return SimpleNamespace(labels=torch.tensor([self.labels[i] for i in ids]), ids=ids)

    def zero_shot_logits(self, dataset):
        return torch.nn.functional.one_hot(torch.tensor(list(self.predictions[dataset].values())), 3).float()

    def check_labels(self, *args):
        pass

    def note(self, message, **details):
        self.notes.append(message)


def correlated_predictions(n: int = 400, seed: int = 0) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """The 75 settings over the same n images; an image's difficulty is shared by all settings (as in ImageNet-C)."""
    rng = np.random.default_rng(seed)
    ids = [f"n{k:03d}/ILSVRC2012_val_{k:08d}.JPEG" for k in range(n)]
    labels = dict.fromkeys(ids, 0)
    hard = rng.random(n)
    predictions = {}
    for c in C.CORRUPTIONS:
        for s in C.SEVERITIES:
            wrong = hard < 0.2 + 0.1 * s + 0.05 * rng.random(n)
            predictions[f"{c}_{s}"] = {i: int(w) for i, w in zip(ids, wrong, strict=True)}
    return predictions, labels


def records_of(evaluator: CorruptionError, ctx) -> dict[tuple[str, str], Record]:
    return {(r.dataset, r.metric): r for r in evaluator.evaluate(ctx)}


def test_a_setting_missing_one_image_keeps_an_interval_close_to_the_complete_datas():
    predictions, labels = correlated_predictions()
    complete = records_of(CorruptionError(), IdContext(predictions, labels))[("all_corruptions", "mce")]
    short = {d: dict(v) for d, v in predictions.items()}
    del short["fog_3"][next(iter(short["fog_3"]))]  # one unreadable file in one setting
    ctx = IdContext(short, labels)
    records = records_of(CorruptionError(), ctx)
    mce = records[("all_corruptions", "mce")]
    half, half_complete = (mce.ci[1] - mce.ci[0]) / 2, (complete.ci[1] - complete.ci[0]) / 2
    assert half == pytest.approx(half_complete, rel=0.05)  # the old independent interval was ~8x narrower
    assert "common" in mce.ci_method and mce.n == 399
    # the value is the plain definition over each setting's own images (computed here from the predictions)
    ce = {
        c: sum(np.mean(list(short[f"{c}_{s}"].values())) for s in C.SEVERITIES) / (5 * ALEXNET_PUBLISHED[c])
        for c in C.CORRUPTIONS
    }
    assert mce.value == pytest.approx(np.mean(list(ce.values())))
    assert records[("fog", "corruption_error")].value == pytest.approx(ce["fog"])
    assert any("fog_3 (1)" in n and "1 of the 400 images" in n for n in ctx.notes)


def test_a_missing_class_folder_in_one_setting_pairs_the_common_images():
    predictions, labels = correlated_predictions()
    short = {d: dict(v) for d, v in predictions.items()}
    gone = set(list(short["snow_2"])[:100])  # a class folder of 100 images missing in one setting
    short["snow_2"] = {i: p for i, p in short["snow_2"].items() if i not in gone}
    mce = records_of(CorruptionError(), IdContext(short, labels))[("all_corruptions", "mce")]
    # the paired interval of the 300 common images, computed here
    common = [i for i in predictions["snow_2"] if i not in gone]
    score = sum(
        np.array([short[f"{c}_{s}"][i] for i in common]) / (5 * ALEXNET_PUBLISHED[c] * 15)
        for c in C.CORRUPTIONS
        for s in C.SEVERITIES
    )
    half = 1.959964 * score.std(ddof=1) / np.sqrt(len(common))
    assert (mce.ci[1] - mce.ci[0]) / 2 == pytest.approx(half, rel=1e-5) and mce.n == 300


def test_relative_mce_below_zero_keeps_its_interval_and_every_record():
    rng = np.random.default_rng(3)
    ids = [f"img{i}" for i in range(60)]
    labels = dict.fromkeys(ids, 0)
    predictions = {f"{c}_{s}": {i: int(rng.random() < 0.1) for i in ids} for c in ("fog", "snow") for s in C.SEVERITIES}
    predictions["val"] = {i: int(rng.random() < 0.6) for i in ids}  # worse on clean images than corrupted ones
    evaluator = CorruptionError(baseline={"fog": 0.6, "snow": 0.7, "clean": 0.4})
    records = records_of(evaluator, IdContext(predictions, labels))
    rel = records[("all_corruptions", "relative_mce")]
    err = {d: np.mean(list(v.values())) for d, v in predictions.items()}
    expected = np.mean([sum(err[f"{c}_{s}"] - err["val"] for s in C.SEVERITIES) / (5 * (b - 0.4))
                        for c, b in (("fog", 0.6), ("snow", 0.7))])  # fmt: skip
    assert rel.value == pytest.approx(expected) and rel.value < 0
    assert rel.ci[0] < rel.value < rel.ci[1] < 0  # not clipped at 0
    assert {m for _, m in records} == {"corruption_error", "mce", "relative_mce"}
    check_records(list(records.values()), lambda k: None, metric_info, lambda i, r: r.metric)  # valid
    assert metric_info("relative_mce").unit == "signed_ratio" and metric_info("mce").unit == "ratio"
    assert records[("all_corruptions", "mce")].ci[0] >= 0  # CE and mCE cannot be negative: clipped at 0


def test_a_partial_mce_names_its_corruption_count_and_the_full_one_keeps_its_identity():
    predictions, labels = correlated_predictions(50)
    full = records_of(CorruptionError(), IdContext(predictions, labels))[("all_corruptions", "mce")]
    assert full.params == {"baseline": "alexnet-published"}
    two = {d: v for d, v in predictions.items() if d.startswith(("fog_", "snow_"))}
    part = records_of(CorruptionError(), IdContext(two, labels))[("all_corruptions", "mce")]
    assert part.params == {"baseline": "alexnet-published", "corruptions": 2} and part.key != full.key
    # one corruption's CE does not depend on the others: it keeps the identity of a full run's, for the gate
    fog_full = records_of(CorruptionError(), IdContext(predictions, labels))[("fog", "corruption_error")]
    fog_part = records_of(CorruptionError(), IdContext(two, labels))[("fog", "corruption_error")]
    assert fog_part.key == fog_full.key and fog_part.value == pytest.approx(fog_full.value)


def test_the_published_baseline_says_why_there_is_no_relative_mce():
    predictions, labels = correlated_predictions(50)
    predictions["val"] = dict(predictions["fog_1"])
    ctx = IdContext(predictions, labels)
    records = records_of(CorruptionError(), ctx)
    assert ("all_corruptions", "relative_mce") not in records
    assert any("no relative mCE" in n and "no clean error" in n and "testbed" in n for n in ctx.notes)


# ---------------------------------------------------------------- one bad record never loses the others


class HalfBad:
    """An evaluator returning one valid record and one outside its unit's range."""

    def evaluate(self, ctx):
        good = Record("a", "mce", 0.5, 10, (0.4, 0.6), "normal-paired")
        bad = Record("b", "mce", -0.5, 10, (-0.6, -0.4), "normal-paired")  # a ratio cannot be negative
        return [good, bad]


class RaisesPartial:
    def evaluate(self, ctx):
        raise PartialRecords("the third record was wrong", [Record("c", "mce", 0.7, 10, (0.6, 0.8), "normal-paired")])


@pytest.mark.parametrize("evaluator", ["HalfBad", "RaisesPartial"])
def test_one_invalid_record_keeps_the_evaluators_valid_records(tmp_path, evaluator):
    root = make_image_folder(tmp_path / "images", classes=["red_square", "green_circle"], per_class=3)
    overrides = ["model=custom", "model._target_=user_model.ColourModel", "task=folder", f"task.root={root}",
                 f"+task.evaluators.bad={{_target_:{__name__}.{evaluator}}}"]  # fmt: skip
    with pytest.raises(ClipevalError, match="Evaluator 'bad' of task 'folder' failed"):
        run_in_process(overrides, tmp_path / "run")
    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    kept = {(r["dataset"], r["metric"]) for r in doc["records"]}
    assert ("a" if evaluator == "HalfBad" else "c", "mce") in kept and ("b", "mce") not in kept
    assert any(m == "top1" for _, m in kept) and doc["failures"][0]["evaluator"] == "bad"


# ---------------------------------------------------------------- FPR at 95% TPR


def reference_fpr(y_true: np.ndarray, y_score: np.ndarray, recall_level: float = 0.95) -> float:
    """hendrycks/natural-adv-examples calibration_tools.fpr_and_fdr_at_recall, transcribed line by line."""
    y_true = y_true == 1
    desc = np.argsort(y_score, kind="mergesort")[::-1]
    y_score, y_true = y_score[desc], y_true[desc]
    distinct = np.where(np.diff(y_score))[0]
    threshold_idxs = np.r_[distinct, y_true.size - 1]
    tps = np.cumsum(y_true, dtype=np.float64)[threshold_idxs]
    fps = 1 + threshold_idxs - tps
    recall = tps / tps[-1]
    last_ind = tps.searchsorted(tps[-1])
    sl = slice(last_ind, None, -1)
    recall, fps = np.r_[recall[sl], 1], np.r_[fps[sl], 0]
    cutoff = np.argmin(np.abs(recall - recall_level))
    return fps[cutoff] / np.sum(np.logical_not(y_true))


def test_fpr95_equals_the_reference_on_many_small_cases():
    rng = np.random.default_rng(0)
    for case in range(4000):
        pos, neg = int(rng.integers(1, 25)), int(rng.integers(1, 25))
        y = np.r_[np.ones(pos), np.zeros(neg)].astype(int)
        s = np.r_[rng.normal(rng.uniform(-1, 4), 1, pos), rng.normal(0, 1, neg)]
        if case % 3 == 0:
            s = np.round(s, 0)  # many ties
        if case % 7 == 0:
            s = np.r_[rng.uniform(5, 6, pos), rng.uniform(0, 1, neg)]  # perfect separation
        order = rng.permutation(len(y))
        y, s = y[order], s[order]
        assert fpr_at_recall(y, s) == pytest.approx(reference_fpr(y, s), abs=1e-12), (case, y.tolist(), s.tolist())


def test_fpr95_with_few_anomalies_cuts_at_full_recall():
    # 3 anomalies: recalls 1/3, 2/3, 1; the closest to 0.95 is full recall, reached first at the threshold 0.5
    y = np.array([1, 1, 0, 1, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.5, 0.5, 0.4, 0.1])
    assert fpr_at_recall(y, s) == pytest.approx(reference_fpr(y, s)) == pytest.approx(2 / 4)


# ---------------------------------------------------------------- ImageNet-C data


def test_every_absent_imagenet_c_setting_is_named(tmp_path):
    for c in C.CORRUPTIONS:
        for s in C.SEVERITIES:
            if c == "snow" or (c, s) == ("fog", 3):
                continue
            folder = tmp_path / "imagenet-c" / c / str(s) / WNIDS[0]
            folder.mkdir(parents=True)
            synthetic_image(0, 0, size=32).save(folder / "ILSVRC2012_val_00000001.JPEG", format="JPEG")
    with pytest.raises(ClipevalError) as info:
        load_task(compose_config(["task=imagenet_c", f"data_root={tmp_path}"]).task)
    message = str(info.value)
    assert message.startswith("Task 'imagenet_c': ImageNet-C snow severity 1") and "6 of the task's 76" in message
    assert all(f"snow_{s}" in message for s in C.SEVERITIES) and "fog_3" in message and "zenodo" in message


def test_a_crop_larger_than_the_resize_is_refused(tmp_path):
    source = ImageFolderSource(root=str(make_image_folder(tmp_path / "f", per_class=1)))
    with pytest.raises(ClipevalError, match="crop=300 is larger than resize=256"):
        CorruptedSource(source, "fog", 1, resize=256, crop=300)
    CorruptedSource(source, "fog", 1, resize=None, crop=300)  # no resize: the source's own size


# ---------------------------------------------------------------- calibration over ImageNet-C's 75 settings


def test_imagenet_c_tasks_write_the_ece_of_every_setting():
    for task in ("imagenet_c", "imagenet_c_generated"):
        cfg = compose_config([f"task={task}"]).task
        assert cfg.evaluators.zeroshot.calibration is True


@pytest.mark.parametrize("form", ["++task.evaluators.zeroshot.calibration=true"])
@pytest.mark.parametrize("task", ["folder", "imagenet_c", "imagenet"])
def test_calibration_turns_on_with_the_same_override_whether_the_key_is_there_or_not(form, task):
    cfg = compose_config([f"task={task}", form]).task
    assert cfg.evaluators.zeroshot.calibration is True


def test_76_reliability_panels_become_the_12_largest_ece_and_an_ece_figure(tmp_path):
    from test_figures import check_paper_rules

    from clipeval.report import figures

    rng = np.random.default_rng(0)
    records, kept = [], {}
    for k in range(76):
        confidence = rng.uniform(0.2, 1.0, 50)
        correct = rng.random(50) < confidence - 0.01 * k
        key = f"s{k}"
        kept[key] = SimpleNamespace(scores={"confidence": confidence}, outcome=lambda m, c=correct: c)
        records.append(Record(f"setting_{k}", "ece", 0.001 * k, 50, (0.0, 0.002 * k + 0.01), "bootstrap",
                              params={"bins": 15}, samples=key, task="imagenet_c"))  # fmt: skip
    doc = SimpleNamespace(records=records, samples=kept.get, model_label="tiny")
    written = figures.calibration_figures(doc, tmp_path)
    assert [p.name for p in written] == ["reliability.png", "ece.png"]
    ece = figures.ece_figure(records, "tiny")
    check_paper_rules(ece)
    (ax,) = ece.axes
    assert len(ax.get_yticklabels()) == 76 and ece.get_figheight() < 20
    grid = figures.reliability_figure([("x", r, kept[r.samples].scores["confidence"], kept[r.samples].outcome(""))
                                       for r in records[-12:]], "a model with a rather long name · open_clip "
                                      "ViT-B-32 laion2b_s34b_b79k", "the 12 of 76 datasets with the largest ECE")  # fmt: skip
    check_paper_rules(grid)
    assert grid.get_figheight() < 20


@pytest.mark.parametrize("task", ["imagenet_c", "imagenet_c_generated"])
def test_the_baselines_clean_error_is_set_as_the_readme_and_the_note_say(task):
    """`task.evaluators.mce.baseline_clean=ERROR` (the README's and the run note's command) was refused: the key was
    not in the tasks' files, and Hydra suggested `baseline` instead."""
    from clipeval.config.construct import build
    from clipeval.config.schema import validate_config

    cfg = compose_config([f"task={task}", "task.evaluators.mce.baseline_clean=0.4345", "data_root=/data"])
    validate_config(cfg)
    assert build(cfg.task.evaluators.mce, "evaluator 'mce'").clean_error == pytest.approx(0.4345)
