"""What a run writes to its log, and how.

- :func:`shown`: the one form a path takes in clipeval's messages, logs and printed lines: absolute
  (a log is read later, from another folder; a relative path would no longer say where).
- :func:`route_library_output`: the libraries' own output goes through logging, once: Python
  warnings (``logging.captureWarnings``: logger ``py.warnings``), transformers' and huggingface_hub's
  loggers (their own stderr handler off, their records passed on to the run's handlers, progress
  bars off), and open_clip's records (it logs on the root logger: they are named ``open_clip`` and a
  message already logged is not logged again).
- :func:`to_log_files`: text that the run prints (its summary tables) also written to the run's log
  files (Hydra's ``clipeval.log``), without printing it twice on the console.

Per-entry details (each cache entry's path, each baseline model's accuracies) are logged at DEBUG;
INFO says what a run does and how big it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

OPEN_CLIP = "open_clip"


def shown(path: str | os.PathLike) -> str:
    """``path`` as messages show it: absolute (``~`` expanded), not resolved through links."""
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


# ---------------------------------------------------------------- third-party output


class _LibraryRecords(logging.Filter):
    """On the root logger: open_clip's records (it calls ``logging.warning`` itself) renamed ``open_clip``, and
    each of its messages passed once per process."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "root" and f"{os.sep}{OPEN_CLIP}{os.sep}" in record.pathname:
            record.name = OPEN_CLIP
            key = (record.levelno, record.getMessage())
            if key in self.seen:
                return False
            self.seen.add(key)
        return True


_FILTER = _LibraryRecords()


def route_library_output() -> None:
    """Route the libraries' warnings and progress output through logging, once (see the module docstring).
    Idempotent; transformers and huggingface_hub are set up now if imported, else by :func:`quiet_transformers`
    when a model adapter imports them."""
    if warnings.showwarning is not getattr(logging, "_showwarning", None):  # not routed, or undone by catch_warnings
        logging.captureWarnings(False)
        logging.captureWarnings(True)
    root = logging.getLogger()
    if _FILTER not in root.filters:
        root.addFilter(_FILTER)
    if "transformers" in sys.modules or "huggingface_hub" in sys.modules:
        quiet_transformers()


def quiet_transformers() -> None:
    """transformers and huggingface_hub: records at WARNING and above go to the run's handlers (their own stderr
    handler removed), progress bars off (a log file cannot hold them; clipeval logs what it loads)."""
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers and open_clip
        pass
    if "transformers" not in sys.modules:
        return
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    hf_logging.disable_progress_bar()


@contextlib.contextmanager
def dropped(match: Callable[[logging.LogRecord], bool]) -> Iterator[None]:
    """Records on the root logger that ``match`` inside the block are dropped (a library's message about
    something clipeval does on purpose, such as building a model skeleton without weights)."""

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not match(record)

    drop = _Drop()
    root = logging.getLogger()
    root.filters.insert(0, drop)  # before the filter that passes a message once: a dropped one is not "seen"
    try:
        yield
    finally:
        root.removeFilter(drop)


# ---------------------------------------------------------------- the run's log files


def log_files() -> list[Path]:
    """The files the root logger writes to (Hydra's ``clipeval.log`` in a run)."""
    return [Path(h.baseFilename) for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def to_log_files(text: str, name: str = "clipeval.summary") -> None:
    """Write ``text`` (printed already) to the root logger's files only, as one INFO record of logger ``name``."""
    record = logging.LogRecord(name, logging.INFO, __file__, 0, "%s", (text,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
