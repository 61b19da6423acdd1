"""A Hugging Face dataset read in streaming mode: parquet files at http(s) URLs, or a hub dataset at a commit.

Nothing is downloaded ahead: ``datasets`` streams the rows (over fsspec's HTTP file system, which needs
``aiohttp``; ``pip install clipeval[stream]``). The data key follows the rules of :mod:`clipeval.data.remote`:

- parquet URLs: each file's strong ETag and size, a commit pinned in the URL (``.../resolve/<40 hex>/...``),
  or ``revision=NAME`` given by the user; otherwise refused. The files are checked again once read: a file
  that changed meanwhile fails the run (parquet is read in ranges, so a change could mix two versions).
- a hub id (``owner/name``): ``revision`` must be a commit (40 hex digits), which pins the content; a branch or
  tag name is refused, since it can move while the key stays.
"""

from __future__ import annotations

import io
import itertools
import logging
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import torch
from PIL import Image

from clipeval.data import remote
from clipeval.data.base import DataNotFound, Item, Source, content_key, decode
from clipeval.errors import ClipevalError, OptionError

log = logging.getLogger(__name__)

COMMIT = re.compile(r"[0-9a-f]{40}")


class HFStreamingSource(Source):
    """One split of a Hugging Face dataset, streamed; samples are numbered in stream order (ids ``0``, ``1``...)."""

    def __init__(
        self,
        path: str | list[str],
        split: str = "test",
        name: str | None = None,
        revision: str | None = None,
        image_key: str | None = None,
        label_key: str | None = None,
        timeout: float = 60.0,
    ):
        import datasets

        if not isinstance(timeout, int | float) or not timeout > 0:
            raise OptionError(
                "timeout", timeout, "a positive number of seconds (each request and read waits that long)"
            )
        self.split, self.timeout, self.revision = split, float(timeout), revision
        urls = [path] if isinstance(path, str) else list(path)
        self.path = ", ".join(urls)
        if all(remote.is_remote(u) and not u.startswith("pipe:") for u in urls):
            self.urls: list[str] | None = urls
            self.validators = self._validate()
            identity: list[Any] = [[u, *v.payload()] for u, v in zip(urls, self.validators, strict=True)]
            rules = sorted({v.rule for v in self.validators})
            ds = self._load(lambda **kw: datasets.load_dataset("parquet", data_files={split: urls}, **kw))
        elif len(urls) == 1 and re.fullmatch(r"[\w.-]+/[\w.-]+", urls[0]):
            self.urls = None
            if revision is None or not COMMIT.fullmatch(str(revision)):
                raise ClipevalError(
                    f"Streaming the hub dataset '{urls[0]}' needs task.revision=<commit> (40 hex digits), not "
                    f"{revision!r}: a branch or tag can move while the features cached for it stay. Find the "
                    "commit on the dataset's 'Files and versions' page (or HfApi().dataset_info(id).sha)."
                )
            identity, rules = [urls[0], name, revision], ["pin"]
            ds = self._load(lambda **kw: datasets.load_dataset(urls[0], name, revision=revision, **kw))
        else:
            raise OptionError(
                "path",
                path,
                "the http(s) URL of a parquet file (or a list of them), or a hub id owner/name with "
                "task.revision=<commit>; for local files use task=hf",
            )
        features = ds.features or {}
        self.image_key = image_key or _find(features, datasets.Image, "image")
        self.label_key = label_key or _find(features, datasets.ClassLabel, "label")
        for option, key in (("image_key", self.image_key), ("label_key", self.label_key)):
            if features and key not in features:
                columns = ", ".join(map(repr, features))
                raise OptionError(option, key, f"a column of dataset {self.path}: {columns} (task.{option})")
        label = features.get(self.label_key)
        self.classnames = list(label.names) if isinstance(label, datasets.ClassLabel) else None
        if isinstance(features.get(self.image_key), datasets.Image):
            ds = ds.cast_column(self.image_key, datasets.Image(decode=False))
        self._ds = ds.select_columns([self.image_key, self.label_key])
        self.key = content_key("hf-stream", [split, name, self.image_key, self.label_key, identity])
        log.info(
            "Hugging Face dataset %s [%s] streamed, keyed by %s",
            self.path,
            split,
            " and ".join(remote.RULE_NAMES[r] for r in rules),
        )

    def _validate(self) -> list[remote.Validator]:
        """Each URL's key rule (remote.validator), from a HEAD request (GET where HEAD is refused)."""
        found = []
        for url in self.urls or []:
            try:
                headers, response = remote.request(url, "HEAD", self.timeout)
            except remote.NotThere:
                raise DataNotFound(
                    f"Parquet file {url}", [url], "Check task.path: the URL answered HTTP 404."
                ) from None
            response.close()
            found.append(remote.validator(url, headers, self.revision))
        return found

    def _load(self, load: Callable[..., Any]):
        """``load(split=..., streaming=True, storage_options=...)`` with every request bounded by the timeout."""
        try:
            import aiohttp
        except ImportError:
            if self.urls is not None:
                raise ClipevalError(
                    "Streaming parquet files over HTTP needs aiohttp and requests (fsspec's HTTP file system): "
                    "pip install 'clipeval[stream]'."
                ) from None
            aiohttp = None
        options = {}
        if aiohttp is not None:
            wait = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=self.timeout)
            options = {p: {"client_kwargs": {"timeout": wait}} for p in ("http", "https")}
        try:
            return load(split=self.split, streaming=True, storage_options=options)
        except Exception as exc:  # offline, unknown id, unreadable file: all end the same way for the user
            if self.urls is not None:  # each URL answered a HEAD request: it is there, but could not be read
                raise remote.RemoteError(
                    f"Could not open {self.path} for streaming ({type(exc).__name__}: {exc}); each request may wait "
                    f"task.timeout={self.timeout:g} s. Check that the server serves the file and run again."
                ) from None
            raise DataNotFound(
                f"Hugging Face dataset {self.path} (split '{self.split}', streamed)",
                [f"the Hugging Face hub, at commit {self.revision}"],
                f"Loading failed with: {type(exc).__name__}: {exc}",
            ) from exc

    def describe(self) -> str:
        return f"Hugging Face dataset {self.path} [{self.split}] (streamed)"

    def dataset(self, transform: Callable, limit: int | None) -> torch.utils.data.Dataset:
        return _Rows(self, transform, limit)

    def loader_options(self, limit: int | None) -> dict[str, Any]:
        # Rows are numbered in stream order, which only one process sees whole.
        return {"max_workers": 0}

    def rows(self) -> Iterator[dict[str, Any]]:
        try:
            yield from self._ds
        except (OSError, ValueError, TimeoutError) as exc:
            raise remote.RemoteError(
                f"Streaming {self.path} failed: {type(exc).__name__}: {exc}. Run again; check the URL and the network."
            ) from None
        if self.urls is not None:  # read whole: the files must still be the ones the key names
            for url, (before, after) in zip(
                self.urls, zip(self.validators, self._validate(), strict=True), strict=True
            ):
                if before != after:
                    raise remote.RemoteError(
                        f"{url} changed on the server while this run read it ({before.rule} {before.value} became "
                        f"{after.value}). Run again to read the new version."
                    )


class _Rows(torch.utils.data.IterableDataset):
    def __init__(self, source: HFStreamingSource, transform: Callable, limit: int | None):
        self.source, self.transform, self.limit = source, transform, limit

    def __iter__(self) -> Iterator[Item]:
        return itertools.islice(itertools.starmap(self._item, enumerate(self.source.rows())), self.limit)

    def _item(self, index: int, row: dict[str, Any]) -> Item:
        label, why = _label(row.get(self.source.label_key))
        cell = row.get(self.source.image_key)
        data = cell.get("bytes") if isinstance(cell, dict) else None
        if why is None and not data:
            why = f"no image bytes in column '{self.source.image_key}'"
        if why is not None:
            return Item(None, max(label, 0), str(index), why)
        return decode(lambda: Image.open(io.BytesIO(data)), self.transform, label, str(index))


def _label(value: Any) -> tuple[int, str | None]:
    """(label, None) for an integer (or a whole, finite float) >= 0; else (-1, why): the sample is skipped."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return -1, f"label is not an integer: {value!r}"
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return -1, f"label is not a whole number: {value!r}"
    if value < 0:
        return -1, f"label is negative: {value!r}"
    return int(value), None


def _find(features, feature_type, fallback: str) -> str:
    return next((column for column, f in features.items() if isinstance(f, feature_type)), fallback)
