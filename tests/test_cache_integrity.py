"""A cache hit means the same inputs, bit for bit; a damaged entry is a warning and a recompute.

Data and checkpoints are keyed by the sha256 of their bytes (memoised by stat signature), so
rewrites that keep a file's size (and even its mtime) miss the cache; every entry carries a
checksum of its content, and cached features are checked before use.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import struct
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import (
    make_image_folder,
    make_wds,
    open_clip_overrides,
    run_in_process,
    save_tiny_open_clip,
    synthetic_image,
)

import clipeval.cache
from clipeval.cache import FileDigests, TensorCache
from clipeval.config.runtime import Runtime
from clipeval.data.folder import ImageFolderSource
from clipeval.data.hf import HFDatasetSource
from clipeval.data.wds import WebDatasetSource
from clipeval.features.classifier import zeroshot_classifier
from clipeval.features.encode import feature_key, image_features

# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture
def later(monkeypatch):
    """Let files just written count as settled (older than the racy window) for the memo."""
    now = time.time_ns() + 10 * clipeval.cache.RACY_NS
    monkeypatch.setattr(clipeval.cache.time, "time_ns", lambda: now)


def replace_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    """What ``cp -p other path`` or ``rsync -t`` does: new bytes, same size and modification time."""
    before = path.stat()
    assert len(data) == before.st_size, "the test needs a same-size replacement"
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.utime(tmp, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(tmp, path)
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def stored_tensor_offset(path: Path) -> int:
    """File offset of the largest tensor's bytes inside a torch.save zip (stored uncompressed)."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        assert info.compress_type == zipfile.ZIP_STORED
    raw = path.read_bytes()
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len


def patch_bytes(path: Path, offset: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(data)] = data
    path.write_bytes(bytes(raw))


def entries(tmp_path: Path, kind: str) -> list[Path]:
    return sorted((tmp_path / "cache" / kind).rglob("*.pt"))


@pytest.fixture
def run_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="clipeval")

    def run(overrides):
        caplog.clear()
        doc = run_in_process(overrides, tmp_path / f"run{len(list(tmp_path.glob('run*')))}")
        return doc, caplog.text

    return run


def scores(doc: dict) -> list[tuple]:
    return [(r["dataset"], r["metric"], r["value"], r["n"]) for r in doc["records"]]


# --- data keys: content, not names and sizes -------------------------------------------------------


@pytest.mark.parametrize("fmt", ["bmp", "ppm", "tiff"])
def test_a_same_size_rewrite_of_an_image_changes_the_folder_key(tmp_path, fmt):
    root = make_image_folder(tmp_path / "images", fmt=fmt)
    key = ImageFolderSource(root).key
    path = root / "red_square" / f"img00.{fmt}"
    size = path.stat().st_size
    synthetic_image(label=1, index=7).save(path)  # another picture, same format and dimensions
    assert path.stat().st_size == size
    assert ImageFolderSource(root).key != key


def test_rewritten_images_of_the_same_size_are_encoded_again_not_served_stale(tiny_open_clip, tmp_path, run_logged):
    root = make_image_folder(tmp_path / "images", fmt="bmp")
    overrides = open_clip_overrides(tiny_open_clip, task="folder", **{"task.root": str(root)})
    run_logged(overrides)
    for i in range(4):  # every "red square" becomes a green picture: same size, other content
        path = root / "red_square" / f"img{i:02d}.bmp"
        buf = io.BytesIO()
        synthetic_image(label=1, index=10 + i).save(buf, format="BMP")
        replace_keeping_size_and_mtime(path, buf.getvalue())
    second, log = run_logged(overrides)
    assert "cache miss, encoding" in log and "cache hit (" not in log
    fresh, _ = run_logged([*overrides, "runtime.cache=false"])
    assert scores(second) == scores(fresh)


def small_shard(path: Path, labels: list[int]) -> None:
    """A shard of tiny samples (a few hundred bytes each), so that tar's padding hides a removed one."""
    with tarfile.open(path, "w") as tar:
        for n, label in enumerate(labels):
            buf = io.BytesIO()
            synthetic_image(label, n, size=8).save(buf, format="PNG")
            for ext, data in (("png", buf.getvalue()), ("cls", str(label).encode())):
                info = tarfile.TarInfo(f"s{n:04d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_relabelling_or_removing_a_sample_inside_a_shard_changes_the_wds_key(tmp_path):
    root = make_wds(tmp_path / "wds", shards=1)
    shard = root / "test" / "0.tar"
    small_shard(shard, [0, 1, 2, 0])
    key, size = WebDatasetSource(root).key, shard.stat().st_size
    small_shard(shard, [0, 1, 2, 1])  # one label changed
    assert shard.stat().st_size == size and WebDatasetSource(root).key != key
    small_shard(shard, [0, 1, 2])  # one sample removed
    assert shard.stat().st_size == size and WebDatasetSource(root).key != key


def test_a_relabelled_shard_is_scored_with_its_new_labels(tiny_open_clip, tmp_path, run_logged):
    root = make_wds(tmp_path / "wds", shards=2)
    overrides = open_clip_overrides(tiny_open_clip, task="wds", **{"task.root": str(root)})
    run_logged(overrides)
    shard = root / "test" / "0.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for member, data in members:
            if member.name.endswith(".cls"):
                data = str((int(data) + 1) % 3).encode()  # every label of the shard moves to the next class
            tar.addfile(member, io.BytesIO(data))
    replace_keeping_size_and_mtime(shard, buf.getvalue())
    second, log = run_logged(overrides)
    assert "cache miss, encoding" in log
    fresh, _ = run_logged([*overrides, "runtime.cache=false"])
    assert scores(second) == scores(fresh)


def test_copying_a_folder_hashes_it_once_and_keeps_its_key(image_folder, tmp_path, later):
    key = ImageFolderSource(image_folder).key
    memo = clipeval.cache.file_digests()
    copy = shutil.copytree(image_folder, tmp_path / "copy")
    assert ImageFolderSource(copy).key == key
    with clipeval.cache.use_file_digests(memo):
        assert ImageFolderSource(copy).key == key
        assert memo.hashed == 0  # the copy's digests were memoised by its first key


def test_a_warm_key_reads_no_file_and_a_cp_p_replacement_is_read_again(image_folder, later):
    cold = FileDigests(clipeval.cache.file_digests().root)
    with clipeval.cache.use_file_digests(cold):
        key = ImageFolderSource(image_folder).key
    assert cold.hashed == 12
    warm = FileDigests(cold.root)
    with clipeval.cache.use_file_digests(warm):
        assert ImageFolderSource(image_folder).key == key
        assert warm.hashed == 0
        path = image_folder / "blue_triangle" / "img00.png"
        data = bytearray(path.read_bytes())
        data[-20] ^= 0xFF  # inside the PNG's last chunk: same size
        replace_keeping_size_and_mtime(path, bytes(data))
        assert ImageFolderSource(image_folder).key != key
        assert warm.hashed == 1  # only the replaced file


def test_files_changed_moments_ago_are_not_memoised(image_folder):
    """A rewrite within the same timestamp tick keeps size, mtime, ctime and inode: such files are hashed
    again on every key until they are older than clipeval.cache.RACY_NS."""
    memo = clipeval.cache.file_digests()
    files = sorted(image_folder.rglob("*.png"))
    memo.digests(files)
    memo.digests(files)
    assert memo.hashed == 2 * len(files)


def test_a_damaged_memo_is_a_warning_and_the_files_are_hashed_again(image_folder, later, caplog):
    files = sorted(image_folder.rglob("*.png"))
    memo = clipeval.cache.file_digests()
    digests = memo.digests(files)
    (stored,) = memo.root.rglob("*.json")
    text = stored.read_bytes()
    first = digests[0].encode()
    assert first in text
    stored.write_bytes(text.replace(first, digests[1].encode(), 1))  # a wrong digest for the first file
    again = FileDigests(memo.root)
    assert again.digests(files) == digests and again.hashed == len(files)
    assert "Ignoring damaged file-digest memo" in caplog.text


def test_concurrent_runs_keep_each_others_memo_records(tmp_path, later):
    (tmp_path / "d").mkdir()
    a, b = tmp_path / "d" / "a", tmp_path / "d" / "b"
    a.write_bytes(b"a"), b.write_bytes(b"b")
    root = tmp_path / "memo"
    first, second = FileDigests(root), FileDigests(root)
    first.digests([a]), second.digests([b])  # each writes its own record to the same memo file
    both = FileDigests(root)
    assert both.digests([a, b]) and both.hashed == 0


def test_with_the_cache_off_files_are_identified_without_being_read(image_folder, tmp_path):
    off = TensorCache(tmp_path / "off", enabled=False)
    with clipeval.cache.use_file_digests(off.digests):
        key = ImageFolderSource(image_folder).key
    assert off.digests.hashed == 0 and not (tmp_path / "off").exists()
    assert key != ImageFolderSource(image_folder).key  # identities, never stored: not content digests


def test_a_file_that_cannot_be_read_is_keyed_as_such_and_left_to_its_reader(image_folder, tmp_path, later):
    link = image_folder / "red_square" / "elsewhere.png"
    link.symlink_to(tmp_path / "not-yet.png")  # dangling: listed, but neither stat nor open works
    key = ImageFolderSource(image_folder).key
    assert ImageFolderSource(image_folder).key == key
    synthetic_image(0, 5).save(tmp_path / "not-yet.png")
    assert ImageFolderSource(image_folder).key != key


@pytest.fixture
def hf_rows():
    import datasets

    def rows(labels, images=None):
        features = datasets.Features({"img": datasets.Image(), "y": datasets.ClassLabel(names=["a", "b", "c"])})
        images = images or [synthetic_image(y, i) for i, y in enumerate(labels)]
        return datasets.Dataset.from_dict({"img": images, "y": labels}, features=features)

    return rows


def test_hf_arrow_files_rewritten_behind_the_same_fingerprint_change_the_key(hf_rows, tmp_path):
    hf_rows([0, 1, 2, 0]).save_to_disk(tmp_path / "saved")
    hf_rows([2, 1, 0, 0]).save_to_disk(tmp_path / "other")
    key = HFDatasetSource(str(tmp_path / "saved")).key
    (arrow,) = (tmp_path / "saved").glob("*.arrow")
    shutil.copy(next((tmp_path / "other").glob("*.arrow")), arrow)  # state.json (the fingerprint) is unchanged
    changed = HFDatasetSource(str(tmp_path / "saved"))
    assert [changed.label(i) for i in range(4)] == [2, 1, 0, 0]
    assert changed.key != key


def test_hf_images_stored_as_paths_are_keyed_by_their_bytes(hf_rows, tmp_path):
    folder = make_image_folder(tmp_path / "images", fmt="bmp", per_class=1)
    paths = sorted(str(p) for p in folder.rglob("*.bmp"))
    (tmp_path / "pq").mkdir()
    hf_rows([0, 1, 2], images=paths).to_parquet(tmp_path / "pq" / "test.parquet")  # cells hold paths, not bytes
    key = HFDatasetSource(str(tmp_path / "pq")).key
    synthetic_image(2, 9).save(paths[0])  # same size, other picture; the parquet file is unchanged
    assert HFDatasetSource(str(tmp_path / "pq")).key != key


def test_parquet_replaced_with_the_same_mtime_gives_the_new_rows_and_a_new_key(hf_rows, tmp_path):
    (tmp_path / "pq").mkdir()
    path = tmp_path / "pq" / "test-00000.parquet"
    hf_rows([0, 1, 2, 0]).to_parquet(path)
    hf_rows([1, 2, 0, 1]).to_parquet(tmp_path / "other.parquet")
    key = HFDatasetSource(str(tmp_path / "pq")).key
    before = path.stat()
    shutil.copy(tmp_path / "other.parquet", path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # datasets keys its arrow copy by mtime
    changed = HFDatasetSource(str(tmp_path / "pq"))
    assert [changed.label(i) for i in range(4)] == [1, 2, 0, 1]
    assert changed.key != key


# --- model cards -----------------------------------------------------------------------------------


def test_a_checkpoint_replaced_with_the_same_size_and_mtime_is_loaded_again(tiny_open_clip, tmp_path, run_logged):
    checkpoint = tmp_path / "model.pt"
    shutil.copy(tiny_open_clip["pretrained"], checkpoint)
    folder = make_image_folder(tmp_path / "images")
    overrides = open_clip_overrides(
        tiny_open_clip | {"pretrained": str(checkpoint)}, task="folder", **{"task.root": str(folder)}
    )
    first, _ = run_logged(overrides)
    other = save_tiny_open_clip(tmp_path, seed=7)
    replace_keeping_size_and_mtime(checkpoint, other.read_bytes())
    second, log = run_logged(overrides)
    assert "known from its card" not in log and "Loaded model" in log
    assert second["model"]["fingerprint"] != first["model"]["fingerprint"]
    fresh, _ = run_logged([*overrides, "runtime.cache=false"])
    assert second["model"]["fingerprint"] == fresh["model"]["fingerprint"]
    assert scores(second) == scores(fresh)


def test_a_damaged_model_card_never_renames_the_model(tiny_open_clip, image_folder, tmp_path, run_logged):
    overrides = open_clip_overrides(tiny_open_clip, task="folder", **{"task.root": str(image_folder)})
    first, _ = run_logged(overrides)
    name = first["model"]["name"].encode()
    (card,) = entries(tmp_path, "model_cards")
    raw = card.read_bytes()
    assert raw.count(name) == 1
    card.write_bytes(raw.replace(name, name[:-1] + b"X"))  # the zip still loads: torch does not check CRCs
    assert torch.load(card, weights_only=True)["identity"][0] == name[:-1].decode() + "X"
    second, log = run_logged(overrides)
    assert "Ignoring damaged cache entry" in log
    assert second["model"] == first["model"] and scores(second) == scores(first)


# --- entries: checksummed, and features checked before use ----------------------------------------


def test_bytes_flipped_inside_cached_features_are_a_warning_and_a_recompute(image_folder, tmp_path, run_logged):
    overrides = ["model=custom", "model._target_=user_model.MeanColourEncoder", "task=folder"]
    overrides.append(f"task.root={image_folder}")
    first, _ = run_logged(overrides)
    (entry,) = entries(tmp_path, "features")
    patch_bytes(entry, stored_tensor_offset(entry), struct.pack("<f", 2535.0))
    assert torch.load(entry, weights_only=True)["features"].max() == 2535.0  # still loads: a silent hit before
    second, log = run_logged(overrides)
    assert "Ignoring damaged cache entry" in log and "cache miss, encoding" in log
    assert scores(second) == scores(first)
    assert torch.load(entry, weights_only=True)["features"].max() < 1.001  # rewritten whole


def test_any_changed_value_of_an_entry_fails_its_checksum(tmp_path, caplog):
    cache = TensorCache(tmp_path)
    key = "ab" * 32
    cache.save("features", key, {"features": torch.eye(3), "ids": ["a", "b", "c"], "skipped": []})
    assert cache.load("features", key)["ids"] == ["a", "b", "c"]
    path = cache.path("features", key)
    raw = path.read_bytes()
    assert raw.count(b"\x00\x00\x80?") == 3  # float32 1.0 on the diagonal
    path.write_bytes(raw.replace(b"\x00\x00\x80?", b"\x00\x00\x00\x00", 1))
    assert cache.load("features", key) is None
    cache.save("features", key, {"features": torch.eye(3), "ids": ["a", "b", "c"], "skipped": []})
    path.write_bytes(path.read_bytes().replace(b"\x58\x01\x00\x00\x00b", b"\x58\x01\x00\x00\x00d"))  # id "b" -> "d"
    assert torch.load(path, weights_only=True)["ids"] == ["a", "d", "c"]
    assert cache.load("features", key) is None
    assert caplog.text.count("does not match its checksum") == 2


@pytest.fixture
def colour_model():
    from user_model import MeanColourEncoder

    return MeanColourEncoder()


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda e: {**e, "features": e["features"] * 2535}, "not unit norm"),
        (lambda e: {**e, "features": torch.full_like(e["features"], float("nan"))}, "non-finite"),
        (lambda e: {**e, "ids": e["ids"][:-1]}, "12 features, 12 labels and 11 ids"),
        (lambda e: {**e, "labels": e["labels"][:-2]}, "12 features, 10 labels and 12 ids"),
    ],
)
def test_cached_features_that_cannot_be_right_are_encoded_again(
    colour_model, image_folder, tmp_path, caplog, damage, why
):
    """Entries with a valid checksum but unusable content (written by a faulty older version, say)."""
    runtime, cache = Runtime.create(device="cpu", workers=0, progress=False), TensorCache(tmp_path / "c")
    source = ImageFolderSource(image_folder)
    good = image_features(colour_model, source, runtime, cache)
    key = feature_key(colour_model, source, runtime)
    entry = {"features": good.features, "labels": good.labels, "ids": good.ids, "skipped": []}
    cache.save("features", key, damage(entry))
    again = image_features(colour_model, source, runtime, cache)
    assert why in caplog.text and "encoding again" in caplog.text
    assert torch.equal(again.features, good.features) and not again.from_cache


def test_cached_text_prototypes_that_cannot_be_right_are_encoded_again(colour_model, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="clipeval")
    runtime, cache = Runtime.create(device="cpu", workers=0, progress=False), TensorCache(tmp_path / "c")
    args = (colour_model, ["red", "green", "blue"], ["a {c} thing."], runtime, cache)
    good = zeroshot_classifier(*args)
    (path,) = (tmp_path / "c" / "text_prototypes").rglob("*.pt")
    key = path.stem
    for damaged, why in (
        ({"classnames": ["red", "green", "blue"], "weights": good[:2]}, "returned 2 embeddings for a batch of 3"),
        ({"classnames": ["red", "green", "blue"], "weights": good * float("nan")}, "non-finite"),
        ({"classnames": ["red", "red", "blue"], "weights": good}, "does not list distinct class names"),
        ({"classnames": ["red", "green", "blue"], "weights": good.double()}, "dtype torch.float64, not float32"),
        ({"weights": good}, "does not list distinct class names"),
    ):
        caplog.clear()
        cache.save("text_prototypes", key, damaged)
        assert torch.equal(zeroshot_classifier(*args), good)
        assert (
            why in caplog.text and "Ignoring cached text prototypes" in caplog.text and "encoding again" in caplog.text
        )
        assert "encoding 3 prompts" in caplog.text  # all three again, and the entry is whole again:
        assert torch.equal(cache.load("text_prototypes", key)["weights"], good)
