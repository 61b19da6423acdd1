"""A suite reads each dataset from several tasks and evaluators; count its encoding passes."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

from hydra import compose, initialize_config_dir

from clipeval.config.paths import conf_dir
from clipeval.features.bank import FeatureBank
from clipeval.run.runner import run


class _EncodeCounter(logging.Handler):
    """Counts the 'cache miss, encoding' records of clipeval.features.encode, one per encoding pass."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.passes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "cache miss, encoding" in record.msg:
            self.passes.append(str(record.args[0]))


def suite_passes(overrides: list[str], scratch: Path) -> dict[str, int]:
    """Run the composed config (e.g. ``suite=digits``) in-process with the disk cache off, so that
    every pass shows and none is hidden by the cache."""
    counter, reads = _EncodeCounter(), []
    features = FeatureBank.features

    def counted(bank, source):
        reads.append(source.key)
        return features(bank, source)

    logger = logging.getLogger("clipeval.features.encode")
    logger.addHandler(counter)
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False  # counted, not printed
    FeatureBank.features = counted
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose(
                config_name="config",
                overrides=[*overrides, "runtime.cache=false", "runtime.progress=false", f"store={scratch}/store"],
            )
        with contextlib.redirect_stdout(io.StringIO()):  # the suite's own summary table
            run(cfg, scratch / "suite_run")
    finally:
        FeatureBank.features = features
        logger.removeHandler(counter)
        logger.setLevel(level)
        logger.propagate = propagate
    return {"reads": len(reads), "datasets": len(set(reads)), "passes": len(counter.passes)}
