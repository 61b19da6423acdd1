"""Webdataset shards in the layout of the CLIP_benchmark mirrors.

root/
  <split>/nshards.txt        number of shards N
  <split>/0.tar .. N-1.tar   samples: image (.webp/.png/.jpg/.jpeg) + label (.cls)
  classnames.txt             one class name per line, in label order
  zeroshot_classification_templates.txt   one template per line, with {c}
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from clipeval.cache import file_digests
from clipeval.sources.base import DataNotFound, Item, Source, content_key, decode

IMAGE_KEYS = ("webp", "png", "jpg", "jpeg")


class WebDatasetSource(Source):
    def __init__(self, root: str | os.PathLike, split: str = "test"):
        self.root = Path(root).expanduser().resolve()
        self.split = split
        nshards_file = self.root / split / "nshards.txt"
        if not nshards_file.is_file():
            raise DataNotFound(
                f"Webdataset split '{split}' ({split}/nshards.txt)",
                [str(nshards_file)],
                "Pass task.root=DIR, a folder in the CLIP_benchmark webdataset layout "
                "(for example a local clone of a clip-benchmark/wds_* dataset repository).",
            )
        count = int(nshards_file.read_text().strip())
        self.shards = [self.root / split / f"{i}.tar" for i in range(count)]
        missing = [str(p) for p in self.shards if not p.is_file()]
        if missing:
            raise DataNotFound(
                f"{len(missing)} of {count} shards of '{self.root}'",
                missing[:5],
                "Complete the download (with git lfs, fetch the .tar files too).",
            )
        self.classnames = _read_lines(self.root / "classnames.txt")
        self.templates = _read_lines(self.root / "zeroshot_classification_templates.txt")
        digests = file_digests().digests(self.shards)  # sha256 of each shard's bytes: labels and images
        self.key = content_key("wds", [split, [(p.name, d) for p, d in zip(self.shards, digests, strict=True)]])

    def describe(self) -> str:
        return f"webdataset {self.root} [{self.split}] ({len(self.shards)} shards)"

    def dataset(self, transform: Callable, limit: int | None) -> torch.utils.data.Dataset:
        return _ShardDataset([str(p) for p in self.shards], transform, limit)

    def loader_options(self, limit: int | None) -> dict[str, Any]:
        # Shards are split between workers; "the first N" is only well defined in one process.
        return {"max_workers": 0 if limit is not None else len(self.shards)}


class _ShardDataset(torch.utils.data.IterableDataset):
    def __init__(self, urls: list[str], transform: Callable, limit: int | None):
        self.urls, self.transform, self.limit = urls, transform, limit

    def __iter__(self) -> Iterator[Item]:
        import webdataset as wds

        pipeline = wds.WebDataset(self.urls, shardshuffle=False, empty_check=False, nodesplitter=None)
        return itertools.islice(map(self._item, pipeline), self.limit)

    def _item(self, sample: dict[str, Any]) -> Item:
        """One sample decoded; a sample without an image or an integer ``.cls`` label is skipped with the reason."""
        sample_id = f"{Path(sample['__url__']).stem}/{sample['__key__']}"
        data = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
        label, why = _label(sample.get("cls"))
        if data is None:
            why = f"no image ({'/'.join(IMAGE_KEYS)}) in sample (keys: {sorted(sample)})"
        if why is not None:
            return Item(None, max(label, 0), sample_id, why)
        return decode(lambda: Image.open(io.BytesIO(data)), self.transform, label, sample_id)


def _label(raw: bytes | None) -> tuple[int, str | None]:
    """(label, None) for a ``.cls`` holding a non-negative integer, else (-1, why)."""
    if raw is None:
        return -1, "no .cls label in sample"
    try:
        label = int(raw.decode("utf-8").strip())
    except (UnicodeDecodeError, ValueError):
        return -1, f".cls label is not an integer: {raw[:40]!r}"
    if label < 0:
        return -1, f".cls label is negative: {label}"
    return label, None


def _read_lines(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
