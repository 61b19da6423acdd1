"""Reading a text file the user named, with one wording for each way it is not one.

A file that is absent, a folder, unreadable, or not UTF-8 text (binary, compressed, another
encoding) is a :class:`~clipeval.errors.ClipevalError` (exit 2) naming the file; the message
never quotes its bytes. Every text file clipeval reads because a config or a command line names
it goes through :func:`read_text`: class and template lists (:mod:`clipeval.config.lists`), a
webdataset's class names, ObjectNet's mappings, and the JSON, CSV and YAML files of ``check``
and ``report`` (:mod:`clipeval.results.files`, :mod:`clipeval.report.inputs`).
"""

from __future__ import annotations

from pathlib import Path

from clipeval.errors import ClipevalError


def read_text(path: str | Path, what: str, kind: str = "text") -> tuple[Path, str]:
    """(path, its text); ClipevalError when it is absent, a folder, unreadable or not UTF-8 text (binary).

    ``kind`` names the file kind in the message (``is not a JSON text file``).
    """
    path = Path(path).expanduser()
    where = f"{what} {path}".strip()
    if not path.exists():
        raise ClipevalError(f"{where} does not exist.")
    if not path.is_file():
        raise ClipevalError(f"{where} is not a file.")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ClipevalError(f"{where} cannot be read ({exc.strerror or exc}).") from None
    return path, decode_text(data, where, kind)


def decode_text(data: bytes, where: str, kind: str = "text") -> str:
    """``data`` as UTF-8 text (a BOM dropped); ClipevalError naming ``where`` when it is not (binary, compressed).

    ``where``: the file or URL as the message names it, e.g. ``"The webdataset's https://…/classnames.txt"``."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ClipevalError(
            f"{where} is not a {kind} file (byte {exc.start} is not UTF-8): is it binary, or compressed?"
        ) from None
    if "\x00" in text:
        raise ClipevalError(
            f"{where} is not a {kind} file (byte {text.index(chr(0))} is a NUL byte): is it binary, or compressed?"
        )
    return text
