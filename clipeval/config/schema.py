"""What each key of the composed configuration may hold, checked before anything runs.

One pydantic model per config group: the top level (``data_root``, ``store``, ``cache_dir``,
``tags``, ``step``), ``runtime``, ``model``, a task (``task`` or each of ``suite.tasks``) and a
suite. Hydra composes the YAML files as before; :func:`validate_config` then checks the
composed, resolved config against these models and turns every violation into one
:class:`~clipeval.errors.ClipevalError` (exit 2) that names the key, the value, what is
allowed and, for an unknown key, the nearest valid one.

pydantic rather than Hydra structured configs: OmegaConf 2.3 cannot type ``workers``
(a number or ``auto``) or ``compile`` (a flag or a backend name), has no ranges or literal
choices (an Enum would change the values stored in results.json), and tasks carry their
own variables (``root``, ``path``...) that a closed dataclass would refuse. The YAML stays the
single source of defaults; the models here say only what is allowed.

Nodes that build an object (``_target_``) keep their own keys open: the class's constructor
is their schema (see :func:`clipeval.config.construct.check_options`).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

from clipeval.errors import ClipevalError, did_you_mean, quoted

#: keys Hydra's ``instantiate`` reads itself in a node that has ``_target_``
HYDRA_KEYS = ("_target_", "_convert_", "_recursive_", "_partial_", "_args_")
TASK_FILE = "task.yaml"


def _not_a_flag(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic would take true as 1
        raise ValueError("a number, not true or false")
    return value


#: an integer, also from a string of digits (``${oc.env:...}``) or a float without a fraction; never a flag
Whole = Annotated[int, BeforeValidator(_not_a_flag)]


def _not_a_number(value: Any) -> Any:
    if isinstance(value, float):  # pydantic would take 1.0 as true and 0.0 as false
        raise ValueError("true or false (or yes/no, on/off, 1/0), not a decimal number")
    return value


#: true or false, also from yes/no, on/off, 1/0 (``runtime.cache=no``); never a float (``runtime.cache=1.0``)
Flag = Annotated[bool, BeforeValidator(_not_a_number)]


def _text_not_number(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):  # coerce_numbers_to_str would take 1.0
        raise ValueError("text, not a number")
    return value


#: a name given as text, never a number turned into one
Name = Annotated[str, BeforeValidator(_text_not_number)]

#: a version: a whole number, or dot-separated whole numbers as text ("1", "2.1"); never a word
Version = (
    Annotated[int, BeforeValidator(_not_a_flag), Field(ge=0)]
    | Annotated[str, BeforeValidator(_text_not_number), Field(pattern=r"^[0-9]+(\.[0-9]+)*$")]
)
VERSION_HELP = "a whole number, or dot-separated whole numbers as text such as '2.1'"


class _Closed(BaseModel):
    """A mapping whose keys are all known: an unknown one is an error with a did-you-mean.

    Text is text: a number where a string belongs (``tags=[1,2]``, ``model.name: 123``) is refused, not turned into
    one ("1.0" and "1e3" would come out as '1.0' and '1000.0'); quoting it gives the text.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _Open(BaseModel):
    """A mapping with some known keys and any others (a task's own variables, a class's options); text as in
    :class:`_Closed`."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


Precision = Literal["fp32", "bf16", "fp16"]
Decoder = Literal["pil", "torchvision"]


class RuntimeSettings(_Closed):
    """``runtime``: where and how fast to run (conf/runtime/default.yaml documents each key)."""

    device: str = Field("auto", description="auto, cpu, cuda, cuda:<index>, mps or another torch device name")
    precision: Precision = Field("fp32", description="one of 'fp32', 'bf16', 'fp16'")
    batch_size: Whole = Field(64, ge=1, description="a whole number of at least 1")
    workers: Literal["auto"] | Annotated[Whole, Field(ge=0)] = Field(
        "auto", description="'auto' or a whole number of at least 0"
    )
    limit: Annotated[Whole, Field(ge=1)] | None = Field(
        None, description="a whole number of at least 1 (the first N samples of each dataset), or null"
    )
    seed: Whole = Field(0, ge=0, le=2**32 - 1, description="a whole number from 0 to 2**32-1")
    cache: Flag = Field(True, description="true or false")
    progress: Flag = Field(True, description="true or false")
    log_every: Annotated[float, BeforeValidator(_not_a_flag)] = Field(
        30.0,
        ge=0,
        allow_inf_nan=False,
        description="a number of seconds of at least 0 (between progress lines in the log)",
    )
    channels_last: Flag = Field(False, description="true or false")
    compile: Flag | Name = Field(
        False, union_mode="left_to_right", description="true (inductor), false, or a torch.compile backend name"
    )
    decode: Decoder = Field("pil", description="one of 'pil', 'torchvision'")
    chunk_size: Whole = Field(4096, ge=1, description="a whole number of at least 1 (images per resumable cache chunk)")


class _Target(_Open):
    """A node that builds an object: ``_target_`` names the class, the other keys are its options."""

    target: str = Field(alias="_target_", description="the import path of the class to build (_target_)")


class ModelConfig(_Target):
    """``model``: the adapter (``_target_``) and its options, which its constructor checks."""

    name: str | None = Field(None, description="the model's display name (a string), or null")


class DatasetConfig(_Target):
    optional: Flag = Field(False, description="true or false (true: the task runs without it when absent)")


_strings_or_file = "a list of strings, a file with one per line, or null"


def _some_evaluator(evaluators: dict[str, Any]) -> dict[str, Any]:
    if not any(node is not None for node in evaluators.values()):
        raise ValueError("no evaluator")
    return evaluators


class TaskConfig(_Open):
    """A task (``task``, or each of a suite's ``tasks``): one ``task.yaml`` and the overrides on it."""

    name: str = Field(description="the task's name (a string); a task.yaml needs name, datasets and evaluators")
    version: Version = Field(1, description=VERSION_HELP)
    dir: str | None = Field(None, description="the task's folder (set by clipeval)")
    datasets: dict[str, DatasetConfig] = Field(
        min_length=1, description="a mapping of dataset name to its source (a node with _target_), at least one"
    )
    evaluators: Annotated[dict[str, _Target | None], AfterValidator(_some_evaluator)] = Field(
        description="a mapping of evaluator name to its config (a node with _target_; null drops one), with at least "
        "one evaluator: a task with none has nothing to evaluate"
    )
    classnames: list[str] | str | None = Field(None, description=_strings_or_file)
    templates: list[str] | str | None = Field(None, description=_strings_or_file + " (each with {c})")
    class_subset: list[Any] | str | None = Field(  # its entries are the evaluators' to judge (they say which)
        None, description="a list of class indices, a file with one per line, or null"
    )
    allow_duplicate_classnames: Flag = Field(False, description="true or false")
    main_metric: str | None = Field(
        None,
        description="the metric a benchmark averages for this task (a registered metric such as top1 or "
        "mean_per_class_recall), or null",
    )


class ShiftConfig(_Closed):
    """One shift of a suite's robustness report: its datasets, and optionally its own in-distribution setting."""

    datasets: str = Field(description="'task/dataset' or 'task' (all of its datasets)")
    in_distribution: str | None = Field(None, description="'task/dataset' or 'task', or null")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"datasets": value} if isinstance(value, str) else value


#: the formats a figure may be written in, by its file's suffix (clipeval.report.figures.save)
FIGURE_FORMATS = ("png", "pdf", "svg")


def _figure_file(name: str) -> str:
    if Path(name).name != name or Path(name).suffix.lstrip(".").lower() not in FIGURE_FORMATS:
        raise ValueError("not a figure's file name")
    return name


FIGURE_FILE = (
    "a file name (no folder) ending in " + ", ".join(f".{f}" for f in FIGURE_FORMATS) + ", which says its format"
)


class FigureConfig(_Closed):
    """One figure of a suite's robustness report: the drawing function and the file it writes in the run directory."""

    target: str = Field(
        alias="_target_", description="the import path of a drawing function of (report, model name, path)"
    )
    file: Annotated[str, AfterValidator(_figure_file)] = Field(description=FIGURE_FILE)


class RobustnessConfig(_Closed):
    """A suite's effective-robustness report."""

    in_distribution: str = Field(description="'task/dataset' or 'task' (all of its datasets)")
    shifts: dict[str, ShiftConfig] = Field(
        description="a mapping of shift name to 'task/dataset', 'task', or {datasets: ..., in_distribution: ...}"
    )
    baselines: _Target = Field(description="the baselines' config (a node with _target_)")
    figures: list[FigureConfig] = Field(
        [], description="a list of figures, each {_target_: <drawing function>, file: <name>.png|.pdf|.svg}"
    )

    @model_validator(mode="after")
    def _one_figure_per_file(self) -> RobustnessConfig:
        files = [f.file for f in self.figures]
        twice = sorted({f for f in files if files.count(f) > 1})
        if twice:
            raise ClipevalError(
                f"suite.robustness.figures: {', '.join(twice)} would be written by more than one figure: give each "
                "figure its own file."
            )
        return self


ParamScalar = str | int | float | bool


class BenchmarkEntry(_Closed):
    """One dataset of a benchmark: the task (and its dataset, metric and params) whose record it averages."""

    task: str = Field(description="the suite's task that scores it (a string)")
    dataset: str | None = Field(None, description="the task's dataset (null: the task's only dataset)")
    metric: str | None = Field(None, description="a registered metric (null: the task's main_metric)")
    params: dict[str, ParamScalar] = Field({}, description="the record's params (a mapping), e.g. {k: 1}")
    unavailable: str | None = Field(
        None, description="why clipeval cannot score it yet (the task is then not in the suite), or null"
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"task": value} if isinstance(value, str) else value


class BenchmarkConfig(_Closed):
    """A suite's benchmark: the plain mean of each dataset's main metric, as open_clip's table reports it."""

    label: str = Field(description="what the average is called in tables (a string)")
    source: str | None = Field(None, description="where the protocol comes from (a string), or null")
    datasets: dict[str, BenchmarkEntry] = Field(
        min_length=1, description="a mapping of dataset name (the published table's column) to its task or entry"
    )


class SuiteConfig(_Closed):
    """``suite``: several tasks run with one model, and their robustness report."""

    name: str = Field(description="the suite's name (a string)")
    version: Version = Field(1, description=VERSION_HELP)
    tasks: dict[str, TaskConfig] = Field(min_length=1, description="a mapping of task name to task (at least one)")
    robustness: RobustnessConfig | None = Field(None, description="the robustness report's settings, or null")
    benchmark: BenchmarkConfig | None = Field(None, description="the benchmark's average over datasets, or null")

    @model_validator(mode="after")
    def _benchmark_names_its_tasks(self) -> SuiteConfig:
        for name, entry in (self.benchmark.datasets if self.benchmark else {}).items():
            key = f"suite.benchmark.datasets.{name}"
            if entry.unavailable is None and entry.task not in self.tasks:
                raise ClipevalError(
                    f"{key} names task '{entry.task}', which the suite does not run. Add the task to the suite, or "
                    f"say why it cannot run with unavailable: <reason>. {did_you_mean(entry.task, self.tasks)}"
                )
            if entry.unavailable is not None and entry.task in self.tasks:
                raise ClipevalError(
                    f"{key} is marked unavailable ({entry.unavailable!r}) but the suite runs task '{entry.task}': "
                    "remove the unavailable line."
                )
        return self

    @model_validator(mode="after")
    def _settings_name_its_tasks(self) -> SuiteConfig:
        if self.robustness is None:
            return self
        # the settings whose images the baselines are scored on name a task's datasets; a shift's own
        # in-distribution setting may also name an evaluator's records (val-on-objectnet-classes)
        sources = {"suite.robustness.in_distribution": self.robustness.in_distribution}
        records = {}
        for name, shift in self.robustness.shifts.items():
            sources[f"suite.robustness.shifts.{name}.datasets"] = shift.datasets
            if shift.in_distribution is not None:
                records[f"suite.robustness.shifts.{name}.in_distribution"] = shift.in_distribution
        for key, selector in (sources | records).items():
            task, _, dataset = selector.partition("/")
            if task not in self.tasks:
                raise ClipevalError(
                    f"{key}={selector!r} names task '{task}', which the suite does not run. "
                    f"{did_you_mean(task, self.tasks)}"
                )
            if dataset and key in sources and dataset not in self.tasks[task].datasets:
                raise ClipevalError(
                    f"{key}={selector!r} names dataset '{dataset}', which task '{task}' does not have. "
                    f"{did_you_mean(dataset, self.tasks[task].datasets)}"
                )
        return self


class RunConfig(_Closed):
    """The composed config of a run (conf/config.yaml documents the top-level keys)."""

    model: ModelConfig = Field(description="a model config (model=<name>, a node with _target_)")
    task: TaskConfig | None = Field(None, description="a task (task=<name>), or null")
    suite: Any = Field(None, description="a suite (suite=<name>), or null")  # checked when it is what runs
    runtime: RuntimeSettings = Field(description="runtime settings (runtime=<name>)")
    data_root: str = Field(description="a folder (a string)")
    store: str = Field(description="a folder (a string)")
    cache_dir: str | None = Field(None, description="a folder (a string), or null")
    tags: list[str] = Field([], description="a list of strings, e.g. tags=[baseline,ablation]")
    step: Annotated[Whole, Field(ge=0)] | None = Field(None, description="a whole number of at least 0, or null")


def validate_config(cfg: DictConfig) -> RunConfig:
    """The composed config of a run, checked against the schema; ClipevalError (exit 2) when it does not fit.

    Values are resolved first (a ``???`` left in raises omegaconf's MissingMandatoryValue, which the
    command line turns into "X is required"). The suite is checked only when no task is chosen,
    since a chosen task runs alone.
    """
    data = resolved(cfg)
    run = _validate(RunConfig, data, ())
    if run.task is not None:
        check_task_keys(data["task"], ("task",))
    elif data.get("suite") is not None:
        suite = _validate(SuiteConfig, data["suite"], ("suite",))
        for name in suite.tasks:
            check_task_keys(data["suite"]["tasks"][name], ("suite", "tasks", name))
    return run


def validate_task(cfg: DictConfig | Mapping[str, Any], key: str = "task") -> TaskConfig:
    """One task's composed config (``key`` names it in messages), checked against :class:`TaskConfig`."""
    data = resolved(cfg) if isinstance(cfg, DictConfig) else dict(cfg)
    prefix = tuple(key.split("."))
    task = _validate(TaskConfig, data, prefix)
    check_task_keys(data, prefix)
    return task


#: task keys the task itself does not read: they reach an evaluator or a dataset only through an interpolation in the
#: task.yaml (the folder task's ``class_subset: ${...class_subset}``), so a task whose file has none ignores them
PASSED_ON = ("class_subset",)


def check_task_keys(data: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
    """Refuse a key of a composed task that is neither a task key (:class:`TaskConfig`) nor one of the task's own
    variables (see :func:`task_variables`): ``+task.foo=x``, or ``dataset:`` in a task.yaml, would otherwise be kept
    and ignored. ClipevalError naming the key, its value and the nearest valid key. So is a value for a task key
    that only an interpolation passes on (:data:`PASSED_ON`) in a task whose file has none: ``+task.class_subset``
    on a task that gives its evaluators no class subset (see :func:`unused_task_key`).

    A task whose folder is unknown, or whose task.yaml has a defaults list (its variables may come from
    elsewhere), keeps its other keys.
    """
    fields = [info.alias or name for name, info in TaskConfig.model_fields.items()]
    extra = [key for key in data if key not in fields]
    passed_on = [key for key in PASSED_ON if data.get(key) is not None]
    own = task_variables(data.get("dir")) if extra or passed_on else None
    if own is None:
        return
    where = ".".join(prefix)
    lines = []
    for key in (k for k in extra if k not in own):
        lines.append(
            f"{where} has no key '{key}' ({where}.{key}={_show(data[key])}): a task takes its schema's keys and its "
            f"own variables (keys of its {TASK_FILE} that an interpolation uses, like root in ${{...root}}). "
            f"{did_you_mean(str(key), [*fields, *own])} (task file: {data['dir']}/{TASK_FILE})"
        )
    for key in (k for k in passed_on if k not in own):
        lines.append(f"{where}.{key}={_show(data[key])}: {unused_task_key(data, key, where)}")
    if len(lines) == 1:
        raise ClipevalError(lines[0])
    if lines:
        raise ClipevalError(
            f"{len(lines)} problems in the configuration:\n" + "\n".join(f"  - {line}" for line in lines)
        )


def unused_task_key(data: Mapping[str, Any], key: str, where: str = "task") -> str:
    """Why the task ``data`` (the config's ``where``) ignores ``key`` (one of :data:`PASSED_ON`), and which of its
    evaluators take an option of that name: what a message says to a user who set it."""
    from clipeval.config.construct import takes_option  # construct imports this module

    takers = [
        name
        for name, node in (data.get("evaluators") or {}).items()
        if isinstance(node, Mapping) and "_target_" in node and takes_option(str(node["_target_"]), key)
    ]
    prefix = "task" if "dir" not in data else f"task '{data.get('name')}'"
    if takers:
        options = " or ".join(f"{where}.evaluators.{name}.{key}" for name in takers)
        fix = f" To give an evaluator its own, set its option: {options} (+ to add it)."
    else:
        fix = f" None of its evaluators takes a {key}."
    return (
        f"{prefix} does not use {key}: its {TASK_FILE} passes no ${{...{key}}} on to an evaluator, so the value "
        f"would be ignored (the folder and hf tasks pass it on).{fix} (task file: {data.get('dir')}/{TASK_FILE})"
    )


def task_variables(folder: Any) -> list[str] | None:
    """A task's own variables: the top-level keys of the task.yaml in ``folder`` that an interpolation in it uses
    (``root`` in ``root: ${...root}``); a key nothing uses is a typo or a leftover. None when they are not known
    from the file alone: no folder or file, or a defaults list that may bring in others."""
    import re

    import yaml

    if not folder:
        return None
    try:
        text = (Path(str(folder)) / TASK_FILE).read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(data, dict) or "defaults" in data:
        return None
    used = " ".join(re.findall(r"\$\{[^}]*\}", text))
    return [str(k) for k in data if re.search(rf"(?<![\w-]){re.escape(str(k))}(?![\w-])", used)]


def validate_runtime(settings: Mapping[str, Any]) -> RuntimeSettings:
    """``runtime`` settings (as given to :meth:`clipeval.config.runtime.Runtime.create`), checked."""
    return _validate(RuntimeSettings, dict(settings), ("runtime",))


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """``cfg`` as plain data with every interpolation resolved; an interpolation that fails is a ClipevalError."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError as exc:
        raise ClipevalError(f"{exc.full_key}: cannot resolve its value: {exc.msg}") from None


def check_task_file(text: str, path: Any) -> None:
    """Refuse a task.yaml that is not YAML, is empty, or is not a mapping (before Hydra composes it)."""
    import yaml
    from omegaconf._utils import get_yaml_loader  # OmegaConf's own YAML dialect (duplicate keys refused)

    try:
        data = yaml.load(text, Loader=get_yaml_loader())  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ClipevalError(f"{path} is not valid YAML{at}: {problem}.") from None
    if data is None:
        raise ClipevalError(
            f"{path} is empty: a {TASK_FILE} is a mapping with name, datasets and evaluators "
            "(tasks/folder/task.yaml is an example)."
        )
    if not isinstance(data, dict):
        raise ClipevalError(
            f"{path} holds a {_kind(data)}, not a mapping: a {TASK_FILE} is a mapping with name, datasets and "
            "evaluators (tasks/folder/task.yaml is an example)."
        )
    absent = [k for k in ("name", "datasets", "evaluators") if k not in data]
    if absent and "defaults" not in data:  # a defaults list may bring them in
        raise ClipevalError(
            f"{path} has no {', '.join(absent)}: a {TASK_FILE} needs name, datasets and evaluators "
            "(tasks/folder/task.yaml is an example)."
        )


# --- turning pydantic's errors into one message ------------------------------------------------------------


def _validate(schema: type[BaseModel], data: Any, prefix: tuple[str, ...]) -> Any:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ClipevalError(_explain(exc, schema, data, prefix)) from None


def _explain(exc: ValidationError, schema: type[BaseModel], data: Any, prefix: tuple[str, ...]) -> str:
    # A union reports once per member: keep, per key, the error that reaches deepest into the value.
    chosen: dict[tuple, tuple[tuple, Any]] = {}
    for error in exc.errors():
        path, root = _data_path(data, error["loc"])
        if root not in chosen or len(path) > len(chosen[root][0]):
            chosen[root] = (path, error)
    lines = [_line(error, schema, path, prefix) + _file_hint(data, path, prefix) for path, error in chosen.values()]
    if len(lines) == 1:
        return lines[0]
    return f"{len(lines)} problems in the configuration:\n" + "\n".join(f"  - {line}" for line in lines)


def _line(error: Any, schema: type[BaseModel], path: tuple, prefix: tuple[str, ...]) -> str:
    key = ".".join(map(str, (*prefix, *path)))
    if error["type"] == "extra_forbidden":
        parent = ".".join(map(str, (*prefix, *path[:-1]))) or "the top level"
        known = _known_keys(schema, path[:-1])
        return f"{parent} has no key '{path[-1]}' ({key}={_show(error['input'])}). {did_you_mean(str(path[-1]), known)}"
    field_path, info = _field(schema, path)
    allowed = info.description if info is not None and info.description else error["msg"].lower()
    if error["type"] == "missing":
        return f"{key} is required: {allowed}."
    given = _show(error["input"]) + _quote_hint(error)
    if field_path == path:
        return f"{key} must be {allowed}, not {given}."
    field_key = ".".join(map(str, (*prefix, *field_path)))
    return f"{field_key} must be {allowed}: {key} is {given}."


def _quote_hint(error: Any) -> str:
    """For a number or flag where text belongs: how to give it as text (YAML and Hydra read 1 and true as such)."""
    value = error["input"]
    if error["type"] != "string_type" or not isinstance(value, int | float):
        return ""
    return f", a {'flag' if isinstance(value, bool) else 'number'} (quote it to give text: '{str(value).lower() if isinstance(value, bool) else value}')"


def _show(value: Any) -> str:
    return quoted(value, as_json=False)


def _kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "flag"}.get(type(value), "value")


def _data_path(data: Any, loc: tuple) -> tuple[tuple, tuple]:
    """The keys of ``data`` that pydantic's ``loc`` goes through (it also names union members, by type), and
    the part of them before the first union member (where the errors of one union meet)."""
    path: list[Any] = []
    root: tuple | None = None
    node = data
    for part in loc:
        is_key = isinstance(node, Mapping) and part in node
        if is_key or (isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)):
            node = node[part]
            path.append(part)
        elif isinstance(part, str) and _is_union_member(part):
            root = tuple(path) if root is None else root
        else:
            if isinstance(node, Mapping):
                path.append(part)  # a missing key: the path ends there
            break
    return tuple(path), tuple(path) if root is None else root


def _is_union_member(part: str) -> bool:
    """pydantic names union members in ``loc`` by type (``int``, ``literal['auto']``, ``constrained-int``...)."""
    return any(c in part for c in "[]-") or part in {"int", "str", "bool", "float", "list", "dict", "none"}


def _field(schema: type[BaseModel], path: tuple) -> tuple[tuple, FieldInfo | None]:
    """The deepest schema field along ``path`` (and its path): it describes what is allowed there."""
    found: tuple[tuple, FieldInfo | None] = ((), None)
    tp: Any = schema
    for i, part in enumerate(path):
        model = _model_in(tp)
        if model is not None:
            info = _field_named(model, str(part))
            if info is None:
                break
            found = (path[: i + 1], info)
            tp = info.annotation
        else:
            tp = _item_type(tp)
            if tp is None:
                break
    return found


def _known_keys(schema: type[BaseModel], path: tuple) -> list[str]:
    tp: Any = schema
    for part in path:
        model = _model_in(tp)
        if model is not None:
            info = _field_named(model, str(part))
            tp = None if info is None else info.annotation
        else:
            tp = _item_type(tp)
        if tp is None:
            return []
    model = _model_in(tp)
    return [] if model is None else [f.alias or name for name, f in model.model_fields.items()]


def _field_named(model: type[BaseModel], key: str) -> FieldInfo | None:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info
    return None


def _members(tp: Any) -> list[Any]:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(tp) for m in _members(arg)]
    return [tp]


def _model_in(tp: Any) -> type[BaseModel] | None:
    for member in _members(tp):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _item_type(tp: Any) -> Any:
    """The value type of a dict or list type (among a union's members), else None."""
    for member in _members(tp):
        origin = typing.get_origin(member)
        if origin is dict:
            return typing.get_args(member)[1]
        if origin is list:
            return typing.get_args(member)[0]
    return None


def _file_hint(data: Any, path: tuple, prefix: tuple[str, ...]) -> str:
    """`` (task file: <dir>/task.yaml)`` when ``path`` is inside a task: its file is where to fix it."""
    full = (*prefix, *path)
    if full[:1] == ("task",) and len(full) > 1:
        depth = 1
    elif full[:2] == ("suite", "tasks") and len(full) > 3:
        depth = 3
    else:
        return ""
    node: Any = data
    for part in full[len(prefix) : depth]:  # from where ``data`` sits down to the task's node
        node = node.get(part) if isinstance(node, Mapping) else None
    folder = node.get("dir") if isinstance(node, Mapping) else None
    return f" (task file: {folder}/{TASK_FILE})" if folder else ""
