"""A local folder with one subfolder per class (the torchvision ImageFolder layout)."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from PIL import Image
from pydantic import Field

from clipeval.cache import file_digests
from clipeval.config.lists import read_strings
from clipeval.data.base import DataNotFound, MapSource, content_key, is_utf8
from clipeval.errors import ClipevalError

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
        other_folders: Literal["error", "ignore"] = "error",
        crop: Annotated[int, Field(ge=0)] = 0,
        what: str | None = None,
        how_to_get: str | None = None,
    ):
        candidates = [root] if isinstance(root, str | os.PathLike) else list(root)
        found = [Path(c).expanduser().resolve() for c in candidates if Path(c).expanduser().is_dir()]
        what = what or f"Image folder '{candidates[0]}'"
        how = how_to_get or "Pass task.root=DIR, a folder with one subfolder of images per class."
        if not found:
            raise DataNotFound(what, [str(Path(c).expanduser().resolve()) for c in candidates], how, kind="folder")
        self.root = found[0]
        self.crop = int(crop)
        present = [d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(".")]
        _refuse_non_utf8_names(self.root, present)
        if classes is not None:
            classes = read_strings(classes, "classes")
        self.folders = _class_folders(present, numeric_sort, classes, self.root, other_folders)
        self.classnames = [name.replace("_", " ") for name in self.folders]
        self._labels_are_indices = numeric_sort and classes is None
        self._files, self._labels = _list_images(self.root, self.folders, present)
        _refuse_non_utf8_names(self.root, self._files)
        _warn_about_images_at_the_root(self.root)
        if not self._files:
            raise DataNotFound(
                f"Images ({', '.join(IMAGE_EXTENSIONS)}) in class subfolders of {what}", [str(self.root)], how
            )
        _check_every_class_has_images(
            self.root, self.folders, self._labels, inferred=classes is None and not numeric_sort
        )
        digests = file_digests().digests([self.root / f for f in self._files])  # sha256 of each file's bytes
        self.key = content_key("folder", [self.folders, self._files, digests, self.crop])

    def describe(self) -> str:
        return f"image folder {self.root} ({len(self)} images, {len(self.folders)} classes)"

    @property
    def num_classes(self) -> int | None:
        # Folders named by class index (numeric_sort) do not say how many classes there are.
        return None if self._labels_are_indices else len(self.folders)

    def label_range(self) -> tuple[int, int] | None:
        return (min(self._labels), max(self._labels)) if self._labels else None

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
        repeated = sorted(c for c, n in Counter(classes).items() if n > 1)
        if repeated or not classes:
            raise ClipevalError(
                f"The class folder list for {root} is empty or names folders twice ({repeated[:3]}): "
                "give each class folder once, in label order."
            )
        unknown = sorted(set(present) - set(classes))
        if unknown and other_folders != "ignore":
            raise ClipevalError(
                f"{len(unknown)} folder(s) in {root} are not among the task's classes (e.g. {unknown[:3]})."
            )
        return classes
    return sorted(present)


def _list_images(root: Path, folders: list[str], present: list[str]) -> tuple[list[str], list[int]]:
    """(file paths relative to ``root``, labels) of the images of each class folder, in label order."""
    real = {name: os.path.realpath(root / name) for name in present}
    root_real = os.path.realpath(root)
    files: list[str] = []
    labels: list[int] = []
    not_followed: list[str] = []
    for label, folder in enumerate(folders):
        if folder not in real:
            continue
        top = real[folder]
        if _contains(top, root_real):
            raise ClipevalError(
                f"Class folder '{folder}' of {root} links to {top}, which contains the whole dataset. "
                "Make it a folder of that class's images."
            )
        twins = [name for name, path in real.items() if path == top and name != folder]
        if twins:
            raise ClipevalError(
                f"Class folders '{folder}' and '{twins[0]}' of {root} are the same directory ({top}), so its images "
                "would be counted under two labels. Remove one of them."
            )
        others = {path: name for name, path in real.items() if name != folder}
        for path in _image_files(root / folder, others, not_followed):
            files.append(path.relative_to(root).as_posix())
            labels.append(label)
    if not_followed:
        shown = "\n".join(f"  {line}" for line in not_followed[:5])
        more = f"\n  ... and {len(not_followed) - 5} more" if len(not_followed) > 5 else ""
        log.warning(
            "%d symlink(s) or folder(s) in %s were not followed, so that no image is listed twice or under another "
            "class's label:\n%s%s",
            len(not_followed),
            root,
            shown,
            more,
        )
    return files, labels


def _image_files(folder: Path, others: dict[str, str], not_followed: list[str]) -> list[Path]:
    """The image files under one class folder, each listed once, sorted.

    Symlinks to files and to directories elsewhere are followed (datasets assembled from
    links are common), but a directory is never visited twice (by real path), and a link is
    not followed into a folder that contains it (a loop such as ``ln -s . cat/loop``), back
    into this class's own folder (its images are listed there already), or into another
    class's folder (``others``: real path -> folder name), whose images would be counted under
    the wrong label; each is added to ``not_followed`` as "path -> target: why".
    """
    if not folder.is_dir():
        return []
    top = os.path.realpath(folder)
    visited, seen_files = {top}, set()
    files: list[Path] = []
    stack = [(str(folder), top)]
    while stack:
        path, real = stack.pop()
        try:
            with os.scandir(path) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            not_followed.append(f"{path}: cannot be read ({type(exc).__name__}: {exc.strerror})")
            continue
        subdirs = []
        for entry in entries:
            link = entry.is_symlink()
            target = os.path.realpath(entry.path) if link else os.path.join(real, entry.name)
            if entry.is_dir():
                why = _why_not_descend(target, real, top, link, visited, others)
                if why:
                    not_followed.append(f"{entry.path} -> {target}: {why}")
                    continue
                visited.add(target)
                subdirs.append((entry.path, target))
            elif entry.name.lower().endswith(IMAGE_EXTENSIONS) and not entry.name.startswith("."):
                why = _why_not_list(target, link, seen_files, others)
                if why:
                    not_followed.append(f"{entry.path} -> {target}: {why}")
                    continue
                seen_files.add(target)
                files.append(Path(entry.path))
        stack.extend(reversed(subdirs))
    return sorted(files)


def _why_not_list(target: str, link: bool, seen_files: set[str], others: dict[str, str]) -> str:
    """Why the image file ``target`` (a real path) is not listed, or "" if it is."""
    if target in seen_files:
        return "the same file is listed already"
    if not link:
        return ""
    if not os.path.exists(target):
        return "a broken link (its target does not exist)"
    owner = _owner(target, others)
    return f"a file of class folder '{owner}'" if owner is not None else ""


def _why_not_descend(target: str, parent: str, top: str, link: bool, visited: set[str], others: dict[str, str]) -> str:
    """Why the directory ``target`` (a real path) is not listed, or "" if it is."""
    if target in visited:
        return "listed already (a loop, or two links to one folder)"
    if target in others:
        return f"it is class folder '{others[target]}'"
    if not link:
        return ""
    if _contains(target, parent) or _contains(target, top):
        return "a folder that contains the link or this class's folder (a loop)"
    if _contains(top, target):
        return "inside this class's own folder, whose images are listed already"
    owner = _owner(target, others)
    if owner is not None:
        return f"inside class folder '{owner}'"
    inner = next((name for path, name in others.items() if _contains(target, path)), None)
    return f"it contains class folder '{inner}'" if inner is not None else ""


def _contains(outer: str, inner: str) -> bool:
    """Whether real path ``inner`` is ``outer`` or lies under it."""
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def _owner(target: str, folders: dict[str, str]) -> str | None:
    """The name of the folder among ``folders`` (real path -> name) that ``target`` lies in, if any."""
    path = target
    while True:
        if path in folders:
            return folders[path]
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def _check_every_class_has_images(root: Path, folders: list[str], labels: list[int], inferred: bool) -> None:
    """An error for a class folder without images when the folders define the classes, else a warning."""
    counts = Counter(labels)
    empty = [name for label, name in enumerate(folders) if not counts[label]]
    if not empty:
        return
    if inferred:
        raise ClipevalError(
            f"{len(empty)} class folder(s) of {root} hold no images ({', '.join(IMAGE_EXTENSIONS)}): "
            f"{empty[:5]}. With the classes taken from the folders, each would be a class with no samples that "
            "still competes in the classifier. Remove the folder(s), or list the classes explicitly (the "
            "`classes` option of the data source, e.g. task.classes=[...] for the folder task)."
        )
    log.warning(
        "%d of %d classes have no images in %s (folder missing or empty, e.g. %s). They stay candidates in the "
        "classifier, with no samples of their own; the labels of the other classes are unaffected.",
        len(empty),
        len(folders),
        root,
        empty[:3],
    )


def _warn_about_images_at_the_root(root: Path) -> None:
    loose = sorted(
        p.name
        for p in root.iterdir()
        if p.name.lower().endswith(IMAGE_EXTENSIONS) and not p.name.startswith(".") and not p.is_dir()
    )
    if loose:
        log.warning(
            "%d image(s) at the top of %s are in no class folder and are left out (e.g. %s). "
            "Move each into the folder of its class.",
            len(loose),
            root,
            loose[0],
        )


def _refuse_non_utf8_names(root: Path, names: list[str]) -> None:
    """ClipevalError naming the file/folder names (relative to ``root``) whose bytes are not valid UTF-8.

    Python hands such names over surrogate-escaped (b'caf\\xe9.png' becomes 'caf\\udce9.png'); they would become
    class names and sample ids that cannot be written as UTF-8, so the predictions of a finished run would be lost.
    """
    bad = [name for name in names if not is_utf8(name)]
    if bad:
        shown = ", ".join(repr(os.fsencode(root / name)) for name in bad[:5])
        raise ClipevalError(
            f"{len(bad)} file or folder name(s) under {root} are not valid UTF-8: {shown}"
            f"{', ...' if len(bad) > 5 else ''}. Rename them to UTF-8, e.g. with `convmv -r -f latin1 -t utf8 --notest "
            "DIR` (for Latin-1 names; convmv without --notest shows what it would do)."
        )
