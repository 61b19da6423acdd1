"""Instantiating ``_target_`` configs with errors a user can act on."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate

from clipeval.errors import ClipevalError


def build(node: Any, what: str) -> Any:
    """``hydra.utils.instantiate`` that lets the user's errors through unwrapped."""
    if "_target_" not in node:
        raise ClipevalError(f"The config of {what} has no _target_ naming the class to build.")
    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, ClipevalError):
            raise cause from None
        raise ClipevalError(f"Could not build {what}: {exc}") from exc
