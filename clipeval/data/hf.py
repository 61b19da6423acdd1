"""Hugging Face ``datasets``: a hub id, a folder written by ``save_to_disk``, or parquet files."""

from __future__ import annotations

import glob
import hashlib
import io
import os
from pathlib import Path

from PIL import Image

from clipeval.cache import file_digests
from clipeval.data.base import DataNotFound, MapSource, content_key
from clipeval.data.captions import check_captions
from clipeval.errors import ClipevalError, OptionError

#: task.split's default: the split asked of a saved Dataset that records none
DEFAULT_SPLIT = "test"


class HFDatasetSource(MapSource):
    """One split of a Hugging Face dataset with an image column and an integer label column.

    Images are read undecoded (``Image(decode=False)``) and opened here, so that a corrupt
    image is reported by index instead of aborting the whole pass inside ``datasets``.

    For retrieval, ``caption_key`` names a column holding each image's list of captions (nlphuji/flickr30k:
    ``caption``; yerevann/coco-karpathy: ``sentences``); there is no label column then (labels are row
    positions). ``split_column`` keeps the rows whose value in that column is ``split_value`` (default:
    ``split``), for datasets that ship every Karpathy split in one hub split with a ``split`` column
    (nlphuji/flickr30k). Sample ids are the row numbers in the hub split.
    """

    def __init__(
        self,
        path: str,
        split: str = "test",
        name: str | None = None,
        revision: str | None = None,
        image_key: str | None = None,
        label_key: str | None = None,
        caption_key: str | None = None,
        split_column: str | None = None,
        split_value: str | None = None,
    ):
        import datasets

        self.path, self.split = str(path), split
        ds = _load(
            self.path, split, name, revision, split_in_column=caption_key is not None and split_column is not None
        )
        if len(ds) == 0:
            raise ClipevalError(
                f"Hugging Face dataset {self.path} (split '{split}') has no rows: there is nothing to evaluate. "
                "Check task.path and task.split."
            )
        self.image_key = image_key or _find_column(ds, datasets.Image, "image")
        self.label_key = label_key or _find_column(ds, datasets.ClassLabel, "label")
        self._rows: list[int] | None = None
        self._captions: dict[str, list[str]] | None = None
        if caption_key is not None:
            self._init_captions(ds, caption_key, split_column, split_value or split)
            return
        for option, key in (("image_key", self.image_key), ("label_key", self.label_key)):
            if key not in ds.column_names:
                columns = ", ".join(map(repr, ds.column_names))
                raise OptionError(option, key, f"a column of dataset {self.path}: {columns} (task.{option})")
        feature = ds.features[self.label_key]
        self.classnames = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
        self._labels = _integer_labels(ds, self.label_key, self.path)
        self._ds = ds.cast_column(self.image_key, datasets.Image(decode=False)).select_columns([self.image_key])
        self.key = content_key(
            "hf", [ds._fingerprint, split, self.image_key, self.label_key, *_data_digests(ds, self._ds)]
        )

    def _init_captions(self, ds, caption_key: str, split_column: str | None, split_value: str) -> None:
        """A captioned split: the rows of ``split_column`` == ``split_value`` (all without one), their captions."""
        import datasets

        for option, key in (
            ("image_key", self.image_key),
            ("caption_key", caption_key),
            ("split_column", split_column),
        ):
            if key is not None and key not in ds.column_names:
                columns = ", ".join(map(repr, ds.column_names))
                raise OptionError(option, key, f"a column of dataset {self.path}: {columns} (task.{option})")
        rows = list(range(len(ds)))
        if split_column is not None:
            values = ds.with_format("arrow")[split_column].to_pylist()
            rows = [i for i, v in enumerate(values) if v == split_value]
            if not rows:
                have = ", ".join(f"'{v}'" for v in sorted({str(v) for v in values})[:10])
                raise OptionError(
                    "split_value", split_value, f"a value of column '{split_column}' of {self.path}: {have}"
                )
        cells = ds.with_format("arrow")[caption_key].to_pylist()
        where = f"Caption column '{caption_key}' of dataset {self.path}, row"
        self._captions = {str(i): check_captions(cells[i], f"{where} {i}") for i in rows}
        self._rows, self.label_key = rows, None
        self._labels = list(range(len(rows)))
        picked = ds.select(rows) if split_column is not None else ds
        self._ds = picked.cast_column(self.image_key, datasets.Image(decode=False)).select_columns([self.image_key])
        self.key = content_key(
            "hf-captions",
            [ds._fingerprint, self.split, self.image_key, caption_key, split_column, split_value,
             *_data_digests(ds, self._ds)],
        )  # fmt: skip

    def describe(self) -> str:
        return f"Hugging Face dataset {self.path} [{self.split}] ({len(self)} images)"

    def captions(self) -> dict[str, list[str]] | None:
        return self._captions

    def __len__(self) -> int:
        return len(self._labels)

    def sample_id(self, index: int) -> str:
        return str(index if self._rows is None else self._rows[index])

    def label(self, index: int) -> int:
        return self._labels[index]

    def open_image(self, index: int) -> Image.Image:
        cell = self._ds[index][self.image_key]
        if cell.get("bytes"):
            return Image.open(io.BytesIO(cell["bytes"]))
        return Image.open(cell["path"])


def _load(path: str, split: str, name: str | None, revision: str | None, split_in_column: bool = False):
    """The dataset at ``path``, split ``split``. A folder written by ``Dataset.save_to_disk`` (one split, not a
    DatasetDict) cannot choose a split: ``split`` must be the one it was saved from (state.json ``_split``), or,
    when it recorded none, the default ``test``; anything else is refused rather than ignored. With
    ``split_in_column`` (retrieval's ``split_column``) the split chooses rows, not a split, and is not checked."""
    import datasets

    local = Path(path).expanduser()
    if local.is_dir() and (
        (local / "dataset_info.json").exists()
        or (local / "dataset_dict.json").exists()
        or (local / "state.json").exists()
    ):
        try:
            ds = datasets.load_from_disk(str(local))
        except IndexError:  # datasets cannot load a saved split of no rows (no arrow files)
            if not _saved_without_rows(local):
                raise
            raise ClipevalError(
                f"Hugging Face dataset {path} has a split with no rows ({', '.join(_saved_without_rows(local))} "
                "lists no data files): there is nothing to evaluate. Check task.path."
            ) from None
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise OptionError("split", split, f"a split of {path}: {', '.join(map(repr, ds))} (task.split)")
            ds = ds[split]
        elif not split_in_column and (split != DEFAULT_SPLIT if ds.split is None else str(ds.split) != split):
            saved = f"was saved from split '{ds.split}'" if ds.split is not None else "records no split"
            raise OptionError(
                "split",
                split,
                f"the split of {path}, a single saved Dataset (not a DatasetDict) that {saved}, so task.split cannot "
                f"choose another: use "
                + (f"task.split={ds.split}" if ds.split is not None else f"task.split={DEFAULT_SPLIT} (the default)")
                + ", or save a DatasetDict of named splits",
            )
        return ds
    parquet = _split_files(_parquet_files(local), local, split)
    if parquet:
        return datasets.load_dataset(
            "parquet", data_files={split: parquet}, split=split, cache_dir=_parquet_cache(parquet)
        )
    if local.exists() or os.sep in path and not _looks_like_hub_id(path):
        raise DataNotFound(
            f"A Hugging Face dataset at '{path}'",
            [str(local)],
            "Expected a folder written by Dataset.save_to_disk, parquet file(s), or a hub id.",
            kind="folder",
            found=_not_a_dataset(local),
        )
    try:
        return datasets.load_dataset(path, name, split=split, revision=revision)
    except Exception as exc:  # offline, unknown id, gated: all end the same way for the user
        raise DataNotFound(
            f"Hugging Face dataset '{path}' (split '{split}')",
            [f"the Hugging Face hub and its local cache ({datasets.config.HF_DATASETS_CACHE})"],
            f"Loading failed with: {type(exc).__name__}: {exc}\n"
            "Download it where there is network (datasets.load_dataset(...).save_to_disk(DIR)) "
            "and pass task.path=DIR.",
        ) from exc


def _saved_without_rows(local: Path) -> list[str]:
    """The state.json files under a save_to_disk folder (the dataset's, or each split's) that list no data files."""
    import json

    empty = []
    for state in sorted([local / "state.json", *local.glob("*/state.json")]):
        try:
            if state.is_file() and not json.loads(state.read_text()).get("_data_files"):
                empty.append(str(state.relative_to(local)))
        except (OSError, ValueError, AttributeError):
            continue
    return empty


def _not_a_dataset(local: Path) -> str | None:
    """What is at ``local`` instead of a saved dataset or parquet files, in words (None: nothing)."""
    if local.is_dir():
        return (
            "a folder without a saved dataset (no dataset_info.json, dataset_dict.json or state.json, as "
            "Dataset.save_to_disk writes) and without .parquet files"
        )
    if local.is_file():
        what = f"a {local.suffix} file" if local.suffix else "a file"
        return f"{what}, not a .parquet file or a folder written by Dataset.save_to_disk"
    return None


def _parquet_cache(files: list[str]) -> str:
    """A datasets cache folder named by the parquet files' sha256: datasets keys its arrow copy of local files
    by their mtime only, and serves the old rows after a same-mtime replacement (``cp -p``, ``rsync -t``)."""
    import datasets

    name = hashlib.sha256("\n".join(file_digests().digests(files)).encode()).hexdigest()[:24]
    return str(Path(datasets.config.HF_DATASETS_CACHE) / "clipeval-parquet" / name)


def _parquet_files(local: Path) -> list[str]:
    if local.is_file() and local.suffix == ".parquet":
        return [str(local)]
    if local.is_dir():
        return sorted(str(p) for p in local.rglob("*.parquet"))
    return sorted(glob.glob(str(local))) if any(ch in str(local) for ch in "*?[") else []


def _split_files(files: list[str], local: Path, split: str) -> list[str]:
    """Of a folder's parquet ``files``, those of ``split`` when their names say which split each holds, as
    ``datasets`` infers it (a hub snapshot's ``data/test-00000-of-00001.parquet``, a ``test/`` folder); all of them
    when the names say nothing (``0.parquet``). OptionError when the names give splits and none is ``split``:
    reading them all would mix a hub's train and test rows."""
    if not files or not local.is_dir():
        return files
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:
        patterns = get_data_patterns(str(local))
        named = {str(k): v for k, v in DataFilesDict.from_patterns(patterns, base_path=str(local)).items()}
    except Exception:  # noqa: BLE001 - names datasets cannot read as splits: take every file, as before
        return files
    if list(patterns.values()) == [["**"]]:  # no split in any name
        return files
    wanted = set(files)
    by_split = {k: sorted(f for f in v if f in wanted) for k, v in named.items()}
    by_split = {k: v for k, v in by_split.items() if v}
    if split in by_split:
        return by_split[split]
    have = ", ".join(f"'{k}' ({len(v)} file(s))" for k, v in sorted(by_split.items()))
    raise OptionError(
        "split", split, f"a split of {local}, whose parquet file names give the splits {have} (task.split)"
    )


def _looks_like_hub_id(path: str) -> bool:
    return path.count("/") == 1 and not path.startswith((".", "/", "~"))


def _find_column(ds, feature_type, fallback: str) -> str:
    for column, feature in ds.features.items():
        if isinstance(feature, feature_type):
            return column
    return fallback


def _data_digests(ds, images) -> tuple[list[str], list[str]]:
    """sha256 of the arrow files ``ds`` reads (``ds._fingerprint`` stays when they are rewritten: load_from_disk
    reads it from state.json, and parquet's follows the files' mtime only), and of every image file that
    ``images`` (its image column, undecoded) names by path instead of holding its bytes."""
    import pyarrow.compute as pc

    cells = images.with_format("arrow")[images.column_names[0]]
    data = pc.struct_field(cells, "bytes")
    no_bytes = pc.or_kleene(pc.is_null(data), pc.equal(pc.binary_length(data), 0))
    by_path = pc.filter(pc.struct_field(cells, "path"), no_bytes).to_pylist()
    digests = file_digests()
    return digests.digests([f["filename"] for f in ds.cache_files]), digests.digests(by_path)


def _integer_labels(ds, key: str, path: str) -> list[int]:
    """The label column ``key`` as Python ints, read before anything is encoded.

    Integer columns are taken as they are; float columns only when every value is a finite whole number
    (pandas stores integer columns as float once they held a missing value). Anything else is refused with
    a ClipevalError naming the column and the first offending row: a missing label (None/NaN), a
    fractional one (int() would truncate 0.9 to class 0), or a non-numeric type (strings, lists).
    Missing labels are refused rather than skipped: which rows to drop is the dataset owner's decision.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    column = ds.with_format("arrow")[key]
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    where = f"Label column '{key}' of dataset {path}"
    fix = "Give every row an integer class index (or set task.label_key to the right column)."
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        example = next((v for v in column.to_pylist() if v is not None), None)
        raise ClipevalError(
            f"{where} has type {column.type} (e.g. {example!r}), not integer class indices. "
            "Cast it to integers or a ClassLabel (Dataset.class_encode_column), or set task.label_key."
        )
    bad = pc.is_null(column, nan_is_null=True)
    if pa.types.is_floating(column.type):
        whole = pc.and_(pc.is_finite(column), pc.equal(pc.floor(column), column))
        bad = pc.or_(bad, pc.invert(pc.fill_null(whole, False)))
    rows = pc.indices_nonzero(pc.fill_null(bad, True)).to_pylist()
    if rows:
        shown = ", ".join(f"row {i}: {column[i].as_py()!r}" for i in rows[:5])
        raise ClipevalError(
            f"{where} has {len(rows)} row(s) that are not integer class indices (missing or fractional): "
            f"{shown}{', ...' if len(rows) > 5 else ''}. {fix}"
        )
    return [int(v) for v in column.to_pylist()]
