"""A content-addressed store of tensors on disk (image features, text classifiers).

Entries are named by the sha256 of everything that determines their content, so a change to
any input is a different name and can never be served stale. Writes go to a temporary file
that is renamed into place (:mod:`clipeval.atomic`), so a killed run leaves no entry that later reads as valid.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from clipeval.atomic import atomic_write

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def cache_key(**parts: Any) -> str:
    payload = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


class TensorCache:
    def __init__(self, root: Path, enabled: bool = True):
        self.root = Path(root).expanduser()
        self.enabled = enabled

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / f"{key}.pt"

    def load(self, kind: str, key: str) -> dict[str, Any] | None:
        if not self.enabled:
            return None
        path = self.path(kind, key)
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unreadable entry (disk trouble, foreign file): recompute
            log.warning("Ignoring unreadable cache entry %s (%s)", path, exc)
            return None
        if not isinstance(entry, dict) or entry.get("key") != key:
            log.warning("Ignoring cache entry %s: it does not hold what its name says", path)
            return None
        return entry

    def save(self, kind: str, key: str, entry: dict[str, Any]) -> Path | None:
        if not self.enabled:
            return None
        return atomic_write(self.path(kind, key), lambda f: torch.save({**entry, "key": key}, f))
