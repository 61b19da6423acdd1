"""A warm rerun never builds the model; anything that needs it builds it on first use."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import open_clip_overrides, run_in_process

from clipeval.cache import TensorCache
from clipeval.errors import ClipevalError
from clipeval.models.base import skip_weight_init
from clipeval.models.deferred import DeferredModel, _target_file, card_key, load_deferred
from clipeval.models.open_clip import OpenClipEncoder


@pytest.fixture
def run_folder(tiny_open_clip, image_folder, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="clipeval")

    def run(*extra, checkpoint=None):
        caplog.clear()
        tiny = tiny_open_clip | ({"pretrained": str(checkpoint)} if checkpoint else {})
        overrides = open_clip_overrides(tiny, **{"task": "folder", "task.root": str(image_folder)})
        doc = run_in_process([*overrides, *extra], tmp_path / f"run{len(list(tmp_path.glob('run*')))}")
        return doc, caplog.text

    return run


def test_a_fully_cached_rerun_never_loads_the_weights(run_folder):
    first, log1 = run_folder()
    assert "Loaded model" in log1
    second, log2 = run_folder()
    assert "known from its card" in log2
    assert "Loaded" not in log2  # neither the model nor its weights
    assert second["model"] == first["model"] and second["records"] == first["records"]


def test_the_weights_load_when_something_must_be_encoded(run_folder):
    first, _ = run_folder()
    second, log = run_folder("task.templates=['a drawing of a {c}.']")  # new classifier: text tower needed
    assert "known from its card" in log and "Loaded the weights" in log
    assert second["model"]["fingerprint"] == first["model"]["fingerprint"]


def test_a_new_checkpoint_file_is_a_new_card(run_folder, tiny_open_clip, tmp_path):
    run_folder()
    copy = tmp_path / ("copy" + Path(tiny_open_clip["pretrained"]).suffix)
    shutil.copy(tiny_open_clip["pretrained"], copy)
    _, log = run_folder(checkpoint=copy)
    assert "Loaded model" in log  # the card is keyed by the file's path, size and time


def test_the_card_key_follows_config_and_the_bytes_of_named_files(tiny_open_clip, tmp_path):
    checkpoint = tmp_path / "model.pt"
    shutil.copy(tiny_open_clip["pretrained"], checkpoint)
    config = {"_target_": "x", "pretrained": str(checkpoint)}
    key = card_key(config)
    assert card_key(dict(config)) == key
    assert card_key(config | {"name": "other"}) != key
    stat = os.stat(checkpoint)
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert card_key(config) == key  # touched, same bytes: same card
    data = bytearray(checkpoint.read_bytes())
    data[-100] ^= 1
    checkpoint.write_bytes(bytes(data))
    assert card_key(config) != key


def test_the_card_key_follows_files_inside_a_named_folder_and_stats_the_adapter_code(tmp_path):
    saved = tmp_path / "saved_model"
    saved.mkdir()
    (saved / "model.safetensors").write_bytes(b"weights v1")
    config = {"_target_": "clipeval.models.hf.HFClipEncoder", "name_or_path": str(saved)}
    key = card_key(config)
    (saved / "model.safetensors").write_bytes(b"weights v2, longer")
    assert card_key(config) != key
    assert [f.name for f in _target_file(config)] == ["hf.py"]


def test_weights_that_changed_behind_the_card_stop_the_run(tiny_open_clip, tmp_path):
    def build():
        return OpenClipEncoder(**{k: tiny_open_clip[k] for k in ("arch", "pretrained", "model_config")})

    stale = DeferredModel("tiny", "0" * 32, build, torch.device("cpu"))
    with pytest.raises(ClipevalError, match="changed on disk"):
        stale.tokenize(["a photo of a cat."])


def test_load_deferred_writes_the_card_once_and_builds_lazily_after(tiny_open_clip, tmp_path):
    built = []

    def build():
        built.append(1)
        return OpenClipEncoder(**{k: tiny_open_clip[k] for k in ("arch", "pretrained", "model_config")})

    cache = TensorCache(tmp_path)
    eager = load_deferred({"pretrained": tiny_open_clip["pretrained"]}, build, torch.device("cpu"), cache)
    lazy = load_deferred({"pretrained": tiny_open_clip["pretrained"]}, build, torch.device("cpu"), cache)
    assert isinstance(lazy, DeferredModel) and not lazy.loaded and len(built) == 1
    assert (lazy.name, lazy.fingerprint) == (eager.name, eager.fingerprint)
    tokens = eager.tokenize(["a photo of a cat."])
    assert torch.equal(lazy.encode_text(tokens), eager.encode_text(tokens)) and len(built) == 2
    off = load_deferred({"pretrained": "x"}, build, torch.device("cpu"), TensorCache(tmp_path, enabled=False))
    assert not isinstance(off, DeferredModel)  # cache=false: no card is read or written


def test_skipping_init_still_loads_every_weight_and_restores_torch_init(tiny_open_clip):
    init_before = torch.nn.init.normal_
    model = OpenClipEncoder(**{k: tiny_open_clip[k] for k in ("arch", "pretrained", "model_config")})
    saved = torch.load(tiny_open_clip["pretrained"], weights_only=True)
    state = model.model.state_dict()
    assert set(saved) <= set(state)
    assert all(torch.equal(state[k], saved[k].to(state[k].dtype)) for k in saved)
    assert torch.nn.init.normal_ is init_before
    with pytest.raises(RuntimeError), skip_weight_init():
        raise RuntimeError("fails inside")
    assert torch.nn.init.normal_ is init_before


def test_a_hub_name_is_keyed_by_the_commit_the_local_hub_cache_holds(tmp_path):
    """A hub name is not a file: when the cache moves to a newer snapshot, the card must miss."""
    from clipeval.models.deferred import card_key, hub_revisions

    refs = tmp_path / "hub" / "models--org--tiny-clip" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("a" * 40)
    for config in (
        {"_target_": "clipeval.models.hf.HFClipEncoder", "name_or_path": "org/tiny-clip", "cache_dir": str(tmp_path / "hub")},
        {"_target_": "clipeval.models.open_clip.OpenClipEncoder", "arch": "hf-hub:org/tiny-clip",
         "cache_dir": str(tmp_path / "hub")},
    ):  # fmt: skip
        assert hub_revisions(config) == {"org/tiny-clip": "a" * 40}
        before = card_key(config)
        (refs / "main").write_text("b" * 40)
        assert card_key(config) != before
        (refs / "main").write_text("a" * 40)
        assert card_key(config) == before
    pinned = {"name_or_path": "org/tiny-clip", "revision": "c" * 40, "cache_dir": str(tmp_path / "hub")}
    assert hub_revisions(pinned) == {"org/tiny-clip": "c" * 40}
    assert hub_revisions({"arch": "ViT-B-32", "model_config": "clipeval/embedded/assets/x.json"}) == {}


def test_the_card_is_found_from_another_working_directory(tiny_open_clip, tmp_path, monkeypatch):
    """The same weights named by a relative path from two folders are one card (a warm rerun from another
    folder loaded the model again); another file of the same name is not."""
    weights = Path(tiny_open_clip["pretrained"])
    config = {"_target_": "clipeval.models.open_clip.OpenClipEncoder", "arch": tiny_open_clip["arch"]}
    monkeypatch.chdir(weights.parent)
    here = card_key(config | {"pretrained": weights.name})
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert card_key(config | {"pretrained": os.path.relpath(weights)}) == here
    assert card_key(config | {"pretrained": str(weights)}) == here
    (tmp_path / "elsewhere" / weights.name).write_bytes(b"other weights")
    assert card_key(config | {"pretrained": weights.name}) != here


def test_the_adapter_is_keyed_by_its_module_and_code_not_where_it_is_installed(tmp_path, monkeypatch):
    """A source checkout and an installed copy of the same code give the same card."""
    import clipeval.models.deferred as deferred

    config = {"_target_": "clipeval.models.hf.HFClipEncoder", "name": "x"}
    here = card_key(config)
    copy = tmp_path / "site-packages" / "hf.py"
    copy.parent.mkdir()
    copy.write_bytes(_target_file(config)[0].read_bytes())
    monkeypatch.setattr(deferred, "_target_file", lambda config: [copy])
    assert card_key(config) == here
    copy.write_text("# edited\n" + copy.read_text())
    assert card_key(config) != here
