"""Zero-shot retrieval: recall@k both ways, from captions in the three layouts, against plain-loop recomputations.

The reference computations here share no code with clipeval.evaluators.retrieval: they rank with Python
loops over a numpy similarity matrix, count hits per image and per caption, and build the intervals with
scipy.stats from the formulas (Clopper–Pearson; Korn–Graubard at the clustered effective sample size).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from array_context import ArrayContext
from caption_data import COUNTS, caption_set, png, write_wds
from conftest import exit_2, open_clip_overrides, run_in_process, synthetic_image
from scipy import stats

from clipeval.evaluators import retrieval
from clipeval.evaluators.retrieval import Retrieval
from clipeval.results.record import METRICS, Record

KS = (1, 5, 10)


# ---------------------------------------------------------------- the reference, written with loops


def reference(sim: np.ndarray, image_of: list[int], ks=KS) -> dict[str, tuple[float, int, tuple[float, float]]]:
    """{metric: (value, n, 95% interval)} from ``sim`` [captions, images] by loops and scipy."""
    n_txt, n_img = sim.shape
    out = {}
    for k in ks:
        caption_hit = []
        for t in range(n_txt):
            order = sorted(range(n_img), key=lambda i: -sim[t, i])
            caption_hit.append(image_of[t] in order[:k])
        image_hit = []
        for i in range(n_img):
            order = sorted(range(n_txt), key=lambda t: -sim[t, i])
            image_hit.append(any(image_of[t] == i for t in order[:k]))
        hits, n = sum(image_hit), n_img
        cp = (stats.beta.ppf(0.025, hits, n - hits + 1) if hits else 0.0,
              stats.beta.ppf(0.975, hits + 1, n - hits) if hits < n else 1.0)  # fmt: skip
        out[f"text_retrieval_recall@{k}"] = (hits / n, n, cp)
        # per image: captions and caption hits; the ratio's variance with images as clusters
        m = [sum(1 for t in range(n_txt) if image_of[t] == i) for i in range(n_img)]
        y = [sum(1 for t in range(n_txt) if image_of[t] == i and caption_hit[t]) for i in range(n_img)]
        r = sum(y) / sum(m)
        var_r = n_img / (n_img - 1) * sum((y[i] - r * m[i]) ** 2 for i in range(n_img)) / sum(m) ** 2
        out[f"image_retrieval_recall@{k}"] = (r, n_txt, kg(r, var_r, n_txt))
        t_r = hits / n_img
        mean = (t_r + r) / 2
        parts = [0.5 * ((image_hit[i] - t_r) / n_img + (y[i] - r * m[i]) / sum(m)) for i in range(n_img)]
        var_m = n_img / (n_img - 1) * sum(p * p for p in parts)
        out[f"mean_recall@{k}"] = (mean, n_img, kg(mean, var_m, n_img))
        # a recall that is 1 whatever the ranking is left out: some ranking of each query misses, or not?
        text_certain = all(k > n_txt - m[i] for i in range(n_img))  # every image's k reach one of its captions
        image_certain = k > n_img - 1  # every caption's k reach its image
        for metric, certain in [("text_retrieval", text_certain), ("image_retrieval", image_certain),
                                ("mean", text_certain or image_certain)]:  # fmt: skip
            if certain:
                del out[f"{metric}_recall@{k}"]
    return out


def kg(p: float, var: float, n: int) -> tuple[float, float]:
    """Korn–Graubard: Clopper–Pearson at n* = p(1-p)/var, capped at n (n when var is 0 or p is 0 or 1)."""
    n_eff = n if var == 0 or p in (0.0, 1.0) else min(n, max(1.0, p * (1 - p) / var))
    x = p * n_eff
    lo = stats.beta.ppf(0.025, x, n_eff - x + 1) if x > 0 else 0.0
    hi = stats.beta.ppf(0.975, x + 1, n_eff - x) if x < n_eff else 1.0
    return min(lo, p), max(hi, p)


def assert_matches(records: list[dict], expected: dict) -> None:
    got = {r["metric"]: r for r in records}
    assert set(got) == set(expected)
    for metric, (value, n, ci) in expected.items():
        record = got[metric]
        assert record["value"] == pytest.approx(value, abs=1e-12), metric
        assert record["n"] == n, metric
        assert record["ci"] == pytest.approx(list(ci), abs=1e-9), metric
        assert record["dataset"] == "test"


# ---------------------------------------------------------------- the evaluator on arrays


def test_recall_at_k_equals_plain_loops_on_random_features_with_uneven_caption_counts(monkeypatch):
    rng = np.random.default_rng(3)
    counts = rng.integers(1, 6, size=40)
    image_of = np.repeat(np.arange(40), counts)
    x = rng.normal(size=(40, 6))
    t = x[image_of] + 1.3 * rng.normal(size=(len(image_of), 6))  # related, so recall is neither 0 nor 1
    monkeypatch.setattr(retrieval, "BLOCK_ELEMENTS", 7 * 40)  # rank in blocks of a few rows
    ctx = ArrayContext({"test": (x, np.zeros(40, dtype=int))}, captions={"test": (t, image_of)})
    records = [r.to_json() for r in Retrieval().evaluate(ctx)]
    fs, caps = ctx.features("test"), ctx.captions("test")
    sim = caps.features.double().numpy() @ fs.features.double().numpy().T
    expected = reference(sim, image_of.tolist())
    assert_matches(records, expected)
    values = {r["metric"]: r["value"] for r in records}
    assert 0 < values["image_retrieval_recall@1"] < values["image_retrieval_recall@5"] < 1
    # captions of one image are correlated: the clustered interval is not the naive binomial one
    caption = next(r for r in records if r["metric"] == "image_retrieval_recall@1")
    assert caption["ci_method"] == "korn-graubard-clustered-by-image"
    # the per-sample outcomes give the values back: per image and per caption
    kept = ctx.kept
    assert kept["arrays/test.text_retrieval"].n == 40 and kept["arrays/test.image_retrieval"].n == len(image_of)
    for k in KS:
        metric = f"image_retrieval_recall@{k}"
        assert kept["arrays/test.image_retrieval"].value(metric, f"recall@{k}") == pytest.approx(values[metric])


def test_the_metrics_are_registered_with_clip_benchmark_names():
    for k in KS:
        assert {f"image_retrieval_recall@{k}", f"text_retrieval_recall@{k}", f"mean_recall@{k}"} <= set(METRICS)
    assert METRICS["mean_recall@1"].derived and METRICS["mean_recall@1"].summary


def test_a_recall_that_k_makes_certain_is_left_out_with_a_note():
    # 3 images, 4 captions (1 to 2 per image): at k = 5 every recall is 1 whatever the model
    rng = np.random.default_rng(0)
    ctx = ArrayContext(
        {"test": (rng.normal(size=(3, 4)), np.zeros(3))},
        captions={"test": (rng.normal(size=(4, 4)), np.array([0, 1, 1, 2]))},
    )
    assert Retrieval(ks=[5]).evaluate(ctx) == []
    (note,) = ctx.notes
    assert note["left_out"] == ["text_retrieval_recall@5", "image_retrieval_recall@5", "mean_recall@5"]
    assert "3 images and 4 captions" in note["message"] and "1 whatever the model" in note["message"]


def test_text_retrieval_is_kept_while_some_image_can_miss_and_image_retrieval_while_k_is_below_n():
    # 4 images, 8 captions (1, 3, 2, 2): text recall@k is certain only for k > 8 - 1; image recall@k for k >= 4
    rng = np.random.default_rng(1)
    ctx = ArrayContext(
        {"test": (rng.normal(size=(4, 4)), np.zeros(4))},
        captions={"test": (rng.normal(size=(8, 4)), np.array([0, 1, 1, 1, 2, 2, 3, 3]))},
    )
    got = {r.metric for r in Retrieval(ks=[3, 4, 7, 8]).evaluate(ctx)}
    assert got == {"text_retrieval_recall@3", "image_retrieval_recall@3", "mean_recall@3",
                   "text_retrieval_recall@4", "text_retrieval_recall@7"}  # fmt: skip
    (note,) = ctx.notes
    assert note["left_out"] == ["image_retrieval_recall@4", "mean_recall@4", "image_retrieval_recall@7",
                                "mean_recall@7", "text_retrieval_recall@8", "image_retrieval_recall@8",
                                "mean_recall@8"]  # fmt: skip


# ---------------------------------------------------------------- the three layouts, end to end


def write_karpathy(root: Path, captions: list[list[str]], name="dataset_flickr30k.json", images="flickr30k-images"):
    """A Karpathy-split folder: images/<filename> and the JSON (a train image too, to be left out)."""
    (root / images).mkdir(parents=True, exist_ok=True)
    entries = []
    for i, caps in enumerate([*captions, ["a training caption"]]):
        (root / images / f"{1000 + i}.png").write_bytes(png(i))
        split = "test" if i < len(captions) else "train"
        entries.append({"filename": f"{1000 + i}.png", "imgid": i, "split": split,
                        "sentences": [{"raw": c, "tokens": c.split()} for c in caps]})  # fmt: skip
    (root / name).write_text(json.dumps({"images": entries, "dataset": "flickr30k"}))
    return root


def write_hf(root: Path, captions: list[list[str]], cells=None) -> Path:
    """A save_to_disk dataset shaped like nlphuji/flickr30k: image, caption (list), split column, one hub split."""
    import datasets

    rows = {"image": [{"bytes": png(i), "path": None} for i in range(len(captions))] + [{"bytes": png(0), "path": None}],
            "caption": (cells or captions) + [["a training caption"]],
            "split": ["test"] * len(captions) + ["train"]}  # fmt: skip
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "caption": datasets.Sequence(datasets.Value("string")),
            "split": datasets.Value("string"),
        }
    )
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows, features=features)}).save_to_disk(str(root))
    return root


LAYOUTS = {
    "wds": lambda root, caps: ["task=retrieval_wds", f"task.root={write_wds(root / 'wds', caps)}"],
    "karpathy": lambda root, caps: ["task=flickr30k", f"data_root={write_karpathy(root / 'flickr30k', caps).parent}"],
    "hf": lambda root, caps: [
        "task=retrieval_hf",
        f"task.path={write_hf(root / 'hf', caps)}",
        "task.caption_key=caption",
        "task.split_column=split",
    ],  # fmt: skip
}


def independent_similarities(tiny: dict, captions: list[list[str]]) -> tuple[np.ndarray, list[int]]:
    """[captions, images] cosine similarities from the model's own towers, one batch each, in float64."""
    from clipeval.models.open_clip import OpenClipEncoder

    model = OpenClipEncoder(**{k: tiny[k] for k in ("arch", "pretrained", "model_config")})
    texts = [c for caps in captions for c in caps]
    with torch.no_grad():
        images = torch.stack([model.preprocess(synthetic_image(i % 3, i)) for i in range(len(captions))])
        x = model.encode_image(images).double().numpy()
        t = model.encode_text(model.tokenize(texts)).double().numpy()
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    return t @ x.T, [i for i, caps in enumerate(captions) for _ in caps]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_each_layout_gives_the_recalls_of_an_independent_computation(layout, tiny_open_clip, tmp_path):
    captions = caption_set()
    doc = run_in_process([*open_clip_overrides(tiny_open_clip), *LAYOUTS[layout](tmp_path, captions)], tmp_path / "run")
    sim, image_of = independent_similarities(tiny_open_clip, captions)
    # no two scores a query ranks are within 1e-6 (float32 rounding of a batch moves a score by 1e-7 or so): the last bits of a batch cannot change a rank
    for row in [*sim, *sim.T]:
        gaps = np.diff(np.sort(row))
        assert gaps.min() > 1e-6
    assert_matches(doc["records"], reference(sim, image_of))
    assert {r["n"] for r in doc["records"] if r["metric"].startswith("image_")} == {sum(COUNTS)}


def test_a_second_run_encodes_nothing_and_a_changed_caption_alone_is_encoded(tiny_open_clip, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="clipeval")
    captions = caption_set()
    root = write_karpathy(tmp_path / "flickr30k", captions)
    overrides = [*open_clip_overrides(tiny_open_clip), "task=flickr30k", f"data_root={tmp_path}"]
    first = run_in_process(overrides, tmp_path / "run1")
    assert f"encoding {sum(COUNTS)} prompts" in caplog.text
    caplog.clear()
    second = run_in_process(overrides, tmp_path / "run2")
    assert "cache miss" not in caplog.text and "prompts for the other" not in caplog.text
    assert second["records"] == first["records"]
    caplog.clear()
    data = json.loads((root / "dataset_flickr30k.json").read_text())
    data["images"][4]["sentences"][1]["raw"] = "a completely different caption"
    (root / "dataset_flickr30k.json").write_text(json.dumps(data))
    run_in_process(overrides, tmp_path / "run3")
    assert "encoding 1 prompts for the other 1 classes" in caplog.text  # the changed caption, alone
    assert "Image features of" in caplog.text and "cache miss" in caplog.text  # the source's key covers the JSON


# ---------------------------------------------------------------- inputs a user can fix: exit 2, one message


def karpathy_with(tmp_path: Path, change) -> list[str]:
    root = write_karpathy(tmp_path / "flickr30k", caption_set())
    data = json.loads((root / "dataset_flickr30k.json").read_text())
    (root / "dataset_flickr30k.json").write_text(json.dumps(change(data)))
    return ["task=flickr30k", f"data_root={tmp_path}"]


def _drop(entry, key):
    entry.pop(key)
    return entry


BAD_KARPATHY = {
    "a list, not an object": (lambda d: d["images"], "should hold an object {\"images\""),
    "images not a list": (lambda d: {"images": {"0": d["images"][0]}}, "'images': {\"0\": {"),
    "images null": (lambda d: {"images": None}, "'images': null, which is not a list of image entries"),
    "no sentences": (lambda d: {"images": [_drop(d["images"][0], "sentences"), *d["images"][1:]]},
                     "images[0].sentences is null, not a list"),
    "empty sentences": (lambda d: {"images": [{**d["images"][0], "sentences": []}, *d["images"][1:]]},
                        "images[0].sentences[].raw is an empty caption list"),
    "a blank caption": (lambda d: {"images": [{**d["images"][0], "sentences": [{"raw": "  "}]}, *d["images"][1:]]},
                        "images[0].sentences[].raw[0] is \"  \", not a caption"),
    "an image twice": (lambda d: {"images": [*d["images"], d["images"][0]]},
                        "image '1000.png' appears more than once in split 'test'"),
    "no filename": (lambda d: {"images": [_drop(d["images"][2], "filename"), *d["images"][3:]]},
                    "images[0].filename is null, not a non-empty string"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_KARPATHY))
def test_a_malformed_karpathy_json_is_refused_naming_the_field(case, tmp_path, capsys):
    change, message = BAD_KARPATHY[case]
    err = exit_2(karpathy_with(tmp_path, change), capsys)
    assert "dataset_flickr30k.json" in err and message in err


def test_an_unknown_split_names_the_splits_there(tmp_path, capsys):
    err = exit_2([*karpathy_with(tmp_path, lambda d: d), "task.datasets.test.split=tset"], capsys)
    assert "split='tset' is not allowed" in err and "'test' (9 images), 'train' (1 images)" in err


def test_missing_images_and_missing_data_say_where_and_how(tmp_path, capsys):
    err = exit_2(["task=mscoco", f"data_root={tmp_path}"], capsys)
    assert "Task 'mscoco': MS-COCO captions (Karpathy 5k test split" in err and "not found" in err
    assert f"{tmp_path}/mscoco/dataset_coco.json" in err and "val2014.zip" in err
    args = karpathy_with(tmp_path, lambda d: d)
    (tmp_path / "flickr30k" / "flickr30k-images" / "1003.png").unlink()
    err = exit_2(args, capsys)
    assert "1 of the 9 images of split 'test' of dataset_flickr30k.json not found" in err and "1003.png" in err


@pytest.mark.parametrize(
    ("txt", "message"),
    [
        (lambda i, caps: None if i == 3 else "\n".join(caps), "sample 's0003' has no captions (.txt; it has png)"),
        (lambda i, caps: "" if i == 3 else "\n".join(caps), "sample 's0003': its .txt is an empty caption list"),
        (
            lambda i, caps: "a\n\nb" if i == 3 else "\n".join(caps),
            "sample 's0003': .txt line 2 is \"\", not a caption",
        ),
    ],
    ids=["no .txt", "empty .txt", "blank line"],
)
def test_a_webdataset_sample_without_captions_is_refused_naming_shard_and_sample(txt, message, tmp_path, capsys):
    root = write_wds(tmp_path / "wds", caption_set(), txt=txt)
    err = exit_2(["task=retrieval_wds", f"task.root={root}"], capsys)
    assert "1.tar" in err and message in err


def test_classification_data_in_a_retrieval_task_says_what_retrieval_needs(tmp_path, capsys):
    root = write_wds(tmp_path / "wds", caption_set())
    (root / "dataset_type.txt").unlink()
    err = exit_2(["task=retrieval_wds", f"task.root={root}"], capsys)
    assert "carries no captions, which retrieval needs" in err


@pytest.mark.parametrize(
    ("extra", "cells", "message"),
    [
        (["task.caption_key=captions"], None, "caption_key='captions' is not allowed: caption_key must be a column"),
        (["task.caption_key=caption", "task.split_value=val"], None, "split_value='val' is not allowed"),
        (["task.caption_key=caption"], "empty", "Caption column 'caption' of dataset"),
    ],
    ids=["unknown column", "unknown split", "empty caption list"],
)
def test_a_hugging_face_caption_column_is_checked(extra, cells, message, tmp_path, capsys):
    captions = caption_set()
    bad = [[] if i == 2 else c for i, c in enumerate(captions)] if cells == "empty" else None
    path = write_hf(tmp_path / "hf", captions, cells=bad)
    err = exit_2(["task=retrieval_hf", f"task.path={path}", "task.split_column=split", *extra], capsys)
    assert message in err
    if cells == "empty":
        assert "row 2 is an empty caption list" in err


def test_the_printed_table_keeps_its_columns_with_the_long_metric_names():
    from clipeval.report.tables import format_records

    rng = np.random.default_rng(1)
    ctx = ArrayContext(
        {"test": (rng.normal(size=(6, 4)), np.zeros(6))}, captions={"test": (rng.normal(size=(9, 4)), np.arange(9) % 6)}
    )
    lines = format_records("title", Retrieval().evaluate(ctx)).splitlines()[1:]
    assert len({line.index(" fraction ") for line in lines[1:]}) == 1  # the unit column starts at one place
    assert lines[0].index("unit") == lines[1].index("fraction")


def test_the_gate_table_keeps_its_columns_with_the_long_metric_names():
    from clipeval.check.compare import Row
    from clipeval.check.table import format_rows

    rows = [Row(Record("test", m, 0.5, 10, (0.2, 0.8), task="mscoco"), 0.5, "same", "ok")
            for m in ("top1", "image_retrieval_recall@10")]  # fmt: skip
    lines = format_rows(rows).splitlines()[:3]
    assert len({line.index("0.5000") for line in lines[1:]}) == 1
    assert lines[0].index("reference") + len("reference") == lines[1].index("0.5000") + len("0.5000")


@pytest.mark.parametrize("task", ["retrieval_hf", "hf"])
def test_an_empty_hugging_face_dataset_exits_2_saying_it_has_no_rows(task, tmp_path, capsys):
    import datasets

    features = {"image": datasets.Image(), "caption": datasets.Sequence(datasets.Value("string"))}
    if task == "hf":
        features = {"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])}
    empty = {name: [] for name in features}
    datasets.Dataset.from_dict(empty, features=datasets.Features(features)).save_to_disk(str(tmp_path / "hf"))
    extra = ["task.caption_key=caption"] if task == "retrieval_hf" else []
    err = exit_2([f"task={task}", f"task.path={tmp_path / 'hf'}", *extra], capsys)
    assert f"Hugging Face dataset {tmp_path / 'hf'} has a split with no rows (state.json lists no data files)" in err


def test_a_hugging_face_split_without_rows_exits_2(tmp_path, capsys):
    # rows exist, but none in the split asked: the source is empty once built
    import datasets

    features = {"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])}
    rows = {"image": [{"bytes": png(0), "path": None}], "label": [0]}
    ds = datasets.Dataset.from_dict(rows, features=datasets.Features(features))
    datasets.DatasetDict({"train": ds, "test": ds.select([])}).save_to_disk(str(tmp_path / "hf"))
    err = exit_2(["task=hf", f"task.path={tmp_path / 'hf'}"], capsys)
    assert "no rows" in err


def _saved_dataset(root: Path, task: str, split=None) -> Path:
    """A single saved Dataset (save_to_disk, no DatasetDict) for ``task`` (hf or retrieval_hf), recording ``split``."""
    import datasets

    if task == "hf":
        features = {"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])}
        rows = {"image": [{"bytes": png(i), "path": None} for i in range(4)], "label": [0, 1, 0, 1]}
    else:
        features = {"image": datasets.Image(), "caption": datasets.Sequence(datasets.Value("string"))}
        rows = {"image": [{"bytes": png(i), "path": None} for i in range(4)], "caption": [[f"c {i}"] for i in range(4)]}
    split = datasets.NamedSplit(split) if split else None
    datasets.Dataset.from_dict(rows, features=datasets.Features(features), split=split).save_to_disk(str(root))
    return root


@pytest.mark.parametrize("task", ["hf", "retrieval_hf"])
@pytest.mark.parametrize(
    "saved, asked, message",
    [
        (None, "validation", "a single saved Dataset (not a DatasetDict) that records no split"),
        ("train", "test", "a single saved Dataset (not a DatasetDict) that was saved from split 'train'"),
        ("train", "validation", "use task.split=train"),
    ],
)
def test_a_split_that_a_single_saved_dataset_cannot_honour_is_refused(task, saved, asked, message, tmp_path, capsys):
    root = _saved_dataset(tmp_path / "hf", task, saved)
    err = exit_2([f"task={task}", f"task.path={root}", f"task.split={asked}"], capsys)
    assert f"split='{asked}' is not allowed" in err and message in err


@pytest.mark.parametrize("task", ["hf", "retrieval_hf"])
def test_a_single_saved_dataset_is_read_with_its_own_split_or_the_default(task, tmp_path):
    from clipeval.data.hf import HFDatasetSource

    caption_key = {"caption_key": "caption"} if task == "retrieval_hf" else {}
    assert len(HFDatasetSource(str(_saved_dataset(tmp_path / "a", task)), split="test", **caption_key)) == 4
    assert len(HFDatasetSource(str(_saved_dataset(tmp_path / "b", task, "train")), split="train", **caption_key)) == 4


def test_a_tie_with_a_wrong_candidate_counts_against_the_query_whatever_the_ks():
    """Identical captions (MS-COCO has them across images) score exactly alike. torch.topk ordered such ties
    arbitrarily and differently for different depths, so recall@1 changed with the other k asked for."""
    rng = np.random.default_rng(7)
    pool = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(4, 8)), dtype=torch.float32), dim=1)
    images = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(30, 8)), dtype=torch.float32), dim=1)
    image_of = torch.tensor([i // 3 for i in range(90)])  # 3 captions per image, drawn from 4 distinct texts
    texts = pool[torch.tensor(rng.integers(0, 4, 90))]
    sim = (images @ texts.T).numpy()

    def reference(k: int) -> tuple[list[bool], list[bool]]:  # plain loops: wrong candidates scoring >= the best right
        by_image = []
        for i in range(30):
            best = max(sim[i, t] for t in range(90) if image_of[t] == i)
            by_image.append(sum(1 for t in range(90) if image_of[t] != i and sim[i, t] >= best) < k)
        by_text = []
        for t in range(90):
            own = sim[int(image_of[t]), t]
            by_text.append(sum(1 for i in range(30) if i != image_of[t] and sim[i, t] >= own) < k)
        return by_image, by_text

    for ks in ([1], [1, 5, 10], [1, 50], [10, 5, 1]):
        by_image, by_text = retrieval.retrieval_hits(images, texts, image_of, ks)
        for k, hits_i, hits_t in zip(ks, by_image, by_text, strict=True):
            assert (hits_i.tolist(), hits_t.tolist()) == reference(k), (ks, k)


def test_the_same_caption_under_two_images_ties_exactly_wherever_it_falls():
    """MS-COCO has identical captions under different images. Pairs of images share one caption text (so one
    feature), and each image is nearest to that caption: the twin's copy ties with the image's own, so no image is
    retrieved at 1 and every one at 2. Identical keys are scored once (TieExactScores): this machine's float32 matrix
    product happens to give identical columns identical scores, but its matrix-vector product did not (WinoGAViL's
    case, tests/test_winogavil.py), and no kernel promises it elsewhere."""
    rng = np.random.default_rng(0)
    pairs, dim = 641, 512
    shared = rng.normal(size=(pairs, dim))
    texts = np.concatenate([shared, shared])  # image m and image pairs + m each have the caption of pair m
    images = texts + 0.05 * rng.normal(size=texts.shape)
    unit = lambda a: torch.tensor(a / np.linalg.norm(a, axis=1, keepdims=True), dtype=torch.float32)  # noqa: E731
    by_image, _ = retrieval.retrieval_hits(unit(images), unit(texts), torch.arange(2 * pairs), [1, 2])
    assert not by_image[0].any() and by_image[1].all()
