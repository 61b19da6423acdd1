"""Zero-shot runs end to end in-process, and agree with a direct computation sample for sample."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from conftest import make_wds, open_clip_overrides, run_in_process, synthetic_image
from PIL import Image

from clipeval.models.open_clip import OpenClipEncoder
from clipeval.results.store import ResultsDocument, load_store

TEMPLATES = ["a photo of a {c}.", "a blurry photo of a {c}."]


def reference_predictions(model, folder, classnames, templates) -> dict[str, list[int]]:
    """Top-5 by hand: per image encode_image, per class the renormalised mean of its prompts."""
    protos = []
    with torch.no_grad():
        for name in classnames:
            emb = model.encode_text(model.tokenize([t.replace("{c}", name) for t in templates]))
            mean = emb.mean(dim=0)
            protos.append(mean / mean.norm())
        weights = torch.stack(protos)
        out = {}
        for path in sorted(folder.rglob("*.png")):
            image = model.preprocess(Image.open(path).convert("RGB")).unsqueeze(0)
            scores = (model.encode_image(image) @ weights.T)[0]
            out[path.relative_to(folder).as_posix()] = scores.topk(min(5, len(classnames))).indices.tolist()
    return out


def test_predictions_equal_a_direct_reference(tiny_open_clip, image_folder, tmp_path):
    overrides = open_clip_overrides(tiny_open_clip, **{"task": "folder", "task.root": str(image_folder)})
    doc = run_in_process([*overrides, f"task.templates=[{','.join(repr(t) for t in TEMPLATES)}]"], tmp_path / "run")
    model = OpenClipEncoder(**{k: tiny_open_clip[k] for k in ("arch", "pretrained", "model_config")})
    expected = reference_predictions(model, image_folder, ["blue triangle", "green circle", "red square"], TEMPLATES)
    preds = pd.read_parquet(tmp_path / "run" / "predictions" / "folder" / "test.parquet")
    assert len(preds) == 12
    for row in preds.itertuples():
        assert list(row.topk) == expected[row.sample_id], row.sample_id
    top1 = sum(int(row.topk[0] == row.label) for row in preds.itertuples()) / 12
    assert {r["metric"]: r["value"] for r in doc["records"]}["top1"] == pytest.approx(top1)
    # the results document holds the same predictions, in sorted sample-id order
    parsed = ResultsDocument.parse(doc)
    (record,) = [r for r in parsed.records if r.metric == "top1"]
    samples = parsed.samples(record.samples)
    by_id = preds.set_index("sample_id").sort_index()
    assert samples.n == 12 and samples.topk.tolist() == [list(t) for t in by_id.topk]
    assert samples.labels.tolist() == by_id.label.tolist() and samples.value("top1") == pytest.approx(top1)


def test_results_json_schema_and_store(tiny_open_clip, image_folder, tmp_path, monkeypatch):
    overrides = open_clip_overrides(tiny_open_clip, **{"task": "folder", "task.root": str(image_folder)})
    doc = run_in_process(overrides, tmp_path / "run")
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(doc))
    assert set(on_disk) >= {
        "clipeval_version",
        "model",
        "selection",
        "records",
        "samples",
        "config",
        "created",
        "git_sha",
    }
    assert on_disk["model"]["name"] == "clipeval-test-tiny" and len(on_disk["model"]["fingerprint"]) == 32
    assert on_disk["kind"] == "clipeval-results" and on_disk["schema_version"] == 3
    assert on_disk["selection"] == {"name": "folder", "version": "1", "kind": "task", "tasks": {"folder": "1"}}
    assert [r["metric"] for r in on_disk["records"]] == [
        "top1",
        "mean_per_class_recall",
    ]  # 3 classes: no top5
    for record in on_disk["records"]:
        assert record["task"] == "folder" and record["dataset"] == "test" and record["n"] == 12
        assert "params" not in record  # zero-shot records have no params
        assert 0 <= record["ci"][0] <= record["value"] <= record["ci"][1] <= 1
    assert on_disk["config"]["task"]["root"] == str(image_folder)
    run_in_process(overrides, tmp_path / "run2")
    stored = load_store(tmp_path / "store")
    assert len(stored) == 2 and stored[0].raw["records"] == stored[1].raw["records"]


def test_class_subset_scores_over_the_subset_only(tiny_open_clip, tmp_path):
    # Six class names, images of classes 1, 3 and 4 only: labels index the subset [1, 3, 4].
    names = ["cat", "dog", "car", "tree", "boat", "lamp"]
    for label, name in enumerate(["dog", "tree", "boat"]):
        (tmp_path / "img" / name).mkdir(parents=True)
        for i in range(3):
            synthetic_image(label, i).save(tmp_path / "img" / name / f"{i}.png")
    overrides = open_clip_overrides(
        tiny_open_clip,
        **{
            "task": "folder",
            "task.root": str(tmp_path / "img"),
            "task.classnames": f"[{','.join(names)}]",
            "task.class_subset": "[1,3,4]",
        },
    )
    # folder order is boat, dog, tree: give the subset in that order
    overrides[-1] = "task.class_subset=[4,1,3]"
    run_in_process(overrides, tmp_path / "run")
    model = OpenClipEncoder(**{k: tiny_open_clip[k] for k in ("arch", "pretrained", "model_config")})
    expected = reference_predictions(model, tmp_path / "img", ["boat", "dog", "tree"], ["a photo of a {c}."])
    preds = pd.read_parquet(tmp_path / "run" / "predictions" / "folder" / "test.parquet")
    assert {r.sample_id: list(r.topk) for r in preds.itertuples()} == expected


def test_labels_beyond_the_class_list_are_a_clear_error(tiny_open_clip, image_folder, tmp_path):
    from clipeval.errors import ClipevalError

    overrides = open_clip_overrides(
        tiny_open_clip,
        **{"task": "folder", "task.root": str(image_folder), "task.classnames": "[a,b]"},
    )
    with pytest.raises(ClipevalError, match="has 3 classes, but its labels are scored against the 2 names"):
        run_in_process(overrides, tmp_path / "run")


def test_templates_and_classnames_from_files(tiny_open_clip, image_folder, tmp_path):
    (tmp_path / "names.txt").write_text("triangle\ncircle\nsquare\n")
    (tmp_path / "templates.txt").write_text("a photo of a {c}.\nan image of a {c}.\n")
    overrides = open_clip_overrides(
        tiny_open_clip,
        **{
            "task": "folder",
            "task.root": str(image_folder),
            "task.classnames": str(tmp_path / "names.txt"),
            "task.templates": str(tmp_path / "templates.txt"),
        },
    )
    run_in_process(overrides, tmp_path / "run")
    model = OpenClipEncoder(**{k: tiny_open_clip[k] for k in ("arch", "pretrained", "model_config")})
    expected = reference_predictions(
        model,
        image_folder,
        ["triangle", "circle", "square"],
        ["a photo of a {c}.", "an image of a {c}."],
    )
    preds = pd.read_parquet(tmp_path / "run" / "predictions" / "folder" / "test.parquet")
    assert {r.sample_id: list(r.topk) for r in preds.itertuples()} == expected


def test_broken_images_are_reported_and_the_run_completes(tiny_open_clip, image_folder, tmp_path, caplog):
    (image_folder / "red_square" / "broken.png").write_bytes(b"\x89PNG not really")
    overrides = open_clip_overrides(tiny_open_clip, **{"task": "folder", "task.root": str(image_folder)})
    doc = run_in_process(overrides, tmp_path / "run")
    assert all(r["n"] == 12 for r in doc["records"])
    assert doc["skipped"]["folder"]["test"][0][0] == "red_square/broken.png"
    assert "1 of 13 images" in caplog.text and "red_square/broken.png" in caplog.text


def test_hf_model_on_wds_data(tiny_hf_clip, tmp_path):
    root = make_wds(tmp_path / "wds")
    doc = run_in_process(
        ["model=hf", f"model.name_or_path={tiny_hf_clip}", "task=wds", f"task.root={root}"],
        tmp_path / "run",
    )
    assert doc["model"]["name"] == tiny_hf_clip.name
    assert {r["n"] for r in doc["records"]} == {12}
    preds = pd.read_parquet(tmp_path / "run" / "predictions" / "wds" / "test.parquet")
    assert sorted(preds.sample_id) == list(preds.sample_id)


def test_user_model_class_via_target(image_folder, tmp_path):
    # A model that sees colour: it must classify the colour-coded images perfectly.
    (tmp_path / "names.txt").write_text("red\ngreen\nblue\n")
    folder = image_folder.parent / "rgb"
    folder.mkdir()
    for old, new in (("red_square", "0"), ("green_circle", "1"), ("blue_triangle", "2")):
        (image_folder / old).rename(folder / new)
    doc = run_in_process(
        [
            "model=custom",
            "model._target_=user_model.MeanColourEncoder",
            "task=folder",
            f"task.root={folder}",
            f"task.classnames={tmp_path / 'names.txt'}",
            "task.numeric_sort=true",
        ],
        tmp_path / "run",
    )
    assert {r["metric"]: r["value"] for r in doc["records"]}["top1"] == 1.0
