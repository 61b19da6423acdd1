"""User-facing errors.

Anything the user can fix (a wrong name, a missing file, absent data) is raised as a
:class:`ClipevalError`; the command line prints its message without a traceback and exits
with code 2. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

USAGE_EXIT_CODE = 2


class ClipevalError(Exception):
    """A problem with the user's input or environment, explained in the message."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A sentence listing ``choices`` and, when one is close to ``name``, suggesting it."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    shown = ", ".join(choices[:40]) + (f", ... ({len(choices)} in all)" if len(choices) > 40 else "")
    return f"Available: {shown}.{hint}"


class OptionError(ClipevalError):
    """An option of a class built from the configuration (a constructor argument) holds a value it does not take.

    The class raises it knowing the option; :func:`clipeval.config.construct.build` adds whose option it is
    (``dataset 'test' of task 'digits': split='tset' is not allowed: split must be ...``).
    """

    def __init__(self, option: str, value: object, allowed: str):
        self.option, self.value, self.allowed = option, value, allowed
        super().__init__(f"{option}={value!r} is not allowed: {option} must be {allowed}.")
