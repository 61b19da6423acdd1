"""Tests never touch the user's files: a sandbox for the whole session, and a guard that fails the suite when
anything is written outside pytest's temporary directories.

The sandbox (set up by ``pytest_configure`` in conftest.py, before any test module is imported, and undone at
the end) is a folder in the session's pytest base temporary directory. Every place clipeval or its libraries
write to by default points into it, for this process and every subprocess a test starts (they inherit the
environment): ``HOME`` and the XDG folders (so ``~/.cache/clipeval``, the pip, torch and matplotlib caches),
``CLIPEVAL_CACHE`` and ``CLIPEVAL_STORE`` (each test gets its own on top: ``isolated_dirs``), the Hugging Face
caches, ``TMPDIR``, and the working directory (so ``outputs/`` of a Hydra run and ``reports/out`` land there).
``CLIPEVAL_TASKS`` is unset, so the user's own task folders do not change what the tests see.

The guard:

- in this process, an audit hook (:func:`sys.addaudithook`) sees every file opened for writing, every folder
  made and every file renamed, copied or removed; one outside the sandbox and pytest's temporary directories
  fails the test that did it, naming the path (``__pycache__`` and pytest's own ``.pytest_cache`` excepted);
- for subprocesses, the repository's files (new, changed or removed; caches of Python, pytest and ruff
  excepted) and the user's clipeval cache and store (new files) are listed when the session starts and
  compared when it ends: any difference fails the session, listing the files.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: folders of the repository the guard does not list: version control, virtual environments, tools' caches
SKIPPED_DIRS = {".git", ".venv", ".ci-venv", ".nox", "__pycache__", ".ruff_cache"}

#: environment variable -> its place in the sandbox
SANDBOXED = {
    "HOME": "home",
    "XDG_CACHE_HOME": "home/.cache",
    "XDG_CONFIG_HOME": "home/.config",
    "XDG_DATA_HOME": "home/.local/share",
    "CLIPEVAL_CACHE": "clipeval-cache",
    "CLIPEVAL_STORE": "clipeval-store",
    "HF_HOME": "home/.cache/huggingface",
    "TORCH_HOME": "home/.cache/torch",
    "MPLCONFIGDIR": "home/.config/matplotlib",
    "PIP_CACHE_DIR": "home/.cache/pip",
    "TMPDIR": "tmp",
}
#: unset: the user's task folders, and cache locations that would take precedence over HF_HOME
UNSET = ("CLIPEVAL_TASKS", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE", "TRANSFORMERS_CACHE",
         "HF_ASSETS_CACHE", "HF_XET_CACHE")  # fmt: skip

#: audit events that write or remove a path -> the index of that path in the event's arguments, and of the
#: folder descriptor it is relative to (dir_fd; None: it has none)
WRITE_EVENTS = {
    "os.mkdir": (0, 2),
    "os.rename": (1, 3),  # os.replace too
    "os.remove": (0, 1),
    "os.rmdir": (0, 1),
    "os.symlink": (1, 2),
    "os.link": (1, 3),
    "os.truncate": (0, None),
    "shutil.copyfile": (1, None),
    "shutil.copytree": (1, None),
    "shutil.rmtree": (0, 1),
}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def user_places() -> list[Path]:
    """The user's clipeval cache and store as they are outside the tests (before the sandbox is set up)."""
    places = [Path(os.environ.get("CLIPEVAL_CACHE") or Path.home() / ".cache" / "clipeval").expanduser()]
    if os.environ.get("CLIPEVAL_STORE"):
        places.append(Path(os.environ["CLIPEVAL_STORE"]).expanduser())
    return [p.absolute() for p in places]


def listing(root: Path, skip: set[str] = frozenset()) -> dict[str, int]:
    """{file: mtime_ns} of every file under ``root`` (none when it does not exist), not descending into ``skip``."""
    out: dict[str, int] = {}
    stack = [root]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.name not in skip:
                    stack.append(Path(entry.path))
            else:
                with contextlib.suppress(OSError):
                    out[entry.path] = entry.stat(follow_symlinks=False).st_mtime_ns
    return out


@dataclass
class Guard:
    """The session's sandbox, what was there before it, and what tests wrote outside it."""

    sandbox: Path
    allowed: tuple[str, ...]
    saved_env: dict[str, str | None]
    saved_tempdir: str | None
    repo_before: dict[str, int]
    user_before: dict[Path, dict[str, int]]
    active: bool = True
    current: str = "(outside any test: collection or a session fixture)"
    writes: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def start(cls, basetemp: Path) -> Guard:
        sandbox = basetemp / "sandbox"
        saved_env = {name: os.environ.get(name) for name in [*SANDBOXED, *UNSET]}
        user_before = {place: listing(place) for place in user_places()}
        repo_before = listing(REPO, SKIPPED_DIRS)
        for name, place in SANDBOXED.items():
            (sandbox / place).mkdir(parents=True, exist_ok=True)
            os.environ[name] = str(sandbox / place)
        for name in UNSET:
            os.environ.pop(name, None)
        saved_tempdir, tempfile.tempdir = tempfile.tempdir, str(sandbox / "tmp")
        roots = {str(basetemp.resolve()), str(basetemp.absolute())}
        allowed = (*(r + os.sep for r in roots), "/dev/", str(REPO / ".pytest_cache") + os.sep)
        guard = cls(sandbox, allowed, saved_env, saved_tempdir, repo_before, user_before)
        sys.addaudithook(guard.audit)
        return guard

    def stop(self) -> None:
        self.active = False
        tempfile.tempdir = self.saved_tempdir
        for name, value in self.saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    # ------------------------------------------------------------ in this process

    def audit(self, event: str, args: tuple) -> None:
        if not self.active:
            return
        if event == "open":
            path, mode, flags = args
            if path is None or isinstance(path, int):
                return
            if mode is not None:
                if not any(c in mode for c in "wax+"):
                    return
            elif not (flags or 0) & WRITE_FLAGS:
                return
            dir_fd = None
        elif event in WRITE_EVENTS:
            at, fd_at = WRITE_EVENTS[event]
            path = args[at]
            dir_fd = args[fd_at] if fd_at is not None and fd_at < len(args) else None
            if path is None or isinstance(path, int):
                return
        else:
            return
        self.check(path, event, dir_fd)

    def check(self, path, event: str, dir_fd: int | None = None) -> None:
        try:
            text = os.fsdecode(path)
        except (TypeError, ValueError):
            return
        if isinstance(dir_fd, int) and dir_fd >= 0 and not os.path.isabs(text):  # relative to an open folder
            try:
                text = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), text)  # (neither is audited)
            except OSError:
                return
        text = os.path.abspath(text)
        if text.startswith(self.allowed) or f"{os.sep}__pycache__{os.sep}" in text:
            return
        if os.path.realpath(text).startswith(self.allowed):
            return
        self.writes.setdefault(self.current, []).append(f"{event} {text}")

    def take(self, test: str) -> list[str]:
        return self.writes.pop(test, [])

    # ------------------------------------------------------------ subprocesses: the session's net effect

    def leftovers(self) -> list[str]:
        """What the session created, changed or removed in the repository, and created in the user's cache and store."""
        out = []
        after = listing(REPO, SKIPPED_DIRS)
        for path in sorted(after.keys() - self.repo_before.keys()):
            out.append(f"new file in the repository: {path}")
        for path in sorted(p for p in after.keys() & self.repo_before.keys() if after[p] != self.repo_before[p]):
            out.append(f"changed file in the repository: {path}")
        for path in sorted(self.repo_before.keys() - after.keys()):
            out.append(f"removed file from the repository: {path}")
        for place, before in self.user_before.items():
            for path in sorted(listing(place).keys() - before.keys()):
                out.append(f"new file in the user's {place}: {path}")
        return out
