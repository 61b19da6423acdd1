"""Progress of long steps: a bar on a terminal, periodic log lines everywhere else.

With ``runtime.progress`` on and stderr a terminal, tqdm draws its bar there, and the same lines
as below go to the run's log files only (:class:`TerminalProgress`): a log read later says how
the step went even though the bar was on a screen. Otherwise (stderr piped or redirected to a file,
a job scheduler's log, ``runtime.progress=false``) no bar can be seen, and a sweep job that runs beside
others (a parallel launcher, :func:`clipeval.sweep.beside_other_jobs`) would draw its bar over theirs,
so the tqdm object writes log lines instead (:class:`LogProgress`): one at most every ``runtime.log_every`` seconds with what is
done of the total, the rate and the time left, and one when the step ends. They go through the
caller's logger, so they reach ``clipeval.log`` and stderr like every other line. A step shorter
than ``log_every`` writes none: the lines that say when it starts and what it did suffice.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from tqdm.auto import tqdm as terminal_tqdm
from tqdm.std import tqdm

from clipeval.logs import to_log_files
from clipeval.sweep import beside_other_jobs


def progress(total: int | None, desc: str, unit: str, runtime: Any, logger: logging.Logger) -> tqdm:
    """A progress counter of ``total`` ``unit``\\ s (None: unknown); call ``update(n)``, and close it (``with``).

    ``runtime``: anything with ``progress`` (bool) and ``log_every`` (seconds), as
    :class:`clipeval.config.runtime.Runtime`.
    """
    if runtime.progress and _is_terminal(sys.stderr) and not beside_other_jobs():  # a parallel sweep shares the console
        return TerminalProgress(total=total, desc=desc, unit=unit, logger=logger, every=float(runtime.log_every))
    return LogProgress(total=total, desc=desc, unit=unit, logger=logger, every=float(runtime.log_every))


class LogProgress(tqdm):
    """tqdm that logs a line where it would redraw its bar, at most every ``every`` seconds and at the end.

    tqdm's own ``mininterval`` and ``delay`` decide when (so the first line comes after ``every``
    seconds, and a step that ends sooner logs nothing); the line is made from tqdm's counters:
    ``encode images: 1,280/30,000 images (4%), 21.3 images/s, 01:00 elapsed, 22:27 left``. The
    rate is the average since the start (``smoothing=0``), which is what an ETA in a log needs.
    """

    def __init__(self, *, total: int | None, desc: str, unit: str, logger: logging.Logger, every: float):
        self._logger, self._logged = logger, 0
        super().__init__(
            total=total,
            desc=desc,
            unit=unit,
            file=_Discard(),
            mininterval=every,
            maxinterval=max(every, 10.0),
            miniters=1,
            delay=every,
            smoothing=0,
            disable=False,
            leave=True,
        )

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg is None and self.n != self._logged:  # a redraw with news (msg='' clears a bar: not in a log)
            self._logger.info(progress_line(self.format_dict))
            self._logged = self.n
        return True


class TerminalProgress(terminal_tqdm):
    """tqdm's bar on the terminal, and a :func:`progress_line` in the run's log files (not on the terminal, where
    the bar is) at most every ``every`` seconds, plus one when the step ends if any was written before it."""

    def __init__(self, *, total: int | None, desc: str, unit: str, logger: logging.Logger, every: float):
        self._logger_name, self._every = logger.name, every
        self._logged_at: float | None = None
        self._logged_n = 0
        self._started = time.monotonic()
        super().__init__(total=total, desc=desc, unit=unit)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool | None:
        shown = super().display(msg, pos)
        if msg is None and time.monotonic() - (self._logged_at or self._started) >= self._every:
            self._to_log_files()
        return shown

    def close(self) -> None:
        was_logged = self._logged_at is not None and not self.disable
        super().close()
        if was_logged:  # the end of a step whose progress was logged
            self._to_log_files()

    def _to_log_files(self) -> None:
        if self.n != self._logged_n:  # news only
            to_log_files(progress_line(self.format_dict), name=self._logger_name)
            self._logged_at, self._logged_n = time.monotonic(), self.n


def progress_line(meter: dict[str, Any]) -> str:
    """``desc: n/total unit (p%), rate unit/s, elapsed, left`` from tqdm's ``format_dict``."""
    n, total, elapsed, unit = meter["n"], meter["total"], meter["elapsed"], meter["unit"]
    units = unit + ("es" if unit.endswith(("s", "x", "ch", "sh")) else "s")  # images, prompts, batches
    done = f"{n:,}/{total:,} {units} ({100 * n / total:.0f}%)" if total else f"{n:,} {units}"
    parts = [f"{meter['prefix']}: {done}"]
    rate = n / elapsed if elapsed > 0 else None
    if rate:
        parts.append(f"{rate:,.1f} {units}/s")
    parts.append(f"{tqdm.format_interval(elapsed)} elapsed")
    if total and rate and n < total:
        parts.append(f"{tqdm.format_interval((total - n) / rate)} left")
    return ", ".join(parts)


class _Discard:
    """Where tqdm writes its carriage returns and newlines once its lines go to a logger."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
