"""Ctrl-C and SIGTERM: what the process was doing, for the one line the command line prints, and calm unwinding.

A step wraps itself in :func:`during`; a ``KeyboardInterrupt`` raised inside it leaves carrying the
innermost step's description (and what is already safe, e.g. "16 of 42 images are cached"), which
:func:`clipeval.cli.main` prints as ``clipeval: interrupted while <what>; ...`` with exit code 130. Between
steps the line says what finished last (:func:`milestone`: "after the results were written to ..."), and in a
part of a bigger command (a sweep's job, :func:`part`) which part it was and what finished before it.

:func:`calm_signals` handles SIGINT (Ctrl-C) and SIGTERM (``kill``, ``timeout``, CI cancellers, Slurm) alike:
the first raises ``KeyboardInterrupt``, so both unwind through the same code, write what is finished and
leave nothing half-written; the line then says "terminated (SIGTERM)" and the exit code is 143 (128 + 15).
Second and later signals, which users send while the first one unwinds, do nothing for a few seconds:
without that, a press that lands in a ``__del__`` (a DataLoader shutting down its workers) prints
``Exception ignored in ...`` lines. A signal after that grace time ends the process at once, for a clean-up
that hangs. A signal landing inside the standard library's threading, multiprocessing or logging code is
delivered a moment later, once the process is out of it: raised there, it can leave a lock taken
(``multiprocessing.Queue.put``), and the process then hangs at exit. Forked processes (DataLoader workers)
inherit the handler: there it ignores Ctrl-C, which the terminal sends them too, as the main process
stops them itself (:func:`workers_share_temp_dir` says why that matters).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.util
import os
import queue
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

#: 128 + SIGINT, as shells report a command ended by Ctrl-C
INTERRUPTED_EXIT_CODE = 130
#: 128 + SIGTERM, as shells report a command ended by ``kill``
TERMINATED_EXIT_CODE = 143
#: seconds after the first signal during which further ones are ignored
GRACE_SECONDS = 5.0
#: the longest a signal waits for the process to leave the standard library's threading code
DEFER_SECONDS = 1.0
#: the signals that stop a command calmly
SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def during(what: str | Callable[[], str]) -> Iterator[None]:
    """Label a ``KeyboardInterrupt`` raised inside with ``what`` (a string, or a callable evaluated when
    Ctrl-C arrives, to say how far the step got); an inner step's label wins. Once a signal has asked the
    process to stop, an error raised inside is taken for one that the signal caused (a DataLoader worker it
    ended: "worker exited unexpectedly") and leaves as the interrupt."""
    try:
        yield
    except KeyboardInterrupt as exc:
        if exc.args:
            raise
        raise KeyboardInterrupt(what() if callable(what) else what) from None
    except Exception as exc:
        if _active is None or _active.first is None:
            raise
        raise KeyboardInterrupt(what() if callable(what) else what) from exc


@dataclasses.dataclass
class _Story:
    """What the line that ends an interrupted command says besides the innermost step."""

    signum: int | None = None  # the first signal received
    scope: str | None = None  # the part of the command that ran ("in sweep job #1 of 3 (...)")
    before: str | None = None  # what finished before that part
    after: str | None = None  # what the part (or the command) finished last


_story = _Story()


def milestone(what: str) -> None:
    """Note that ``what`` is done and safe ("the results were written to X"): an interrupt outside every
    :func:`during` step from now on (until the next :func:`part`) is said to come after it."""
    _story.after = what


@contextlib.contextmanager
def part(name: str, before: str | None = None) -> Iterator[None]:
    """Within it, the line names the part of the command that runs (``name``, e.g. "in sweep job #1 of 3") and
    what finished before it (``before``). An interrupt keeps both for the line; a part that ends normally
    restores what was there before it."""
    saved = dataclasses.replace(_story)
    _story.scope, _story.before, _story.after = name, before, None
    yield
    _story.scope, _story.before, _story.after = saved.scope, saved.before, saved.after


def stopped(exc: KeyboardInterrupt) -> tuple[str, int]:
    """The one line to print for ``exc``, which ended the command, and the exit code (130, or 143 after SIGTERM)."""
    terminated = _story.signum == signal.SIGTERM
    verb = "terminated (SIGTERM)" if terminated else "interrupted"
    what = f"while {exc}" if str(exc) else f"after {_story.after}" if _story.after else None
    head = " ".join(filter(None, [f"clipeval: {verb}", _story.scope, what]))
    line = "; ".join(filter(None, [head, _story.before, "nothing half-written remains."]))
    return line, TERMINATED_EXIT_CODE if terminated else INTERRUPTED_EXIT_CODE


def workers_share_temp_dir() -> None:
    """Create multiprocessing's temporary folder (``pymp-*``) in this process before it forks DataLoader workers.

    A worker that passes tensors to this process creates that folder for its sockets when it has none, and
    removes it when it exits normally; a worker ended by a signal (SIGTERM from this process after a
    shutdown timeout, or from Slurm or ``kill`` sent to the process group) left it behind. Workers copy this
    process's folder when they start and then use it, and this process removes it when it exits (after
    Ctrl-C or SIGTERM too, which end through the normal exit)."""
    multiprocessing.util.get_temp_dir()


@contextlib.contextmanager
def calm_signals() -> Iterator[None]:
    """Within it, the handling of SIGINT and SIGTERM described in the module docstring. On leaving after one of
    them, both are ignored from then on (Python restores the default handlers while it shuts down, and a signal
    landing then would kill the process with a signal instead of exit code 130 or 143); otherwise the previous
    handlers come back. Main thread only; elsewhere nothing changes, and a signal that is ignored when it
    starts (SIGINT in a background job) stays ignored."""
    global _story, _active
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    handled = [s for s in SIGNALS if previous[s] is not signal.SIG_IGN]
    handler = _active = _Signals()
    _story = _Story()
    unraisable, sys.unraisablehook = sys.unraisablehook, handler.unraisable(sys.unraisablehook)
    for s in handled:
        signal.signal(s, handler)
    try:
        yield
    finally:
        _active = None
        sys.unraisablehook = unraisable
        handler.cancel()
        if handler.first is not None:
            handler.ignore_child_exits()  # a worker ended by the signal may exit after this, as Python shuts down
        for s in handled:
            signal.signal(s, signal.SIG_IGN if handler.first is not None else previous[s])


def _library_files() -> tuple[set[str], tuple[str, ...]]:
    """The standard library's modules (files, and packages' folders) that take a lock, or start a hand-over with
    another process, in one statement and finish it in a later one."""
    files = {os.path.abspath(m.__file__) for m in (threading, queue, tempfile) if m.__file__}
    folders = tuple(
        os.path.dirname(os.path.abspath(m.__file__)) + os.sep for m in (multiprocessing, logging) if m.__file__
    )
    return files, folders


_LIBRARY_FILES, _LIBRARY_FOLDERS = _library_files()


def _inside_library(frame: FrameType | None) -> bool:
    """Whether ``frame`` or a caller runs the code of :func:`_library_files`: raised there, ``KeyboardInterrupt``
    can leave a lock taken (the process hangs at exit) or a DataLoader worker's hand-over cut (it prints a
    traceback)."""
    while frame is not None:
        name = frame.f_code.co_filename
        if name in _LIBRARY_FILES or name.startswith(_LIBRARY_FOLDERS):
            return True
        frame = frame.f_back
    return False


class _Signals:
    """The handler of SIGINT and SIGTERM: the first signal raises ``KeyboardInterrupt`` (a moment later when it
    lands in the standard library's threading code); later ones do nothing while it unwinds (after
    :data:`GRACE_SECONDS`, one ends the process). Python swallows an exception raised in a ``__del__`` or a
    fork hook (printing ``Exception ignored in``): when that befalls the first signal's exception, it is
    delivered again, so a signal is never lost, and nothing is printed. In a forked process, Ctrl-C is ignored
    and SIGTERM does what it would do without a handler."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.first: float | None = None
        self.raised: KeyboardInterrupt | None = None
        self.redelivered = 0
        self.in_hook = False
        self.timers: list[threading.Timer] = []

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self.pid:
            return _in_forked_process(signum)
        if self.raised is None and not self.in_hook:
            now = time.monotonic()
            if self.first is None:
                self.first, _story.signum = now, signum
            self.ignore_child_exits()
            if now - self.first < DEFER_SECONDS and _inside_library(frame):
                self.again(signum)
                return
            self.raised = KeyboardInterrupt()
            raise self.raised
        if time.monotonic() - (self.first or 0.0) > GRACE_SECONDS:
            terminated = _story.signum == signal.SIGTERM
            print(
                f"clipeval: {'terminated' if terminated else 'interrupted'} again; stopping now.",
                file=sys.stderr,
                flush=True,
            )
            os._exit(TERMINATED_EXIT_CODE if terminated else INTERRUPTED_EXIT_CODE)

    def again(self, signum: int) -> None:
        """Send ``signum`` to the main thread again in a moment (a real signal: it wakes a blocking call)."""
        if len(self.timers) < 1000:
            timer = threading.Timer(0.01, signal.pthread_kill, (threading.main_thread().ident, signum))
            timer.daemon = True
            self.timers.append(timer)
            timer.start()

    def ignore_child_exits(self) -> None:
        """Stop torch's SIGCHLD handler while the process stops: a DataLoader worker that the same signal ended
        (SIGTERM sent to the process group) is expected then, and the handler would raise "DataLoader worker is
        killed by signal" in the middle of the clean-up."""
        handler = signal.getsignal(signal.SIGCHLD)
        if callable(handler) and handler is not _child_exited:  # not SIG_DFL: a SIGCHLD already pending then
            signal.signal(signal.SIGCHLD, _child_exited)  # would print "Signal 17 ignored due to race condition"

    def cancel(self) -> None:
        """Cancel the signals still to be sent again."""
        for timer in self.timers:
            timer.cancel()

    def unraisable(self, fallback: Callable) -> Callable:
        def hook(info: object) -> None:
            if getattr(info, "exc_value", None) is None or info.exc_value is not self.raised:  # type: ignore[attr-defined]
                return fallback(info)
            self.in_hook = True  # signals landing here are covered by the one sent below
            try:
                self.raised = None  # swallowed: send it again a moment later (from here it would land in this hook)
                if self.redelivered < 100:
                    self.redelivered += 1
                    self.again(_story.signum or signal.SIGINT)
            finally:
                self.in_hook = False
            return None

        return hook


def _child_exited(signum: int, frame: FrameType | None) -> None:
    """SIGCHLD's handler while the process stops: nothing to do."""


#: the handler of :func:`calm_signals` while it is in force
_active: _Signals | None = None


def _in_forked_process(signum: int) -> None:
    """A forked process (a DataLoader worker) got the signal: the terminal sends Ctrl-C to every process of the
    foreground job, and the main process stops its workers itself, so it is ignored; SIGTERM ends the process as
    it would without this handler."""
    if signum == signal.SIGINT:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
