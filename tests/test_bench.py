"""The benchmark's parts run and measure what they say; their speed is never asserted."""

from __future__ import annotations

import sys

import numpy as np
from conftest import open_clip_overrides
from PIL import Image
from test_models import load_tiny

from clipeval.bench import memory, peer, ranks, suite, throughput
from clipeval.bench.__main__ import main
from clipeval.bench.fixtures import CLASSNAMES, jpeg_folder, photo_folder
from clipeval.data.folder import ImageFolderSource


def test_throughput_parts_run_and_the_trimmed_text_pass_agrees(tiny_open_clip, tmp_path):
    model = load_tiny(tiny_open_clip)
    text = throughput.text_side(model, classes=2)
    assert text["prompts"] == 160 and text["diff"] < 1e-5 and text["trimmed"] > 0
    source = ImageFolderSource(jpeg_folder(tmp_path / "images", 12, size=(64, 48)))
    assert len(source) == 12 and source.classnames[:2] == CLASSNAMES[:2]
    images = throughput.image_side(model, source, batch=4, workers=0, scratch=tmp_path)
    assert images["ceiling"] > 0 and images["end_to_end"] > 0


def test_the_photo_folder_holds_distinct_crops_of_real_photographs(tmp_path):
    folder = photo_folder(tmp_path / "photos", 12, size=(100, 75))
    files = sorted(folder.rglob("*.jpg"))
    assert len(files) == 12 and sorted({f.parent.name for f in files}) == CLASSNAMES
    pixels = [np.asarray(Image.open(f)) for f in files]
    assert all(p.shape == (75, 100, 3) for p in pixels)
    assert len({p.tobytes() for p in pixels}) == 12  # each a different crop
    again = photo_folder(tmp_path / "again", 12, size=(100, 75))
    assert all(
        np.array_equal(np.asarray(Image.open(again / f.relative_to(folder))), p)
        for f, p in zip(files, pixels, strict=True)
    )


def test_suite_passes_counts_one_pass_per_dataset_read(tiny_open_clip, image_folder, tmp_path):
    overrides = open_clip_overrides(tiny_open_clip, task="folder", **{"task.root": str(image_folder)})
    assert suite.suite_passes(overrides, tmp_path) == {"reads": 1, "datasets": 1, "passes": 1}


def test_peak_memory_reports_each_size_from_a_fresh_process(tmp_path):
    small, large = memory.peak_memory((10, 30), tmp_path)
    assert (small["images"], large["images"]) == (10, 30)
    assert large["features_mb"] == 3 * small["features_mb"] and small["peak_mb"] > 0


def test_simulated_ranks_gather_every_chunk_and_time_it(tmp_path):
    one, two = ranks.gather_costs((1, 2), images=5000, dim=8, scratch=tmp_path, repeats=1)  # 2 chunks of 4,096
    assert (one["ranks"], two["ranks"]) == (1, 2)
    assert one["merged"] == two["merged"] == 5000  # rank 0 holds every rank's chunks, merged in order


def test_the_peer_section_is_skipped_with_a_hint_when_clip_benchmark_is_absent(capsys):
    assert peer.peer_version(None) is None
    assert peer.peer_version(sys.executable) is None  # the test environment does not have it
    main(["--sections", "peer", "--images", "4", "--arch", "RN50"])
    out = capsys.readouterr().out
    assert "peer comparison skipped" in out and "pip install clip-benchmark==1.6.2" in out


def test_the_gpu_benchmark_compares_each_path_with_cpu_fp32_features(tiny_open_clip, tmp_path):
    """Run on the CPU here (the same passes as on a GPU): the default path matches its reference exactly,
    nvJPEG-free tensor decoding under bf16 comes close, and every rate is measured."""
    from clipeval.bench import gpu

    args = gpu.parse(["--device", "cpu", "--batch", "4", "--workers", "0", "--repeats", "1", "--check", "8"])
    source = ImageFolderSource(gpu.image_folder(tmp_path / "images", 12, distinct=5))
    assert len(source) == 12
    combinations = [("pil", "fp32", False), ("torchvision", "bf16", False)]
    cpu_rate, rows = gpu.measure(
        load_tiny(tiny_open_clip), load_tiny(tiny_open_clip), source, combinations, args, tmp_path
    )
    assert cpu_rate > 0 and [r["path"] for r in rows] == ["pil/fp32/eager", "torchvision/bf16/eager"]
    assert rows[0]["max_abs_diff"] == 0.0
    assert 0 < rows[1]["max_abs_diff"] < 0.1 and rows[1]["min_cosine"] > 0.99
    assert all(r["bare_forward"] > 0 and r["end_to_end"] > 0 for r in rows)


def test_the_precision_section_compares_bf16_with_fp32_on_the_real_digits(tmp_path, monkeypatch):
    from clipeval.bench import precision
    from clipeval.embedded.source import DigitsSource

    monkeypatch.setattr(precision, "digits_sources", lambda: {"test": DigitsSource(split="test")})
    rows = precision.digits_top1(tmp_path)
    test = rows["test"]
    assert test["n"] == 360 and 0.85 <= test["fp32"] <= 1 and 0 <= test["changed"] <= 360
    assert abs(test["fp32"] - test["bf16"]) <= test["changed"] / test["n"] + 1e-9  # top-1 moves only by changes


def test_the_prompts_section_encodes_each_imagenet_class_once_over_the_family(tmp_path):
    """One template (the section uses the 80): R's 200 classes, then what A and ObjectNet add, then V2 the
    rest of ImageNet's 998 distinct names; Sketch and ImageNet need none. The headline task, cold then warm."""
    from clipeval.bench import prompts
    from clipeval.bench.fixtures import imagenet_family

    data = imagenet_family(tmp_path / "data")
    one = ["model=tiny_digits", "task.templates=['a photo of a {c}.']"]
    runs = dict(prompts.sequence(one, data, tmp_path / "sequence"))
    assert list(runs) == list(prompts.SEQUENCE)
    assert runs["imagenet_r"] == 200 and 0 < runs["imagenet_a"] < 200 and runs["objectnet"] > 0
    assert runs["imagenet_sketch"] == runs["imagenet"] == 0 and sum(runs.values()) == 998
    timed = prompts.headline(one, data, tmp_path / "headline")
    assert (timed["cold"]["prompts"], timed["warm"]["prompts"]) == (200, 0) and timed["warm"]["seconds"] > 0
