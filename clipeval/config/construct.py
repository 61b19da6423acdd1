"""Instantiating ``_target_`` configs with errors a user can act on."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate

from clipeval.errors import ClipevalError

#: modules of clipeval 0.1 that moved when the package was split into layers: old prefix -> new prefix,
#: so that a user's task.yaml naming an old ``_target_`` gets the new name instead of "not found"
MOVED = {
    "clipeval.sources.": "clipeval.data.",
    "clipeval.baselines.": "clipeval.report.baselines.",
    "clipeval.figures.": "clipeval.report.figures.",
}


def build(node: Any, what: str) -> Any:
    """``hydra.utils.instantiate`` that lets the user's errors through unwrapped."""
    if "_target_" not in node:
        raise ClipevalError(f"The config of {what} has no _target_ naming the class to build.")
    target = str(node["_target_"])
    for old, new in MOVED.items():
        if target.startswith(old):
            raise ClipevalError(
                f"The config of {what} names _target_ {target}, which has moved: use {new}{target.removeprefix(old)}."
            )
    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, ClipevalError):
            raise cause from None
        if isinstance(cause, ImportError) or "Error locating target" in str(exc):
            root = _root_cause(exc)
            raise ClipevalError(
                f"Could not build {what}: cannot import {target} ({type(root).__name__}: {root}). Check the module "
                "path, that its folder is on PYTHONPATH, and that the module's own imports work (clipeval 0.2 moved "
                "modules: clipeval.sources -> clipeval.data, clipeval.metrics -> clipeval.results.metrics, "
                "clipeval.results -> clipeval.results.record / store; see the README's layout)."
            ) from exc
        raise ClipevalError(f"Could not build {what}: {exc}") from exc


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc
