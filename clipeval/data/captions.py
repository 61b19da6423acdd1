"""Images with captions, for retrieval: several captions per image, read and checked before anything is encoded.

A source that carries captions has ``captions()``: each sample id's captions, in order, every caption a
non-empty string and every image at least one (:func:`check_captions`). Three readers give them:

- the CLIP_benchmark webdataset layout with ``dataset_type.txt`` = ``retrieval`` (:mod:`clipeval.data.wds`);
- a Hugging Face dataset with a caption-list column (:mod:`clipeval.data.hf`, ``caption_key``);
- an image folder with a Karpathy-split JSON (:class:`KarpathySource`): ``dataset_flickr30k.json``,
  ``dataset_coco.json`` (Karpathy & Fei-Fei 2015, the splits every retrieval table uses).

:func:`retrieval_source` picks the reader of a task folder's data by what the folder holds.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from clipeval.cache import file_digests
from clipeval.config.files import read_text
from clipeval.data.base import DataNotFound, RowLabelledSource, Source, content_key
from clipeval.errors import ClipevalError, OptionError, quoted


def check_captions(captions: Any, where: str, item: Callable[[int], str] | None = None) -> list[str]:
    """``captions`` of one image as a list of strings; ClipevalError naming ``where`` (file, field, row) when it
    is not a non-empty list of non-blank strings. ``item(j)`` names its j-th caption (default ``where[j]``)."""
    item = item or (lambda j: f"{where}[{j}]")
    if isinstance(captions, str) or not isinstance(captions, Sequence):
        raise ClipevalError(
            f"{where} should be a list of caption strings, but is {quoted(captions)}. Give each image its captions."
        )
    if not captions:
        raise ClipevalError(f"{where} is an empty caption list: every image needs at least one caption.")
    for j, caption in enumerate(captions):
        if not isinstance(caption, str) or not caption.strip():
            raise ClipevalError(
                f"{item(j)} is {quoted(caption)}, not a caption (a non-empty string). Remove it or write the caption."
            )
    return list(captions)


def no_captions(source: Source, dataset: str) -> ClipevalError:
    """The error for a retrieval evaluation of data without captions."""
    return ClipevalError(
        f"Dataset '{dataset}' ({source.describe()}) carries no captions, which retrieval needs: use a webdataset "
        "whose dataset_type.txt says 'retrieval', a Hugging Face dataset with task.caption_key, or a folder with a "
        "Karpathy-split JSON (see the README, 'Retrieval')."
    )


class KarpathySource(RowLabelledSource):
    """One split of an image folder described by a Karpathy-split JSON (``dataset_flickr30k.json``,
    ``dataset_coco.json``).

    The JSON: ``{"images": [{"filename": ..., "filepath": ... (COCO only), "split": "train|val|test|restval",
    "sentences": [{"raw": "A caption."}, ...]}, ...]}``. The image of an entry is
    ``<root>/<images>/<filepath>/<filename>`` (``images``: the folder of the images under ``root``, e.g.
    ``flickr30k-images``; empty for COCO, whose ``filepath`` is ``val2014`` or ``train2014``). Sample ids are
    ``<filepath>/<filename>`` (``<filename>`` without a filepath), labels the image's index in the split.
    ``root`` may be a list of candidate places; the first that holds ``annotations`` is used.
    """

    def __init__(
        self,
        root: str | os.PathLike | Sequence[str],
        annotations: str = "dataset_flickr30k.json",
        images: str = "",
        split: str = "test",
        what: str | None = None,
        how_to_get: str | None = None,
    ):
        candidates = [root] if isinstance(root, str | os.PathLike) else list(root)
        places = [Path(c).expanduser().resolve() for c in candidates]
        found = [p for p in places if (p / annotations).is_file()]
        how = how_to_get or "Pass task.root=DIR, a folder holding the Karpathy-split JSON and the images."
        if not found:
            looked = [str(p / annotations) for p in places]
            raise DataNotFound(what or f"Karpathy-split annotations {annotations}", looked, how, kind="file")
        self.root, self.split = found[0], split
        self.annotations = self.root / annotations
        entries = _karpathy_entries(self.annotations, split)
        folder = self.root / images
        self._files = [Path(e.get("filepath") or "") / e["filename"] for e in entries]
        self._ids = [f.as_posix() for f in self._files]
        self._paths = [folder / f for f in self._files]
        self._captions = {sid: [s["raw"] for s in e["sentences"]] for sid, e in zip(self._ids, entries, strict=True)}
        twice = [sid for sid, n in Counter(self._ids).items() if n > 1]
        if twice:
            raise ClipevalError(
                f"{self.annotations}: image '{twice[0]}' appears more than once in split '{split}' "
                f"({len(twice)} such image(s)); give each image one entry with all its sentences."
            )
        missing = [str(p) for p in self._paths if not p.is_file()]
        if missing:
            raise DataNotFound(
                f"{len(missing)} of the {len(self._paths)} images of split '{split}' of {self.annotations.name}",
                missing[:5],
                how,
                partial=True,
            )
        digests = file_digests().digests([self.annotations, *self._paths])
        self.key = content_key("karpathy", [split, images, self._ids, digests])

    def describe(self) -> str:
        return f"Karpathy split '{self.split}' of {self.annotations} ({len(self)} images)"

    def captions(self) -> dict[str, list[str]]:
        return self._captions

    def open_image(self, index: int) -> Image.Image:
        return Image.open(self._paths[index])

    def read_bytes(self, index: int) -> bytes | None:
        return self._paths[index].read_bytes()


def _karpathy_entries(path: Path, split: str) -> list[dict[str, Any]]:
    """The image entries of ``split`` in the Karpathy JSON at ``path``, each checked; ClipevalError naming the file
    and the field (``images[3].sentences[0].raw``) otherwise."""
    _, text = read_text(path, "The Karpathy-split annotations", "JSON text")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ClipevalError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.") from None
    shape = 'an object {"images": [{"filename", "split", "sentences": [{"raw"}]}, ...]}'
    if not isinstance(data, Mapping) or not isinstance(data.get("images"), list):
        found = f"keys {sorted(data)[:6]}" if isinstance(data, Mapping) else quoted(data)
        if isinstance(data, Mapping) and "images" in data:
            found = f"'images': {quoted(data['images'])}, which is not a list of image entries"
        raise ClipevalError(f"{path} should hold {shape} (a Karpathy-split JSON), but holds {found}.")
    splits: dict[str, int] = {}
    chosen = []
    for i, entry in enumerate(data["images"]):
        where = f"{path}: images[{i}]"
        if not isinstance(entry, Mapping):
            raise ClipevalError(f"{where} is {quoted(entry)}, not an object with filename, split and sentences.")
        for field in ("filename", "split"):
            if not isinstance(entry.get(field), str) or not entry[field]:
                raise ClipevalError(f"{where}.{field} is {quoted(entry.get(field))}, not a non-empty string.")
        if entry.get("filepath") is not None and not isinstance(entry["filepath"], str):
            raise ClipevalError(f"{where}.filepath is {quoted(entry['filepath'])}, not a string.")
        splits[entry["split"]] = splits.get(entry["split"], 0) + 1
        if entry["split"] != split:
            continue
        sentences = entry.get("sentences")
        if not isinstance(sentences, list):
            raise ClipevalError(f"{where}.sentences is {quoted(sentences)}, not a list of {{'raw': caption}} objects.")
        raws = [s.get("raw") if isinstance(s, Mapping) else s for s in sentences]
        check_captions(raws, f"{where}.sentences[].raw")
        chosen.append(entry)
    if not chosen:
        have = ", ".join(f"'{s}' ({n} images)" for s, n in sorted(splits.items())) or "none (no images)"
        raise OptionError("split", split, f"a split of {path}: {have}")
    return chosen


def retrieval_source(
    root: str | Sequence[str],
    split: str = "test",
    annotations: str = "dataset_flickr30k.json",
    images: str = "",
    what: str = "Retrieval data",
    how_to_get: str | None = None,
) -> Source:
    """The captioned data in the first candidate folder of ``root`` that holds some: a CLIP_benchmark webdataset
    (``<split>/nshards.txt``) or a Karpathy-split folder (``annotations``, with its images under ``images``).

    Raises :class:`DataNotFound` naming every place looked at and ``how_to_get``.
    """
    from clipeval.data.wds import WebDatasetSource

    candidates = [root] if isinstance(root, str | os.PathLike) else list(root)
    places = [Path(c).expanduser().resolve() for c in candidates]
    for place in places:
        if (place / split / "nshards.txt").is_file():
            return WebDatasetSource(place, split)
        if (place / annotations).is_file():
            return KarpathySource(place, annotations, images, split, what, how_to_get)
    looked = _each(places, [f"{split}/nshards.txt", annotations])
    raise DataNotFound(what, looked, how_to_get or "Pass task.root=DIR.", kind="file")


def _each(places: Iterable[Path], names: list[str]) -> list[str]:
    return [str(p / n) for p in places for n in names]
