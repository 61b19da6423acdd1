"""Atomic file writes: readers see the old file or the whole new one, never a part.

Every file clipeval writes goes through :func:`atomic_write`. A command that writes into a folder the user
chose (``--out`` of ``clipeval report`` and ``clipeval check record``) wraps its work in :func:`output_folder`:
a folder that cannot be written (read-only, full, a file in the way) is a :class:`ClipevalError` (exit 2)
before any work, and a write that fails midway (the disk fills) is one naming the file, the error, the files
written before it and those that were not.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from clipeval.errors import ClipevalError, cut

#: the longest file name :func:`safe_file_name` gives, in UTF-8 bytes (file systems take 255)
MAX_NAME_BYTES = 200


def safe_file_name(name: str) -> str:
    """``name`` as one file name that every file system and shell takes as it is: letters, digits, ``.``, ``-`` and
    ``_`` kept, anything else (``:``, ``@``, ``/``, spaces) as ``-``. Store entries, prediction files and figure
    files are named with it.

    A name longer than :data:`MAX_NAME_BYTES` keeps its start and its last 40 characters (where the run id and
    the suffix are) around a digest of the whole name, so that it stays unique and within every file system's
    limit however long a model's name is."""
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in name)
    if len(safe.encode()) <= MAX_NAME_BYTES:
        return safe
    tail, digest = safe[-40:], hashlib.sha256(safe.encode()).hexdigest()[:10]
    budget = MAX_NAME_BYTES - len(tail.encode()) - len(digest) - 4
    head = safe.encode()[:budget].decode(errors="ignore")  # whole characters only
    return f"{head}--{digest}--{tail}"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write`` on a temporary file beside ``path``, sync it, and rename it into place.

    An OSError names ``path`` (a full disk's ENOSPC names no file by itself); inside :func:`output_folder`
    the written file, or the failure, is noted."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give them the usual mode
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            if exc.filename is None or Path(exc.filename).name.startswith(f".{path.name}."):  # not the temporary
                exc.filename = str(path)
            outputs = _OUTPUTS.get()
            if outputs is not None:
                outputs.failed = (path, exc)
        raise
    outputs = _OUTPUTS.get()
    if outputs is not None:
        outputs.written.append(path)
    return path


def write_error(folder: Path) -> OSError | None:
    """Why no file can be written in ``folder`` (a read-only or full file system, permissions, a file in the
    way), or None when one can. A folder that does not exist yet is judged by its nearest existing ancestor,
    and nothing is created: the probe is an unnamed temporary file of one block, synced and dropped."""
    folder = Path(folder).absolute()
    try:
        probe = next((p for p in (folder, *folder.parents) if p.exists()), folder)
    except OSError as exc:  # a name longer than the file system takes (ENAMETOOLONG), a loop of links
        return OSError(exc.errno, f"{exc.strerror}: the path has {len(str(folder)):,} characters")
    if probe.exists() and not probe.is_dir():
        return NotADirectoryError(errno.ENOTDIR, f"{probe} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe) as f:
            f.write(bytes(4096))
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        return OSError(exc.errno, exc.strerror) if exc.strerror else exc  # not the probe's name
    return None


def require_writable(folder: Path, what: str, how: str, nothing: str = "nothing was written") -> None:
    """ClipevalError when no file can be written in ``folder`` (the ``what``, such as "run directory"; ``how``:
    the option that names another folder, such as "--out DIR"), saying that ``nothing`` was done."""
    error = write_error(folder)
    if error is not None:
        raise ClipevalError(
            f"Cannot write to the {what} {cut(str(folder))} ({cut(str(error), 400)}); {nothing}. "
            f"Free space or fix its permissions, or pass {how} to write elsewhere."
        )


@dataclass
class _Outputs:
    written: list[Path] = field(default_factory=list)
    failed: tuple[Path, OSError] | None = None


_OUTPUTS: ContextVar[_Outputs | None] = ContextVar("clipeval_outputs", default=None)
#: how many of the files written before a failed one its message lists
SHOW_WRITTEN = 8


@contextlib.contextmanager
def output_folder(folder: Path, what: str = "output folder", how: str = "--out DIR") -> Iterator[list[Path]]:
    """Check that ``folder`` can be written before the work inside the block (:func:`require_writable`), and
    turn a write that fails inside it (:func:`atomic_write`) into a ClipevalError naming the file, the error,
    the files written before it (in any folder) and that it and the files after it were not. Yields the list
    of files written so far. Other errors, reading ones included, pass through."""
    require_writable(folder, what, how)
    outputs = _Outputs()
    token = _OUTPUTS.set(outputs)
    try:
        yield outputs.written
    except OSError as exc:
        if outputs.failed is None or outputs.failed[1] is not exc:
            raise
        path, error = outputs.failed
        raise ClipevalError(_midway(Path(folder), path, error, outputs.written, how)) from None
    finally:
        _OUTPUTS.reset(token)


def _midway(folder: Path, failed: Path, error: OSError, written: list[Path], how: str) -> str:
    """One line saying what failed and what to do, then the files written before it, one a line."""
    root = folder.absolute()

    def shown(path: Path) -> str:
        path = path.absolute()
        return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)

    reason = f"[Errno {error.errno}] {error.strerror}" if error.strerror else str(error)
    message = (
        f"Could not write {failed} ({reason}): it and the files after it were not written"
        f"{'' if written else ', nor any before it'}. "
        f"Free space or fix the permissions and run again, or pass {how} to write elsewhere."
    )
    if written:
        more = [f"  ... and {len(written) - SHOW_WRITTEN} more"] if len(written) > SHOW_WRITTEN else []
        message += "\n".join(
            [f"\nWritten before it, in {root}:", *(f"  {shown(p)}" for p in written[:SHOW_WRITTEN]), *more]
        )
    return message
