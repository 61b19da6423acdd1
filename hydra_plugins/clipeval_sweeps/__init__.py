"""clipeval's Hydra sweeper, and the launcher plugins' schemas under names clipeval's launcher configs extend.

``hydra/sweeper=clipeval`` (the default, see conf/config.yaml) is Hydra's basic sweeper whose sweep goes on past
a failed job and ends with one summary of every job (:mod:`clipeval.sweep`). The launcher plugins register their
configs as ``hydra/launcher/<name>``, the names clipeval's own ``conf/hydra/launcher/<name>.yaml`` take over; their
schemas are registered again here as ``hydra/launcher/plugin/<name>``, which clipeval's configs extend (when the
plugin is installed: ``pip install 'clipeval[launchers]'``).
"""

from __future__ import annotations

import importlib
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.plugins.search_path_plugin import SearchPathPlugin


class ClipevalSweeper(BasicSweeper):
    def sweep(self, arguments: list[str]) -> Any:
        from clipeval.sweep import run_sweep

        return run_sweep(self, arguments, super().sweep)


#: {launcher option: (the plugin's module that registers its config, the config's class)}
PLUGIN_SCHEMAS = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher.config", "JobLibLauncherConf"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher.config", "LocalQueueConf"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher.config", "SlurmQueueConf"),
}


def _register_plugin_schemas() -> None:
    """Each installed launcher plugin's config moved from ``hydra/launcher/<name>`` to ``hydra/launcher/plugin/<name>``:
    clipeval's conf/hydra/launcher/<name>.yaml is the option of that name, and extends it (where both had the name,
    Hydra 1.3 would merge the plugin's config into the file by itself, with a deprecation warning)."""
    store = ConfigStore.instance()
    for name, (module, schema) in PLUGIN_SCHEMAS.items():
        try:
            node = getattr(importlib.import_module(module), schema)
        except ImportError:
            continue
        store.store(group="hydra/launcher/plugin", name=name, node=node, provider="clipeval")
        store.repo.get("hydra", {}).get("launcher", {}).pop(f"{name}.yaml", None)


class LauncherSchemas(SearchPathPlugin):
    """Moves the launcher plugins' configs (:func:`_register_plugin_schemas`) once Hydra has scanned its plugins:
    the scan executes every plugin module again, their registrations included, so doing it at import would not
    last. Hydra asks for the search path before it composes any config, in every process that composes one."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        _register_plugin_schemas()
