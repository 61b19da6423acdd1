"""Hydra config source that turns task folders into options of the ``task`` group.

A task is a folder, ``<tasks root>/<name>/task.yaml`` plus its data files and README, so
that adding a task never means editing a central list. Hydra only knows groups as folders
of YAML files, so this source presents each tasks root as a virtual ``task/<name>.yaml``
tree. ``clipeval-tasks://`` (empty path) means the user's ``CLIPEVAL_TASKS`` folders and
then the built-in ones; ``clipeval-tasks:///some/dir`` means that folder alone.

A task.yaml that is not YAML, is empty, or is not a mapping with name, datasets and evaluators
is refused here with a ClipevalError naming the file (exit 2 on the command line).

The loaded config gains ``dir``, the task folder's absolute path, so a task can name its
own files as ``${task.dir}/classnames.txt``.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

GROUP = "task"
TASK_FILE = "task.yaml"


class TaskFolderSource(ConfigSource):
    @staticmethod
    def scheme() -> str:
        return "clipeval-tasks"

    def _roots(self) -> list[Path]:
        if self.path:
            return [Path(self.path)]
        from clipeval.config.paths import task_dirs

        return task_dirs()

    def _task_folder(self, config_path: str) -> Path | None:
        parts = config_path.strip("/").removesuffix(".yaml").split("/")
        if len(parts) != 2 or parts[0] != GROUP:
            return None
        for root in self._roots():
            folder = root / parts[1]
            if (folder / TASK_FILE).is_file():
                return folder
        return None

    def load_config(self, config_path: str) -> ConfigResult:
        folder = self._task_folder(config_path)
        if folder is None:
            raise ConfigLoadError(f"Task not found: {config_path}")
        from clipeval.config.schema import check_task_file

        path = folder / TASK_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            from clipeval.errors import ClipevalError

            raise ClipevalError(
                f"{path} is not UTF-8 text (byte {exc.start} is {exc.object[exc.start : exc.start + 1]!r}): "
                "save it as UTF-8 (a task.yaml is YAML text)."
            ) from None
        check_task_file(text, path)  # YAML, a mapping, name/datasets/evaluators: else ClipevalError naming the file
        cfg = OmegaConf.create(text)
        if "dir" not in cfg:
            cfg.dir = str(folder.resolve())
        return ConfigResult(
            config=cfg,
            path=f"{self.scheme()}://{self.path}",
            provider=self.provider,
            header=ConfigSource._get_header_dict(text[:512]),
        )

    def available(self) -> bool:
        return any(root.is_dir() for root in self._roots())

    def is_group(self, config_path: str) -> bool:
        return config_path.strip("/") in ("", GROUP)

    def is_config(self, config_path: str) -> bool:
        return self._task_folder(config_path) is not None

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        path = config_path.strip("/")
        if path == "":
            return [GROUP] if results_filter in (None, ObjectType.GROUP) else []
        if path != GROUP or results_filter == ObjectType.GROUP:
            return []
        names = {
            folder.name
            for root in self._roots()
            if root.is_dir()
            for folder in root.iterdir()
            if (folder / TASK_FILE).is_file()
        }
        return sorted(names)


class TaskFolderSearchPath(SearchPathPlugin):
    """Adds the task folders to clipeval's search path (and to no other Hydra app's).

    Done here rather than in the primary config's ``hydra.searchpath`` so that every part
    of Hydra, ``--help``'s list of groups included, sees the ``task`` group.
    """

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from clipeval.config.paths import conf_dir

        ours = str(conf_dir())
        if any(element.path.removeprefix("file://") == ours for element in search_path.get_path()):
            search_path.append(provider="clipeval-tasks", path=f"{TaskFolderSource.scheme()}://")
