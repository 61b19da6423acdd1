"""A task as configured in its folder: its datasets, class names, prompts and evaluators."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from clipeval.config.construct import build
from clipeval.config.lists import read_strings
from clipeval.config.paths import builtin_tasks_dir
from clipeval.config.schema import validate_task
from clipeval.data.base import DataNotFound, MapSource, Source
from clipeval.errors import ClipevalError
from clipeval.features.classifier import check_templates

log = logging.getLogger(__name__)

DEFAULT_TEMPLATES = ["a photo of a {c}."]


@dataclass
class Task:
    name: str
    version: str
    dir: Path | None
    sources: dict[str, Source]
    evaluators: dict[str, Any]
    #: optional datasets whose data is absent: name -> why (their evaluations are skipped)
    missing: dict[str, str] = field(default_factory=dict)
    classnames_option: Any = None
    templates_option: Any = None
    #: let two scored classes share a name (the CLIP paper's ImageNet list repeats two); else an error
    allow_duplicate_classnames: bool = False
    #: the metric a benchmark averages for this task (task.yaml ``main_metric``), or None
    main_metric: str | None = None

    def classnames(self, dataset: str) -> list[str]:
        """The task's class names, else the ones the data carries (folder names, ClassLabel, classnames.txt)."""
        if self.classnames_option is not None:
            names = read_strings(self.classnames_option, "task.classnames", self.dir)
        elif self.sources[dataset].classnames is None:
            raise ClipevalError(
                f"Dataset '{dataset}' of task '{self.name}' has no class names: set task.classnames (a list with one "
                "name per class in label order, or a file with one per line)."
            )
        else:
            names = list(self.sources[dataset].classnames)
        if not names:
            raise ClipevalError(
                f"Task '{self.name}', dataset '{dataset}': {self._names_origin()} is empty. "
                "Set task.classnames to a list with one name per class, or a file with one per line."
            )
        return names

    def templates(self, dataset: str) -> list[str]:
        if self.templates_option is not None:
            return read_strings(self.templates_option, "task.templates", self.dir)
        return list(self.sources[dataset].templates or DEFAULT_TEMPLATES)

    def source(self, dataset: str) -> Source:
        """The source of ``dataset``; an error if the task has no such dataset, or if it is absent."""
        if dataset in self.missing:
            raise ClipevalError(f"dataset '{dataset}' is needed but absent:\n{self.missing[dataset]}")
        if dataset not in self.sources:
            raise ClipevalError(f"Task '{self.name}' has no dataset '{dataset}' (has: {list(self.sources)}).")
        return self.sources[dataset]

    def check(self) -> None:
        """Refuse inputs that do not fit the data, before any model loads or image is encoded.

        Calls ``check(task)`` of every evaluator that has one (a user's evaluator may not);
        its ClipevalError comes back naming the task and the evaluator.
        """
        for name, evaluator in self.evaluators.items():
            check = getattr(evaluator, "check", None)
            if check is None:
                continue
            try:
                check(self)
            except ClipevalError as exc:
                message = str(exc).removeprefix(f"Task '{self.name}', ")  # said once, with the evaluator
                raise ClipevalError(f"Task '{self.name}', evaluator '{name}': {message}") from None

    def check_classes(self, dataset: str, scored: list[list[int]] | None = None, labels: str = "subset") -> None:
        """Refuse class names, a class subset or class groups that cannot score ``dataset``.

        ``scored`` lists, for each scored class, the indices of the class names whose
        classifier rows it takes (a class subset: one each; ObjectNet: a group); None scores
        every name on its own. ``labels`` says what the data's labels index: ``subset`` (the
        scored classes) or ``full`` (the class names). The data must have exactly as many
        classes as its labels index (when it says how many: class folders, a ClassLabel,
        classnames.txt), no label outside them, and no two scored classes may share a name
        (identical prompts give identical prototypes) unless ``allow_duplicate_classnames``;
        the prompt templates are checked too (each has ``{c}``).
        Raises ClipevalError naming the dataset, the numbers and what to change.
        """
        names = self.classnames(dataset)
        check_templates(self.templates(dataset))
        blank = [i for i, n in enumerate(names) if not n.strip()]
        if blank:
            raise ClipevalError(f"dataset '{dataset}': {self._names_origin()} has blank names at {blank[:5]}.")
        scored = [[i] for i in range(len(names))] if scored is None else scored
        if not scored or not all(scored):
            raise ClipevalError(f"dataset '{dataset}': the class subset or a class group is empty.")
        if len(scored) < 2:
            raise ClipevalError(
                f"dataset '{dataset}': only one class is scored, so every prediction is that class and top-1 is 1 "
                "by construction. Score at least two classes (task.classnames, task.class_subset)."
            )
        outside = sorted({i for group in scored for i in group if not 0 <= i < len(names)})
        if outside:
            raise ClipevalError(
                f"dataset '{dataset}': class indices {outside[:5]} are outside the {len(names)} names of "
                f"{self._names_origin()} (indices count from 0)."
            )
        self._check_duplicates(dataset, names, scored)
        self._check_class_count(dataset, len(scored) if labels == "subset" else len(names), labels, len(names))

    def _check_duplicates(self, dataset: str, names: list[str], scored: list[list[int]]) -> None:
        holders: dict[str, set[int]] = {}
        for k, group in enumerate(scored):
            for i in group:
                holders.setdefault(" ".join(names[i].split()).casefold(), set()).add(k)
        repeated = {name: sorted(ks) for name, ks in holders.items() if len(ks) > 1}
        if not repeated:
            return
        shown = ", ".join(f"'{n}' (scored classes {ks})" for n, ks in list(repeated.items())[:5])
        if self.allow_duplicate_classnames:
            log.info("Task %s, dataset %s: class names shared by several scored classes: %s", self.name, dataset, shown)
            return
        raise ClipevalError(
            f"dataset '{dataset}': {len(repeated)} class name(s) of {self._names_origin()} belong to more than one "
            f"scored class (case and spacing ignored): {shown}. Their prompts, and so their prototypes, would be "
            "identical. Give every class a distinct name, or set ++task.allow_duplicate_classnames=true to keep "
            "them (as the ImageNet tasks do for the CLIP paper's list)."
        )

    def _check_class_count(self, dataset: str, expected: int, labels: str, num_names: int) -> None:
        source = self.sources[dataset]
        if labels == "full":
            space = f"the {num_names} names of {self._names_origin()} (labels: full)"
        elif expected == num_names:
            space = f"the {num_names} names of {self._names_origin()}"
        else:
            space = f"the {expected} scored classes (a class subset or ObjectNet-style class groups)"
        if labels == "subset" and expected != num_names:
            fix = "A class subset needs one class index per class of the data, in the order of its labels."
        else:
            fix = "Give one class name per class of the data, in label order" + (
                " (to score some of the names only, index them with task.class_subset)." if labels == "subset" else "."
            )
        bounds = source.label_range()
        if bounds is not None and bounds[0] < 0:
            raise ClipevalError(
                f"dataset '{dataset}' ({source.describe()}) has samples without a label (label {bounds[0]}). "
                "Use a labelled split."
            )
        have = source.num_classes
        if have is not None and have != expected:
            raise ClipevalError(
                f"dataset '{dataset}' ({source.describe()}) has {have} classes, but its labels are scored against "
                f"{space}. {fix}"
            )
        if bounds is not None and bounds[1] >= expected:
            raise ClipevalError(
                f"dataset '{dataset}' ({source.describe()}) has labels up to {bounds[1]}, but they are scored "
                f"against {space}. {fix}"
            )
        if have is None and bounds is not None and bounds[1] + 1 < expected:
            log.warning(
                "Task %s, dataset %s: labels go up to %d but %d classes are scored; the data does not say how many "
                "classes it has, so classes %d..%d are candidates without samples. If the data has fewer classes, "
                "give only its class names.",
                self.name,
                dataset,
                bounds[1],
                expected,
                bounds[1] + 1,
                expected - 1,
            )

    def _names_origin(self) -> str:
        if self.classnames_option is None:
            return "the class names the data carries"
        if isinstance(self.classnames_option, str):
            return f"task.classnames ({self.classnames_option})"
        return "task.classnames"


def _say_where_it_comes_from(cfg: DictConfig) -> None:
    """Warn when a user's task folder shadows a built-in task of the same name, or its ``name`` is not its
    folder's: results of different tasks would otherwise be stored, compared and gated under one name."""
    if not cfg.get("dir"):
        return
    folder = Path(str(cfg.dir)).resolve()
    builtin = (builtin_tasks_dir() / folder.name).resolve()
    if folder != builtin and (builtin / "task.yaml").is_file():
        log.warning(
            "Task '%s' is read from %s (CLIPEVAL_TASKS), which shadows the built-in task of that name in %s; "
            "its results are stored under the same name. Rename the folder to keep them apart.",
            folder.name, folder, builtin,
        )  # fmt: skip
    if str(cfg.name) != folder.name:
        log.warning(
            "The task in folder '%s' is named '%s' (task.yaml 'name'): it is chosen as task=%s but stored as '%s'.",
            folder.name, cfg.name, folder.name, cfg.name,
        )  # fmt: skip


def load_task(cfg: DictConfig) -> Task:
    """Build a task's sources and evaluators, and check them (:meth:`Task.check`).

    Absent data, and class names, subsets or labels that do not fit the data, fail here,
    before any model loads or image is encoded.

    A dataset marked ``optional: true`` (the ImageNet val images a shift task pairs with)
    may be absent: the task then runs without the evaluations that need it.
    """
    checked = validate_task(cfg, cfg._get_full_key(None) or "task")  # types and keys, naming the task file
    _say_where_it_comes_from(cfg)
    sources, missing, required = {}, {}, {}
    for name, node in cfg.datasets.items():
        spec = OmegaConf.to_container(node, resolve=True)  # resolved in place: interpolations reach the task
        optional = bool(spec.pop("optional", False))
        try:
            sources[name] = build(spec, f"dataset '{name}' of task '{cfg.name}'")
            if isinstance(sources[name], MapSource) and len(sources[name]) == 0:
                raise ClipevalError(
                    f"Dataset '{name}' of task '{cfg.name}' ({sources[name].describe()}) has no samples: there is "
                    "nothing to evaluate. Check where the task reads it."
                )
        except DataNotFound as exc:
            if optional and exc.partial:  # a partial download is refused, never skipped as absent
                raise ClipevalError(
                    f"Task '{cfg.name}', dataset '{name}': {exc}\nThe dataset is optional in this run, but it is partly "
                    "there: complete it, or move it away to run without it."
                ) from None
            if not optional:
                required[name] = exc  # every absent dataset is named, not only the first
                continue
            missing[name] = str(exc)
            # one line each: a suite of many optional datasets (the 38-dataset benchmark) lists dozens
            where = f"looked in {', '.join(exc.looked)}" if exc.looked else str(exc).splitlines()[0]
            log.warning(
                "Task %s: optional dataset '%s' is absent (%s); its evaluations are skipped "
                "(hydra.verbose=clipeval.run.task says how to get it).",
                cfg.name,
                name,
                where,
            )
            log.debug("Task %s, dataset '%s': %s", cfg.name, name, exc)
    if len(required) == 1:
        raise DataNotFound.for_task(next(iter(required.values())), str(cfg.name))
    if required:
        first = next(iter(required.values()))
        raise ClipevalError(
            f"Task '{cfg.name}': {first}\nIn all, {len(required)} of the task's {len(cfg.datasets)} datasets are "
            f"not found: {', '.join(required)}."
        )
    evaluators = {name: build(node, f"evaluator '{name}'") for name, node in cfg.evaluators.items() if node is not None}
    if not evaluators:
        raise ClipevalError(f"Task '{cfg.name}' has no evaluators.")
    task = Task(
        name=checked.name,
        version=str(checked.version),
        dir=Path(cfg.dir) if cfg.get("dir") else None,
        sources=sources,
        evaluators=evaluators,
        missing=missing,
        classnames_option=cfg.get("classnames"),
        templates_option=cfg.get("templates"),
        allow_duplicate_classnames=checked.allow_duplicate_classnames,
        main_metric=checked.main_metric,
    )
    task.check()
    return task
