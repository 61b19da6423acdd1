"""Inputs that do not fit the data are refused before anything is encoded (issue 13, part 3).

Class names, class subsets and class groups are checked against the number of classes each
source says it has; class folders are listed without loops, double counts or wrong labels;
16-bit and float images are rescaled, not clipped; a webdataset label that is not an integer
skips its sample.
"""

from __future__ import annotations

import io
import logging
import os
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config, make_image_folder, make_wds, open_clip_overrides, run_in_process, synthetic_image
from PIL import Image

from clipeval.config.paths import builtin_tasks_dir
from clipeval.data.base import decode
from clipeval.data.folder import ImageFolderSource
from clipeval.data.hf import HFDatasetSource
from clipeval.data.sampled import SampledSource
from clipeval.data.wds import WebDatasetSource
from clipeval.embedded.source import DigitsSource
from clipeval.errors import ClipevalError
from clipeval.evaluators.adversarial import Adversarial
from clipeval.evaluators.linear_probe import FewShot, LinearProbe
from clipeval.evaluators.zeroshot import ZeroShot
from clipeval.run.task import Task, load_task

FOUR = ["cat", "dog", "bird", "fish"]


def folder_task(root: Path, *extra: str) -> Task:
    return load_task(compose_config(["task=folder", f"task.root={root}", *extra]).task)


@pytest.fixture
def four_classes(tmp_path) -> Path:
    return make_image_folder(tmp_path / "four", classes=FOUR, per_class=2)


# --- class names, subsets and groups against the data's classes ---------------------------------------------------


def test_a_class_list_that_does_not_fit_the_data_is_refused_before_any_image_is_encoded(
    tiny_open_clip, four_classes, tmp_path, monkeypatch
):
    # 5 names on 4 classes used to be scored, with a top-5 of 1.0 over the invented fifth class
    def never(*args, **kwargs):
        raise AssertionError("an image was encoded")

    monkeypatch.setattr("clipeval.features.bank.image_features", never)
    overrides = open_clip_overrides(tiny_open_clip, task="folder", **{"task.root": str(four_classes)})
    with pytest.raises(ClipevalError) as info:
        run_in_process([*overrides, "task.classnames=[bird,cat,dog,fish,horse]"], tmp_path / "run")
    message = str(info.value)
    for part in ("Task 'folder'", "dataset 'test'", "has 4 classes", "5 names of task.classnames", "label order"):
        assert part in message, part


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ("[bird,cat,dog]", "has 4 classes, but its labels are scored against the 3 names"),
        ("[bird,cat,dog,fish,horse]", "has 4 classes, but its labels are scored against the 5 names"),
        ("[]", "task.classnames is empty"),
        ("[bird,cat,'',fish]", "blank names at [2]"),
        ("[bird,Cat,' cat ',fish]", "'cat' (scored classes [1, 2])"),
    ],
)
def test_class_names_must_be_one_distinct_name_per_class_of_the_data(four_classes, names, expected):
    with pytest.raises(ClipevalError, match=re.escape(expected)):
        folder_task(four_classes, f"task.classnames={names}")


def test_templates_without_the_class_placeholder_are_refused_before_encoding(four_classes):
    # every class would get the same prompts, hence the same prototype
    with pytest.raises(ClipevalError, match=r"lack it: \['a photo'\]"):
        folder_task(four_classes, "task.templates=['a photo of a {c}.','a photo']")


def test_duplicate_names_are_allowed_only_when_the_task_says_so(four_classes):
    task = folder_task(four_classes, "task.classnames=[bird,cat,cat,fish]", "++task.allow_duplicate_classnames=true")
    assert task.classnames("test") == ["bird", "cat", "cat", "fish"]
    # the ImageNet tasks say so, for the CLIP paper's list with its two repeated names
    names = (builtin_tasks_dir() / "imagenet" / "classnames.txt").read_text().splitlines()
    assert len(set(names)) == 998
    assert compose_config(["task=imagenet"]).task.allow_duplicate_classnames is True


@pytest.mark.parametrize(
    ("subset", "expected"),
    [
        ("[0,1,1,2]", r"class_subset has duplicates: it lists class 1 twice \(\[1\]\)"),
        ("[0,0,0,1]", r"class_subset has duplicates: it lists class 0 3 times"),
        ("[0,1.5,2,3]", r"must be integer class indices; these are not: \['1.5'\]"),
        ("[0,one,2,3]", r"must be integer class indices; these are not: \['one'\]"),
        ("[]", "class_subset is empty"),
        ("[0,1,2,7]", r"class indices \[7\] are outside the 6 names"),
        ("[0,1,2]", "has 4 classes, but its labels are scored against the 3 scored classes"),
    ],
)
def test_class_subset_must_be_distinct_integers_one_per_class_of_the_data(four_classes, subset, expected):
    six = "task.classnames=[bird,cat,dog,fish,horse,lamp]"
    with pytest.raises(ClipevalError, match=expected):
        folder_task(four_classes, six, f"task.class_subset={subset}")
    assert folder_task(four_classes, six, "task.class_subset=[5,0,3,1]").name == "folder"


def hf_folder(root: Path, classes: list[str]) -> Path:
    import datasets

    features = datasets.Features({"img": datasets.Image(), "y": datasets.ClassLabel(names=classes)})
    rows = {"img": [synthetic_image(i, 0) for i in range(len(classes))], "y": list(range(len(classes)))}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(root)
    return root


@pytest.mark.parametrize("kind", ["folder", "wds", "hf"])
def test_every_source_says_how_many_classes_it_has_and_a_longer_list_is_refused(kind, tmp_path):
    if kind == "folder":
        overrides = [f"task.root={make_image_folder(tmp_path / 'd', classes=FOUR, per_class=1)}"]
    elif kind == "wds":
        overrides = [f"task.root={make_wds(tmp_path / 'd', classes=FOUR, per_class=1, shards=1)}"]
    else:
        overrides = [f"task.path={hf_folder(tmp_path / 'd', FOUR)}"]
    task = load_task(compose_config([f"task={kind}", *overrides]).task)
    assert task.sources["test"].num_classes == 4
    with pytest.raises(ClipevalError, match="has 4 classes"):
        load_task(compose_config([f"task={kind}", *overrides, "task.classnames=[a,b,c,d,e]"]).task)


def test_numeric_folders_bound_the_classes_from_below(tmp_path, caplog):
    make_image_folder(tmp_path / "n", classes=["0", "1", "2", "10"], per_class=1)
    source = ImageFolderSource(tmp_path / "n", numeric_sort=True)
    assert source.num_classes is None and source.label_range() == (0, 10)  # folder k holds label k; no count
    numeric = ["task.numeric_sort=true"]
    with pytest.raises(ClipevalError, match="has labels up to 10, but they are scored against the 5 names"):
        folder_task(tmp_path / "n", *numeric, "task.classnames=[a,b,c,d,e]")
    folder_task(tmp_path / "n", *numeric, f"task.classnames=[{','.join('abcdefghijklmn')}]")
    assert "labels go up to 10 but 14 classes are scored" in caplog.text


def test_every_source_kind_reports_its_class_count(tmp_path):
    folder = ImageFolderSource(make_image_folder(tmp_path / "f", classes=FOUR, per_class=3))
    assert folder.num_classes == 4
    explicit = ImageFolderSource(tmp_path / "f", classes=[*FOUR, "horse"])  # a listed folder may be absent
    assert explicit.num_classes == 5
    assert SampledSource(explicit, per_class=1).num_classes == 5
    assert DigitsSource(split="test").num_classes == 10
    assert WebDatasetSource(make_wds(tmp_path / "w", classes=FOUR, per_class=1, shards=1)).num_classes == 4
    (tmp_path / "w" / "classnames.txt").unlink()
    assert WebDatasetSource(tmp_path / "w").num_classes is None  # labels only: the count is unknown
    assert HFDatasetSource(str(hf_folder(tmp_path / "h", FOUR[:3]))).num_classes == 3


def imagenet_r_root(tmp_path: Path) -> Path:
    wnids = (builtin_tasks_dir() / "imagenet_r" / "wnids.txt").read_text().split()
    make_image_folder(tmp_path / "data" / "imagenet-r", classes=wnids[:2], per_class=1)
    return tmp_path / "data"


def test_imagenet_r_subset_must_have_one_index_per_folder_class(tmp_path):
    root = imagenet_r_root(tmp_path)
    task = load_task(compose_config(["task=imagenet_r", f"data_root={root}"]).task)
    assert task.sources["imagenet-r"].num_classes == 200 and set(task.missing) == {"val"}
    indices = (builtin_tasks_dir() / "imagenet_r" / "class_indices.txt").read_text().split()
    with pytest.raises(ClipevalError, match="has 200 classes, but its labels are scored against the 199 scored"):
        load_task(
            compose_config(
                [
                    "task=imagenet_r",
                    f"data_root={root}",
                    f"task.evaluators.zeroshot.class_subset=[{','.join(indices[:-1])}]",
                ]
            ).task
        )


def evaluator_task(evaluator, **sources) -> Task:
    return Task("t", "1", None, sources, {"e": evaluator})


def test_probes_and_attacks_check_their_datasets_before_encoding(tmp_path):
    four = ImageFolderSource(make_image_folder(tmp_path / "four", classes=FOUR, per_class=2))
    three = ImageFolderSource(make_image_folder(tmp_path / "three", classes=FOUR[:3], per_class=2))
    with pytest.raises(ClipevalError, match="evaluator 'e': dataset 'test' has 3 classes but the probe is trained"):
        evaluator_task(LinearProbe("train", ["test"]), train=four, test=three).check()
    with pytest.raises(ClipevalError, match="has no dataset 'nothing'"):
        evaluator_task(LinearProbe("train", ["nothing"]), train=four).check()
    shorter = Task(
        "t", "1", None, {"train": four, "test": four}, {"e": FewShot("train", "test")}, classnames_option=FOUR[:3]
    )
    with pytest.raises(ClipevalError, match="has 4 classes, but its labels are scored against the 3 names"):
        shorter.check()
    attack = Task("t", "1", None, {"test": three}, {"e": Adversarial("test")}, classnames_option=["a", "b", "a"])
    with pytest.raises(ClipevalError, match="'a' \\(scored classes \\[0, 2\\]\\)"):
        attack.check()


def test_class_groups_and_unlabelled_samples_are_checked_too(tmp_path):
    three = ImageFolderSource(make_image_folder(tmp_path / "three", classes=FOUR[:3], per_class=1))
    three.class_groups = [[0, 2], [1]]  # an ObjectNet-style source: each scored class a group of classifier classes
    grouped = Task("t", "1", None, {"test": three}, {"e": ZeroShot()}, classnames_option=FOUR)
    with pytest.raises(ClipevalError, match="has 3 classes, but its labels are scored against the 2 scored classes"):
        grouped.check()
    three.class_groups = [[0, 1], [1], [3]]  # 'dog' in two groups: the second could never win
    with pytest.raises(ClipevalError, match=re.escape("'dog' (scored classes [0, 1])")):
        grouped.check()
    import datasets

    features = datasets.Features({"img": datasets.Image(), "y": datasets.ClassLabel(names=FOUR)})
    rows = {"img": [synthetic_image(i, 0) for i in range(3)], "y": [0, 1, -1]}  # -1: no label (an unlabelled split)
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(tmp_path / "hf")
    with pytest.raises(ClipevalError, match=r"has samples without a label \(label -1\)"):
        load_task(compose_config(["task=hf", f"task.path={tmp_path / 'hf'}"]).task)


def test_digits_tasks_pass_their_own_checks():
    for name in ("digits", "digits_probe", "digits_adversarial"):
        assert load_task(compose_config([f"task={name}"]).task).name == name


# --- class folders -----------------------------------------------------------------------------------------------


def labels_by_folder(source: ImageFolderSource) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for i in range(len(source)):
        out.setdefault(source.sample_id(i).split("/")[0], set()).add(source.label(i))
    return out


def test_a_symlink_loop_inside_a_class_folder_lists_each_image_once(image_folder, caplog):
    os.symlink(".", image_folder / "red_square" / "loop")
    source = ImageFolderSource(image_folder)
    assert len(source) == 12  # was 172: every red square again at each level of loop/loop/...
    assert "red_square/loop" in caplog.text and "not followed" in caplog.text


def test_a_link_to_the_parent_or_to_another_class_does_not_relabel_images(image_folder, caplog):
    os.symlink("..", image_folder / "red_square" / "up")
    os.symlink("../green_circle", image_folder / "blue_triangle" / "greens")
    os.symlink("../green_circle/img00.png", image_folder / "blue_triangle" / "green.png")
    source = ImageFolderSource(image_folder)
    assert len(source) == 12
    assert labels_by_folder(source) == {"blue_triangle": {0}, "green_circle": {1}, "red_square": {2}}
    for link in ("red_square/up", "blue_triangle/greens", "blue_triangle/green.png"):
        assert link in caplog.text, link


def test_links_to_folders_and_files_elsewhere_are_followed_once(image_folder, tmp_path, caplog):
    elsewhere = make_image_folder(tmp_path / "elsewhere", classes=["more"], per_class=3) / "more"
    os.symlink(elsewhere, image_folder / "red_square" / "more")
    os.symlink(elsewhere, image_folder / "red_square" / "same_again")  # the same folder twice: listed once
    os.symlink(elsewhere / "img00.png", image_folder / "green_circle" / "linked.png")
    source = ImageFolderSource(image_folder)
    ids = [source.sample_id(i) for i in range(len(source))]
    assert len(ids) == 12 + 3 + 1
    assert {i for i in ids if "more/" in i} == {f"red_square/more/img0{k}.png" for k in range(3)}
    assert "green_circle/linked.png" in ids and "red_square/same_again" in caplog.text
    assert labels_by_folder(source)["red_square"] == {2}


def test_an_empty_class_folder_is_an_error_when_folders_define_the_classes(image_folder, caplog):
    (image_folder / "yellow_star").mkdir()
    (image_folder / "yellow_star" / "notes.txt").write_text("no images here")
    with pytest.raises(ClipevalError, match=r"hold no images.*\['yellow_star'\].*Remove the folder"):
        ImageFolderSource(image_folder)
    # with the classes given explicitly, a missing or empty folder is a class without images: a warning
    explicit = ImageFolderSource(image_folder, classes=["red_square", "green_circle", "blue_triangle", "yellow_star"])
    assert explicit.num_classes == 4 and len(explicit) == 12
    assert "1 of 4 classes have no images" in caplog.text and "yellow_star" in caplog.text


def test_the_folder_task_takes_an_explicit_class_list(image_folder):
    (image_folder / "yellow_star").mkdir()
    task = folder_task(image_folder, "task.classes=[red_square,green_circle,blue_triangle,yellow_star]")
    assert task.classnames("test") == ["red square", "green circle", "blue triangle", "yellow star"]


def test_images_at_the_root_of_a_class_tree_are_reported(image_folder, caplog):
    synthetic_image(0, 0).save(image_folder / "stray.png")
    synthetic_image(0, 1).save(image_folder / "stray2.jpg")
    assert len(ImageFolderSource(image_folder)) == 12
    assert "2 image(s) at the top of" in caplog.text and "stray.png" in caplog.text


# --- pixel formats -------------------------------------------------------------------------------------------------


def as_array(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image))


def decoded(path: Path | Image.Image):
    """The :class:`Item` of one file (or an image in memory) through the decode every source uses."""
    if isinstance(path, Image.Image):
        return decode(lambda: path, as_array, 0, "in memory")
    return decode(lambda: Image.open(path), as_array, 0, path.name)


def gray_rgb(levels: np.ndarray) -> np.ndarray:
    return np.repeat(levels.astype(np.uint8)[..., None], 3, axis=-1)


RAMP16 = np.array([[0, 1, 128, 129, 257, 1000], [30000, 32767, 40000, 65000, 65534, 65535]], dtype=np.uint16)
RAMP_F = np.array([[0.0, 0.001, 0.002, 0.25, 0.5, 0.502], [0.7, 0.9, 0.998, 0.999, 0.9999, 1.0]], dtype=np.float32)


def write(path: Path, image: Image.Image, **options) -> Path:
    image.save(path, **options)
    return path


def sixteen_bit_pgm(path: Path, values: np.ndarray) -> Path:
    path.write_bytes(f"P5 {values.shape[1]} {values.shape[0]} 65535\n".encode() + values.astype(">u2").tobytes())
    return path


def big_endian_16_tiff(path: Path, values: np.ndarray) -> Path:
    image = Image.new("I;16B", values.shape[::-1])
    image.frombytes(values.astype(">u2").tobytes())
    return write(path, image)


SIXTEEN_BIT = {
    "png I;16": lambda p, v: write(p / "a.png", Image.fromarray(v)),
    "tiff I;16": lambda p, v: write(p / "a.tif", Image.fromarray(v)),
    "tiff I;16B": lambda p, v: big_endian_16_tiff(p / "a.tif", v),
    "pgm I": lambda p, v: sixteen_bit_pgm(p / "a.pgm", v),
}


@pytest.mark.parametrize("kind", list(SIXTEEN_BIT))
def test_16_bit_images_use_their_full_range(kind, tmp_path):
    path = SIXTEEN_BIT[kind](tmp_path, RAMP16)
    assert Image.open(path).mode == kind.split()[1]
    item = decoded(path)
    expected = gray_rgb(np.rint(RAMP16.astype(np.float64) / 65535 * 255))  # was 255 for every value above 254
    assert item.error is None and np.array_equal(item.image.numpy(), expected)


def test_float_images_in_0_to_1_become_0_to_255(tmp_path):
    path = write(tmp_path / "a.tif", Image.fromarray(RAMP_F))
    item = decoded(path)
    expected = gray_rgb(np.rint(RAMP_F.astype(np.float64) * 255))  # was 0 or 1: black
    assert item.error is None and np.array_equal(item.image.numpy(), expected)


@pytest.mark.parametrize(
    ("name", "image", "why"),
    [
        ("float above 1", Image.fromarray(RAMP_F * 255), "outside 0..1"),
        ("float NaN", Image.fromarray(np.where(RAMP_F > 0.5, np.nan, RAMP_F).astype(np.float32)), "not finite"),
        ("signed 16-bit", Image.fromarray(np.array([[-5, 0, 7]], dtype=np.int32)), "outside the 16-bit range"),
        ("32-bit", Image.fromarray(np.array([[0, 70000]], dtype=np.int32)), "outside the 16-bit range"),
    ],
)
def test_pixel_values_without_one_meaning_skip_the_image_with_the_reason(name, image, why, tmp_path):
    item = decoded(write(tmp_path / "a.tif", image))
    assert item.image is None and "PixelFormatError" in item.error and why in item.error


def palette_image(alpha: bool) -> tuple[Image.Image, np.ndarray]:
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 99, 199]], dtype=np.uint8)
    index = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], dtype=np.uint8)
    image = Image.fromarray(index, "P")
    image.putpalette(palette.flatten().tolist())
    if alpha:
        image.info["transparency"] = bytes([0, 128, 255, 30])
    return image, palette[index]


def test_modes_that_convert_right_are_unchanged_and_alpha_is_dropped(tmp_path):
    # convert("RGB") is right for these; alpha is dropped (the colours as stored), as for RGBA and in torchvision
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (3, 5, 4), dtype=np.uint8)
    cmyk = rng.integers(0, 256, (3, 5, 4), dtype=np.uint8)
    ink = cmyk.astype(np.float64)
    with_alpha, palette_rgb = palette_image(alpha=True)
    cases = {
        "RGBA": (Image.fromarray(rgba, "RGBA"), rgba[..., :3]),
        "LA": (Image.fromarray(rgba[..., [0, 3]], "LA"), gray_rgb(rgba[..., 0])),
        "L": (Image.fromarray(rgba[..., 0], "L"), gray_rgb(rgba[..., 0])),
        "P": (palette_image(alpha=False)[0], palette_rgb),
        "P with transparency": (with_alpha, palette_rgb),
        "PA": (with_alpha.convert("PA"), palette_rgb),
        "CMYK": (Image.fromarray(cmyk, "CMYK"), np.rint((255 - ink[..., :3]) * (255 - ink[..., 3:]) / 255)),
    }
    for mode, (image, expected) in cases.items():
        fmt = "tiff" if mode == "CMYK" else "png"
        source = write(tmp_path / f"{mode}.{fmt}", image) if mode != "PA" else image  # Pillow writes no PA PNG
        item = decoded(source)
        assert item.error is None, mode
        assert np.array_equal(item.image.numpy(), expected.astype(np.uint8)), mode


def test_the_torchvision_decode_path_reads_16_bit_images_the_same_way(tmp_path):
    from clipeval.data.tensor_decode import decode_batch

    paths = [SIXTEEN_BIT["png I;16"](tmp_path, RAMP16), write(tmp_path / "f.tif", Image.fromarray(RAMP_F * 255))]
    data = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in paths]
    images, kept, skipped = decode_batch(data, ["a", "f"], lambda x: x, torch.device("cpu"))
    assert kept == [0] and skipped[0][0] == "f" and "outside 0..1" in skipped[0][1]
    assert np.array_equal(images[0].permute(1, 2, 0).numpy(), decoded(paths[0]).image.numpy())


# --- webdataset labels --------------------------------------------------------------------------------------------


def add_shard(root: Path, samples: list[tuple[str, bytes | None]]) -> None:
    """One more shard of PNG samples with the given raw .cls bytes (None: no .cls)."""
    count = int((root / "test" / "nshards.txt").read_text())
    with tarfile.open(root / "test" / f"{count}.tar", "w") as tar:
        for n, (key, cls) in enumerate(samples):
            buf = io.BytesIO()
            synthetic_image(0, 100 + n).save(buf, format="PNG")
            for ext, data in (("png", buf.getvalue()), ("cls", cls)):
                if data is None:
                    continue
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    (root / "test" / "nshards.txt").write_text(f"{count + 1}\n")


BAD_LABELS = [("word", b"cat"), ("empty", b""), ("float", b"1.5"), ("negative", b"-1"), ("binary", b"\xff\xfe")]


def test_a_webdataset_label_that_is_not_an_integer_skips_the_sample(tmp_path):
    root = make_wds(tmp_path / "w", per_class=1, shards=1)
    add_shard(root, [*BAD_LABELS, ("good", b" 2\n"), ("nolabel", None)])
    items = list(WebDatasetSource(root).dataset(as_array_of_rgb, None))
    by_key = {it.sample_id.split("/")[1]: it for it in items}
    assert by_key["good"].error is None and by_key["good"].label == 2
    for key, _ in [*BAD_LABELS, ("nolabel", None)]:
        assert by_key[key].image is None and ".cls" in by_key[key].error, key
    assert "not an integer: b'cat'" in by_key["word"].error


def as_array_of_rgb(image: Image.Image) -> torch.Tensor:
    return as_array(image)


def test_skipped_webdataset_samples_are_listed_in_the_run(tiny_open_clip, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    root = make_wds(tmp_path / "w", per_class=2, shards=1)
    add_shard(root, [("word", b"cat"), ("empty", b"")])
    overrides = open_clip_overrides(tiny_open_clip, task="wds", **{"task.root": str(root)})
    doc = run_in_process(overrides, tmp_path / "run")
    assert {r["n"] for r in doc["records"]} == {6}
    skipped = dict(map(tuple, doc["skipped"]["wds"]["test"]))
    assert set(skipped) == {"1/word", "1/empty"} and "not an integer" in skipped["1/word"]


def test_a_single_scored_class_is_refused_since_top1_would_be_1_by_construction(tmp_path):
    root = make_image_folder(tmp_path / "one", classes=["red_square"])
    with pytest.raises(ClipevalError, match="only one class is scored"):
        load_task(compose_config(["task=folder", f"task.root={root}"]).task)
