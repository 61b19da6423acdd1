"""Prompts the text tower encodes: each task builds the prototypes of the classes it scores, once.

The ImageNet family's tasks run in-process on a generated layout (:func:`imagenet_family`)
with the CLIP paper's 80 templates, and a log handler counts the prompts
:mod:`clipeval.features.classifier` says it encodes. Three measurements:

- ``suite``: ``suite=natural_shifts`` in one run with the disk cache off;
- ``sequence``: the six tasks one run each, in the order a user might type them, sharing one
  cache folder (each run encodes only the classes no earlier run did);
- ``headline``: ``task=imagenet_r`` on an empty cache and again (prompts and seconds).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

from hydra import compose, initialize_config_dir

from clipeval.config.paths import conf_dir
from clipeval.run.runner import run

SEQUENCE = ("imagenet_r", "imagenet_a", "objectnet", "imagenet_v2", "imagenet_sketch", "imagenet")


class _PromptCounter(logging.Handler):
    """Sums the prompts of clipeval.features.classifier's 'encoding N prompts' records."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.prompts = 0

    def emit(self, record: logging.LogRecord) -> None:
        found = re.search(r"encoding (\d+) prompts", record.getMessage())
        if found:
            self.prompts += int(found.group(1))


@contextlib.contextmanager
def counted() -> Iterator[_PromptCounter]:
    counter = _PromptCounter()
    logger = logging.getLogger("clipeval.features.classifier")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(counter)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # counted, not printed
    try:
        yield counter
    finally:
        logger.removeHandler(counter)
        logger.setLevel(level)
        logger.propagate = propagate


def run_counted(overrides: list[str], run_dir: Path) -> dict[str, float]:
    """Prompts encoded and wall seconds (model loading and image encoding included) of one run, in-process."""
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*overrides, "runtime.progress=false"])
    with counted() as counter, contextlib.redirect_stdout(io.StringIO()):  # the run's summary table
        start = time.perf_counter()
        run(cfg, run_dir)
        seconds = time.perf_counter() - start
    return {"prompts": counter.prompts, "seconds": seconds}


def suite_once(overrides: list[str], data_root: Path, scratch: Path) -> int:
    """Prompts of ``suite=natural_shifts`` in one run, disk cache off."""
    overrides = [*overrides, "suite=natural_shifts", f"data_root={data_root}", "~suite.robustness"]
    overrides += ["runtime.cache=false", f"store={scratch}/store"]
    return int(run_counted(overrides, scratch / "suite_run")["prompts"])


def sequence(overrides: list[str], data_root: Path, scratch: Path) -> list[tuple[str, int]]:
    """Prompts of each task of :data:`SEQUENCE`, one run each, sharing the cache folder ``scratch/cache``."""
    common = [*overrides, f"data_root={data_root}", f"cache_dir={scratch}/cache", f"store={scratch}/store"]
    return [
        (task, int(run_counted([*common, f"task={task}"], scratch / f"run_{task}")["prompts"])) for task in SEQUENCE
    ]


def headline(overrides: list[str], data_root: Path, scratch: Path) -> dict[str, dict[str, float]]:
    """``task=imagenet_r`` on an empty cache folder, then again: prompts and seconds of each."""
    common = [
        *overrides,
        "task=imagenet_r",
        f"data_root={data_root}",
        f"cache_dir={scratch}/cache",
        f"store={scratch}/store",
    ]
    return {kind: run_counted(common, scratch / f"run_{kind}") for kind in ("cold", "warm")}
