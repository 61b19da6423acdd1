"""A local folder with one subfolder per class (the torchvision ImageFolder layout)."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from clipeval.errors import ClipevalError
from clipeval.sources.base import DataNotFound, MapSource, content_key

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
)


class ImageFolderSource(MapSource):
    """Images under ``root/<class>/**``; classes sorted by name, or as integers.

    ImageNetV2 names its class folders ``0``..``999``: string order would put ``10`` before
    ``2``, so ``numeric_sort=True`` sorts them as numbers.
    """

    def __init__(
        self, root: str | os.PathLike, numeric_sort: bool = False, how_to_get: str | None = None
    ):
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise DataNotFound(
                f"Image folder '{root}'",
                [str(self.root)],
                how_to_get
                or "Pass task.root=DIR, a folder with one subfolder of images per class.",
            )
        folders = [d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(".")]
        self.folders = _sort_folders(folders, numeric_sort, self.root)
        self.classnames = [name.replace("_", " ") for name in self.folders]
        self._files: list[str] = []
        self._labels: list[int] = []
        for label, folder in enumerate(self.folders):
            for path in _image_files(self.root / folder):
                self._files.append(path.relative_to(self.root).as_posix())
                self._labels.append(label)
        if not self._files:
            raise DataNotFound(
                f"Images ({', '.join(IMAGE_EXTENSIONS)}) in class subfolders of '{root}'",
                [str(self.root)],
                how_to_get or "Each class needs its own subfolder holding its images.",
            )
        sizes = [(self.root / f).stat().st_size for f in self._files]
        self.key = content_key("folder", [self.folders, self._files, sizes])

    def describe(self) -> str:
        return f"image folder {self.root} ({len(self)} images, {len(self.folders)} classes)"

    def __len__(self) -> int:
        return len(self._files)

    def sample_id(self, index: int) -> str:
        return self._files[index]

    def label(self, index: int) -> int:
        return self._labels[index]

    def open_image(self, index: int) -> Image.Image:
        return Image.open(self.root / self._files[index])


def _sort_folders(names: list[str], numeric: bool, root: Path) -> list[str]:
    if not numeric:
        return sorted(names)
    bad = [n for n in names if not n.isdigit()]
    if bad:
        raise ClipevalError(
            f"numeric_sort is on but {len(bad)} class folder(s) in {root} are not integers "
            f"(e.g. {bad[:3]}). Turn numeric_sort off or remove those folders."
        )
    return sorted(names, key=int)


def _image_files(folder: Path) -> list[Path]:
    files = [
        Path(dirpath) / name
        for dirpath, _, names in os.walk(folder, followlinks=True)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
    ]
    return sorted(files)
