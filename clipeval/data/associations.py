"""Association instances (WinoGAViL): a text cue, its candidate images, and the candidates that go with the cue.

WinoGAViL (Bitton et al. 2022, NeurIPS Datasets and Benchmarks; ``nlphuji/winogavil`` on the Hugging Face hub) is
read from its hub repository's own files, as ``huggingface-cli download --repo-type dataset nlphuji/winogavil``
leaves them (its loading script no longer runs under ``datasets`` 4 and later, which dropped dataset scripts):

- ``winogavil_dataset.csv``: one row per instance, with ``cue`` (a word), ``candidates`` and ``associations`` (JSON
  lists of image names; the associations are some of the candidates) and ``ID``; ``num_associations`` and
  ``num_candidates``, when present, must agree with the lists;
- the images, ``winogavil_images/<name>.jpg``: the folder ``winogavil_images.zip`` unpacks to, or the zip itself
  (read member by member, never unpacked).

A source's samples are the distinct candidate images of all instances (sample id: the image's name, label: its
index), so an image shared by many instances is encoded once; :meth:`WinoGAViLSource.instances` gives the
instances in the CSV's order. Everything is checked before anything is encoded: a malformed row is a ClipevalError
naming the file, the row and the field.
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from clipeval.cache import file_digests
from clipeval.config.files import read_text
from clipeval.data.base import DataNotFound, RowLabelledSource, content_key
from clipeval.errors import ClipevalError, quoted

ANNOTATIONS = "winogavil_dataset.csv"
IMAGES = "winogavil_images"
EXTENSION = ".jpg"
HOW_TO_GET = (
    "Download WinoGAViL's hub repository (gated: accept its terms at https://huggingface.co/datasets/nlphuji/winogavil "
    "first): huggingface-cli download --repo-type dataset nlphuji/winogavil --local-dir <data root>/winogavil. "
    "The images may stay zipped (winogavil_images.zip) or be unpacked beside it (winogavil_images/). The data root is "
    "CLIPEVAL_DATA=DIR or data_root=DIR; task.root=DIR names the folder itself."
)


@dataclass(frozen=True)
class AssociationInstance:
    """One instance: pick the ``len(associations)`` images of ``candidates`` (image names, distinct) that go with
    ``cue``; ``associations`` are the right ones (distinct, some of the candidates)."""

    id: str
    cue: str
    candidates: tuple[str, ...]
    associations: tuple[str, ...]


class WinoGAViLSource(RowLabelledSource):
    """The instances of WinoGAViL's ``winogavil_dataset.csv`` and their candidate images (see the module docstring).

    ``root``: the folder holding the CSV and the images, or a list of candidate folders (the first holding the CSV
    is used). Raises :class:`DataNotFound` (the CSV, or images it names) and ClipevalError (a malformed row).
    """

    def __init__(self, root: str | os.PathLike | Sequence[str], what: str = "WinoGAViL", how_to_get: str = HOW_TO_GET):
        candidates = [root] if isinstance(root, str | os.PathLike) else list(root)
        for c in candidates:
            if not str(c).strip() or "://" in str(c):
                raise ClipevalError(
                    f"task.root={str(c)!r}: {what} is read from a local folder holding {ANNOTATIONS} (it is not "
                    f"streamed). {how_to_get}"
                )
        places = [Path(c).expanduser().resolve() for c in candidates]
        found = [p for p in places if (p / ANNOTATIONS).is_file()]
        if not found:
            raise DataNotFound(f"{what}'s {ANNOTATIONS}", [str(p / ANNOTATIONS) for p in places], how_to_get, "file")
        self.root = found[0]
        self.annotations = self.root / ANNOTATIONS
        self._instances = read_instances(self.annotations)
        self._ids = list(dict.fromkeys(name for inst in self._instances for name in inst.candidates))
        self._images = _Images(self.root, self._ids, what, how_to_get)
        digests = file_digests().digests([self.annotations, *self._images.files()])
        self.key = content_key("winogavil", [self._images.layout, digests])

    def describe(self) -> str:
        return (
            f"WinoGAViL at {self.root} ({len(self._instances)} instances, {len(self._ids)} images, "
            f"{self._images.layout})"
        )

    def instances(self) -> list[AssociationInstance]:
        """The instances, in the CSV's order."""
        return list(self._instances)

    def open_image(self, index: int) -> Image.Image:
        name = self._ids[index]
        try:
            return Image.open(io.BytesIO(self._images.read(name)))
        except UnidentifiedImageError:
            raise UnidentifiedImageError(f"cannot identify image file {self._images.where(name)}") from None

    def read_bytes(self, index: int) -> bytes | None:
        return self._images.read(self._ids[index])


class _Images:
    """The images by name: files under ``winogavil_images/``, else members of ``winogavil_images.zip``.

    The zip is opened once per process (DataLoader workers each open their own)."""

    def __init__(self, root: Path, names: list[str], what: str, how: str):
        self.folder, self.archive = root / IMAGES, root / f"{IMAGES}.zip"
        self.names = names
        self.unpacked = self.folder.is_dir()
        if self.unpacked:
            self.layout = f"{IMAGES}/"
            missing = [str(self._path(n)) for n in names if not self._path(n).is_file()]
        elif self.archive.is_file():
            self.layout = f"{IMAGES}.zip"
            try:
                with zipfile.ZipFile(self.archive) as archive:
                    members = set(archive.namelist())
            except (zipfile.BadZipFile, OSError) as exc:
                raise ClipevalError(f"{self.archive} cannot be read as a zip archive ({exc}). {how}") from None
            missing = [f"{self.archive}:{self._member(n)}" for n in names if self._member(n) not in members]
            if missing:
                folders = sorted({m.split("/")[0] + "/" if "/" in m else "(no folder)" for m in members})
                how = f"The archive's top level holds: {', '.join(folders[:5]) or 'nothing'}. {how}"
        else:
            raise DataNotFound(f"{what}'s images", [str(self.folder), str(self.archive)], how, partial=True)
        if missing:
            raise DataNotFound(
                f"{len(missing)} of the {len(names)} candidate images of {what}", missing[:5], how, partial=True
            )
        self._zip: tuple[int, zipfile.ZipFile] | None = None

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}{EXTENSION}"

    @staticmethod
    def _member(name: str) -> str:
        return f"{IMAGES}/{name}{EXTENSION}"

    def files(self) -> list[Path]:
        """The files whose bytes the content key covers: every image, or the archive."""
        return [self._path(n) for n in self.names] if self.unpacked else [self.archive]

    def where(self, name: str) -> str:
        """The image's file, or archive and member, for messages."""
        return str(self._path(name)) if self.unpacked else f"{self.archive}:{self._member(name)}"

    def read(self, name: str) -> bytes:
        """The image's bytes; OSError (an unreadable image, left out with its instances) when the archive's member
        is damaged or stored in a way zipfile cannot read."""
        if self.unpacked:
            return self._path(name).read_bytes()
        try:
            if self._zip is None or self._zip[0] != os.getpid():
                self._zip = (os.getpid(), zipfile.ZipFile(self.archive))
            return self._zip[1].read(self._member(name))
        except (zipfile.BadZipFile, NotImplementedError, zlib.error, EOFError, KeyError) as exc:
            raise OSError(
                f"{self.where(name)} cannot be read from the archive ({type(exc).__name__}: {exc}); download "
                f"{self.archive.name} again"
            ) from None

    def __getstate__(self) -> dict[str, Any]:  # a worker process opens the archive itself
        return {**self.__dict__, "_zip": None}


def read_instances(path: Path) -> list[AssociationInstance]:
    """The instances of WinoGAViL's CSV at ``path``; ClipevalError naming the row and field of anything malformed."""
    _, text = read_text(path, "WinoGAViL's instances", "CSV text")
    if not text.strip():
        raise ClipevalError(f"{path} is empty; WinoGAViL's CSV has a header and one row per instance.")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        fields = set(reader.fieldnames or [])
        rows = [(row, f"{path}, line {reader.line_num}") for row in reader]
    except csv.Error as exc:
        raise ClipevalError(f"{path}, line {reader.line_num}: not valid CSV ({exc}).") from None
    lacking = [f for f in ("cue", "candidates", "associations") if f not in fields]
    if lacking:
        raise ClipevalError(
            f"{path} lacks the column(s) {', '.join(lacking)} (it has: {', '.join(sorted(fields)) or 'none'}); "
            "WinoGAViL's CSV has cue, candidates and associations (JSON lists of image names), and ID."
        )
    instances = [_instance(row, where, i) for i, (row, where) in enumerate(rows)]
    if not instances:
        raise ClipevalError(f"{path} holds no instances (only a header).")
    twice = [i for i, n in Counter(inst.id for inst in instances).items() if n > 1]
    if twice:
        raise ClipevalError(f"{path}: ID {twice[0]} names more than one row ({len(twice)} such ID(s)); IDs are unique.")
    return instances


def _instance(row: dict[str, Any], where: str, index: int) -> AssociationInstance:
    short = [f for f in ("candidates", "cue", "associations") if row.get(f) is None]
    if short:
        raise ClipevalError(
            f"{where}: the row has fewer fields than the header (no {', '.join(short)}); a line break inside an "
            "unquoted field splits a row in two: quote the field, or remove the line break."
        )
    cue = row.get("cue") or ""  # as written: DataComp prompts the cue as it is (lower-cased)
    if not cue.strip():
        raise ClipevalError(f"{where}: cue is {quoted(row.get('cue'))}, not a word; every instance needs its cue.")
    candidates = _names(row.get("candidates"), f"{where}: candidates")
    associations = _names(row.get("associations"), f"{where}: associations")
    strangers = [a for a in associations if a not in candidates]
    if strangers:
        raise ClipevalError(
            f"{where}: association {quoted(strangers[0])} is not one of the candidates {quoted(candidates)}; the "
            "associations are some of the candidates."
        )
    for field, count in (("num_candidates", len(candidates)), ("num_associations", len(associations))):
        stated = (row.get(field) or "").strip()
        if stated and _as_int(stated) != count:
            raise ClipevalError(f"{where}: {field} is {quoted(stated)} but the list holds {count}; fix one of them.")
    ident = (row.get("ID") or "").strip() or f"row{index + 1}"
    return AssociationInstance(ident, cue, tuple(candidates), tuple(associations))


def _names(raw: Any, where: str) -> list[str]:
    """A JSON list of distinct, non-empty image names."""
    try:
        names = json.loads(raw or "")
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, list):
        raise ClipevalError(f"{where} is {quoted(raw, as_json=False)}, not a JSON list of image names.")
    if not names:
        raise ClipevalError(f"{where} is an empty list; every instance needs at least one image there.")
    bad = [n for n in names if not isinstance(n, str) or not n.strip() or "/" in n or "\\" in n]
    if bad:
        raise ClipevalError(f"{where} holds {quoted(bad[0])}, not an image name (a non-empty name without '/').")
    twice = [n for n, k in Counter(names).items() if k > 1]
    if twice:
        raise ClipevalError(f"{where} names {quoted(twice[0])} twice; each image appears once in a list.")
    return names


def _as_int(text: str) -> int | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None
