"""Atomic file writes: readers see the old file or the whole new one, never a part."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write`` on a temporary file beside ``path``, sync it, and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give them the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_error(folder: Path) -> OSError | None:
    """Why no file can be written in ``folder`` (a read-only or full file system, permissions, a file in the
    way), or None when one can. A folder that does not exist yet is judged by its nearest existing ancestor,
    and nothing is created: the probe is an unnamed temporary file of one block, synced and dropped."""
    folder = Path(folder).absolute()
    probe = next((p for p in (folder, *folder.parents) if p.exists()), folder)
    try:
        with tempfile.TemporaryFile(dir=probe) as f:
            f.write(bytes(4096))
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        return OSError(exc.errno, exc.strerror) if exc.strerror else exc  # not the probe's name
    return None
