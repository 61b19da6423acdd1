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

import numpy as np

from clipeval.errors import ClipevalError, did_you_mean, kind_of, quoted

#: parameter values are JSON scalars, so that a key survives a round trip through a results file
ParamValue = str | int | float | bool


@dataclass(frozen=True)
class Metric:
    """What a metric's values mean.

    ``unit``: ``fraction`` (a proportion in [0, 1], shown in percent), ``difference`` (a
    difference of fractions, shown in percentage points), ``count``, or ``ratio`` (a ratio >= 0 that may
    exceed 1, shown in percent: a corruption error relative to a baseline's), or ``signed_ratio`` (a ratio of
    differences, of either sign: a relative corruption error, the model's error above its clean error over the
    baseline's). ``derived``: computed from
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

    def to_json(self) -> dict[str, Any]:
        """What a results document keeps of the metric (so a reader need not import the plugin defining it)."""
        return {"description": self.description, "higher_is_better": self.higher_is_better, "unit": self.unit,
                "derived": self.derived, "class_weighted": self.class_weighted}  # fmt: skip

    @classmethod
    def from_json(cls, name: str, data: Any, where: str = "metric") -> Metric:
        if not isinstance(data, Mapping):
            raise ClipevalError(f"{where} '{name}' is {kind_of(data)}, not an object.")
        flags = {k: data.get(k, getattr(cls, k)) for k in ("higher_is_better", "derived", "class_weighted")}
        bad = [k for k, v in flags.items() if not isinstance(v, bool)]
        if bad or data.get("unit", "fraction") not in UNITS:
            raise ClipevalError(
                f"{where} '{name}': {', '.join(bad) or 'unit'} must be "
                + ("true or false." if bad else f"one of {', '.join(UNITS)} (got {quoted(data.get('unit'))}).")
            )
        return cls(name, str(data.get("description", "")), unit=data.get("unit", "fraction"), **flags)

    def same_as(self, other: Metric) -> bool:
        """Whether two definitions mean the same (description and summary settings aside)."""
        return self.to_json() | {"description": ""} == other.to_json() | {"description": ""}


UNITS = ("fraction", "difference", "count", "ratio", "signed_ratio")

#: the metrics clipeval's evaluators write; a plugin adds its own with :func:`register_metric`
METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    """Add a metric to :data:`METRICS`; returns it. Registering the same definition again (a module imported
    twice) is fine; ClipevalError when the name is taken by another definition (a plugin may not redefine
    ``top1``) or the unit is not one of :data:`UNITS`."""
    if metric.unit not in UNITS:
        raise ClipevalError(f"Metric '{metric.name}': unit must be one of {', '.join(UNITS)} (got {metric.unit!r}).")
    known = METRICS.get(metric.name)
    if known is not None and not known.same_as(metric):
        raise ClipevalError(
            f"Metric '{metric.name}' is already registered as {known.to_json()}; a different definition "
            f"({metric.to_json()}) would change how every record of it is read. Give your metric its own name."
        )
    METRICS.setdefault(metric.name, metric)
    return METRICS[metric.name]


def retrieval_metrics(k: int) -> tuple[Metric, Metric, Metric]:
    """The three recall metrics of retrieval at ``k`` (their names carry k, as CLIP_benchmark's do)."""
    return (
        Metric(
            f"image_retrieval_recall@{k}",
            f"text -> image: share of captions whose image is among the {k} images most similar to it",
            summary=k == 1,
        ),
        Metric(
            f"text_retrieval_recall@{k}",
            f"image -> text: share of images with one of their captions among the {k} most similar captions",
            summary=k == 1,
        ),
        Metric(
            f"mean_recall@{k}",
            f"mean of image_retrieval_recall@{k} and text_retrieval_recall@{k} (DataComp's retrieval metric)",
            derived=True,
            summary=k == 1,
        ),
    )


def jaccard_metric(group: str) -> Metric:
    """The Jaccard metric of association instances (clipeval.evaluators.association): ``avg_jaccard_score`` over all
    instances (``group`` "avg"), else ``jaccard_score_<group>`` over the instances of that group (DataComp's names)."""
    if group == "avg":
        return Metric(
            "avg_jaccard_score",
            "mean over association instances of the Jaccard index of the k candidates most similar to the cue and the "
            "k right ones (DataComp's WinoGAViL protocol)",
        )
    return Metric(
        f"jaccard_score_{group}",
        f"mean Jaccard index (as avg_jaccard_score) over the instances whose number of candidates is in group {group}",
        summary=group == "10-12",
    )


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
        "labelled examples per class a few-shot linear probe needs to match zero-shot top-1 (interpolated from "
        "the few-shot top-1 records, which are gated themselves)",
        higher_is_better=False,
        unit="count",
        derived=True,
        summary=True,
    ),
    Metric(
        "ece",
        "expected calibration error of the top prediction's softmax confidence at the model's logit scale: the "
        "bin-size-weighted mean |accuracy - mean confidence| over equal-width confidence bins (params: bins; Guo et "
        "al. 2017)",
        higher_is_better=False,
    ),
    Metric(
        "ood_aupr",
        "area under the precision-recall curve (average precision) of detecting the anomalies (positives) among "
        "in-distribution samples by an anomaly score (params: score; Hendrycks et al. 2021, ImageNet-O)",
        summary=True,
    ),
    Metric("ood_auroc", "area under the ROC curve of detecting the anomalies by the anomaly score (params: score)"),
    Metric(
        "ood_fpr95",
        "share of in-distribution samples flagged as anomalies at the threshold that finds 95% of the anomalies "
        "(params: score)",
        higher_is_better=False,
    ),
    Metric(
        "worst_group_top1",
        "top-1 in the group of samples (by a metadata field) where it is lowest (datacomp's acc_wg)",
    ),
    Metric(
        "worst_group_top5",
        "top-5 in the group of samples (by a metadata field) where it is lowest (datacomp's acc_top5_wg)",
    ),
    Metric(
        "macro_f1",
        "mean over the classes present in the labels of each class's F1 of top-1 (WILDS F1-macro_all)",
    ),
    Metric(
        "benchmark_average",
        "plain mean of each dataset's main metric over a benchmark's datasets, only when every one is present",
        derived=True,
    ),
    Metric(
        "effective_robustness",
        "shift top-1 minus the baselines' logit-linear fit at the in-distribution top-1 (Taori et al. 2020)",
        unit="difference",
        derived=True,
    ),
    # ImageNet-C (clipeval.evaluators.corruption_error; Hendrycks & Dietterich 2019)
    Metric(
        "corruption_error",
        "top-1 error summed over the five severities of one corruption, divided by the baseline's (CE)",
        higher_is_better=False,
        unit="ratio",
        derived=True,
    ),
    Metric(
        "mce",
        "mean over corruptions of the corruption error (mCE)",
        higher_is_better=False,
        unit="ratio",
        derived=True,
        summary=True,
    ),
    Metric(
        "relative_mce",
        "mean over corruptions of the top-1 error above the clean error, relative to the baseline's (relative mCE)",
        higher_is_better=False,
        unit="signed_ratio",
        derived=True,
    ),
    # retrieval (clipeval.evaluators.retrieval), at the k it writes by default
    *(metric for k in (1, 5, 10) for metric in retrieval_metrics(k)),
    # association (clipeval.evaluators.association), in DataComp's groups
    *(jaccard_metric(group) for group in ("avg", "5", "6", "10", "12", "5-6", "10-12")),
):
    register_metric(_m)


def metric_info(name: str) -> Metric:
    """The registered metric; ClipevalError for a name nobody registered (say what to do)."""
    if name not in METRICS:
        raise ClipevalError(
            f"Metric '{name}' is not registered, so clipeval cannot tell whether higher is better or what its unit "
            "is. Register it where the evaluator that writes it is defined: clipeval.results.record.register_metric("
            f"Metric('{name}', 'what it measures', higher_is_better=..., unit=...)). {did_you_mean(name, METRICS)}"
        )
    return METRICS[name]


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

    def __post_init__(self) -> None:
        """Normalise numpy scalars to Python ones and refuse what no results document may hold.

        Raises ClipevalError ``record (task/dataset metric): <field and what is allowed>``.
        """
        for name in ("dataset", "metric"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ClipevalError(f"record: '{name}' must be a non-empty string (got {quoted(getattr(self, name))}).")
        what = (
            f"record ({self.task}/{self.dataset} {self.metric})"
            if self.task
            else f"record ({self.dataset} {self.metric})"
        )
        problem = self._problem()
        if problem:
            raise ClipevalError(f"{what}: {problem}")

    def _problem(self) -> str | None:
        """The first field that is not allowed (normalising the others in place), or None."""
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        if not isinstance(self.task, str):
            return f"'task' must be a string (got {quoted(self.task)})."
        if not isinstance(self.value, int | float | np.integer | np.floating) or isinstance(self.value, bool):
            return f"value is {quoted(self.value)}, not a number."
        if not math.isfinite(self.value):
            return f"value is {quoted(self.value)}, not a finite number."
        put("value", float(self.value))
        if self.n is None:
            if self.tolerance is None:
                return "'n' must be a whole number of samples (got null); only a published number with its own 'tolerance' may leave it unknown (null)."
        elif isinstance(self.n, bool) or not isinstance(self.n, int | np.integer) or self.n < 1:
            return f"'n' must be a positive whole number of samples (got {quoted(self.n)})."
        else:
            put("n", int(self.n))
        ci = self.ci
        if not (isinstance(ci, list | tuple) and len(ci) == 2) or not all(_is_finite(v) for v in ci):
            return f"'ci' must be a pair [low, high] of finite numbers (got {quoted(ci)})."
        if ci[0] > ci[1]:
            return f"'ci' must be [low, high] with low <= high (got {list(ci)})."
        put("ci", (float(ci[0]), float(ci[1])))
        params = _params(self.params)
        if isinstance(params, str):
            return params
        put("params", params)
        for name in ("std", "tolerance"):
            value = getattr(self, name)
            if value is not None and not (_is_finite(value) and value >= 0):
                return f"{name} is {quoted(value)}: it must be a finite number >= 0 (or absent)."
            if value is not None:
                put(name, float(value))
        for name in ("samples", "outcome", "ci_method"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                return f"'{name}' must be a string (got {quoted(getattr(self, name))})."
        return None

    @classmethod
    def from_json(cls, data: Any, where: str = "record") -> Record:
        """A record from its JSON; ClipevalError naming ``where`` and the field when it is malformed."""
        if not isinstance(data, Mapping):
            raise ClipevalError(f"{where} is {kind_of(data)}, not an object with task, dataset, metric, value.")
        for name in ("dataset", "metric"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise ClipevalError(f"{where}: '{name}' must be a non-empty string (got {quoted(data.get(name))}).")
        ci = data.get("ci")
        try:
            return cls(
                dataset=data["dataset"],
                metric=data["metric"],
                value=data.get("value"),
                n=data.get("n"),
                ci=tuple(ci) if isinstance(ci, list) else ci,
                ci_method=data.get("ci_method", "clopper-pearson"),
                std=data.get("std"),
                task=data.get("task") or "",
                params=data.get("params") or {},
                samples=data.get("samples"),
                outcome=data.get("outcome"),
                tolerance=data.get("tolerance"),
            )
        except ClipevalError as exc:
            raise ClipevalError(f"{where} {str(exc).removeprefix('record ')}") from None


def _is_finite(value: Any) -> bool:
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _params(params: Any) -> dict[str, ParamValue] | str:
    """``params`` with numpy scalars as Python ones; a message when a key or value is not allowed."""
    if not isinstance(params, Mapping):
        return f"'params' must map names to strings, numbers or booleans (got {quoted(params)})."
    out: dict[str, ParamValue] = {}
    for key, value in params.items():
        if isinstance(value, np.generic):
            value = value.item()
        if not isinstance(key, str) or not (isinstance(value, str | bool | int) or _is_finite(value)):
            return f"'params' must map names to strings, numbers or booleans (got {quoted(dict(params))})."
        out[key] = value
    return out


def finite(value: Any, what: str) -> float:
    """``value`` as a float; ClipevalError naming ``what`` unless it is a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ClipevalError(
            f"{what} is {quoted(value)}, not a finite number: a NaN or infinite value would make every comparison "
            "pass or fail silently. Fix the file (or rerun the evaluation that produced it)."
        )
    return float(value)


def _show(value: ParamValue) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
