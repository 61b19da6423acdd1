"""Where clipeval finds its configs and task folders, and where it caches.

conf/ and tasks/ live at the top of the source tree; a built wheel carries them inside the
package as ``clipeval/_bundled/``. Both layouts are found here and nowhere else.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent  # the clipeval package


def _bundled(name: str) -> Path:
    for candidate in (_PACKAGE / "_bundled" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"clipeval installation is incomplete: no '{name}' folder next to {_PACKAGE}")


def conf_dir() -> Path:
    """The Hydra config root (primary config and the model/, runtime/ groups)."""
    return _bundled("conf")


def builtin_tasks_dir() -> Path:
    """The folder of task plugins that ship with clipeval."""
    return _bundled("tasks")


def task_dirs() -> list[Path]:
    """Task folders to search: user folders from ``CLIPEVAL_TASKS`` first, then the built-in ones.

    ``CLIPEVAL_TASKS`` is a list of folders separated by ``os.pathsep``; a user task with the
    same name as a built-in one shadows it.
    """
    extra = [Path(p).expanduser() for p in os.environ.get("CLIPEVAL_TASKS", "").split(os.pathsep) if p]
    for folder in extra:
        if not folder.is_dir() and str(folder) not in _WARNED:
            _WARNED.add(str(folder))
            logging.getLogger(__name__).warning(
                "CLIPEVAL_TASKS names %s, which is not a folder: its tasks are not found.", folder
            )
    return [*extra, builtin_tasks_dir()]


_WARNED: set[str] = set()


def cache_dir(configured: str | os.PathLike | None = None) -> Path:
    """Root of the feature and classifier cache: ``configured`` (the ``cache_dir=`` option) when given,
    else ``CLIPEVAL_CACHE``, else ``~/.cache/clipeval``; absolute, as messages show it."""
    root = configured or os.environ.get("CLIPEVAL_CACHE") or Path.home() / ".cache" / "clipeval"
    return Path(os.path.abspath(Path(root).expanduser()))


def path_argument(text: str) -> Path:
    """A command-line option's file or folder (argparse ``type=``): an empty one is refused, which argparse turns
    into exit 2 naming the option (``argument --out: an empty path``); ``Path("")`` would be the current folder."""
    import argparse

    if not text.strip():
        raise argparse.ArgumentTypeError(f"an empty path ({text!r}): give a file or folder")
    return Path(text)


ASSETS = _PACKAGE / "embedded" / "assets"


def asset(name: str) -> str:
    """Absolute path of a file that ships inside the package (the tiny model's weights, say)."""
    path = ASSETS / name
    if not path.is_file():
        raise FileNotFoundError(f"clipeval installation is incomplete: {path} is missing")
    return str(path)


def register_resolvers() -> None:
    """``${clipeval.asset:NAME}`` in configs: a packaged file, wherever clipeval is installed."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("clipeval.asset"):
        OmegaConf.register_new_resolver("clipeval.asset", asset)
