"""A local folder with one subfolder per class (the torchvision ImageFolder layout)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from clipeval.cache import file_digests
from clipeval.errors import ClipevalError
from clipeval.lists import read_strings
from clipeval.sources.base import DataNotFound, MapSource, content_key

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")


class ImageFolderSource(MapSource):
    """Images under ``root/<class>/**``.

    Classes are the sorted folder names, or the folder names as integers (ImageNetV2 names
    its folders ``0``..``999``; string order would put ``10`` before ``2``), or an explicit
    list: ``classes`` (a list or a file) gives the folder of each label in order, so a
    missing folder cannot shift every later label; folders not in it are an error, or
    skipped with ``other_folders="ignore"`` (ObjectNet has classes ImageNet lacks). With
    ``numeric_sort`` the folder named ``k`` holds label ``k``. ``root`` may be a list of candidate places; the first that
    exists is used. ``crop`` removes that many pixels from every side before the model's
    transform (ObjectNet's images carry a 2-pixel red border).
    """

    def __init__(
        self,
        root: str | os.PathLike | Sequence[str],
        numeric_sort: bool = False,
        classes: Sequence[str] | str | None = None,
        other_folders: str = "error",
        crop: int = 0,
        what: str | None = None,
        how_to_get: str | None = None,
    ):
        candidates = [root] if isinstance(root, str | os.PathLike) else list(root)
        found = [Path(c).expanduser().resolve() for c in candidates if Path(c).expanduser().is_dir()]
        what = what or f"Image folder '{candidates[0]}'"
        how = how_to_get or "Pass task.root=DIR, a folder with one subfolder of images per class."
        if not found:
            raise DataNotFound(what, [str(Path(c).expanduser().resolve()) for c in candidates], how)
        self.root = found[0]
        self.crop = int(crop)
        present = [d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(".")]
        if classes is not None:
            classes = read_strings(classes, "classes")
        self.folders = _class_folders(present, numeric_sort, classes, self.root, other_folders)
        self.classnames = [name.replace("_", " ") for name in self.folders]
        self._files: list[str] = []
        self._labels: list[int] = []
        for label, folder in enumerate(self.folders):
            for path in _image_files(self.root / folder):
                self._files.append(path.relative_to(self.root).as_posix())
                self._labels.append(label)
        if not self._files:
            raise DataNotFound(
                f"Images ({', '.join(IMAGE_EXTENSIONS)}) in class subfolders of {what}", [str(self.root)], how
            )
        digests = file_digests().digests([self.root / f for f in self._files])  # sha256 of each file's bytes
        self.key = content_key("folder", [self.folders, self._files, digests, self.crop])

    def describe(self) -> str:
        return f"image folder {self.root} ({len(self)} images, {len(self.folders)} classes)"

    def __len__(self) -> int:
        return len(self._files)

    def sample_id(self, index: int) -> str:
        return self._files[index]

    def label(self, index: int) -> int:
        return self._labels[index]

    def read_bytes(self, index: int) -> bytes | None:
        return None if self.crop else (self.root / self._files[index]).read_bytes()

    def open_image(self, index: int) -> Image.Image:
        image = Image.open(self.root / self._files[index])
        if not self.crop:
            return image
        width, height = image.size  # crop() decodes now; decode() reports a broken file either way
        p = self.crop
        return image.crop((p, p, width - p, height - p))


def _class_folders(
    present: list[str], numeric: bool, classes: list[str] | None, root: Path, other_folders: str
) -> list[str]:
    if numeric and classes is None:
        bad = [n for n in present if not n.isdigit()]
        if bad:
            raise ClipevalError(
                f"numeric_sort is on but {len(bad)} class folder(s) in {root} are not integers "
                f"(e.g. {bad[:3]}). Turn numeric_sort off or remove those folders."
            )
        classes = [str(i) for i in range(max(map(int, present), default=-1) + 1)]
    if classes is not None:
        unknown = sorted(set(present) - set(classes))
        if unknown and other_folders != "ignore":
            raise ClipevalError(
                f"{len(unknown)} folder(s) in {root} are not among the task's classes (e.g. {unknown[:3]})."
            )
        have = set(present)
        missing = [c for c in classes if c not in have]
        if missing:
            log.warning(
                "%d of %d class folders are missing from %s (e.g. %s)", len(missing), len(classes), root, missing[:3]
            )
        return classes
    return sorted(present)


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    files = [
        Path(dirpath) / name
        for dirpath, _, names in os.walk(folder, followlinks=True)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
    ]
    return sorted(files)
