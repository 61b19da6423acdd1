"""A task as configured in its folder: its datasets, class names, prompts and evaluators."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from clipeval.construct import build
from clipeval.errors import ClipevalError
from clipeval.sources.base import Source

DEFAULT_TEMPLATES = ["a photo of a {c}."]


@dataclass
class Task:
    name: str
    version: str
    dir: Path | None
    sources: dict[str, Source]
    evaluators: dict[str, Any]
    classnames_option: Any = None
    templates_option: Any = None
    class_subset_option: Any = None

    def classnames(self, dataset: str) -> list[str]:
        """The task's class names, else the ones the data carries (folder names, ClassLabel, classnames.txt)."""
        if self.classnames_option is not None:
            return read_strings(self.classnames_option, "task.classnames", self.dir)
        names = self.sources[dataset].classnames
        if not names:
            raise ClipevalError(
                f"Dataset '{dataset}' of task '{self.name}' has no class names: set task.classnames."
            )
        return list(names)

    def templates(self, dataset: str) -> list[str]:
        if self.templates_option is not None:
            return read_strings(self.templates_option, "task.templates", self.dir)
        return list(self.sources[dataset].templates or DEFAULT_TEMPLATES)

    def class_subset(self) -> list[int] | None:
        """Indices into the class list that the labels refer to (labels index the subset)."""
        if self.class_subset_option is None:
            return None
        return [
            int(i) for i in read_strings(self.class_subset_option, "task.class_subset", self.dir)
        ]


def load_task(cfg: DictConfig) -> Task:
    for key in ("name", "datasets", "evaluators"):
        if key not in cfg:
            raise ClipevalError(
                f"Task config is missing '{key}'. A task.yaml needs name, datasets and evaluators."
            )
    task_dir = Path(cfg.dir) if cfg.get("dir") else None
    sources = {
        name: build(node, f"dataset '{name}' of task '{cfg.name}'")
        for name, node in cfg.datasets.items()
    }
    evaluators = {
        name: build(node, f"evaluator '{name}'")
        for name, node in cfg.evaluators.items()
        if node is not None
    }
    if not evaluators:
        raise ClipevalError(f"Task '{cfg.name}' has no evaluators.")
    return Task(
        name=str(cfg.name),
        version=str(cfg.get("version", "1")),
        dir=task_dir,
        sources=sources,
        evaluators=evaluators,
        classnames_option=cfg.get("classnames"),
        templates_option=cfg.get("templates"),
        class_subset_option=cfg.get("class_subset"),
    )


def read_strings(value: Any, what: str, base: Path | None) -> list[str]:
    """A list given inline, or a text file with one entry per line (relative to the task folder)."""
    if isinstance(value, ListConfig):
        value = OmegaConf.to_container(value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [str(v) for v in value]
    path = Path(str(value)).expanduser()
    candidates = [path] if path.is_absolute() or base is None else [path, base / path]
    for candidate in candidates:
        if candidate.is_file():
            return [
                line.strip()
                for line in candidate.read_text(encoding="utf-8").splitlines()
                if line.strip()
            ]
    raise ClipevalError(
        f"{what}: '{value}' is neither a list nor an existing file (looked at {[str(c) for c in candidates]})."
    )
