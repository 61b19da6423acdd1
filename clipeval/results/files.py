"""Reading the text and JSON files that ``check`` and ``report`` take, with one wording for each way they fail.

A file that is absent, a folder, not UTF-8 text (binary or compressed), empty, JSON that ends
early (truncated) or JSON that is otherwise malformed is a :class:`~clipeval.errors.ClipevalError`
(exit 2) naming the file. Every JSON file kind read by check and report goes through
:func:`read_json`: results documents (a run's results.json, a store entry, a golden file) and
test-set sizes; the CSV and YAML readers of :mod:`clipeval.report.inputs` go through :func:`read_text`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from clipeval.config.files import read_text
from clipeval.errors import ClipevalError

__all__ = ["read_json", "read_text"]


def read_json(path: str | Path, what: str) -> tuple[Path, Any]:
    """(path, its JSON value); ClipevalError for a file that is not JSON text, is empty, ends early (truncated)
    or holds malformed JSON or JSON nested too deeply to read, each said as such."""
    path, text = read_text(path, what, "JSON text")
    where = f"{what} {path}".strip()
    if not text.strip():
        raise ClipevalError(f"{where} is empty: it holds no JSON.")
    try:
        return path, json.loads(text)
    except json.JSONDecodeError as exc:
        at = f"line {exc.lineno}, column {exc.colno}"
        if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string"):  # no more text to parse
            raise ClipevalError(
                f"{where} is truncated: its JSON ends early ({exc.msg.removesuffix(' at')} at {at}). Write or copy it again."
            ) from None
        raise ClipevalError(f"{where} is not valid JSON ({exc.msg.removesuffix(' at')} at {at}).") from None
    except RecursionError:
        raise ClipevalError(
            f"{where} is JSON nested too deeply to read (arrays or objects inside each other, deeper than "
            f"{sys.getrecursionlimit()} levels): no clipeval file is; is it the right file?"
        ) from None
