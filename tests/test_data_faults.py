"""Broken or ambiguous data is refused (or skipped with its reason) when the source is built, before encoding.

Webdataset shards that are not complete tar files (git-lfs pointers, truncated or foreign files), an
``nshards.txt`` that leaves shards unread, ``.cls`` labels that only Python's lenient ``int()`` accepts,
Hugging Face label columns that are not integer class indices, and file names that are not UTF-8.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import make_image_folder, make_wds, open_clip_overrides, run_in_process, synthetic_image

from clipeval.data.folder import ImageFolderSource
from clipeval.data.hf import HFDatasetSource
from clipeval.data.wds import WebDatasetSource, _ShardDataset
from clipeval.errors import ClipevalError

LFS_POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 104857600\n"
)


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _png() -> bytes:
    buf = io.BytesIO()
    synthetic_image(0, 0).save(buf, format="PNG")
    return buf.getvalue()


def _member_offsets(shard: Path) -> list[int]:
    with tarfile.open(shard) as tar:
        return [m.offset for m in tar.getmembers()]


# --- 1. shards that are not complete tar files -------------------------------------------------------------------


def test_wds_git_lfs_pointer_shard_says_git_lfs_pull(tmp_path):
    root = make_wds(tmp_path / "d")
    (root / "test" / "1.tar").write_text(LFS_POINTER)
    with pytest.raises(ClipevalError, match="git lfs pull") as err:
        WebDatasetSource(root)
    assert "1.tar" in str(err.value) and "pointer" in str(err.value)


def _cut_at(data: bytes, offsets: list[int]) -> dict[str, bytes]:
    """Ways a download can end early: inside a header, inside a member's data, exactly between members."""
    return {
        "inside the first header": data[:100],
        "inside a member's data": data[: offsets[1] - 300],
        "at a member boundary": data[: offsets[2]],
    }


@pytest.mark.parametrize("how", ["inside the first header", "inside a member's data", "at a member boundary"])
def test_wds_truncated_shard_is_named_as_damaged(tmp_path, how):
    root = make_wds(tmp_path / "d")
    shard = root / "test" / "0.tar"
    shard.write_bytes(_cut_at(shard.read_bytes(), _member_offsets(shard))[how])
    with pytest.raises(ClipevalError, match="damaged or incomplete") as err:
        WebDatasetSource(root)
    assert "0.tar" in str(err.value) and "Download it again" in str(err.value)


def test_wds_shard_cut_at_a_member_boundary_would_silently_lose_samples(tmp_path):
    """Why the end-of-archive block is checked: webdataset reads such a shard as a shorter, valid one."""
    root = make_wds(tmp_path / "d")
    shard = root / "test" / "0.tar"
    full = len(list(_ShardDataset([str(shard)], lambda im: im, None)))
    shard.write_bytes(shard.read_bytes()[: _member_offsets(shard)[2]])
    assert len(list(_ShardDataset([str(shard)], lambda im: im, None))) < full
    with pytest.raises(ClipevalError, match="end-of-archive"):
        WebDatasetSource(root)


@pytest.mark.parametrize("content", [b"", b"not a tar file at all\n" * 40, b"\x89PNG\r\n\x1a\n" + bytes(600)])
def test_wds_shard_that_is_not_a_tar_is_named_as_damaged(tmp_path, content):
    root = make_wds(tmp_path / "d")
    (root / "test" / "1.tar").write_bytes(content)
    with pytest.raises(ClipevalError, match=r"1\.tar is damaged or incomplete"):
        WebDatasetSource(root)


def test_wds_complete_shards_pass_the_check(tmp_path):
    src = WebDatasetSource(make_wds(tmp_path / "d", shards=3))
    assert [p.name for p in src.shards] == ["0.tar", "1.tar", "2.tar"]


def test_wds_broken_shard_is_refused_before_the_model_is_used(tmp_path, tiny_open_clip):
    root = make_wds(tmp_path / "d")
    (root / "test" / "0.tar").write_text(LFS_POINTER)
    overrides = open_clip_overrides(tiny_open_clip, task="wds", **{"task.root": str(root)})
    with pytest.raises(ClipevalError, match="git lfs pull"):
        run_in_process(overrides, tmp_path / "run")


# --- 2. nshards.txt --------------------------------------------------------------------------------------------


def test_wds_shards_beyond_nshards_are_named_in_a_warning(tmp_path, caplog):
    root = make_wds(tmp_path / "d", shards=4)
    (root / "test" / "nshards.txt").write_text("2\n")
    with caplog.at_level(logging.WARNING, logger="clipeval.data.wds"):
        src = WebDatasetSource(root)
    assert len(src.shards) == 2  # CLIP_benchmark reads nshards.txt too; the others are named, not read
    assert "2.tar, 3.tar" in caplog.text and "NOT read" in caplog.text


def test_wds_no_warning_when_nshards_matches(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="clipeval.data.wds"):
        WebDatasetSource(make_wds(tmp_path / "d", shards=2))
    assert "NOT read" not in caplog.text


@pytest.mark.parametrize("text", ["", "two\n", "2.5\n", "0\n", "-1\n", "1_0\n"])
def test_wds_nshards_that_is_not_a_positive_integer_is_refused(tmp_path, text):
    root = make_wds(tmp_path / "d")
    (root / "test" / "nshards.txt").write_text(text)
    with pytest.raises(ClipevalError, match="nshards.txt should hold the number of shards"):
        WebDatasetSource(root)


# --- 3. .cls labels ----------------------------------------------------------------------------------------------


def test_wds_cls_labels_must_be_ascii_digits(tmp_path):
    """int() accepts '0_2', '+3' and Arabic-Indic digits; such labels are skipped with their reason instead."""
    root = tmp_path / "d"
    (root / "test").mkdir(parents=True)
    labels = {
        "ok": b"1",
        "ok_newline": b" 2\n",
        "underscore": b"0_2",
        "plus": b"+1",
        "arabic": "\u0663".encode(),
        "inner_space": b"1 2",
        "negative": b"-1",
    }
    members = {}
    for key, cls in labels.items():
        members[f"{key}.png"] = _png()
        members[f"{key}.cls"] = cls
    (root / "test" / "0.tar").write_bytes(_tar_bytes(members))
    (root / "test" / "nshards.txt").write_text("1\n")
    items = list(WebDatasetSource(root).dataset(lambda im: im, None))
    by_key = {it.sample_id.split("/")[1]: it for it in items}
    assert {k: (it.label, it.error) for k, it in by_key.items() if it.error is None} == {
        "ok": (1, None),
        "ok_newline": (2, None),
    }
    for key in ("underscore", "plus", "arabic", "inner_space"):
        assert "ASCII digits" in by_key[key].error and by_key[key].image is None
    assert "negative" in by_key["negative"].error


# --- 4. Hugging Face label columns ---------------------------------------------------------------------------------


def _hf_with_labels(tmp_path: Path, labels: list) -> str:
    import datasets

    rows = {"image": [synthetic_image(0, i) for i in range(len(labels))], "label": labels}
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("float64")})
    if any(isinstance(v, str) for v in labels):
        features["label"] = datasets.Value("string")
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(tmp_path / "hf")
    return str(tmp_path / "hf")


def test_hf_fractional_float_labels_are_refused_not_truncated(tmp_path):
    with pytest.raises(ClipevalError, match=r"Label column 'label'.*row 0: 0\.9, row 1: 1\.9"):
        HFDatasetSource(_hf_with_labels(tmp_path, [0.9, 1.9, 0.0]))


def test_hf_missing_labels_are_refused_with_the_row(tmp_path):
    with pytest.raises(ClipevalError, match=r"row 1: None"):
        HFDatasetSource(_hf_with_labels(tmp_path, [0.0, None, 1.0]))


def test_hf_nan_label_is_refused(tmp_path):
    with pytest.raises(ClipevalError, match=r"row 2: nan"):
        HFDatasetSource(_hf_with_labels(tmp_path, [0.0, 1.0, float("nan")]))


def test_hf_string_labels_are_refused_with_the_type(tmp_path):
    with pytest.raises(ClipevalError, match=r"type string"):
        HFDatasetSource(_hf_with_labels(tmp_path, ["0", "1"]))


def test_hf_whole_float_labels_are_accepted(tmp_path):
    """pandas stores an integer column as float once it held a missing value; whole numbers are exact."""
    src = HFDatasetSource(_hf_with_labels(tmp_path, [0.0, 2.0, 1.0]))
    assert [src.label(i) for i in range(len(src))] == [0, 2, 1]


# --- 5. names that are not UTF-8 --------------------------------------------------------------------------------

needs_bytes_names = pytest.mark.skipif(
    sys.platform != "linux", reason="only Linux file systems store arbitrary bytes as names"
)


@needs_bytes_names
def test_folder_file_name_not_utf8_is_refused_when_listing(tmp_path):
    root = make_image_folder(tmp_path / "images")
    os.rename(root / "red_square" / "img00.png", os.path.join(os.fsencode(root / "red_square"), b"caf\xe9.png"))
    with pytest.raises(ClipevalError, match=r"not valid UTF-8.*caf\\xe9\.png.*convmv") as err:
        ImageFolderSource(root)
    assert "red_square/" in str(err.value)


@needs_bytes_names
def test_folder_class_folder_name_not_utf8_is_refused(tmp_path):
    root = make_image_folder(tmp_path / "images")
    os.rename(root / "green_circle", os.path.join(os.fsencode(root), b"gr\xfcn"))
    with pytest.raises(ClipevalError, match=r"gr\\xfcn"):
        ImageFolderSource(root)


@needs_bytes_names
def test_folder_name_not_utf8_fails_before_encoding_not_when_writing(tmp_path, tiny_open_clip):
    root = make_image_folder(tmp_path / "images")
    os.rename(root / "red_square" / "img00.png", os.path.join(os.fsencode(root / "red_square"), b"caf\xe9.png"))
    overrides = open_clip_overrides(tiny_open_clip, task="folder", **{"task.root": str(root)})
    with pytest.raises(ClipevalError, match="not valid UTF-8"):
        run_in_process(overrides, tmp_path / "run")


def test_wds_member_name_not_utf8_is_refused(tmp_path):
    root = tmp_path / "d"
    (root / "test").mkdir(parents=True)
    name = b"caf\xe9".decode("utf-8", "surrogateescape")  # how tarfile hands over such a name
    (root / "test" / "0.tar").write_bytes(_tar_bytes({f"{name}.png": _png(), f"{name}.cls": b"0"}))
    (root / "test" / "nshards.txt").write_text("1\n")
    with pytest.raises(ClipevalError, match=r"not valid UTF-8.*caf\\udce9"):
        WebDatasetSource(root)
