"""Webdataset shards in the layout of the CLIP_benchmark mirrors.

root/
  <split>/nshards.txt        number of shards N
  <split>/0.tar .. N-1.tar   samples: image (.webp/.png/.jpg/.jpeg) + label (.cls)
  classnames.txt             one class name per line, in label order
  zeroshot_classification_templates.txt   one template per line, with {c}
  dataset_type.txt           "retrieval" for captioned data: each sample has a .txt of its captions instead of
                             .cls, one caption per line (CLIP_benchmark's convert_retrieval_dataset writes them
                             joined by newlines, a newline inside a caption as the two characters \\n; its reader
                             splits them with str.splitlines, as here)

``root`` may also be a URL (``https://...``, e.g. a Hugging Face dataset repository's ``.../resolve/<rev>/``) or
a ``pipe:`` command with ``{path}``: the shards are then streamed, keyed as :mod:`clipeval.data.remote` says.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import re
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from clipeval.cache import file_digests
from clipeval.config.files import read_text
from clipeval.data import remote
from clipeval.data.base import DataNotFound, Item, Source, content_key, decode, is_utf8
from clipeval.errors import ClipevalError, OptionError

log = logging.getLogger(__name__)

IMAGE_KEYS = ("webp", "png", "jpg", "jpeg")
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"
DIGITS = re.compile(rb"[0-9]+")  # ASCII digits only: int() also takes "0_2", "+3" and non-ASCII digits


class WebDatasetSource(Source):
    """A local mirror folder, or a remote one (a URL or ``pipe:`` command: ``revision`` and ``timeout`` apply)."""

    #: the layout ships prompt templates (zeroshot_classification_templates.txt): without them, the run notes the
    #: default template it falls back to (clipeval.run.context)
    ships_templates = True

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "test",
        revision: str | None = None,
        timeout: float = 60.0,
        what: str | None = None,
        how_to_get: str | None = None,
    ):
        self.split = split
        self.remote: remote.Location | None = None
        if remote.is_remote(root):
            self._init_remote(str(root), split, revision, timeout)
            return
        self.root = Path(root).expanduser().resolve()
        nshards_file = self.root / split / "nshards.txt"
        splits = sorted(p.parent.name for p in self.root.glob("*/nshards.txt")) if self.root.is_dir() else []
        if not nshards_file.is_file() and splits:
            raise OptionError("split", split, f"a split of webdataset {self.root}: {', '.join(map(repr, splits))}")
        if not nshards_file.is_file():
            raise DataNotFound(
                f"{what} (webdataset split '{split}': {split}/nshards.txt)"
                if what
                else f"Webdataset split '{split}' ({split}/nshards.txt)",
                [str(nshards_file)],
                how_to_get
                or "Pass task.root=DIR, a folder in the CLIP_benchmark webdataset layout "
                "(for example a local clone of a clip-benchmark/wds_* dataset repository).",
                kind="file",
            )
        count = _shard_count(nshards_file)
        self.shards = [self.root / split / f"{i}.tar" for i in range(count)]
        missing = [str(p) for p in self.shards if not p.is_file()]
        if missing:
            raise DataNotFound(
                f"{len(missing)} of {count} shards of '{self.root}'",
                missing[:5],
                "Complete the download (with git lfs, fetch the .tar files too).",
                partial=True,
            )
        _warn_about_unread_shards(self.root / split, count)
        for shard in self.shards:
            check_shard(shard)
        self.classnames = _read_lines(self.root / "classnames.txt")
        self.templates = _read_lines(self.root / "zeroshot_classification_templates.txt")
        self._captions = _read_captions(self.shards) if _is_retrieval(_read_lines(self.root / TYPE_FILE)) else None
        digests = file_digests().digests(self.shards)  # sha256 of each shard's bytes: labels and images
        self.key = content_key("wds", [split, [(p.name, d) for p, d in zip(self.shards, digests, strict=True)]])

    def _init_remote(self, root: str, split: str, revision: str | None, timeout: float) -> None:
        """Read the mirror's text files and key its shards by the rule :mod:`clipeval.data.remote` finds."""
        self.remote = loc = remote.location(root, revision, timeout)
        self.root = loc.root
        count = _shard_count(loc.read_text(f"{split}/nshards.txt", required=True), loc.describe(f"{split}/nshards.txt"))
        self.shards = [f"{split}/{i}.tar" for i in range(count)]
        self.validators = loc.validators(self.shards)
        self.classnames = _lines(loc.read_text("classnames.txt", required=False))
        self.templates = _lines(loc.read_text("zeroshot_classification_templates.txt", required=False))
        self._captions = None
        if _is_retrieval(_lines(loc.read_text(TYPE_FILE, required=False))):
            raise ClipevalError(
                f"{loc.describe(TYPE_FILE)} says this is a retrieval dataset; the captions of a streamed webdataset "
                "are not read. Download the mirror (git lfs, or huggingface-cli download --repo-type dataset) and "
                "pass its folder."
            )
        rules = sorted({v.rule for v in self.validators})
        self.key = content_key(
            "wds-remote",
            [split, loc.root, [[rel, *v.payload()] for rel, v in zip(self.shards, self.validators, strict=True)]],
        )
        log.info(
            "Webdataset %s [%s]: %d streamed shard(s) keyed by %s",
            loc.root,
            split,
            count,
            " and ".join(remote.RULE_NAMES[r] for r in rules),
        )

    def describe(self) -> str:
        streamed = ", streamed" if self.remote is not None else ""
        return f"webdataset {self.root} [{self.split}] ({len(self.shards)} shards{streamed})"

    def captions(self) -> dict[str, list[str]] | None:
        return self._captions

    def dataset(self, transform: Callable, limit: int | None) -> torch.utils.data.Dataset:
        if self.remote is not None:
            shards = list(zip(self.shards, self.validators, strict=True))
            return _ShardDataset(shards, transform, limit, self.remote)
        index = None if self._captions is None else {sid: i for i, sid in enumerate(self._captions)}
        return _ShardDataset([str(p) for p in self.shards], transform, limit, index=index)

    def sample_metadata(self, extension: str = "npy") -> dict[str, Any]:
        """Each sample's ``.<extension>`` member (the per-sample metadata array some mirrors ship, e.g. the WILDS and
        fairness sets' group fields), loaded with numpy, by sample id (as :meth:`dataset` names samples). Reads the
        shards' headers and those members only, not the images (a streamed mirror is read whole once more)."""

        out: dict[str, Any] = {}
        if self.remote is not None:
            samples = remote.shard_samples(self.remote, list(zip(self.shards, self.validators, strict=True)))
            for sample in samples:
                if extension in sample:
                    sid = f"{remote.shard_stem(sample['__url__'])}/{sample['__key__']}"
                    out[sid] = _load_array(sample[extension], sample["__url__"], sample["__key__"], extension)
            return out
        for shard in self.shards:
            with tarfile.open(shard, "r:") as tar:
                for member in tar:
                    folder, _, base = member.name.rpartition("/")
                    key, dot, ext = base.partition(".")
                    if dot and ext == extension and member.isfile():
                        data = tar.extractfile(member).read()
                        sid = f"{shard.stem}/{folder + '/' if folder else ''}{key}"
                        out[sid] = _load_array(data, shard, member.name, extension)
        return out

    def loader_options(self, limit: int | None) -> dict[str, Any]:
        # Shards are split between workers; "the first N" is only well defined in one process.
        return {"max_workers": 0 if limit is not None else len(self.shards)}


def _load_array(data: bytes, shard: Any, sample: str, extension: str) -> Any:
    """``data`` as a numpy array (``np.load``, no pickles); ClipevalError naming the shard and sample if it is not one."""
    import numpy as np

    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        why = "it is pickled data, which is not loaded" if "pickled" in str(exc) else str(exc) or type(exc).__name__
        raise ClipevalError(
            f"{shard}: sample {sample!r}: its .{extension} member is not a readable numpy array ({why}). "
            "Download the mirror again."
        ) from None


class _ShardDataset(torch.utils.data.IterableDataset):
    """``index``: for captioned data, each sample id's label (its position); no ``.cls`` is read then."""

    def __init__(
        self,
        urls: list,
        transform: Callable,
        limit: int | None,
        location: remote.Location | None = None,
        index: dict[str, int] | None = None,
    ):
        self.urls, self.transform, self.limit, self.location, self.index = urls, transform, limit, location, index

    def __iter__(self) -> Iterator[Item]:
        import webdataset as wds

        if self.location is not None:
            pipeline = remote.shard_samples(self.location, self.urls)
        else:
            pipeline = wds.WebDataset(self.urls, shardshuffle=False, empty_check=False, nodesplitter=None)
        return itertools.islice(map(self._item, pipeline), self.limit)

    def _item(self, sample: dict[str, Any]) -> Item:
        """One sample decoded; a sample without an image or an integer ``.cls`` label is skipped with the reason."""
        sample_id = f"{remote.shard_stem(sample['__url__'])}/{sample['__key__']}"
        data = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
        if self.index is not None:
            label, why = self.index.get(sample_id, -1), None
        else:
            label, why = _label(sample.get("cls"))
        if data is None:
            why = f"no image ({'/'.join(IMAGE_KEYS)}) in sample (keys: {sorted(sample)})"
        if why is not None:
            return Item(None, max(label, 0), sample_id, why)
        return decode(lambda: Image.open(io.BytesIO(data)), self.transform, label, sample_id)


def _label(raw: bytes | None) -> tuple[int, str | None]:
    """(label, None) for a ``.cls`` holding a non-negative integer in ASCII digits, else (-1, why).

    Surrounding ASCII whitespace (a trailing newline) is allowed; signs, underscores ("0_2"), inner spaces
    and non-ASCII digits are not, although Python's ``int()`` accepts them all.
    """
    if raw is None:
        return -1, "no .cls label in sample"
    text = raw.strip()
    if text.startswith(b"-") and DIGITS.fullmatch(text[1:]):
        return -1, f".cls label is negative: {text.decode()}"
    if not DIGITS.fullmatch(text):
        return -1, f".cls label is not an integer: {raw[:40]!r} (only ASCII digits are read as a label)"
    return int(text), None


def _shard_count(nshards: Path | str, where: str | None = None) -> int:
    """The positive integer in ``nshards.txt`` (a local file, or the text read from ``where``); ClipevalError
    otherwise."""
    raw = nshards.read_bytes() if isinstance(nshards, Path) else nshards.encode()
    text = raw.strip()
    if not DIGITS.fullmatch(text) or int(text) < 1:
        raise ClipevalError(
            f"{where or nshards} should hold the number of shards (a positive integer), but holds {raw[:60]!r}. "
            "Write the number of <i>.tar files of the split into it."
        )
    return int(text)


def _warn_about_unread_shards(folder: Path, count: int) -> None:
    """Warn about ``<i>.tar`` shards beyond the ``count`` that ``nshards.txt`` names: they are not read."""
    extra = sorted(
        (p for p in folder.glob("*.tar") if DIGITS.fullmatch(p.stem.encode(errors="surrogateescape"))),
        key=lambda p: int(p.stem),
    )
    extra = [p.name for p in extra if int(p.stem) >= count]
    if extra:
        shown = ", ".join(extra[:10]) + (f", ... ({len(extra)} in all)" if len(extra) > 10 else "")
        log.warning(
            "%s/nshards.txt says %d shard(s), so %d more shard file(s) there are NOT read: %s. "
            "If they belong to the split, correct nshards.txt; otherwise remove them.",
            folder,
            count,
            len(extra),
            shown,
        )


def check_shard(path: Path) -> None:
    """Raise ClipevalError unless ``path`` is a complete tar file whose member names are valid UTF-8.

    Cheap: reads the member headers only (tarfile seeks over the data), checks that every member's data
    fits in the file and that the end-of-archive zero block follows the last member (a tar cut at a member
    boundary is otherwise read as a shorter, valid one). A git-lfs pointer file (a clone made without
    ``git lfs``) is named as such. Non-UTF-8 member names would become sample ids that cannot be written.
    """
    with open(path, "rb") as f:
        head = f.read(len(LFS_POINTER))
    if head == LFS_POINTER:
        raise DataNotFound(
            f"The content of shard {path} (it is a git-lfs pointer file, not the tar file)",
            [str(path)],
            "The dataset was cloned without git lfs. In the clone run `git lfs install && git lfs pull` "
            "(or download the .tar files themselves, e.g. with `huggingface-cli download --repo-type dataset`).",
        )
    damaged = f"Shard {path} is damaged or incomplete (an interrupted download?)"
    size = path.stat().st_size
    try:
        with tarfile.open(path, "r:") as tar:
            members = tar.getmembers()
            end = tar.offset  # where the header after the last member starts
    except tarfile.TarError as exc:
        raise ClipevalError(f"{damaged}: it is not a readable tar file ({exc}). Download it again.") from None
    cut = next((m for m in members if m.offset_data + m.size > size), None)
    if cut is not None:
        raise ClipevalError(f"{damaged}: member {cut.name!r} runs past the end of the file. Download it again.")
    with open(path, "rb") as f:
        f.seek(end)
        trailer = f.read(tarfile.BLOCKSIZE)
    if len(trailer) < tarfile.BLOCKSIZE or trailer.count(0) != tarfile.BLOCKSIZE:
        raise ClipevalError(
            f"{damaged}: after {len(members)} member(s) it lacks the end-of-archive block at byte {end}, "
            "so members may be missing. Download it again."
        )
    bad = [m.name for m in members if not is_utf8(m.name)]
    if bad:
        raise ClipevalError(
            f"Shard {path} has {len(bad)} member name(s) that are not valid UTF-8 (e.g. {bad[0]!r}); they would "
            "become sample ids that cannot be written. Rewrite the shard with UTF-8 names."
        )


TYPE_FILE = "dataset_type.txt"
KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's split of a member name into sample key and field


def _is_retrieval(dataset_type: list[str] | None) -> bool:
    return bool(dataset_type) and dataset_type[0].lower() == "retrieval"


def _read_captions(shards: list[Path]) -> dict[str, list[str]]:
    """Each sample id's captions from the ``.txt`` members of local ``shards`` (images are not read): one caption
    per line (str.splitlines, as CLIP_benchmark reads them). ClipevalError naming the shard and sample for a
    sample with an image but no ``.txt``, a ``.txt`` that is not UTF-8, or one with no caption or a blank line."""
    from clipeval.data.captions import check_captions

    captions: dict[str, list[str]] = {}
    for shard in shards:
        stem = remote.shard_stem(str(shard))
        fields: dict[str, dict[str, tarfile.TarInfo]] = {}
        with tarfile.open(shard, "r:") as tar:
            for member in tar:
                match = KEY.match(member.name) if member.isfile() else None
                if match:
                    fields.setdefault(match.group(1), {})[match.group(2).lower()] = member
            for key, members in fields.items():
                where = f"Shard {shard}, sample '{key}'"
                if "txt" not in members:
                    if any(k in members for k in IMAGE_KEYS):
                        raise ClipevalError(
                            f"{where} has no captions (.txt; it has {', '.join(sorted(members))}), but the mirror's "
                            f"{TYPE_FILE} says 'retrieval'. Give every image a .txt with one caption per line."
                        )
                    continue
                raw = tar.extractfile(members["txt"]).read()
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise ClipevalError(
                        f"{where}: its .txt is not UTF-8 text ({exc.reason} at byte {exc.start})."
                    ) from None
                captions[f"{stem}/{key}"] = check_captions(
                    text.splitlines(), f"{where}: its .txt", lambda j, where=where: f"{where}: .txt line {j + 1}"
                )
    return captions


def _read_lines(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    _, text = read_text(path, "The webdataset's")
    return _lines(text)


def _lines(text: str | None) -> list[str] | None:
    return None if text is None else [line.strip() for line in text.splitlines() if line.strip()]
