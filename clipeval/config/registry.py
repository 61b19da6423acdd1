"""What can be chosen on the command line: config groups and their options."""

from __future__ import annotations

from pathlib import Path

from clipeval.config.paths import conf_dir, task_dirs

TASK_GROUP = "task"


def groups() -> list[str]:
    conf = conf_dir()
    found = {p.name for p in conf.iterdir() if p.is_dir() and p.name != "hydra"}
    return sorted(found | {TASK_GROUP})


def options(group: str) -> list[str]:
    if group == TASK_GROUP:
        return sorted({p.parent.name for root in task_dirs() if root.is_dir() for p in root.glob("*/task.yaml")})
    folder = Path(conf_dir()) / group
    return sorted(p.stem for p in folder.glob("*.yaml"))


def chosen_groups() -> list[str]:
    """The groups a run chooses an option of on the command line (``task=``, ``suite=``, ``model=``,
    ``runtime=``): those of the primary config's defaults list, in its order."""
    import yaml

    defaults = yaml.safe_load((Path(conf_dir()) / "config.yaml").read_text(encoding="utf-8")).get("defaults", [])
    return [key for entry in defaults if isinstance(entry, dict) for key in entry if "/" not in key and " " not in key]
