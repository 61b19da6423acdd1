"""Instantiating ``_target_`` configs with errors a user can act on.

The class a node names is its schema: a key its constructor does not take is refused with the
nearest one, and each value is checked against the constructor's type annotation (pydantic), so
``split: tset`` for a parameter annotated ``Literal["train", "val", "test"]`` is one message naming
the node, the option, the value and what is allowed, not a KeyError from inside the class. Values
are handed on as checked (``"no"`` for a flag is false, as in the rest of the configuration).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pydantic import ConfigDict, TypeAdapter, ValidationError

from clipeval.config.schema import HYDRA_KEYS, Flag
from clipeval.errors import ClipevalError, OptionError, did_you_mean, printable, quoted

#: modules of clipeval 0.1 that moved when the package was split into layers: old prefix -> new prefix,
#: so that a user's task.yaml naming an old ``_target_`` gets the new name instead of "not found"
MOVED = {
    "clipeval.sources.": "clipeval.data.",
    "clipeval.baselines.": "clipeval.report.baselines.",
    "clipeval.figures.": "clipeval.report.figures.",
}


def build(node: Any, what: str) -> Any:
    """``hydra.utils.instantiate`` that lets the user's errors through unwrapped, after :func:`check_options`."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if "_target_" not in node:
        raise ClipevalError(f"The config of {what} has no _target_ naming the class to build.")
    options = check_options(node, what)
    try:
        return instantiate(options, _convert_="all")
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, OptionError):
            raise ClipevalError(f"{what}: {cause}") from None
        if isinstance(cause, ClipevalError):
            raise cause from None
        if isinstance(cause, ImportError) or "Error locating target" in str(exc):
            raise _not_importable(str(node["_target_"]), what, _root_cause(exc)) from exc
        # Hydra's message holds the cause's repr (a UnicodeDecodeError's repr holds the bytes it could not decode)
        problem = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
        raise ClipevalError(f"Could not build {what}: {printable(problem, 500)}") from exc


def locate(target: str, what: str) -> Any:
    """The class or function ``target`` names (``package.module.Name``); ClipevalError (exit 2) when it cannot be
    imported, or names a module that moved. Hydra's own lookup would log an ERROR line for each failed attempt."""
    for old, new in MOVED.items():
        if target.startswith(old):
            raise ClipevalError(
                f"The config of {what} names _target_ {target}, which has moved: use {new}{target.removeprefix(old)}."
            )
    try:
        return _import(target)
    except Exception as exc:  # noqa: BLE001 (a module's own import may raise anything: say what and where)
        raise _not_importable(target, what, exc) from exc


def _import(path: str) -> Any:
    parts = path.split(".")
    if not all(parts):
        raise ImportError(f"'{path}' is not a dotted import path (package.module.Name)")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        module = ".".join(parts[: i + 1])
        try:
            obj = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            raise ImportError(f"{'.'.join(parts[:i])} has no attribute or module '{part}'") from None
    return obj


def _not_importable(target: str, what: str, cause: BaseException) -> ClipevalError:
    return ClipevalError(
        f"Could not build {what}: cannot import {target} ({type(cause).__name__}: {cause}). Check the module "
        "path, that its folder is on PYTHONPATH, and that the module's own imports work (clipeval 0.2 moved "
        "modules: clipeval.sources -> clipeval.data, clipeval.metrics -> clipeval.results.metrics, "
        "clipeval.results -> clipeval.results.record / store; see the README's layout)."
    )


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def check_options(node: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``node``'s options as its ``_target_``'s constructor will get them; ClipevalError (exit 2) for a key it does
    not take (with the nearest one) or a value its annotation refuses (naming the option, the value and what is
    allowed). Nested nodes with a ``_target_`` are checked the same way.

    The constructor's signature is the schema of a node that builds an object (a model adapter,
    a data source, an evaluator, baselines): an unknown key would otherwise be a TypeError from
    deep inside Hydra, and a wrong value a KeyError or a silently different run. A target that
    takes ``**kwargs`` keeps its other keys; an option without an annotation pydantic can check
    (a class, ``Any``) is handed on as given.
    """
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    target = locate(str(node["_target_"]), what)
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):  # no signature to check against
        return dict(node)
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    takes = [p.name for p in parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    out = dict(node)
    for key, value in node.items():
        if key in HYDRA_KEYS:
            continue
        if key not in takes:
            if open_ended:
                continue
            raise ClipevalError(
                f"{what}: {node['_target_']} has no option '{key}' (given {key}={quoted(value, as_json=False)}). "
                + did_you_mean(str(key), takes)
            )
        if isinstance(value, Mapping) and "_target_" in value:
            out[key] = check_options(value, f"{what}, its {key}")
            continue
        adapter = _adapter(target, key)
        if adapter is not None:
            try:
                out[key] = adapter.validate_python(value)
            except ValidationError as exc:
                raise ClipevalError(f"{what}: {OptionError(key, value, _allowed(exc))}") from None
    return out


def takes_option(target: str, name: str) -> bool:
    """Whether the class or function ``target`` names takes an option ``name`` (False when it does not import)."""
    try:
        parameters = inspect.signature(_import(target)).parameters
    except Exception:  # noqa: BLE001 (not importable, or no signature: the build says why when it comes to it)
        return False
    return name in parameters


def check_targets(cfg: Any) -> None:
    """:func:`check_options` on every node of the composed config that builds an object (the model, each
    dataset and evaluator of each task, a suite's baselines and figures), before anything is built or
    read: a run, a sweep's every job and ``--cfg`` refuse the same options alike; then a suite's robustness
    settings against what its tasks' evaluators write (:func:`check_robustness_references`). Nodes holding a
    value still to be given (``???``) are left to the run, which names what is missing."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    for path, node in _target_nodes(cfg, ()):
        if _holds_missing(node):
            continue
        if "figures" in path:  # a figure is a function called with the report; its file is for clipeval (schema)
            _check_drawing(str(node["_target_"]), _node_name(path, cfg))
        else:
            if len(path) >= 2 and path[-2] == "datasets":  # `optional` is the task's key, not the source's
                node = {k: v for k, v in node.items() if k != "optional"}
            check_options(node, _node_name(path, cfg))
    check_robustness_references(cfg)


def check_robustness_references(cfg: Mapping[str, Any]) -> None:
    """ClipevalError, before the run, for a robustness setting of the suite in ``cfg`` (resolved) that the run would
    fail on only after the evaluation: one whose datasets no evaluator of the named task gives a zero-shot top-1
    record (``+suite.robustness.shifts.extra=digits_probe``: a task of probes), or a shift the baselines have no
    points for. What an evaluator writes is what its class declares, from its options and the task's datasets
    (``zero_shot_top1(options, datasets)``, as :class:`clipeval.evaluators.zeroshot.ZeroShot` does); a task with an
    evaluator that declares nothing (a user's) is not judged. So are baselines without ``shifts_with_points``."""
    suite = cfg.get("suite") if not cfg.get("task") else None
    robustness = suite.get("robustness") if isinstance(suite, Mapping) else None
    if not isinstance(robustness, Mapping) or _holds_missing(robustness):
        return
    tasks = suite.get("tasks") or {}
    written = {name: _zero_shot_top1(task) for name, task in tasks.items() if isinstance(task, Mapping)}
    settings = {"suite.robustness.in_distribution": robustness.get("in_distribution")}
    for name, shift in (robustness.get("shifts") or {}).items():
        shift = shift if isinstance(shift, Mapping) else {"datasets": shift}
        for part in ("datasets", "in_distribution"):
            if shift.get(part) is not None:
                settings[f"suite.robustness.shifts.{name}" + ("" if part == "datasets" else f".{part}")] = shift[part]
    for key, selector in settings.items():
        task, _, dataset = str(selector).partition("/")
        have = written.get(task)
        if have is None:  # not a task of the suite (the schema says so), or not judged
            continue
        needed = [dataset] if dataset else [str(d) for d in tasks[task].get("datasets") or {}]
        absent = [d for d in needed if d not in have]
        if absent:
            with_top1 = [f"{t}/{d}" for t, names in written.items() for d in sorted(names or ())]
            raise ClipevalError(
                f"{key}={selector!r} needs zero-shot top-1 records of task '{task}' on {', '.join(absent)}, which "
                f"none of its evaluators ({', '.join(_evaluators(tasks[task])) or 'none'}) writes: the "
                "effective-robustness report reads the top-1 of zero-shot evaluators (ZeroShot). Name a task and "
                f"dataset that has one: {', '.join(with_top1[:12]) or 'none in this suite'}"
                f"{', ...' if len(with_top1) > 12 else ''}."
            )
    baselines = robustness.get("baselines")
    if isinstance(baselines, Mapping) and "_target_" in baselines:
        declare = getattr(locate(str(baselines["_target_"]), "the suite's baselines"), "shifts_with_points", None)
        known = declare(baselines) if declare is not None else None
        absent = [s for s in robustness.get("shifts") or {} if known is not None and s not in known]
        if absent:
            raise ClipevalError(
                f"suite.robustness.shifts names {', '.join(map(repr, absent))}, which the suite's baselines "
                f"({baselines['_target_']}) have no points for: they have {', '.join(known) or 'none'}. "
                "Name the shift as the baselines do, or add it to suite.robustness.baselines.shifts."
            )


def _zero_shot_top1(task: Mapping[str, Any]) -> set[str] | None:
    """The records of ``task`` (resolved) whose zero-shot top-1 its evaluators declare they write; None when one of
    them declares nothing."""
    datasets = [str(d) for d in task.get("datasets") or {}]
    names: set[str] = set()
    for name, node in (task.get("evaluators") or {}).items():
        if node is None:
            continue
        if not isinstance(node, Mapping) or "_target_" not in node:
            return None
        declare = getattr(locate(str(node["_target_"]), f"evaluator '{name}'"), "zero_shot_top1", None)
        if declare is None:
            return None
        names |= set(declare({k: v for k, v in node.items() if k not in HYDRA_KEYS}, datasets))
    return names


def _evaluators(task: Mapping[str, Any]) -> list[str]:
    nodes = (task.get("evaluators") or {}).items()
    return [
        f"{n}: {str(v['_target_']).rpartition('.')[2]}" for n, v in nodes if isinstance(v, Mapping) and "_target_" in v
    ]


def _check_drawing(target: str, what: str) -> None:
    """ClipevalError unless ``target`` imports and can be called as a figure is: ``draw(report, model name, path)``."""
    draw = locate(target, what)
    try:
        inspect.signature(draw).bind(None, None, None)
    except ValueError:  # no signature to check against
        return
    except TypeError:
        raise ClipevalError(
            f"{what}: _target_ {target} cannot draw a figure: a figure's _target_ is called with (report, model name, "
            "path), as clipeval.report.figures.scatter_grid is."
        ) from None


def _node_name(path: tuple[str, ...], cfg: Mapping[str, Any]) -> str:
    """How messages name a node, as when it is built: ``dataset 'test' of task 'digits'``, ``evaluator 'x'``."""
    if path == ("model",):
        return "model"
    if len(path) == 3 and path[0] == "task" and path[1] in ("datasets", "evaluators"):
        task = (cfg.get("task") or {}).get("name", "?")
        return f"dataset '{path[2]}' of task '{task}'" if path[1] == "datasets" else f"evaluator '{path[2]}'"
    if len(path) == 5 and path[:2] == ("suite", "tasks") and path[3] in ("datasets", "evaluators"):
        return f"dataset '{path[4]}' of task '{path[2]}'" if path[3] == "datasets" else f"evaluator '{path[4]}'"
    if path[-2:] == ("robustness", "baselines"):
        return "the suite's baselines"
    return ".".join(path)


def _target_nodes(node: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], dict]]:
    if isinstance(node, Mapping):
        if "_target_" in node:
            yield path, dict(node)
            return
        for key, value in node.items():
            if not (path == () and key == "hydra"):
                yield from _target_nodes(value, (*path, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _target_nodes(value, (*path, str(i)))


def _holds_missing(node: Any) -> bool:
    if isinstance(node, Mapping):
        return any(_holds_missing(v) for v in node.values())
    if isinstance(node, list):
        return any(_holds_missing(v) for v in node)
    return node == "???"


#: numbers are text where a constructor takes text (a YAML ``revision: 2024`` is the string "2024")
_LENIENT = ConfigDict(coerce_numbers_to_str=True)


@functools.cache
def _adapter(target: Any, name: str) -> TypeAdapter | None:
    """A validator for parameter ``name`` of ``target`` from its annotation; None when it has none pydantic checks."""
    annotation = inspect.signature(target).parameters[name].annotation
    if annotation is inspect.Parameter.empty:
        return None
    if isinstance(annotation, str):  # ``from __future__ import annotations``: resolved in the target's module
        function = target.__init__ if isinstance(target, type) else target
        namespace = {**vars(sys.modules.get(target.__module__, types)), **getattr(function, "__globals__", {})}
        try:
            annotation = eval(annotation, namespace)  # noqa: S307 (an annotation of clipeval's or the user's own code)
        except Exception:  # noqa: BLE001 (a name only imported for type checkers: nothing to check against)
            return None
    if annotation is Any:
        return None
    try:
        return TypeAdapter(_flags(annotation), config=_LENIENT)
    except Exception:  # noqa: BLE001 (a class pydantic has no schema for: its constructor judges the value)
        return None


def _flags(tp: Any) -> Any:
    """``tp`` with every ``bool`` a :data:`~clipeval.config.schema.Flag` (yes/no are flags; 1.0 is not)."""
    if tp is bool:
        return Flag
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.Union[tuple(_flags(arg) for arg in typing.get_args(tp))]  # noqa: UP007 (built from a tuple)
    return tp


#: how messages say the type each pydantic error type asks for (its own wording names Python classes)
_TYPE_PHRASES = {
    "string_type": "a string",
    "path_type": "a path",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "list_type": "a list",
    "dict_type": "a mapping",
    "none_required": "null",
}
_CLASS_PHRASES = {"Sequence": "a list", "Mapping": "a mapping", "PathLike": "a path"}


def _allowed(exc: ValidationError) -> str:
    """What pydantic's errors say is allowed, as one phrase: "'train', 'val' or 'test'", "a valid integer"."""
    phrases = []
    for error in exc.errors():
        if error["type"] == "sequence_str":
            phrase = "a list, not a single string"
        elif error["type"] in ("bool_parsing", "bool_type"):
            phrase = "true or false (or yes/no, on/off, 1/0)"
        elif error["type"] in _TYPE_PHRASES:
            phrase = _TYPE_PHRASES[error["type"]]
        elif error["type"] == "is_instance_of":  # a class pydantic only checks with isinstance (Sequence, Mapping)
            name = error["msg"].rpartition(" ")[2]
            phrase = _CLASS_PHRASES.get(name, f"a {name}")
        else:
            phrase = error["msg"].removeprefix("Value error, ").removeprefix("Input should be ")
            phrase = "null" if phrase == "None" else phrase.split(", unable to")[0]
        where = "".join(f"[{part}]" for part in error["loc"] if isinstance(part, int))
        phrase = f"{phrase} (at {where})" if where else phrase
        if phrase not in phrases:
            phrases.append(phrase)
    return ", or ".join(phrases)
