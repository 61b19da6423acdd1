"""Instantiating ``_target_`` configs with errors a user can act on."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate

from clipeval.config.schema import HYDRA_KEYS
from clipeval.errors import ClipevalError, did_you_mean

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
    check_options(node, what)
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


def check_options(node: Mapping[str, Any], what: str) -> None:
    """Refuse a key of ``node`` that its ``_target_``'s constructor does not take, with the nearest one.

    The constructor's signature is the schema of a node that builds an object (a model adapter,
    a data source, an evaluator, baselines): an unknown key would otherwise be a TypeError from
    deep inside Hydra. A target that cannot be imported, or takes ``**kwargs``, is left to
    ``instantiate`` to judge.
    """
    try:
        target = get_object(str(node["_target_"]))
        parameters = inspect.signature(target).parameters.values()
    except Exception:  # not importable, or no signature: instantiate says why
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    takes = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in node:
        if key not in takes and key not in HYDRA_KEYS:
            raise ClipevalError(
                f"{what}: {node['_target_']} has no option '{key}' (given {key}={node[key]!r}). "
                + did_you_mean(str(key), takes)
            )
