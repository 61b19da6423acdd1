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
from pathlib import Path
from typing import Any

import numpy as np
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
    """The data a task needs is not where it was looked for.

    ``partial``: some of the data is there (a mirror with shards missing, a split file without its images): a
    task refuses it even where the dataset is optional, since skipping it would hide an incomplete download.

    ``kind`` (``folder`` or ``file``) is what each looked-at path should be: a path that is the other kind, or one
    under a file, is said to be that (``/data/x.png is a file, not a folder``) rather than "not found". ``found``
    says what is there when it is not what ``what`` needs in another way (a CSV where a dataset's folder or a
    parquet file is needed).
    """

    def __init__(
        self,
        what: str,
        looked: list[str],
        how: str,
        kind: str | None = None,
        found: str | None = None,
        partial: bool = False,
    ):
        self.what, self.looked, self.how, self.partial = what, list(looked), how, partial
        states = [(p, _what_is_at(p, kind)) for p in looked]
        found = found or (states[0][1] if len(states) == 1 else None)
        if found and found.startswith(UNDER):
            super().__init__(f"{what} not found: {found.removeprefix(UNDER)} (looked for {looked[0]}).\n{how}")
            return
        if found:
            named = what if not looked or looked[0] in what else f"{what} ({looked[0]})"
            super().__init__(f"{named} is {found}.\n{how}")
            return
        where = "\n".join(f"  - {p}" + (f" ({state.removeprefix(UNDER)})" if state else "") for p, state in states)
        super().__init__(f"{what} not found. Looked in:\n{where}\n{how}")

    @staticmethod
    def for_task(exc: DataNotFound, task: str) -> ClipevalError:
        """The same message, saying which task needed the data."""
        return ClipevalError(f"Task '{task}': {exc}")


def _what_is_at(path: str, kind: str | None) -> str | None:
    """What is at ``path`` when it is not the ``kind`` (folder or file) that is needed there, in words; else None
    (nothing there, a path of the right kind, or no path at all)."""
    place = Path(path)
    if kind is None or not place.is_absolute():
        return None
    try:
        if place.is_dir():
            return "a folder, not a file" if kind == "file" else None
        if place.exists():
            return "a file, not a folder" if kind == "folder" else None
        parent = next((p for p in place.parents if p.exists()), None)
    except OSError:  # a name too long, a folder that cannot be searched: "not found" says enough
        return None
    return f"{UNDER}{parent} is a file, not a folder" if parent is not None and not parent.is_dir() else None


UNDER = "under a file: "


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


# PIL modes whose convert("RGB") clips instead of rescaling: 16-bit integer (0..65535) and float (0..1)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
FLOAT_MODES = ("F",)


class PixelFormatError(ValueError):
    """The pixel values of an image cannot be read as an image (out of range, not finite)."""


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB of ``img``, whatever its PIL mode.

    ``convert("RGB")`` is right for 8-bit modes (L, P, RGB, CMYK, YCbCr, LAB, HSV, 1) and drops
    alpha (RGBA, LA, PA, P with transparency: the colour channels as stored, as torchvision's
    decoders and the reference evaluations do). It clips 16-bit and float images instead of
    rescaling them (a 16-bit PNG becomes near white, a float TIFF black), so those are rescaled
    here: 16-bit integers (``I;16*``, and ``I``, which Pillow uses for 16-bit PGM and signed
    16-bit TIFF) map 0..65535 to 0..255, floats (``F``) map 0..1 to 0..255, both rounded to the
    nearest level.

    Raises :class:`PixelFormatError` for values outside those ranges (or not finite), which
    have no one meaning as an image; :func:`decode` then skips the image with that reason.
    """
    if img.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(img)
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > 65535:
            raise PixelFormatError(
                f"{img.mode} pixel values span {low}..{high}, outside the 16-bit range 0..65535; "
                "convert the file to 8- or 16-bit RGB or grayscale"
            )
        eight = (values.astype(np.uint32) + 128) // 257  # round(v * 255 / 65535); 257 is odd, so no ties
        return Image.fromarray(eight.astype(np.uint8), "L").convert("RGB")
    if img.mode in FLOAT_MODES:
        values = np.asarray(img, dtype=np.float64)
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise PixelFormatError(
                f"float pixel values span {np.nanmin(values):g}..{np.nanmax(values):g} "
                f"({int((~np.isfinite(values)).sum())} not finite), outside 0..1; "
                "convert the file to 8- or 16-bit RGB or grayscale"
            )
        return Image.fromarray(np.rint(values * 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        return img.convert("RGBA").convert("RGB")  # same pixels as convert("RGB"), without Pillow's warning
    return img.convert("RGB")


def decode(open_image: Callable[[], Image.Image], transform: Callable, label: int, sample_id: str) -> Item:
    """Open, convert (:func:`to_rgb`) and transform one image; a broken file becomes an :class:`Item` with ``error``."""
    try:
        with open_image() as img:
            img.load()
            return Item(transform(to_rgb(img)), label, sample_id)
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

    @property
    def num_classes(self) -> int | None:
        """How many classes the data defines (class folders, a ClassLabel, classnames.txt); None if it does not say.

        By default, as many as the class names the data carries. A source whose labels are
        plain integers with no class list (folders named 0..N-1) says None; the labels it
        has are then only a lower bound (:meth:`label_range`). A source may also set it.
        """
        if getattr(self, "_num_classes", None) is not None:
            return self._num_classes
        return len(self.classnames) if self.classnames is not None else None

    @num_classes.setter
    def num_classes(self, value: int | None) -> None:
        self._num_classes = value

    def label_range(self) -> tuple[int, int] | None:
        """(smallest, largest) label, when known without decoding images; None otherwise or with no samples."""
        return None

    @abstractmethod
    def describe(self) -> str:
        """Where the data lives, for log lines."""

    @abstractmethod
    def dataset(self, transform: Callable, limit: int | None) -> torch.utils.data.Dataset:
        """A torch dataset of :class:`Item`; ``limit`` keeps the first N samples."""

    def loader_options(self, limit: int | None) -> dict[str, Any]:
        """Extra DataLoader arguments a source needs (iterable sources restrict workers)."""
        return {}

    def captions(self) -> dict[str, list[str]] | None:
        """Each sample id's captions (one or more non-empty strings, in order), for retrieval; None: the data has
        none (:mod:`clipeval.data.captions`)."""
        return None


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

    def label_range(self) -> tuple[int, int] | None:
        labels = [self.label(i) for i in range(len(self))]
        return (min(labels), max(labels)) if labels else None

    def read_bytes(self, index: int) -> bytes | None:
        """The encoded image file, for decoders other than PIL; None when the source has no such file."""
        return None

    def dataset(self, transform: Callable, limit: int | None) -> torch.utils.data.Dataset:
        return _MapDataset(self, transform, len(self) if limit is None else min(limit, len(self)))


class RowLabelledSource(MapSource):
    """A map source of images named by ``self._ids``, each labelled by its row: data without classes (retrieval's
    captioned images, WinoGAViL's candidates), whose evaluators pair rows with captions or instances."""

    _ids: list[str]

    def __len__(self) -> int:
        return len(self._ids)

    def sample_id(self, index: int) -> str:
        return self._ids[index]

    def label(self, index: int) -> int:
        return index


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


def is_utf8(name: str) -> bool:
    """Whether ``name`` (surrogate-escaped by os/pathlib) came from valid UTF-8 bytes."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
