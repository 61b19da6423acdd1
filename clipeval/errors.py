"""User-facing errors.

Anything the user can fix (a wrong name, a missing file, absent data) is raised as a
:class:`ClipevalError`; the command line prints its message without a traceback and exits
with code 2. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

USAGE_EXIT_CODE = 2

#: the most characters of a value (or of a file's content) a message quotes
QUOTED_CHARACTERS = 80


class ClipevalError(Exception):
    """A problem with the user's input or environment, explained in the message."""


class PartialRecords(ClipevalError):
    """An evaluator failed after finishing some of its records (``records``): the run writes those with the
    failure, so that one bad record never loses the others (clipeval.run.context)."""

    def __init__(self, message: str, records: list) -> None:
        super().__init__(message)
        self.records = list(records)


def nearest(name: str, choices: Iterable[str]) -> str | None:
    """The choice ``name`` most likely means: the same name in other case (``RENDITIONS`` for ``renditions``), else
    the closest by spelling, case ignored; None when none is close."""
    choices = sorted(set(map(str, choices)))
    folded = {c.casefold(): c for c in reversed(choices)}
    if name.casefold() in folded:
        return folded[name.casefold()]
    typed = name.casefold()

    def likeness(choice: str) -> tuple[float, float]:  # a typo in the start of a longer name counts: bacth, batch_size
        whole = difflib.SequenceMatcher(None, typed, choice).ratio()
        head = difflib.SequenceMatcher(None, typed, choice[: len(typed)]).ratio() if len(typed) >= 4 else 0.0
        return max(whole, head), whole  # on a tie, the whole name that is closer (digitz: digits, not digits_sketch)

    best = max(sorted(folded), key=likeness, default=None)
    return folded[best] if best is not None and likeness(best)[0] >= 0.5 else None


#: a list of choices longer than this many characters has the suggestion before it, where it is seen
_LONG_LIST = 160


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A sentence listing ``choices`` and, when one is close to ``name`` (:func:`nearest`), suggesting it; before
    a long list, so that it is not lost at the end of one."""
    choices = sorted(set(map(str, choices)))
    close = nearest(str(name), choices)
    hint = f"Did you mean '{close}'?" if close else ""
    shown = ", ".join(choices[:40]) + (f", ... ({len(choices)} in all)" if len(choices) > 40 else "")
    if hint and len(shown) > _LONG_LIST:
        return f"{hint} Available: {shown}."
    return f"Available: {shown}." + (f" {hint}" if hint else "")


def quoted(value: Any, limit: int = QUOTED_CHARACTERS, as_json: bool = True) -> str:
    """``value`` as a message quotes it: as JSON writes it (``null``, ``true``, ``"x"``, ``[0.1, 0.2]``) when it
    is JSON data (the content of a JSON file), else (or with ``as_json=False``: a value of the configuration, as
    its messages show them, ``'tset'``) its repr; never longer than ``limit`` characters (cut, saying how much
    more there is), and with control characters and undecodable bytes escaped, so that a message never carries a
    file's raw bytes."""
    text = None
    if as_json:
        with contextlib.suppress(TypeError, ValueError):  # not JSON data: its repr
            text = json.dumps(value, ensure_ascii=False, allow_nan=True)
    return cut(repr(value) if text is None else text, limit)


def cut(text: str, limit: int = 200) -> str:
    """``text`` (a path, a file's line) as a message shows it: control characters and undecodable bytes escaped,
    and no longer than ``limit`` characters, cut in the middle (a path's start and its file name stay), saying
    how many characters are left out."""
    text = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    if len(text) <= limit:
        return text
    left = f"... ({len(text) - limit + 40} characters left out) ..."
    head = (limit - 40) * 2 // 3
    return text[:head] + left + text[len(text) - (limit - 40 - head) :]


def kind_of(value: Any) -> str:
    """What JSON or YAML value ``value`` is, in words: ``null``, ``true or false``, ``a number``, ``a string``,
    ``a list``, ``an object``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number" if not isinstance(value, float) or math.isfinite(value) else "a number that is not finite"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


def within(where: str, message: Any) -> str:
    """``<where>: <message>``, where ``message`` (an error's text) no longer starts with the file ``where`` names
    first: a message nested in another names each file once (``x.json: records[0] (...): Metric 'top7' ...``,
    not ``x.json: records[0] (...): x.json: Metric 'top7' ...``)."""
    return f"{where}: {without_file(str(message), where.split(': ', 1)[0])}"


def without_file(message: str, file: str) -> str:
    """``message`` without a leading ``<file>: `` (or ``<file> is`` as ``it is``), when it starts with ``file``."""
    if file and message.startswith(f"{file}: "):
        return message[len(file) + 2 :]
    if file and message.startswith(f"{file} "):
        return "it " + message[len(file) + 1 :]
    return message


class OptionError(ClipevalError):
    """An option of a class built from the configuration (a constructor argument) holds a value it does not take.

    The class raises it knowing the option; :func:`clipeval.config.construct.build` adds whose option it is
    (``dataset 'test' of task 'digits': split='tset' is not allowed: split must be ...``).
    """

    def __init__(self, option: str, value: object, allowed: str):
        self.option, self.value, self.allowed = option, value, allowed
        given = "null" if value is None else quoted(value, as_json=False)  # as the configuration writes it
        super().__init__(f"{option}={given} is not allowed: {option} must be {allowed}.")


#: the most characters of one line of a message the command line prints
LINE_CHARACTERS = 2000


def printable(message: str, limit: int = LINE_CHARACTERS) -> str:
    """``message`` as the command line prints it: control characters (but newlines and tabs) escaped, and each line
    cut after ``limit`` characters, saying how much more there is: the last guard against a message that quotes a
    whole file or a huge value (each message quotes values through :func:`quoted`)."""
    lines = []
    for line in str(message).split("\n"):
        line = "".join(c if c.isprintable() or c == "\t" else c.encode("unicode_escape").decode("ascii") for c in line)
        lines.append(line if len(line) <= limit else f"{line[:limit]}... ({len(line) - limit} characters more)")
    return "\n".join(lines)
