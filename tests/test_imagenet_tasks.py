"""ImageNet-family tasks on tiny fake copies of each official layout (real folder names and wnids)."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import PUBLISHED, TESTBED, compose_config, open_clip_overrides, run_in_process, synthetic_image
from PIL import Image

from clipeval.config.paths import builtin_tasks_dir
from clipeval.data.imagenet import ObjectNet
from clipeval.errors import ClipevalError
from clipeval.models.open_clip import OpenClipEncoder
from clipeval.results.store import ResultsDocument, load_store
from clipeval.run.task import load_task

TASKS = builtin_tasks_dir()
WNIDS = (TASKS / "imagenet" / "wnids.txt").read_text().split()
NAMES = (TASKS / "imagenet" / "classnames.txt").read_text().splitlines()
R_WNIDS = (TASKS / "imagenet_r" / "wnids.txt").read_text().split()
A_WNIDS = (TASKS / "imagenet_a" / "wnids.txt").read_text().split()
O_WNIDS = (TASKS / "imagenet_o" / "wnids.txt").read_text().split()
ONE_TEMPLATE = "task.templates=['a photo of a {c}.']"
# A sweep over tasks composes first without any task, so a task key needs "++" (add or override).

# ObjectNet's mapping files, in their real format, with a shuffled 2012-id order
PYTORCH_TO_2012 = {i: (7 * i + 3) % 1000 for i in range(1000)}  # a bijection: 7 is prime to 1000
LABEL_2012 = {v: f"imagenet label {k}" for k, v in PYTORCH_TO_2012.items()}  # 2012 id -> label text
OBJECTNET = {"alarm_clock": ("Alarm clock", [409, 530]), "banana": ("Banana", [954]), "teapot": ("Teapot", [849])}


def write_images(folder: Path, label: int, count: int, border: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = synthetic_image(label, i, size=48)
        if border:
            arr = np.asarray(image).copy()
            arr[:2, :], arr[-2:, :], arr[:, :2], arr[:, -2:] = (255, 0, 0), (255, 0, 0), (255, 0, 0), (255, 0, 0)
            image = Image.fromarray(arr)
        image.save(folder / f"{i}.jpg" if not border else folder / f"{i}.png")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    val_classes = [0, 1, WNIDS.index(R_WNIDS[0]), WNIDS.index(R_WNIDS[1]), WNIDS.index(A_WNIDS[0]), 409, 954]
    for k in val_classes:
        write_images(root / "imagenet" / "val" / WNIDS[k], k, 2)
    for k in (0, 1, 2, 10, 999):
        write_images(root / "imagenetv2-matched-frequency-format-val" / str(k), k, 2)
    for k in val_classes:
        write_images(root / "imagenet" / "train" / WNIDS[k], k, 5)
    for name, wnids in (("imagenet-r", R_WNIDS), ("imagenet-a", A_WNIDS)):
        for i in range(3):
            write_images(root / name / wnids[i], i, 2)
    (root / "imagenet-a" / "README.txt").write_text("ImageNet-A")
    for i in range(3):  # ImageNet-O: 3 of its 200 folders (the first, goldfish, has val images above: R_WNIDS[0])
        write_images(root / "imagenet-o" / O_WNIDS[i], 20 + i, 2)
    for k in (0, 5, 999):
        write_images(root / "sketch" / WNIDS[k], k, 2)
    onet = root / "objectnet-1.0"
    for i, folder in enumerate([*OBJECTNET, "air_freshener"]):  # air freshener is not an ImageNet class
        write_images(onet / "images" / folder, i, 2, border=True)
    mappings = onet / "mappings"
    mappings.mkdir(parents=True)
    (mappings / "folder_to_objectnet_label.json").write_text(
        json.dumps({f: label for f, (label, _) in OBJECTNET.items()} | {"air_freshener": "Air freshener"})
    )
    (mappings / "objectnet_to_imagenet_1k.json").write_text(
        json.dumps({label: "; ".join(LABEL_2012[PYTORCH_TO_2012[k]] for k in ks) for label, ks in OBJECTNET.values()})
    )
    (mappings / "pytorch_to_imagenet_2012_id.json").write_text(
        json.dumps({str(k): v for k, v in PYTORCH_TO_2012.items()})
    )
    (mappings / "imagenet_to_label_2012_v2").write_text("\n".join(LABEL_2012[i] for i in range(1000)) + "\n")
    return root


def task_of(name: str, data_root: Path, *extra: str):
    return load_task(compose_config([f"task={name}", f"data_root={data_root}", *extra]).task)


def test_imagenet_o_class_list_is_the_published_one():
    """The 200 wnids of hendrycks/natural-adv-examples (eval_many_models.py) and CLIP_benchmark, sorted; the class
    indices are their positions in ImageNet's list."""
    indices = [int(i) for i in (TASKS / "imagenet_o" / "class_indices.txt").read_text().split()]
    assert len(O_WNIDS) == len(set(O_WNIDS)) == 200 and sorted(O_WNIDS) == O_WNIDS
    assert [WNIDS[i] for i in indices] == O_WNIDS
    assert O_WNIDS[:3] == ["n01443537", "n01704323", "n01770081"] and O_WNIDS[-1] == "n13052670"


def test_imagenet_o_detects_its_images_among_val_images_of_its_classes(tiny_open_clip, data_root, tmp_path):
    doc = run_in_process(
        [*open_clip_overrides(tiny_open_clip), "task=imagenet_o", f"data_root={data_root}", ONE_TEMPLATE], tmp_path
    )
    records = {r["metric"]: r for r in doc["records"]}
    assert set(records) == {"ood_aupr", "ood_auroc", "ood_fpr95"}
    in_distribution = sum(1 for w in O_WNIDS if (data_root / "imagenet" / "val" / w).is_dir()) * 2
    assert in_distribution >= 2 and {r["n"] for r in records.values()} == {in_distribution + 6}
    parsed = ResultsDocument.parse(doc)
    samples = parsed.samples(records["ood_aupr"]["samples"])
    anomaly, score = samples.correct["anomaly"], samples.scores["neg_log_msp"]
    assert anomaly.sum() == 6
    sk = pytest.importorskip("sklearn.metrics")
    assert records["ood_aupr"]["value"] == pytest.approx(sk.average_precision_score(anomaly, score), abs=1e-9)
    assert records["ood_auroc"]["value"] == pytest.approx(sk.roc_auc_score(anomaly, score), abs=1e-9)
    for r in records.values():
        assert r["ci"][0] <= r["value"] <= r["ci"][1] and r["params"] == {"score": "msp"}


def test_imagenet_o_needs_imagenet_val(tmp_path):
    only_o = tmp_path / "only_o"
    write_images(only_o / "imagenet-o" / O_WNIDS[0], 0, 1)
    with pytest.raises(ClipevalError, match="ImageNet validation") as info:
        task_of("imagenet_o", only_o)
    assert "imagenet/val" in str(info.value)


def test_class_lists_are_the_published_ones():
    timm_info = Path(pytest.importorskip("timm").__file__).parent / "data" / "_info"
    assert len(WNIDS) == len(NAMES) == 1000 and sorted(WNIDS) == WNIDS
    assert NAMES[0] == "tench" and NAMES[999] == "toilet paper"
    assert len((TASKS / "imagenet" / "templates.txt").read_text().splitlines()) == 80
    assert len((TASKS / "imagenet" / "templates_7.txt").read_text().splitlines()) == 7
    for task, short in (("imagenet_r", "r"), ("imagenet_a", "a")):
        indices = (TASKS / task / "class_indices.txt").read_text().split()
        assert indices == (timm_info / f"imagenet_{short}_indices.txt").read_text().split()
        assert [WNIDS[int(i)] for i in indices] == (TASKS / task / "wnids.txt").read_text().split()


def test_labels_map_to_the_right_class_indices(data_root):
    val = task_of("imagenet", data_root).sources["val"]
    assert {sid.split("/")[0]: val.label(i) for i, sid in enumerate(val._files)} == {
        WNIDS[k]: k for k in {0, 1, WNIDS.index(R_WNIDS[0]), WNIDS.index(R_WNIDS[1]), WNIDS.index(A_WNIDS[0]), 409, 954}
    }
    v2 = task_of("imagenet_v2", data_root).sources["imagenet-v2"]
    assert {v2._files[i].split("/")[0]: v2.label(i) for i in range(len(v2))} == {
        "0": 0,
        "1": 1,
        "2": 2,
        "10": 10,
        "999": 999,
    }
    r = task_of("imagenet_r", data_root).sources["imagenet-r"]
    assert {r._files[i].split("/")[0]: r.label(i) for i in range(len(r))} == {R_WNIDS[i]: i for i in range(3)}
    sketch = task_of("imagenet_sketch", data_root).sources["imagenet-sketch"]
    assert sorted({sketch.label(i) for i in range(len(sketch))}) == [0, 5, 999]


def test_objectnet_mapping_and_border(data_root):
    source = ObjectNet(str(data_root))
    assert source.folders == ["alarm_clock", "banana", "teapot"]  # air_freshener is not in the mapping
    assert source.class_groups == [[409, 530], [954], [849]]
    assert source.classnames == ["alarm clock", "banana", "teapot"]
    original = np.asarray(Image.open(data_root / "objectnet-1.0" / "images" / source.sample_id(0)).convert("RGB"))
    assert (original[0, :] == (255, 0, 0)).all()
    with source.open_image(0) as image:
        assert np.array_equal(np.asarray(image.convert("RGB")), original[2:-2, 2:-2])  # exactly the 2-pixel border gone


def tiny(tiny_open_clip) -> OpenClipEncoder:
    return OpenClipEncoder(**{k: tiny_open_clip[k] for k in ("arch", "pretrained", "model_config")})


def encode_images(model, folder_images: list[Path], crop: int = 0) -> torch.Tensor:
    with torch.no_grad():
        tensors = []
        for path in folder_images:
            image = Image.open(path).convert("RGB")
            if crop:
                image = image.crop((crop, crop, image.width - crop, image.height - crop))
            tensors.append(model.preprocess(image))
        return model.encode_image(torch.stack(tensors))


def classifier(model, names: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return model.encode_text(model.tokenize([f"a photo of a {n}." for n in names]))


def test_masked_1000_way_logits_equal_a_200_class_classifier(tiny_open_clip, data_root, tmp_path):
    run_in_process(
        [*open_clip_overrides(tiny_open_clip), "task=imagenet_r", f"data_root={data_root}", ONE_TEMPLATE],
        tmp_path / "r",
    )
    preds = pd.read_parquet(tmp_path / "r" / "predictions" / "imagenet_r" / "imagenet-r.parquet")
    model = tiny(tiny_open_clip)
    indices = [int(i) for i in (TASKS / "imagenet_r" / "class_indices.txt").read_text().split()]
    weights = classifier(model, [NAMES[i] for i in indices])  # built from the 200 names alone
    feats = encode_images(model, [data_root / "imagenet-r" / sid for sid in preds.sample_id])
    expected = (feats @ weights.T).topk(5, dim=1).indices
    assert [list(t) for t in preds.topk] == expected.tolist()
    # and the paired setting scores ImageNet val images of R's classes only, over R's classes
    val = pd.read_parquet(tmp_path / "r" / "predictions" / "imagenet_r" / "val-on-imagenet-r-classes.parquet")
    in_r = sorted({w for w in (p.name for p in (data_root / "imagenet" / "val").iterdir()) if w in R_WNIDS})
    assert len(in_r) >= 2
    assert sorted({sid.split("/")[0] for sid in val.sample_id}) == in_r
    assert sorted(val.label) == sorted(R_WNIDS.index(w) for w in in_r for _ in range(2))


def test_objectnet_prediction_is_the_max_over_its_imagenet_classes(tiny_open_clip, data_root, tmp_path):
    doc = run_in_process(
        [*open_clip_overrides(tiny_open_clip), "task=objectnet", f"data_root={data_root}", ONE_TEMPLATE], tmp_path / "o"
    )
    preds = pd.read_parquet(tmp_path / "o" / "predictions" / "objectnet" / "objectnet.parquet")
    model = tiny(tiny_open_clip)
    logits = encode_images(model, [data_root / "objectnet-1.0" / "images" / sid for sid in preds.sample_id], crop=2)
    logits = logits @ classifier(model, NAMES).T
    grouped = torch.stack([logits[:, g].amax(1) for g in ([409, 530], [954], [849])], dim=1)
    assert [list(t) for t in preds.topk] == grouped.topk(3, dim=1).indices.tolist()
    assert list(preds.label) == [0, 0, 1, 1, 2, 2]
    val = {r["dataset"]: r for r in doc["records"]}
    assert val["val-on-objectnet-classes"]["n"] == 4  # val images of classes 409 and 954


def test_shift_task_runs_without_imagenet_val(tiny_open_clip, data_root, tmp_path, caplog):
    only_r = tmp_path / "only_r"
    only_r.mkdir()
    os.symlink(data_root / "imagenet-r", only_r / "imagenet-r")
    doc = run_in_process(
        [*open_clip_overrides(tiny_open_clip), "task=imagenet_r", f"data_root={only_r}", ONE_TEMPLATE], tmp_path / "r"
    )
    assert {r["dataset"] for r in doc["records"]} == {"imagenet-r"}
    assert "optional dataset 'val' is absent" in caplog.text


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (
            "imagenet",
            [
                "Task 'imagenet': ImageNet validation",
                "imagenet/val",
                "ILSVRC2012/val",
                "image-net.org",
                "terms of access",
            ],
        ),
        (
            "imagenet_v2",
            [
                "Task 'imagenet_v2': ImageNetV2 matched-frequency",
                "imagenetv2-matched-frequency-format-val",
                "MIT licence",
            ],
        ),
        ("imagenet_r", ["Task 'imagenet_r': ImageNet-R", "imagenet-r", "imagenet-r.tar", "MIT licence"]),
        ("imagenet_a", ["Task 'imagenet_a': ImageNet-A", "imagenet-a.tar"]),
        ("imagenet_o", ["Task 'imagenet_o': ImageNet-O", "imagenet-o", "imagenet-o.tar", "MIT licence"]),
        ("imagenet_sketch", ["Task 'imagenet_sketch': ImageNet-Sketch", "/sketch", "ImageNet-Sketch.zip"]),
        ("objectnet", ["Task 'objectnet': ObjectNet 1.0", "objectnet-1.0", "objectnet.dev", "no redistribution"]),
        ("imagenet_fewshot", ["Task 'imagenet_fewshot': ImageNet-1k training set", "imagenet/train", "image-net.org"]),
    ],
)
def test_missing_data_says_task_places_and_how_to_get_it(task, expected, tmp_path):
    with pytest.raises(ClipevalError) as info:
        task_of(task, tmp_path / "empty")
    message = str(info.value)
    for part in expected:
        assert part in message, part
    assert str(tmp_path / "empty") in message


def baseline_overrides(prefix: str = "suite.robustness.baselines") -> list[str]:
    """The shared testbed table as the suite's baselines, or no robustness report without it."""
    if not (TESTBED / "robustness_top1s.csv").is_file():
        return ["~suite.robustness"]
    return [f"{prefix}.path={TESTBED / 'robustness_top1s.csv'}", f"{prefix}.model_types={TESTBED / 'model_types.csv'}"]


def test_suite_encodes_imagenet_val_once(tiny_open_clip, data_root, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="clipeval")
    doc = run_in_process(
        [*open_clip_overrides(tiny_open_clip), "suite=natural_shifts", f"data_root={data_root}", "runtime.cache=false"]
        + baseline_overrides()
        + [
            f"suite.tasks.{t}.templates=['a photo of a {{c}}.']"
            for t in ("imagenet", "imagenet_v2", "imagenet_r", "imagenet_a", "imagenet_sketch", "objectnet")
        ],
        tmp_path / "suite",
    )
    val_encodings = [m for m in caplog.messages if "cache miss" in m and "imagenet/val" in m]
    assert len(val_encodings) == 1
    assert encoded_prompts(caplog) == [len(set(NAMES))]  # each class name once, for the six tasks together
    datasets = {(r["task"], r["dataset"]) for r in doc["records"] if r["metric"] == "top1"}
    assert datasets == {
        ("imagenet", "val"), ("imagenet_v2", "imagenet-v2"), ("imagenet_r", "imagenet-r"),
        ("imagenet_r", "val-on-imagenet-r-classes"), ("imagenet_a", "imagenet-a"),
        ("imagenet_a", "val-on-imagenet-a-classes"), ("imagenet_sketch", "imagenet-sketch"),
        ("objectnet", "objectnet"), ("objectnet", "val-on-objectnet-classes"),
    }  # fmt: skip
    if "effective_robustness" in doc:
        shifts = {s["shift"]: s for s in doc["effective_robustness"]["shifts"]}
        assert set(shifts) == {"imagenetv2", "imagenet-sketch", "objectnet", "imagenet-r", "imagenet-a"}
        assert shifts["imagenet-r"]["in_distribution"]["datasets"] == ["imagenet_r/val-on-imagenet-r-classes"]
        assert (tmp_path / "suite" / "effective_robustness.png").is_file()
    check_calibration_under_shift(doc, tmp_path / "suite", datasets)


def check_calibration_under_shift(doc: dict, run_dir: Path, datasets: set) -> None:
    """Every scored dataset of the suite has its ECE (with n and an interval) and each sample's confidence; the run
    draws their reliability diagrams; its summary and report pages put ECE beside effective robustness."""
    from clipeval.report.pages import run_section
    from clipeval.report.run_summary import summary
    from clipeval.report.tables import CALIBRATION_HEAD
    from clipeval.results.scores import expected_calibration_error

    parsed = ResultsDocument.parse(doc)
    ece = {(r.task, r.dataset): r for r in parsed.records if r.metric == "ece"}
    assert set(ece) == datasets
    for r in ece.values():
        samples = parsed.samples(r.samples)
        assert r.params == {"bins": 15} and r.n == samples.n and r.ci[0] <= r.value <= r.ci[1]
        assert expected_calibration_error(samples.scores["confidence"], samples.outcome("top1")) == r.value
    assert (run_dir / "reliability.png").is_file()
    section = run_section(parsed)
    table = section.table(CALIBRATION_HEAD)
    assert table is not None and len(table.rows) == len(datasets)
    assert "ECE" in table.caption and "bootstrap" in table.caption
    rows = {row[0]: row for row in table.rows}
    r_row = rows["imagenet_r/imagenet-r"]
    assert r_row[CALIBRATION_HEAD.index("n")] == str(ece[("imagenet_r", "imagenet-r")].n)
    assert r_row[CALIBRATION_HEAD.index("ECE (%)")] == f"{100 * ece[('imagenet_r', 'imagenet-r')].value:.2f}"
    if "effective_robustness" in doc:
        assert r_row[CALIBRATION_HEAD.index("setting")] == "imagenet-r" and r_row[CALIBRATION_HEAD.index("ER (pp)")]
        assert rows["imagenet_r/val-on-imagenet-r-classes"][1] == "imagenet-r (ID)"
        assert "ECE (%)" in summary(parsed)


def encoded_prompts(caplog) -> list[int]:
    return [int(n) for m in caplog.messages for n in re.findall(r"encoding (\d+) prompts", m)]


def test_shift_tasks_build_the_prototypes_of_their_classes_only_and_share_them(
    tiny_open_clip, data_root, tmp_path, caplog
):
    """The headline command (task=imagenet_r) builds ImageNet-R's 200 prototypes, not ImageNet's 1,000.
    Later runs on the same cache build only what no earlier run built, and a rerun builds nothing and
    does not even load the model's weights."""
    caplog.set_level(logging.DEBUG, logger="clipeval")
    r_names = {NAMES[int(i)] for i in (TASKS / "imagenet_r" / "class_indices.txt").read_text().split()}
    a_names = {NAMES[int(i)] for i in (TASKS / "imagenet_a" / "class_indices.txt").read_text().split()}

    def prompts_of(task: str) -> list[int]:
        caplog.clear()
        overrides = [*open_clip_overrides(tiny_open_clip), f"task={task}", f"data_root={data_root}", ONE_TEMPLATE]
        run_in_process(overrides, tmp_path / f"run{len(list(tmp_path.glob('run*')))}")
        return encoded_prompts(caplog)

    assert prompts_of("imagenet_r") == [200]
    assert prompts_of("imagenet_a") == [len(a_names - r_names)]
    assert prompts_of("imagenet") == [len(set(NAMES) - r_names - a_names)]
    assert prompts_of("imagenet_r") == []
    (hit,) = [r for r in caplog.records if r.getMessage() == "Text prototypes of 200 classes x 1 templates: cache hit"]
    assert hit.levelno == logging.DEBUG  # a per-entry detail; the run's one "Cache ...: N read" line is at INFO
    assert "Loading the weights" not in caplog.text and "known from its card" in caplog.text


@pytest.mark.slow
def test_every_imagenet_task_runs_through_the_cli(tiny_open_clip, data_root, tmp_path):
    env = {
        **os.environ,
        "CLIPEVAL_CACHE": str(tmp_path / "cache"),
        "CLIPEVAL_STORE": str(tmp_path / "store"),
        "CLIPEVAL_DATA": str(data_root),
    }
    tasks = "imagenet,imagenet_v2,imagenet_r,imagenet_a,imagenet_sketch,objectnet"
    proc = subprocess.run(
        [sys.executable, "-m", "clipeval", "-m", f"task={tasks}", *open_clip_overrides(tiny_open_clip), "++" + ONE_TEMPLATE,
         "runtime.workers=0", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {r.selection["name"]: r for r in load_store(tmp_path / "store")}
    assert set(runs) == set(tasks.split(","))
    assert {r.n for r in runs["imagenet_r"].records if r.dataset == "imagenet-r"} == {6}


def test_golden_file_matches_the_published_tables():
    golden = json.loads((Path(__file__).parents[1] / "reports" / "golden" / "vit_b32_openai.json").read_text())
    published = PUBLISHED
    if not published.is_dir():
        pytest.skip("../shared/data/published is not here")
    bench = pd.read_csv(published / "clip_benchmark_results.csv")
    bench = bench[(bench.model == "ViT-B-32") & (bench.pretrained == "openai")].set_index("dataset")["acc1"]
    openclip = pd.read_csv(published / "openclip_results.csv")
    openclip = openclip[(openclip.name == "ViT-B-32") & (openclip.pretrained == "openai")].iloc[0]
    columns = {
        "imagenet": ("imagenet1k", "ImageNet 1k"), "imagenet_v2": ("imagenetv2", "ImageNet v2"),
        "imagenet_r": ("imagenet-r", "ImageNet-R"), "imagenet_a": ("imagenet-a", "ImageNet-A"),
        "imagenet_sketch": ("imagenet_sketch", "ImageNet Sketch"), "objectnet": ("objectnet", "ObjectNet"),
    }  # fmt: skip
    assert {r["task"] for r in golden["records"]} == set(columns)
    for record in golden["records"]:
        bench_name, openclip_name = columns[record["task"]]
        assert record["value"] == pytest.approx(bench[bench_name], abs=1e-9)
        assert record["value"] == pytest.approx(float(openclip[openclip_name]), abs=2e-3)
        # the record names the dataset the task really reports
        assert record["dataset"] in compose_config([f"task={record['task']}"]).task.datasets


def test_imagenet_fewshot_encodes_only_the_sampled_pool(tiny_open_clip, data_root, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="clipeval")
    doc = run_in_process(
        [*open_clip_overrides(tiny_open_clip), "task=imagenet_fewshot", f"data_root={data_root}", ONE_TEMPLATE,
         "task.datasets.train.per_class=3", "task.evaluators.few_shot.ks=[1,2]", "task.evaluators.few_shot.seeds=2"],
        tmp_path / "fs",
    )  # fmt: skip
    classes = len(list((data_root / "imagenet" / "train").iterdir()))
    assert f"Encoded {3 * classes} images" in caplog.text  # 3 of the 5 training images of each class
    shots = {r["params"]["k"]: r for r in doc["records"] if r["metric"] == "top1"}
    assert set(shots) == {0, 1, 2} and {r["dataset"] for r in shots.values()} == {"val"}  # k = 0: zero-shot
    assert all(r["params"]["probe"] == "few-shot" and r["params"]["train"] == "train" for r in shots.values())
    assert shots[1]["n"] == 2 * classes
    assert (tmp_path / "fs" / "few_shot.png").is_file()
