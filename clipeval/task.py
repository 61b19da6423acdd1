"""A task as configured in its folder: its datasets, class names, prompts and evaluators."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from clipeval.construct import build
from clipeval.errors import ClipevalError
from clipeval.lists import read_strings
from clipeval.sources.base import DataNotFound, Source

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

    def classnames(self, dataset: str) -> list[str]:
        """The task's class names, else the ones the data carries (folder names, ClassLabel, classnames.txt)."""
        if self.classnames_option is not None:
            return read_strings(self.classnames_option, "task.classnames", self.dir)
        names = self.sources[dataset].classnames
        if not names:
            raise ClipevalError(f"Dataset '{dataset}' of task '{self.name}' has no class names: set task.classnames.")
        return list(names)

    def templates(self, dataset: str) -> list[str]:
        if self.templates_option is not None:
            return read_strings(self.templates_option, "task.templates", self.dir)
        return list(self.sources[dataset].templates or DEFAULT_TEMPLATES)


def load_task(cfg: DictConfig) -> Task:
    """Build a task's sources and evaluators; absent data fails here, before any model loads.

    A dataset marked ``optional: true`` (the ImageNet val images a shift task pairs with)
    may be absent: the task then runs without the evaluations that need it.
    """
    for key in ("name", "datasets", "evaluators"):
        if key not in cfg:
            raise ClipevalError(f"Task config is missing '{key}'. A task.yaml needs name, datasets and evaluators.")
    sources, missing = {}, {}
    for name, node in cfg.datasets.items():
        spec = OmegaConf.to_container(node, resolve=True)  # resolved in place: interpolations reach the task
        optional = bool(spec.pop("optional", False))
        try:
            sources[name] = build(spec, f"dataset '{name}' of task '{cfg.name}'")
        except DataNotFound as exc:
            if not optional:
                raise DataNotFound.for_task(exc, str(cfg.name)) from None
            missing[name] = str(exc)
            log.warning(
                "Task %s: optional dataset '%s' is absent; its evaluations are skipped.\n%s", cfg.name, name, exc
            )
    evaluators = {name: build(node, f"evaluator '{name}'") for name, node in cfg.evaluators.items() if node is not None}
    if not evaluators:
        raise ClipevalError(f"Task '{cfg.name}' has no evaluators.")
    return Task(
        name=str(cfg.name),
        version=str(cfg.get("version", "1")),
        dir=Path(cfg.dir) if cfg.get("dir") else None,
        sources=sources,
        evaluators=evaluators,
        missing=missing,
        classnames_option=cfg.get("classnames"),
        templates_option=cfg.get("templates"),
    )
