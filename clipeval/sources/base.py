"""What every data source provides, and the decoding that survives bad files.

A source knows its samples (ids and labels) and how to open one image; it does not know
about models. ``key`` identifies the data's content (not where it lives), so features cached
for it are found again after the folder is copied, and missed after a file changes.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from clipeval.errors import ClipevalError

# Errors that mean "this file is not a readable image" rather than "the program is wrong".
IMAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
)


class DataNotFound(ClipevalError):
    """The data a task needs is not where it was looked for."""

    def __init__(self, what: str, looked: list[str], how: str):
        where = "\n".join(f"  - {p}" for p in looked)
        super().__init__(f"{what} not found. Looked in:\n{where}\n{how}")

    @staticmethod
    def for_task(exc: DataNotFound, task: str) -> ClipevalError:
        """The same message, saying which task needed the data."""
        return ClipevalError(f"Task '{task}': {exc}")


def content_key(kind: str, payload: Any) -> str:
    """A short stable hash of JSON-able ``payload``, prefixed with the source kind."""
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    return f"{kind}:{digest[:24]}"


@dataclass(frozen=True)
class Item:
    """One decoded (or failed) sample on its way to the encoder."""

    image: torch.Tensor | None
    label: int
    sample_id: str
    error: str | None = None


def decode(open_image: Callable[[], Image.Image], transform: Callable, label: int, sample_id: str) -> Item:
    """Open and transform one image; a broken file becomes an :class:`Item` with ``error`` set."""
    try:
        with open_image() as img:
            img.load()
            return Item(transform(img.convert("RGB")), label, sample_id)
    except IMAGE_ERRORS as exc:
        return Item(None, label, sample_id, f"{type(exc).__name__}: {exc}")


class Source(ABC):
    """A labelled image dataset."""

    #: stable identity of the data's content, part of every feature-cache key
    key: str
    #: class names in label order, when the data carries them
    classnames: list[str] | None = None
    #: prompt templates shipped with the data (webdataset mirrors carry them)
    templates: list[str] | None = None

    @abstractmethod
    def describe(self) -> str:
        """Where the data lives, for log lines."""

    @abstractmethod
    def dataset(self, transform: Callable, limit: int | None) -> torch.utils.data.Dataset:
        """A torch dataset of :class:`Item`; ``limit`` keeps the first N samples."""

    def loader_options(self, limit: int | None) -> dict[str, Any]:
        """Extra DataLoader arguments a source needs (iterable sources restrict workers)."""
        return {}


class MapSource(Source):
    """A source with random access: subclasses say how many samples, and open one."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def sample_id(self, index: int) -> str: ...

    @abstractmethod
    def label(self, index: int) -> int: ...

    @abstractmethod
    def open_image(self, index: int) -> Image.Image: ...

    def read_bytes(self, index: int) -> bytes | None:
        """The encoded image file, for decoders other than PIL; None when the source has no such file."""
        return None

    def dataset(self, transform: Callable, limit: int | None) -> torch.utils.data.Dataset:
        return _MapDataset(self, transform, len(self) if limit is None else min(limit, len(self)))


class _MapDataset(torch.utils.data.Dataset):
    def __init__(self, source: MapSource, transform: Callable, size: int):
        self.source, self.transform, self.size = source, transform, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Item:
        if not 0 <= index < self.size:
            raise IndexError(index)
        src = self.source
        return decode(lambda: src.open_image(index), self.transform, src.label(index), src.sample_id(index))
