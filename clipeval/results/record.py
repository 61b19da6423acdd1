"""The record: one number an evaluation produced, with its identity as data, never as a string.

A record names its task, dataset and metric, and holds the parameters that tell it apart from
other records of the same metric on the same data (a few-shot probe's ``k``, an attack's
``attack``, ``norm`` and ``eps``): ``(task, dataset, metric, params)`` is its identity
(:attr:`Record.key`). What a metric is (better when higher or lower, a fraction or a count,
computed from other records or measured) is said once, in :data:`METRICS`.

Records travel as JSON in results documents (:mod:`clipeval.results.store`); their schema is
versioned there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from clipeval.errors import ClipevalError

#: parameter values are JSON scalars, so that a key survives a round trip through a results file
ParamValue = str | int | float | bool


@dataclass(frozen=True)
class Metric:
    """What a metric's values mean.

    ``unit``: ``fraction`` (a proportion in [0, 1], shown in percent), ``difference`` (a
    difference of fractions, shown in percentage points) or ``count``. ``derived``: computed from
    other records (effective robustness from top-1), so a regression gate compares the records it
    comes from. ``class_weighted``: a mean over classes of per-class proportions (a paired test
    must keep samples in their class). ``summary``: shown in a suite's printed summary when its
    params match ``summary_params``.
    """

    name: str
    description: str
    higher_is_better: bool = True
    unit: str = "fraction"
    derived: bool = False
    class_weighted: bool = False
    summary: bool = False
    summary_params: Mapping[str, ParamValue] = field(default_factory=dict)

    def in_summary(self, record: Record) -> bool:
        return self.summary and all(record.params.get(k) == v for k, v in self.summary_params.items())


#: the metrics clipeval's evaluators write; a plugin adds its own with :func:`register_metric`
METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    """Add (or replace) a metric in :data:`METRICS`; returns it."""
    METRICS[metric.name] = metric
    return metric


for _m in (
    Metric("top1", "share of samples whose highest-scoring class is the label", summary=True),
    Metric("top5", "share of samples whose label is among the five highest-scoring classes"),
    Metric("mean_per_class_recall", "mean over classes of each class's top-1", class_weighted=True),
    Metric("clean_top1", "top-1 on the attacked sample before any attack", summary=True),
    Metric(
        "robust_top1",
        "share of samples classified correctly both clean and after the attack (params: attack, norm, eps)",
        summary=True,
        summary_params={"attack": "worst"},
    ),
    Metric(
        "k_matching_zero_shot",
        "labelled examples per class a few-shot linear probe needs to match zero-shot top-1 (interpolated)",
        higher_is_better=False,
        unit="count",
        summary=True,
    ),
    Metric(
        "effective_robustness",
        "shift top-1 minus the baselines' logit-linear fit at the in-distribution top-1 (Taori et al. 2020)",
        unit="difference",
        derived=True,
    ),
):
    register_metric(_m)


def metric_info(name: str) -> Metric:
    """The registered metric; an unregistered one (a plugin's) is taken as a fraction, higher is better."""
    return METRICS.get(name) or Metric(name, "a metric no clipeval module registered")


@dataclass(frozen=True)
class Record:
    """One number with its sample count and interval.

    ``value``: in the metric's unit (a fraction for accuracies); ``n``: the samples it is measured
    on; ``ci``: its 95% interval by ``ci_method``; ``std``: the spread over repeats (few-shot
    seeds) when ``value`` is their mean. ``task`` is set by the runner (evaluators leave it
    empty). ``params``: what distinguishes this record from others of the same task, dataset and
    metric (JSON scalars). ``samples``: the key of its per-sample data in the results document,
    and ``outcome`` the named per-sample outcome there (None: derived from the ranked predictions
    by the metric's definition). ``tolerance``: the drop a regression gate allows, for a
    published number without per-sample data (a golden file's); ``n`` may then be None when the
    source does not state its sample count (so there is no interval or paired test to be had).
    """

    dataset: str
    metric: str
    value: float
    n: int | None
    ci: tuple[float, float]
    ci_method: str = "clopper-pearson"
    std: float | None = None
    task: str = ""
    params: Mapping[str, ParamValue] = field(default_factory=dict)
    samples: str | None = None
    outcome: str | None = None
    tolerance: float | None = None

    @property
    def key(self) -> tuple[str, str, str, tuple[tuple[str, ParamValue], ...]]:
        """The record's identity: (task, dataset, metric, sorted params)."""
        return self.task, self.dataset, self.metric, tuple(sorted(self.params.items()))

    @property
    def label(self) -> str:
        """For tables and messages only (never parsed): ``task/dataset`` and the params, e.g. ``digits/test k=4``."""
        where = f"{self.task}/{self.dataset}" if self.task else self.dataset
        return " ".join([where, *(f"{k}={_show(v)}" for k, v in sorted(self.params.items()))])

    @property
    def info(self) -> Metric:
        return metric_info(self.metric)

    def with_task(self, task: str) -> Record:
        return replace(self, task=task)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.task, "dataset": self.dataset, "metric": self.metric}
        if self.params:
            out["params"] = dict(sorted(self.params.items()))
        n = None if self.n is None else int(self.n)
        out |= {"value": float(self.value), "n": n, "ci": [float(self.ci[0]), float(self.ci[1])]}
        out["ci_method"] = self.ci_method
        for name in ("std", "samples", "outcome", "tolerance"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "record") -> Record:
        """A record from its JSON; ClipevalError naming ``where`` and the field when it is malformed."""
        if not isinstance(data, Mapping):
            raise ClipevalError(f"{where} is {type(data).__name__}, not an object with task, dataset, metric, value.")
        for name in ("dataset", "metric"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise ClipevalError(f"{where}: '{name}' must be a non-empty string (got {data.get(name)!r}).")
        what = f"{where} ({data.get('task', '')}/{data['dataset']} {data['metric']})"
        params = data.get("params") or {}
        if not isinstance(params, Mapping) or not all(
            isinstance(v, ParamValue) and not isinstance(v, float) or isinstance(v, float) and math.isfinite(v)
            for v in params.values()
        ):
            raise ClipevalError(f"{what}: 'params' must map names to strings, numbers or booleans (got {params!r}).")
        ci = data.get("ci")
        if not (isinstance(ci, list | tuple) and len(ci) == 2):
            raise ClipevalError(f"{what}: 'ci' must be a pair [low, high] (got {ci!r}).")
        for name in ("samples", "outcome"):
            if data.get(name) is not None and not isinstance(data[name], str):
                raise ClipevalError(f"{what}: '{name}' must be a string key (got {data[name]!r}).")
        tolerance = data.get("tolerance")
        if tolerance is not None and finite(tolerance, f"{what}: tolerance") < 0:
            raise ClipevalError(f"{what}: tolerance is {tolerance}: a tolerance is an allowed drop, at least 0.")
        n = data.get("n")
        if n is None and tolerance is None:
            raise ClipevalError(
                f"{what}: 'n' must be a whole number of samples (got None); only a published number with its own "
                "'tolerance' may leave it unknown (null)."
            )
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise ClipevalError(f"{what}: 'n' must be a whole number of samples (got {n!r}).")
        return cls(
            dataset=data["dataset"],
            metric=data["metric"],
            value=finite(data.get("value"), f"{what}: value"),
            n=n,
            ci=(finite(ci[0], f"{what}: ci"), finite(ci[1], f"{what}: ci")),
            ci_method=str(data.get("ci_method", "clopper-pearson")),
            std=None if data.get("std") is None else finite(data["std"], f"{what}: std"),
            task=str(data.get("task") or ""),
            params=dict(params),
            samples=data.get("samples"),
            outcome=data.get("outcome"),
            tolerance=None if tolerance is None else float(tolerance),
        )


def finite(value: Any, what: str) -> float:
    """``value`` as a float; ClipevalError naming ``what`` unless it is a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ClipevalError(
            f"{what} is {value!r}, not a finite number: a NaN or infinite value would make every comparison "
            "pass or fail silently. Fix the file (or rerun the evaluation that produced it)."
        )
    return float(value)


def _show(value: ParamValue) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
