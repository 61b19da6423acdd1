"""A content-addressed store of tensors on disk (image features, text classifiers), and file digests.

Entries are named by the sha256 of everything that determines their content, so a change to
any input is a different name and can never be served stale. Writes go to a temporary file
that is renamed into place (:mod:`clipeval.atomic`), so a killed run leaves no entry that later reads as valid.
Every entry also carries a sha256 of its own content (tensors' dtypes, shapes and bytes, and
every other value), checked on load: a damaged entry is a warning and a miss, never a hit.

The cache is an optimisation: a cache folder that cannot be written (read-only, full, a file where the
folder should be) is one warning naming the folder and the error, and the run goes on without writing to it.
Every part of a run that caches (features, their chunks, text classifiers, model cards, file digests, locks,
the digits zoo's baselines) uses the run's one :class:`TensorCache` (:func:`use_cache`, :func:`open_cache`),
so that warning comes once per run whichever part finds the problem first. While one
run computes an entry, it holds the entry's file lock (:meth:`TensorCache.lock`, ``filelock``):
a second run that needs the same entry waits for it and then reads it instead of computing it
again. The operating system releases the lock of a run that dies, so a crashed run never
blocks the next one.

Data and checkpoints enter keys through :class:`FileDigests`: the sha256 of each file's bytes,
memoised by the file's stat signature (size, mtime_ns, ctime_ns, inode, device), as build tools
do: every run stats every file, and only a file whose signature is new is read and hashed.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import torch

from clipeval.atomic import atomic_write
from clipeval.errors import ClipevalError
from clipeval.interrupt import during
from clipeval.logs import shown

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: entries carry a checksum of their content


def cache_key(**parts: Any) -> str:
    payload = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def entry_checksum(entry: dict[str, Any]) -> str:
    """sha256 over a cache entry: dict keys, list items, tensors' dtype, shape and bytes, and JSON of the rest."""
    digest = hashlib.sha256()
    _feed(digest, entry)
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        flat = value.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"T{flat.dtype}{tuple(value.shape)}|".encode())
        if flat.numel():
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}|".encode())
        for k in sorted(value, key=str):
            _feed(digest, str(k))
            _feed(digest, value[k])
    elif isinstance(value, list | tuple):
        digest.update(f"L{len(value)}|".encode())
        for item in value:
            _feed(digest, item)
    else:
        text = json.dumps(value)  # str, int, float, bool, None; anything else is a bug here
        digest.update(f"V{len(text)}|{text}".encode())


class TensorCache:
    def __init__(self, root: Path, enabled: bool = True, writes: Collection[str] | None = None):
        """``writes``: the only kinds this process saves (and locks), None for all; with a list, the file-digest
        memo is read but not written either. Under torchrun the ranks other than 0 save only their chunks of
        image features; rank 0 saves the rest (clipeval.distributed)."""
        self.root = Path(shown(root))  # messages show it absolute
        self.enabled = enabled
        self.writes = None if writes is None else frozenset(writes)
        #: entries read and written by kind, for the run's one summary line (each entry's path is at DEBUG)
        self.read: collections.Counter[str] = collections.Counter()
        self.written: collections.Counter[str] = collections.Counter()
        #: False once a write has failed (read-only or full folder): the run goes on without writing
        self.writable = enabled
        #: file digests, memoised in this cache (enabled) or not kept beyond the process (disabled)
        self.digests = FileDigests(self.root / "file_digests" if enabled else None, on_write_error=self.write_failed)
        self.digests.writable = self.digests.writable and writes is None
        blocker = _file_in_the_way(self.root) if enabled else None
        if blocker is not None:  # nothing can be read from it nor written to it: say so now, once
            self.write_failed(NotADirectoryError(errno.ENOTDIR, f"{blocker} is a file, not a folder"))

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / f"{key}.pt"

    def stamp(self, kind: str, key: str) -> tuple[int, int] | None:
        """(inode, mtime_ns) of the entry's file, None when there is none: changes whenever the entry is written."""
        try:
            st = self.path(kind, key).stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns

    def lock_path(self, kind: str, key: str) -> Path:
        return self.root / "locks" / kind / f"{key}.lock"

    def write_failed(self, exc: OSError) -> None:
        """Stop writing to this cache, with one warning naming the folder and the error (the run goes on)."""
        if not self.writable:
            return
        self.writable = False
        self.digests.writable = False
        log.warning(
            "Cannot write to the cache folder %s (%s). The run goes on without saving to the cache: its results "
            "are the same, but the next run computes again what this one computes. Free space or fix its "
            "permissions, or set cache_dir= to a writable folder (runtime.cache=false turns the cache off).",
            self.root,
            exc,
        )

    def load(self, kind: str, key: str) -> dict[str, Any] | None:
        """The entry saved under ``key``, or None when absent, unreadable, misnamed or damaged (logged)."""
        if not self.enabled:
            return None
        path = self.path(kind, key)
        try:
            if not path.is_file():
                return None
        except OSError as exc:  # a folder on the way that cannot be read
            log.warning("Ignoring unreadable cache entry %s (%s); recomputing it", path, exc)
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unreadable entry (disk trouble, foreign file): recompute
            log.warning("Ignoring unreadable cache entry %s (%s); recomputing it", path, exc)
            return None
        if not isinstance(entry, dict) or entry.get("key") != key:
            log.warning("Ignoring cache entry %s: it does not hold what its name says; recomputing it", path)
            return None
        stored = entry.pop("checksum", None)
        try:
            actual = entry_checksum(entry)
        except (TypeError, ValueError, RuntimeError) as exc:
            actual = f"not computable ({exc})"
        if stored != actual:
            log.warning(
                "Ignoring damaged cache entry %s: its content does not match its checksum; recomputing it", path
            )
            return None
        self.read[kind] += 1
        log.debug("Read cache entry %s", path)
        return entry

    def save(self, kind: str, key: str, entry: dict[str, Any]) -> Path | None:
        """Write ``entry`` atomically; None when the cache is off or cannot be written (warned once)."""
        if not self.enabled or not self.writable or not self._saves(kind):
            return None
        entry = {**entry, "key": key}
        entry["checksum"] = entry_checksum(entry)
        try:
            path = atomic_write(self.path(kind, key), lambda f: _torch_save(entry, f))
        except OSError as exc:
            self.write_failed(exc)
            return None
        self.written[kind] += 1
        log.debug("Wrote cache entry %s", path)
        return path

    def _saves(self, kind: str) -> bool:
        return self.writes is None or kind in self.writes

    def summary(self) -> str:
        """One line: the folder, and the entries read and written by kind."""
        if not self.enabled:
            return "Cache off (runtime.cache=false): nothing read or written"

        def counts(c: collections.Counter[str], what: str) -> str:
            kinds = f" ({', '.join(f'{k} {n}' for k, n in sorted(c.items()))})" if c else ""
            return f"{sum(c.values())} {what}{kinds}"

        return f"Cache {self.root}: {counts(self.read, 'entries read')}, {counts(self.written, 'written')}"

    def remove(self, kind: str, key: str) -> bool:
        """Delete an entry, also once the cache could not be written (a full disk still deletes); whether it was
        there and is gone (an entry that is not there, or a folder that cannot be written, is no error)."""
        if not self.enabled:
            return False
        try:
            self.path(kind, key).unlink()
        except OSError:
            return False
        return True

    @contextlib.contextmanager
    def lock(self, kind: str, key: str, what: str) -> Iterator[bool]:
        """Hold the lock of entry ``key`` while the caller computes it; yields whether it had to wait.

        A run that finds the lock held waits (logging every :data:`LOCK_LOG_SECONDS`) until the holder
        finishes or dies, and should then look in the cache again (also when :meth:`stamp` changed since
        it last looked): the holder has usually saved the entry. Without a usable lock (cache off or not
        writable) the caller goes on alone.
        """
        from filelock import FileLock, Timeout

        held = None
        waited = False
        if self.enabled and self.writable and self._saves(kind):
            path = self.lock_path(kind, key)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                held = FileLock(str(path))
                try:
                    held.acquire(timeout=0)
                except Timeout:
                    waited = True
                    log.info("Another run is computing %s (it holds %s); waiting for it to finish", what, path)
                    start = time.monotonic()
                    with during(f"waiting for another run that is computing {what}"):
                        while True:
                            try:
                                held.acquire(timeout=LOCK_LOG_SECONDS)
                                break
                            except Timeout:
                                log.info(
                                    "Still waiting (%.0f s) for the run that holds %s", time.monotonic() - start, path
                                )
            except OSError as exc:
                self.write_failed(exc)
                held = None
            except NotImplementedError as exc:  # filelock on a file system without flock
                log.warning("No file locks in %s (%s): concurrent runs may both compute %s", path.parent, exc, what)
                held = None
        try:
            yield waited
        finally:
            if held is not None:
                held.release()


#: how often a run waiting for another run's entry says that it still waits
LOCK_LOG_SECONDS = 60.0


def _file_in_the_way(root: Path) -> Path | None:
    """The file at ``root``, or at the nearest of its ancestors that exists, when that is not a folder."""
    for path in (root, *root.parents):
        try:
            if path.exists():
                return None if path.is_dir() else path
        except OSError:
            return None
    return None


_caches: list[TensorCache] = []


@contextlib.contextmanager
def use_cache(cache: TensorCache) -> Iterator[TensorCache]:
    """Make ``cache`` the run's cache: what :func:`open_cache` gives for its folder, and whose file digests
    data sources key their files with (:func:`use_file_digests`)."""
    _caches.append(cache)
    try:
        with use_file_digests(cache.digests):
            yield cache
    finally:
        _caches.remove(cache)


def run_cache() -> TensorCache | None:
    """The run's cache (:func:`use_cache`), None outside a run."""
    return _caches[-1] if _caches else None


def open_cache(root: Path | str, enabled: bool = True) -> TensorCache:
    """The cache in folder ``root``: the run's own (:func:`use_cache`) when it is that folder and on the same
    terms, so that a folder that cannot be written is one warning per run; a new one otherwise."""
    root = Path(root).expanduser()
    for cache in reversed(_caches):
        if cache.enabled == enabled and cache.root.absolute() == root.absolute():
            return cache
    return TensorCache(root, enabled)


class _WriteErrors:
    """A file for ``torch.save`` that keeps the OSError of a failed write: torch turns it into a RuntimeError."""

    def __init__(self, file: BinaryIO):
        self.file, self.error = file, None

    def write(self, data: Any) -> int:
        try:
            return self.file.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.file.flush()


def _torch_save(entry: dict[str, Any], file: BinaryIO) -> None:
    tracked = _WriteErrors(file)
    try:
        torch.save(entry, tracked)
    except RuntimeError:
        if tracked.error is not None:
            raise tracked.error from None
        raise


# --- file digests -------------------------------------------------------------------------------

#: A file is memoised only once its ctime is this much older than the hash: a rewrite within the
#: same timestamp tick (1-10 ms on Linux) keeps size, mtime, ctime and inode ("racy git"). Any write,
#: and any change of mtime, sets ctime to the clock's time; nothing but the clock sets it back.
RACY_NS = 2_000_000_000
MEMO_VERSION = 1
HASH_THREADS = 4
#: hashing this many files or bytes is a long step, said at INFO before it starts (fewer: DEBUG)
HASH_LOG_FILES, HASH_LOG_BYTES = 1000, 500_000_000
_READ_TRIES = 3

Signature = tuple[int, int, int, int, int]  # size, mtime_ns, ctime_ns, inode, device


def signature(path: str | os.PathLike) -> Signature:
    """What identifies a file's version without reading it; follows symlinks. Raises OSError."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev


def _stat_or_error(path: str) -> Signature | str:
    try:
        return signature(path)
    except OSError as exc:
        return f"unreadable:{type(exc).__name__}"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks (hashlib releases the GIL on each)."""
    digest, buffer = hashlib.sha256(), bytearray(chunk)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


class FileDigests:
    """sha256 of files' bytes, memoised on disk by stat signature; with ``root=None``, file identities.

    ``digests(files)`` stats every file; a file whose (path, size, mtime_ns, ctime_ns, inode,
    device) is in the memo gets the memoised digest, any other is read and hashed. ``cp -p``,
    ``rsync -t`` and same-size rewrites change ctime or inode, so they are hashed again; a copied
    folder is hashed once and gives the same digests. Files changed within :data:`RACY_NS` of
    their hash are not memoised (hashed again next time).

    The memo is one JSON file per folder of files asked together, with a sha256 of its payload
    checked on load (a damaged memo is a warning and is rebuilt), written atomically under a
    lock and merged with what concurrent runs wrote; a lost record only costs a second hash.

    Without a root (the cache is off), nothing outlives the process, so a file is identified by
    its path and signature (``stat:...``) instead of being read: such keys are never stored.
    """

    def __init__(self, root: Path | None, on_write_error: Callable[[OSError], None] | None = None):
        self.root = Path(root).expanduser() if root is not None else None
        self.hashed = 0  # files read and hashed by this object (for tests and benchmarks)
        #: called when the memo cannot be written (read-only or full folder); by default one warning
        self.on_write_error = on_write_error or self._warn_once
        self.writable = True  # False once a memo could not be written: not tried again

    def digests(self, files: Sequence[str | os.PathLike]) -> list[str]:
        """One digest per file, in order. A file that cannot be read gets ``unreadable:<error>`` (never
        memoised), so the key still follows it and its reader reports it. Raises ClipevalError when a file
        keeps changing while it is read."""
        paths = [f if os.path.isabs(f) else os.path.abspath(f) for f in map(os.fspath, files)]
        if not paths:
            return []
        sigs = {p: _stat_or_error(p) for p in paths}
        if self.root is None:
            return [f"stat:{p}:{':'.join(map(str, sigs[p]))}" for p in paths]
        memo_path = self._memo_path(paths)
        memo = self._read_memo(memo_path)
        found = {p: s for p, s in sigs.items() if isinstance(s, str)}  # the unreadable ones
        todo = []
        for p, s in sigs.items():
            record = memo.get(p)
            if p in found:
                continue
            if record is not None and tuple(record[:5]) == s:
                found[p] = record[5]
            else:
                todo.append(p)
        if todo:
            size = sum(sigs[p][0] for p in todo)  # type: ignore[index]  # todo holds the readable ones
            log.log(
                logging.INFO if len(todo) >= HASH_LOG_FILES or size >= HASH_LOG_BYTES else logging.DEBUG,
                "Reading %d files (%.1f MB) under %s to key them for the cache (once: later runs reuse the digests "
                "of files that have not changed)",
                len(todo),
                size / 1e6,
                os.path.commonpath(todo) if len(todo) > 1 else todo[0],
            )
            fresh = self._hash_all(todo)
            found.update({p: d for p, (_, d) in fresh.items()})
            now = time.time_ns()
            settled = {  # s[2]: ctime_ns
                p: [*s, d] for p, (s, d) in fresh.items() if now - s[2] > RACY_NS and not d.startswith("unreadable:")
            }
            if settled and self.writable:
                self._write_memo(memo_path, settled)
        return [found[p] for p in paths]

    def digest(self, path: str | os.PathLike) -> str:
        return self.digests([path])[0]

    def _hash_all(self, paths: list[str]) -> dict[str, tuple[Signature, str]]:
        with ThreadPoolExecutor(max_workers=min(HASH_THREADS, len(paths))) as pool:
            hashed = dict(zip(paths, pool.map(self._hash_one, paths), strict=True))
        self.hashed += len(paths)
        return hashed

    @staticmethod
    def _hash_one(path: str) -> tuple[Signature, str]:
        """(signature, sha256) read while the signature held still before and after."""
        before = _stat_or_error(path)
        for _ in range(_READ_TRIES):
            if isinstance(before, str):
                return (0, 0, 0, 0, 0), before
            try:
                digest = sha256_file(path)
            except OSError as exc:
                digest = f"unreadable:{type(exc).__name__}"
            after = _stat_or_error(path)
            if after == before:
                return before, digest
            before = after
        raise ClipevalError(f"{path} kept changing while it was read; wait for whatever writes it to finish.")

    def _memo_path(self, paths: list[str]) -> Path:
        folder = os.path.commonpath(list({os.path.dirname(p) for p in paths}))
        name = hashlib.sha256(folder.encode()).hexdigest()
        return self.root / name[:2] / f"{name}.json"  # type: ignore[operator]

    @staticmethod
    def _read_memo(path: Path) -> dict[str, list]:
        try:
            text = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):  # no memo (a file where a folder should be: no cache)
            return {}
        except OSError as exc:
            log.warning("Ignoring unreadable file-digest memo %s (%s)", path, exc)
            return {}
        checksum, _, payload = text.partition(b"\n")
        try:
            if hashlib.sha256(payload).hexdigest().encode() != checksum:
                raise ValueError("checksum mismatch")
            data = json.loads(payload)
            if data.get("version") != MEMO_VERSION:
                return {}
            records = data["records"]
            if not all(isinstance(r, list) and len(r) == 6 for r in records.values()):
                raise ValueError("malformed record")
            return records
        except (ValueError, KeyError, AttributeError, TypeError) as exc:
            log.warning("Ignoring damaged file-digest memo %s (%s); files are hashed again", path, exc)
            return {}

    def _write_memo(self, path: Path, records: dict[str, list]) -> None:
        from filelock import FileLock, Timeout

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(path) + ".lock", timeout=30):
                merged = {**self._read_memo(path), **records}  # what concurrent runs memoised stays
                payload = json.dumps({"version": MEMO_VERSION, "records": merged}, sort_keys=True).encode()
                blob = hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload
                atomic_write(path, lambda f: f.write(blob))
        except Timeout:
            log.warning("File-digest memo %s is locked by another run; not memoising this time", path)
        except OSError as exc:  # read-only or full: the digests are right, only not remembered
            self.writable = False
            self.on_write_error(exc)

    def _warn_once(self, exc: OSError) -> None:
        log.warning("Cannot write the file-digest memo in %s (%s); files are hashed again next time", self.root, exc)


_active: list[FileDigests] = []


def file_digests() -> FileDigests:
    """The memo in use: the run's cache's (:func:`use_file_digests`), else the default cache folder's."""
    if _active:
        return _active[-1]
    from clipeval.config.paths import cache_dir

    return FileDigests(cache_dir() / "file_digests")


@contextlib.contextmanager
def use_file_digests(digests: FileDigests) -> Iterator[FileDigests]:
    """Make ``digests`` the memo that data sources built inside the block key their files with."""
    _active.append(digests)
    try:
        yield digests
    finally:
        _active.remove(digests)
