"""Build a model only when something has to be encoded.

A rerun whose features and text classifiers are all cached needs nothing from the model
but its name and fingerprint (every cache key is made of them). The first build of a model
config writes both to a small *model card* in the cache, keyed by the resolved config, the
size and modification time of every file it names, and the library versions. Later runs
read the card and stand in a :class:`DeferredModel`, which builds the real model the first
time anything else is asked of it: a warm rerun skips importing open_clip (about 3 s here)
and loading the weights.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from clipeval.cache import TensorCache, cache_key
from clipeval.errors import ClipevalError
from clipeval.models.base import DualEncoder

log = logging.getLogger(__name__)

CARD_KIND = "model_cards"
LIBRARIES = ("clipeval", "torch", "open_clip_torch", "transformers")


def card_key(config: dict[str, Any]) -> str:
    """Changes whenever the config, a file it names (or any file in a folder it names), the code of
    its ``_target_`` or a library that builds the model changes."""
    files = _named_files(config) + _target_file(config)
    return cache_key(kind="model_card", config=config, files=files, versions=_versions())


def _named_files(node: Any) -> list[tuple[str, int, int]]:
    if isinstance(node, dict):
        return [f for value in node.values() for f in _named_files(value)]
    if isinstance(node, list):
        return [f for value in node for f in _named_files(value)]
    if isinstance(node, str) and node:
        path = Path(node).expanduser()
        try:
            if path.is_file():
                return [_stat(path)]
            if path.is_dir():  # a saved Hugging Face model, say: every file in it counts
                return [_stat(f) for f in sorted(path.rglob("*")) if f.is_file()]
        except OSError:  # a string that is not a usable path (too long, odd characters)
            pass
    return []


def _stat(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def _target_file(config: dict[str, Any]) -> list[tuple[str, int, int]]:
    """The source file of the adapter class, so that editing a user's adapter is a new card."""
    module = str(config.get("_target_", "")).rpartition(".")[0]
    try:
        spec = importlib.util.find_spec(module) if module else None
    except (ImportError, ValueError):
        return []
    return [_stat(Path(spec.origin))] if spec and spec.origin and Path(spec.origin).is_file() else []


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


class DeferredModel:
    """Name and fingerprint from the card; everything else from the model, built on first use."""

    def __init__(self, name: str, fingerprint: str, build: Callable[[], DualEncoder], device: torch.device):
        self.name, self.fingerprint = name, fingerprint
        self._build, self._device = build, device
        self._model: DualEncoder | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def to(self, device: torch.device | str) -> DeferredModel:
        self._device = torch.device(device)
        if self._model is not None:
            self._model.to(self._device)
        return self

    def materialize(self) -> DualEncoder:
        if self._model is None:
            start = time.perf_counter()
            model = self._build().to(self._device)
            if model.fingerprint != self.fingerprint:
                raise ClipevalError(
                    f"Model '{self.name}' changed on disk without its size or modification time changing "
                    f"(fingerprint {model.fingerprint}, card says {self.fingerprint}). Results of this run may "
                    "come from the old weights: clear the cache (rm -r the cache_dir) and run again."
                )
            log.info("Loaded the weights of %s on %s in %.1f s", self.name, self._device, time.perf_counter() - start)
            self._model = model
        return self._model

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):  # copy/pickle probe private names before __init__ has run
            raise AttributeError(attr)
        return getattr(self.materialize(), attr)


def load_deferred(
    config: dict[str, Any], build: Callable[[], DualEncoder], device: torch.device, cache: TensorCache
) -> DualEncoder:
    """The model of ``config``: deferred when a card knows it, else built now (and its card written)."""
    key = card_key(config)
    card = cache.load(CARD_KIND, key)
    if card is not None:
        log.info("Model %s (fingerprint %s): known from its card; weights load when needed", *card["identity"])
        return DeferredModel(*card["identity"], build=build, device=device)  # type: ignore[return-value]
    start = time.perf_counter()
    model = build().to(device)
    log.info(
        "Loaded model %s (fingerprint %s) on %s in %.1f s",
        model.name,
        model.fingerprint,
        device,
        time.perf_counter() - start,
    )
    cache.save(CARD_KIND, key, {"identity": [model.name, model.fingerprint]})
    return model
