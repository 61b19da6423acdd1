"""Ctrl-C: what the process was doing, for the one line the command line prints, and calm unwinding.

A step wraps itself in :func:`during`; a ``KeyboardInterrupt`` raised inside it leaves carrying the
innermost step's description (and what is already safe, e.g. "16 of 42 images are cached"), which
:func:`clipeval.cli.main` prints as ``clipeval: interrupted while <what>; ...`` with exit code 130.

:func:`calm_sigint` makes the second and later presses of Ctrl-C, which users send while the first one
unwinds, do nothing for a few seconds: without it a press that lands in a ``__del__`` (a DataLoader
shutting down its workers) prints ``Exception ignored in ...`` lines. A press after that grace time
ends the process at once (exit 130), for a clean-up that hangs.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

#: 128 + SIGINT, as shells report a command ended by Ctrl-C
INTERRUPTED_EXIT_CODE = 130
#: seconds after the first Ctrl-C during which further presses are ignored
GRACE_SECONDS = 5.0


@contextlib.contextmanager
def during(what: str | Callable[[], str]) -> Iterator[None]:
    """Label a ``KeyboardInterrupt`` raised inside with ``what`` (a string, or a callable evaluated when
    Ctrl-C arrives, to say how far the step got); an inner step's label wins."""
    try:
        yield
    except KeyboardInterrupt as exc:
        if exc.args:
            raise
        raise KeyboardInterrupt(what() if callable(what) else what) from None


@contextlib.contextmanager
def calm_sigint() -> Iterator[None]:
    """Within it, the Ctrl-C handling described in the module docstring. On leaving after a Ctrl-C, SIGINT
    is ignored from then on (Python restores the default handler while it shuts down, and a press landing
    then would kill the process with a signal instead of exit code 130); otherwise the previous handler
    comes back. Main thread only; elsewhere, and where SIGINT is ignored (a background job), nothing
    changes."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is signal.SIG_IGN:
        yield
        return
    press = _Presses()
    unraisable, sys.unraisablehook = sys.unraisablehook, press.unraisable(sys.unraisablehook)
    signal.signal(signal.SIGINT, press)
    try:
        yield
    finally:
        sys.unraisablehook = unraisable
        signal.signal(signal.SIGINT, signal.SIG_IGN if press.first else previous)


class _Presses:
    """The SIGINT handler: the first press raises ``KeyboardInterrupt``; later ones do nothing while it
    unwinds (after :data:`GRACE_SECONDS`, one ends the process). Python swallows an exception raised in a
    ``__del__`` or a fork hook (printing ``Exception ignored in``): when that befalls the first press's
    exception, it is delivered again, so a press is never lost, and nothing is printed."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.raised: KeyboardInterrupt | None = None
        self.redelivered = 0
        self.in_hook = False

    def __call__(self, signum: int, frame: object) -> None:
        if self.raised is None and not self.in_hook:
            self.first = self.first or time.monotonic()
            self.raised = KeyboardInterrupt()
            raise self.raised
        if time.monotonic() - (self.first or 0.0) > GRACE_SECONDS:
            print("clipeval: interrupted again; stopping now.", file=sys.stderr, flush=True)
            os._exit(INTERRUPTED_EXIT_CODE)

    def unraisable(self, fallback: Callable) -> Callable:
        def hook(info: object) -> None:
            if getattr(info, "exc_value", None) is None or info.exc_value is not self.raised:  # type: ignore[attr-defined]
                return fallback(info)
            self.in_hook = True  # presses landing here are covered by the one sent below
            try:
                self.raised = None  # swallowed: press again a moment later (from here it would land in this hook)
                if self.redelivered < 100:
                    self.redelivered += 1
                    again = threading.Timer(0.01, _thread.interrupt_main)
                    again.daemon = True
                    again.start()
            finally:
                self.in_hook = False
            return None

        return hook
