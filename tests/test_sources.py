"""Each source on tiny datasets in its real layout; missing data explains where it looked."""

from __future__ import annotations

import shutil

import pytest
from conftest import CLASSES, make_image_folder, make_wds, synthetic_image
from torchvision import transforms

from clipeval.data import DataNotFound
from clipeval.data.folder import ImageFolderSource
from clipeval.data.hf import HFDatasetSource
from clipeval.data.wds import WebDatasetSource
from clipeval.errors import ClipevalError

TO_TENSOR = transforms.Compose([transforms.Resize((16, 16)), transforms.ToTensor()])


def items(source, limit=None):
    return list(source.dataset(TO_TENSOR, limit))


def test_folder_classes_labels_and_ids(image_folder):
    src = ImageFolderSource(image_folder)
    assert src.classnames == [
        "blue triangle",
        "green circle",
        "red square",
    ]  # sorted folders, _ -> space
    assert len(src) == 12
    got = items(src)
    assert [it.sample_id for it in got[:2]] == [
        "blue_triangle/img00.png",
        "blue_triangle/img01.png",
    ]
    assert [it.label for it in got] == [0] * 4 + [1] * 4 + [2] * 4
    assert got[0].image.shape == (3, 16, 16)
    assert len(items(src, limit=5)) == 5


def test_folder_numeric_sort_orders_integer_class_folders_as_numbers(tmp_path):
    make_image_folder(tmp_path, classes=["0", "1", "2", "10"], per_class=1)
    assert ImageFolderSource(tmp_path).folders == ["0", "1", "10", "2"]
    # the folder named k holds label k, even with folders 3..9 absent
    numeric = ImageFolderSource(tmp_path, numeric_sort=True)
    assert numeric.folders == [str(i) for i in range(11)]
    assert {it.sample_id.split("/")[0]: it.label for it in items(numeric)} == {"0": 0, "1": 1, "2": 2, "10": 10}
    (tmp_path / "extra").mkdir()
    with pytest.raises(ClipevalError, match="not integers"):
        ImageFolderSource(tmp_path, numeric_sort=True)


def test_folder_key_follows_content_not_location(image_folder, tmp_path):
    copy = shutil.copytree(image_folder, tmp_path / "copy")
    assert ImageFolderSource(copy).key == ImageFolderSource(image_folder).key
    synthetic_image(0, 99, size=48).save(copy / "red_square" / "img00.png")
    assert ImageFolderSource(copy).key != ImageFolderSource(image_folder).key


def test_folder_missing_or_empty_says_where_it_looked(tmp_path):
    with pytest.raises(DataNotFound, match=r"not found\. Looked in:\n  - .*absent"):
        ImageFolderSource(tmp_path / "absent")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataNotFound, match="class subfolders"):
        ImageFolderSource(tmp_path / "empty")


def test_a_path_of_the_wrong_kind_says_what_it_is_not_not_found(image_folder, tmp_path):
    a_file = image_folder / "red_square" / "img00.png"
    with pytest.raises(DataNotFound, match=r"Image folder '.*img00.png' is a file, not a folder\.\nPass task.root="):
        ImageFolderSource(a_file)
    with pytest.raises(DataNotFound, match=r"not found: .*img00.png is a file, not a folder \(looked for .*/test/"):
        WebDatasetSource(str(a_file))
    csv = tmp_path / "table.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(DataNotFound, match=r"at '.*table.csv' is a .csv file, not a .parquet file or a folder writ"):
        HFDatasetSource(str(csv))
    with pytest.raises(DataNotFound, match=r"is a folder without a saved dataset \(no dataset_info.json, "):
        HFDatasetSource(str(image_folder))


def test_a_data_root_that_is_a_file_is_named_for_each_place_looked_in(tmp_path):
    from clipeval.data.imagenet import ImageNetVal

    (tmp_path / "data").write_text("x")
    with pytest.raises(DataNotFound) as info:
        ImageNetVal(str(tmp_path / "data"), str(tmp_path / "wnids.txt"))
    assert f"  - {tmp_path}/data/imagenet/val ({tmp_path}/data is a file, not a folder)" in str(info.value)


def test_unreadable_images_become_reported_items_not_crashes(image_folder):
    (image_folder / "red_square" / "broken.jpg").write_bytes(b"this is not a jpeg")
    png = (image_folder / "green_circle" / "img00.png").read_bytes()
    (image_folder / "green_circle" / "truncated.png").write_bytes(png[: len(png) // 2])
    got = items(ImageFolderSource(image_folder))
    bad = {it.sample_id: it.error for it in got if it.error}
    assert set(bad) == {"red_square/broken.jpg", "green_circle/truncated.png"}
    assert all(it.image is None for it in got if it.error)
    assert sum(it.error is None for it in got) == 12


@pytest.fixture
def hf_dataset():
    import datasets

    features = datasets.Features({"img": datasets.Image(), "y": datasets.ClassLabel(names=CLASSES)})
    rows = {"img": [synthetic_image(i % 3, i) for i in range(9)], "y": [i % 3 for i in range(9)]}
    return datasets.Dataset.from_dict(rows, features=features)


def test_hf_save_to_disk_folder_and_dataset_dict(hf_dataset, tmp_path):
    import datasets

    hf_dataset.save_to_disk(tmp_path / "single")
    src = HFDatasetSource(str(tmp_path / "single"))
    assert src.classnames == CLASSES
    assert (src.image_key, src.label_key) == ("img", "y")
    got = items(src)
    assert [it.label for it in got] == [i % 3 for i in range(9)]
    assert got[4].sample_id == "4" and got[4].image.shape == (3, 16, 16)

    datasets.DatasetDict({"validation": hf_dataset}).save_to_disk(tmp_path / "dict")
    assert len(HFDatasetSource(str(tmp_path / "dict"), split="validation")) == 9
    with pytest.raises(
        ClipevalError, match=r"split='test' is not allowed: split must be a split of .*dict: 'validation'"
    ):
        HFDatasetSource(str(tmp_path / "dict"), split="test")


def test_hf_parquet_files(hf_dataset, tmp_path):
    (tmp_path / "pq").mkdir()
    hf_dataset.to_parquet(tmp_path / "pq" / "test-00000.parquet")
    src = HFDatasetSource(str(tmp_path / "pq"))
    assert len(src) == 9 and src.classnames == CLASSES
    assert items(src)[2].label == 2
    # the same rows give the same key, whichever way they are pointed at
    assert HFDatasetSource(str(tmp_path / "pq" / "test-00000.parquet")).key == src.key


def test_a_hub_snapshot_of_parquet_files_reads_task_split_alone(hf_dataset, tmp_path):
    """A hub snapshot names each file's split (data/<split>-00000-of-00001.parquet): task.split picks its files;
    reading every file would have mixed the train rows into the test split."""
    (tmp_path / "hub" / "data").mkdir(parents=True)
    hf_dataset.to_parquet(tmp_path / "hub" / "data" / "test-00000-of-00001.parquet")
    hf_dataset.select(range(4)).to_parquet(tmp_path / "hub" / "data" / "train-00000-of-00001.parquet")
    assert len(HFDatasetSource(str(tmp_path / "hub"), split="test")) == 9
    assert len(HFDatasetSource(str(tmp_path / "hub"), split="train")) == 4
    with pytest.raises(
        ClipevalError, match=r"split='validation' is not allowed: .*the splits 'test' \(1 file\(s\)\), "
    ):
        HFDatasetSource(str(tmp_path / "hub"), split="validation")
    (tmp_path / "plain").mkdir()  # names without a split: every file is the split asked for, as before
    hf_dataset.to_parquet(tmp_path / "plain" / "0.parquet")
    assert len(HFDatasetSource(str(tmp_path / "plain"), split="validation")) == 9


def test_hf_unknown_hub_id_offline_says_how_to_get_it():
    with pytest.raises(DataNotFound, match=r"Hugging Face dataset 'someone/nothing-here'[\s\S]*save_to_disk"):
        HFDatasetSource("someone/nothing-here")


def test_wds_layout_labels_classnames_and_templates(tmp_path):
    src = WebDatasetSource(make_wds(tmp_path / "wds"))
    assert src.classnames == ["red square", "green circle", "blue triangle"]
    assert src.templates == ["a photo of a {c}.", "a drawing of a {c}."]
    got = items(src)
    assert len(got) == 12 and all(it.error is None for it in got)
    assert sorted(it.label for it in got) == sorted([0, 1, 2] * 4)
    assert got[0].sample_id == "0/s0_0000"
    assert len(items(src, limit=3)) == 3


def test_wds_missing_split_or_shards(tmp_path):
    with pytest.raises(DataNotFound, match=r"test/nshards.txt"):
        WebDatasetSource(tmp_path)
    root = make_wds(tmp_path / "wds", shards=2)
    (root / "test" / "1.tar").unlink()
    with pytest.raises(DataNotFound, match=r"1 of 2 shards"):
        WebDatasetSource(root)


def test_sampled_source_draws_per_class_deterministically(tmp_path):
    from clipeval.data.sampled import SampledSource

    folder = ImageFolderSource(make_image_folder(tmp_path / "img", per_class=5))
    pool = SampledSource(folder, per_class=2, seed=0)
    assert sorted(pool.label(i) for i in range(len(pool))) == [0, 0, 1, 1, 2, 2]
    assert [pool.sample_id(i) for i in range(6)] == [SampledSource(folder, 2, 0).sample_id(i) for i in range(6)]
    assert pool.key != SampledSource(folder, 2, 1).key and pool.classnames == folder.classnames
    assert len(SampledSource(folder, per_class=9)) == 15  # a class with fewer gives all it has
