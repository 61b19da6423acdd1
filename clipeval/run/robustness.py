"""A suite's robustness settings, resolved against its tasks, and the baselines' points on them.

The suite config names settings as ``task/dataset`` or ``task`` (all of its datasets); this
turns them into (task, dataset) pairs and asks the baseline provider for its points, with the
settings' live sources (a provider like the digits zoo evaluates its models on them). The result,
a :class:`~clipeval.report.robustness.RobustnessSpec`, is stored with the run, so the report can
be recomputed from the results document alone.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from clipeval.config.construct import build
from clipeval.errors import ClipevalError
from clipeval.report.robustness import IN_DISTRIBUTION
from clipeval.results.robustness import DatasetRef, RobustnessSpec, ShiftSpec
from clipeval.run.task import Task


def load_baselines(cfg: DictConfig) -> Any:
    """The suite's baselines, built before any model runs so that a missing table fails at once."""
    return build(cfg.baselines, "the suite's baselines")


def _refs(selector: str, tasks: dict[str, Task]) -> list[DatasetRef]:
    """``task/dataset`` or ``task`` (its datasets) -> [(task, dataset)]."""
    task_name, _, dataset = str(selector).partition("/")
    if task_name not in tasks:
        raise ClipevalError(
            f"Robustness setting names task '{task_name}', which the suite does not run ({list(tasks)})."
        )
    return [(task_name, d) for d in ([dataset] if dataset else list(tasks[task_name].sources))]


def robustness_spec(cfg: DictConfig, tasks: dict[str, Task], baselines: Any) -> RobustnessSpec:
    """The settings of ``cfg`` (in_distribution, shifts) and ``baselines``' points on them."""
    shifts_cfg = OmegaConf.to_container(cfg.shifts, resolve=True)
    shifts = {}
    for name, spec in shifts_cfg.items():
        spec = spec if isinstance(spec, dict) else {"datasets": spec}
        paired = _refs(spec["in_distribution"], tasks) if "in_distribution" in spec else None
        shifts[name] = ShiftSpec(_refs(spec["datasets"], tasks), paired)
    in_distribution = _refs(cfg.in_distribution, tasks)
    sources = {IN_DISTRIBUTION: [tasks[t].sources[d] for t, d in in_distribution]}
    sources |= {name: [tasks[t].sources[d] for t, d in s.datasets] for name, s in shifts.items()}
    points = baselines.points(sources)
    missing = sorted(set(shifts) - set(points))
    if missing:
        raise ClipevalError(f"The baselines have no points for shift(s) {missing} (they have {sorted(points)}).")
    average = baselines.average_points(sources) if hasattr(baselines, "average_points") else None
    label = getattr(baselines, "label", type(baselines).__name__)
    return RobustnessSpec(in_distribution, shifts, label, {n: points[n] for n in shifts}, average)
