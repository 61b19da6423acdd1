"""Lists given inline in a config or as a text file with one entry per line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import ListConfig, OmegaConf

from clipeval.config.files import read_text
from clipeval.errors import ClipevalError, quoted


def read_strings(value: Any, what: str, base: Path | None = None) -> list[str]:
    """A list as given, or the non-empty lines of a file (relative paths also tried under ``base``); ClipevalError
    naming ``what`` and the file when it is not UTF-8 text (:func:`~clipeval.config.files.read_text`)."""
    if isinstance(value, ListConfig):
        value = OmegaConf.to_container(value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [str(v) for v in value]
    path = Path(str(value)).expanduser()
    candidates = [path] if path.is_absolute() or base is None else [path, base / path]
    for candidate in candidates:
        if candidate.is_file():
            _, text = read_text(candidate, f"{what}: file")
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if not lines:
                raise ClipevalError(f"{what}: file {candidate} is empty (no line with text): write one entry per line.")
            return lines
    raise ClipevalError(
        f"{what}: {quoted(str(value))} is neither a list nor an existing file "
        f"(looked at {', '.join(quoted(str(c), 200) for c in candidates)})."
    )
