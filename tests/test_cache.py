"""The feature and classifier cache: hits when nothing changed, misses when anything did."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import open_clip_overrides, run_in_process, save_tiny_open_clip
from torchvision import transforms

from clipeval.cache import TensorCache
from clipeval.config.runtime import Runtime
from clipeval.data.folder import ImageFolderSource
from clipeval.features.encode import feature_key
from clipeval.models.base import fingerprint
from clipeval.models.open_clip import OpenClipEncoder


def cache_entries(tmp_path, kind):
    return sorted(p.name for p in (tmp_path / "cache" / kind).rglob("*.pt"))


@pytest.fixture
def run_folder(tiny_open_clip, image_folder, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="clipeval")  # each entry's hit or miss is a DEBUG detail

    def run(*extra, checkpoint=None):
        caplog.clear()
        overrides = open_clip_overrides(tiny_open_clip, **{"task": "folder", "task.root": str(image_folder)})
        if checkpoint:
            overrides = [o for o in overrides if not o.startswith("model.pretrained=")] + [
                f"model.pretrained={checkpoint}"
            ]
        doc = run_in_process([*overrides, *extra], tmp_path / f"run{len(list(tmp_path.glob('run*')))}")
        return doc, caplog.text

    return run


def test_identical_rerun_hits_both_caches_and_gives_the_same_numbers(run_folder, tmp_path):
    first, log1 = run_folder()
    assert "cache miss, encoding" in log1
    entries = cache_entries(tmp_path, "features"), cache_entries(tmp_path, "text_prototypes")
    second, log2 = run_folder()
    assert "cache hit (12 samples), not re-encoding" in log2
    assert "Text prototypes of 3 classes x 1 templates: cache hit" in log2
    assert (
        f"Cache {tmp_path / 'cache'}: 3 entries read (features 1, model_cards 1, text_prototypes 1), 0 written" in log2
    )
    assert "Encoded" not in log2
    assert (cache_entries(tmp_path, "features"), cache_entries(tmp_path, "text_prototypes")) == entries
    assert first["records"] == second["records"]


def test_changing_limit_templates_or_checkpoint_misses(run_folder, tmp_path):
    run_folder()
    _, log = run_folder("runtime.limit=5")
    assert "cache miss" in log and len(cache_entries(tmp_path, "features")) == 2
    _, log = run_folder("task.templates=['a drawing of a {c}.']")
    assert "cache hit" in log  # same images, same model
    assert len(cache_entries(tmp_path, "text_prototypes")) == 2
    other = save_tiny_open_clip(tmp_path, seed=7)
    _, log = run_folder(checkpoint=other)
    assert "cache miss" in log and len(cache_entries(tmp_path, "features")) == 3


def test_changing_the_transform_precision_or_the_data_changes_the_feature_key(tiny_open_clip, image_folder):
    model = OpenClipEncoder(**{k: tiny_open_clip[k] for k in ("arch", "pretrained", "model_config")})
    runtime = Runtime.create(device="cpu")
    source = ImageFolderSource(image_folder)
    key = feature_key(model, source, runtime)
    assert feature_key(model, ImageFolderSource(image_folder), runtime) == key
    # the transform reaches the key through the fingerprint, which adapters compute from it
    resized = transforms.Compose([transforms.Resize(40), *model.preprocess.transforms[1:]])
    assert fingerprint(model.model, resized) != fingerprint(model.model, model.preprocess)
    assert feature_key(model, source, Runtime.create(device="cpu", precision="bf16")) != key
    (image_folder / "red_square" / "img00.png").write_bytes(
        (image_folder / "red_square" / "img01.png").read_bytes() + b"\0"
    )
    assert feature_key(model, ImageFolderSource(image_folder), runtime) != key


def test_a_write_killed_halfway_leaves_no_entry(tmp_path, monkeypatch):
    cache = TensorCache(tmp_path)

    def dies_midway(obj, f):
        f.write(b"partial bytes")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        cache.save("features", "ab" * 32, {"x": torch.ones(2)})
    assert list(tmp_path.rglob("*")) == [tmp_path / "features", tmp_path / "features" / "ab"]


def test_a_corrupt_or_mislabelled_entry_is_ignored(tmp_path, caplog):
    cache = TensorCache(tmp_path)
    key, other = "cd" * 32, "ef" * 32
    cache.save("features", key, {"x": torch.ones(2)})
    assert torch.equal(cache.load("features", key)["x"], torch.ones(2))
    cache.path("features", key).write_bytes(b"garbage")
    assert cache.load("features", key) is None
    cache.save("features", other, {"x": torch.ones(2)})
    cache.path("features", other).rename(cache.path("features", key).with_name(f"{key}.pt"))
    assert cache.load("features", key) is None
    assert "does not hold what its name says" in caplog.text


def test_cache_can_be_switched_off(run_folder, tmp_path):
    run_folder("runtime.cache=false")
    assert not (tmp_path / "cache").exists()


def test_same_inputs_give_bit_identical_features_with_the_cache_off(tiny_open_clip, image_folder, tmp_path):
    from clipeval.features.encode import image_features

    model = OpenClipEncoder(**{k: tiny_open_clip[k] for k in ("arch", "pretrained", "model_config")})
    runtime = Runtime.create(device="cpu", batch_size=5, workers=1, cache=False, progress=False)
    first, second = (
        image_features(model, ImageFolderSource(image_folder), runtime, TensorCache(tmp_path, enabled=False))
        for _ in range(2)
    )
    assert torch.equal(first.features, second.features) and first.ids == second.ids
