"""Build a model only when something has to be encoded.

A rerun whose features and text classifiers are all cached needs nothing from the model
but its name and fingerprint (every cache key is made of them). The first build of a model
config writes both to a small *model card* in the cache, keyed by the resolved config, the
sha256 of every file it names (memoised by stat signature, see :class:`clipeval.cache.FileDigests`),
and the library versions. Later runs
read the card and stand in a :class:`DeferredModel`, which builds the real model the first
time anything else is asked of it: a warm rerun skips importing open_clip (about 3 s here)
and loading the weights.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import logging
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from clipeval.cache import FileDigests, TensorCache, cache_key, file_digests
from clipeval.contracts import DualEncoder
from clipeval.errors import ClipevalError
from clipeval.models.base import check_logit_scale, check_outputs
from clipeval.models.open_clip import HUB_PREFIX

log = logging.getLogger(__name__)

CARD_KIND = "model_cards"
#: a Hugging Face repo id, org/name (what ``_target_`` strings never look like: they have no "/")
HUB_REPO = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
LIBRARIES = ("clipeval", "torch", "open_clip_torch", "transformers")


def card_key(config: dict[str, Any], digests: FileDigests | None = None) -> str:
    """Changes whenever the config, the bytes of a file it names (or of any file in a folder it names),
    the code of its ``_target_`` or a library that builds the model changes."""
    named, target = _named_files(config), _target_file(config)
    contents = (digests or file_digests()).digests([str(p) for p in named + target])
    # the adapter by its module, not where it is installed (a source tree or site-packages: same code)
    labels = [str(p) for p in named] + [str(config.get("_target_"))] * len(target)
    return cache_key(
        kind="model_card",
        config=_absolute_paths(config),  # `m.pt` from one folder and `../x/m.pt` from another: one file
        files=list(zip(labels, contents, strict=True)),
        hub=hub_revisions(config),
        versions=_versions(),
    )


def hub_revisions(config: dict[str, Any]) -> dict[str, str | None]:
    """{hub repo id: the commit its revision resolves to in the local Hugging Face cache, or None}.

    A hub name (``hf-hub:org/name`` for open_clip, ``org/name`` for transformers) is not a file, so
    its content is named by the snapshot the cache holds: when the cache moves to a newer commit,
    the card misses and the model is built from what is there now. Read from the cache's
    ``refs/<revision>`` file (huggingface_hub's layout); a pinned 40-hex ``revision`` is its own commit.
    """
    repos = sorted(set(_hub_names(config)))
    if not repos:
        return {}
    from huggingface_hub import constants

    root = Path(config.get("cache_dir") or constants.HF_HUB_CACHE).expanduser()
    revision = str(config.get("revision") or "main")
    found: dict[str, str | None] = {}
    for repo in repos:
        if re.fullmatch(r"[0-9a-f]{40}", revision):
            found[repo] = revision
            continue
        ref = root / f"models--{repo.replace('/', '--')}" / "refs" / revision
        try:
            found[repo] = ref.read_text().strip()
        except OSError:
            found[repo] = None
    return found


def _absolute_paths(node: Any) -> Any:
    """The config with every string that names an existing file or folder replaced by its absolute path."""
    if isinstance(node, dict):
        return {key: _absolute_paths(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_absolute_paths(value) for value in node]
    if isinstance(node, str) and node:
        path = Path(node).expanduser()
        try:
            return str(path.resolve()) if path.exists() else node
        except OSError:  # not a usable path (too long, odd characters)
            return node
    return node


def _strings(node: Any) -> list[str]:
    """Every string in a config (nested dicts and lists), depth first."""
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return [node] if isinstance(node, str) else []


def _hub_names(node: Any) -> list[str]:
    names = []
    for text in _strings(node):
        name = text.removeprefix(HUB_PREFIX)
        if HUB_REPO.fullmatch(name) and (text.startswith(HUB_PREFIX) or not Path(text).expanduser().exists()):
            names.append(name)
    return names


def _named_files(node: Any) -> list[Path]:
    files: list[Path] = []
    for text in _strings(node):
        if not text:
            continue
        path = Path(text).expanduser()
        try:
            if path.is_file():
                files.append(path.resolve())
            elif path.is_dir():  # a saved Hugging Face model, say: every file in it counts
                files.extend([f.resolve() for f in sorted(path.rglob("*")) if f.is_file()])
        except OSError:  # a string that is not a usable path (too long, odd characters)
            pass
    return files


def _target_file(config: dict[str, Any]) -> list[Path]:
    """The source file of the adapter class, so that editing a user's adapter is a new card."""
    module = str(config.get("_target_", "")).rpartition(".")[0]
    try:
        spec = importlib.util.find_spec(module) if module else None
    except (ImportError, ValueError):
        return []
    return [Path(spec.origin).resolve()] if spec and spec.origin and Path(spec.origin).is_file() else []


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


class DeferredModel:
    """Name, fingerprint and logit scale from the card; everything else from the model, built on first use."""

    def __init__(
        self,
        name: str,
        fingerprint: str,
        build: Callable[[], DualEncoder],
        device: torch.device,
        logit_scale: float | None = None,
    ):
        self.name, self.fingerprint = name, fingerprint
        self._build, self._device = build, device
        self._model: DualEncoder | None = None
        self._logit_scale = logit_scale

    @property
    def logit_scale(self) -> float:
        """From the card when it has it (a calibrated score on cached features loads no weights), else the model's."""
        return self._logit_scale if self._logit_scale is not None else self.materialize().logit_scale

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
            log.info("Loading the weights of %s on %s: something has to be encoded", self.name, self._device)
            start = time.perf_counter()
            model = check_outputs(self._build().to(self._device), self._device)
            if (model.name, model.fingerprint) != (self.name, self.fingerprint):
                raise ClipevalError(
                    f"Model '{model.name}' (fingerprint {model.fingerprint}) changed on disk behind its model card "
                    f"('{self.name}', {self.fingerprint}), or its adapter is not deterministic. Results of this run "
                    "may come from the old weights: clear the cache (rm -r the cache_dir) and run again."
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
    key = card_key(config, cache.digests)
    card = cache.load(CARD_KIND, key)
    identity = _card_identity(card)
    if identity is not None:
        log.info("Model %s (fingerprint %s): known from its card; weights load when needed", *identity)
        scale = card.get("logit_scale")
        scale = float(scale) if isinstance(scale, float) and math.isfinite(scale) and scale > 0 else None
        return DeferredModel(*identity, build=build, device=device, logit_scale=scale)  # type: ignore[return-value]
    log.info(
        "Loading model %s on %s (its first run: no model card yet)",
        config.get("name") or config.get("_target_"),
        device,
    )
    start = time.perf_counter()
    model = check_outputs(build().to(device), device)
    log.info(
        "Loaded model %s (fingerprint %s) on %s in %.1f s",
        model.name,
        model.fingerprint,
        device,
        time.perf_counter() - start,
    )
    card: dict[str, Any] = {"identity": [model.name, model.fingerprint]}
    with contextlib.suppress(ClipevalError):  # the scale too: a calibrated score of cached features loads no weights
        card["logit_scale"] = check_logit_scale(model)
    cache.save(CARD_KIND, key, card)
    return model


def _card_identity(card: dict[str, Any] | None) -> tuple[str, str] | None:
    """(name, fingerprint) of a card that passed its checksum, when it holds exactly two strings."""
    identity = card.get("identity") if card is not None else None
    if isinstance(identity, list) and len(identity) == 2 and all(isinstance(v, str) and v for v in identity):
        return identity[0], identity[1]
    if card is not None:
        log.warning("Ignoring a model card that does not hold a name and a fingerprint; building the model")
    return None
