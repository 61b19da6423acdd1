"""A suite's benchmark average: the plain mean of each dataset's main metric, as open_clip's 38-dataset table
reports it (datacomp's ``evaluate.py``: ``np.mean`` of every task's ``main_metric``).

The settings travel in the results document (``benchmark``: each dataset's task, dataset, metric and params, and
why it is missing when it is), so the average is recomputed from the records alone, here and in any later report.
A dataset without its record (data absent, a task clipeval cannot run yet) is listed as missing, and the average is
then *incomplete*: it is never taken over fewer datasets than the benchmark has. The mean over the datasets present
is shown beside it, labelled as such, and never recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipeval.errors import ClipevalError
from clipeval.results.record import Record, metric_info

AVERAGE_DATASET = "average"
AVERAGE_METRIC = "benchmark_average"


@dataclass(frozen=True)
class Entry:
    """One dataset of the benchmark: where its record is, or why it is missing."""

    name: str
    task: str
    dataset: str | None
    metric: str | None
    params: Mapping[str, Any] = field(default_factory=dict)
    missing: str | None = None

    def matches(self, record: Record) -> bool:
        return (record.task, record.dataset, record.metric) == (self.task, self.dataset, self.metric) and dict(
            record.params
        ) == dict(self.params)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task, "dataset": self.dataset, "metric": self.metric,
                "params": dict(self.params), "missing": self.missing}  # fmt: skip


@dataclass(frozen=True)
class BenchmarkSpec:
    label: str
    entries: list[Entry]
    source: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "source": self.source, "datasets": [e.to_json() for e in self.entries]}

    @classmethod
    def from_json(cls, data: Any, where: str = "benchmark") -> BenchmarkSpec:
        if not isinstance(data, Mapping) or not isinstance(data.get("datasets"), list):
            raise ClipevalError(f"{where}: expected an object with 'label' and a list 'datasets'.")
        try:
            entries = [
                Entry(d["name"], d["task"], d.get("dataset"), d.get("metric"), d.get("params") or {}, d.get("missing"))
                for d in data["datasets"]
            ]
        except (KeyError, TypeError) as exc:
            raise ClipevalError(f"{where}: each dataset needs 'name' and 'task' ({exc}).") from None
        return cls(str(data.get("label", "")), entries, data.get("source"))


@dataclass(frozen=True)
class Row:
    entry: Entry
    record: Record | None

    @property
    def status(self) -> str:
        if self.record is not None:
            return "ok"
        return f"missing: {self.entry.missing}" if self.entry.missing else "missing: no record (see the run's log)"


@dataclass(frozen=True)
class BenchmarkResult:
    spec: BenchmarkSpec
    rows: list[Row]

    @property
    def present(self) -> list[Row]:
        return [r for r in self.rows if r.record is not None]

    @property
    def complete(self) -> bool:
        return len(self.present) == len(self.rows)

    @property
    def average(self) -> float | None:
        """The mean of every dataset's main metric; None unless all are present."""
        return float(np.mean([r.record.value for r in self.rows])) if self.complete else None

    @property
    def mean_of_present(self) -> float | None:
        values = [r.record.value for r in self.present]
        return float(np.mean(values)) if values else None

    def record(self, task: str) -> Record | None:
        """The average as a (derived) record of ``task`` (the suite), when complete: ``n`` the samples of all
        datasets, the interval the mean of the datasets' interval ends (conservative)."""
        if not self.complete:
            return None
        records = [r.record for r in self.rows]
        if any(r.n is None for r in records):
            return None
        lo = float(np.mean([r.ci[0] for r in records]))
        hi = float(np.mean([r.ci[1] for r in records]))
        n = int(sum(r.n for r in records))
        return Record(AVERAGE_DATASET, AVERAGE_METRIC, self.average, n, (lo, hi), "mean of interval ends", task=task)


def benchmark_result(spec: BenchmarkSpec, records: Sequence[Record]) -> BenchmarkResult:
    """Each dataset's record (by task, dataset, metric and params), from ``records``."""
    rows = []
    for entry in spec.entries:
        found = None if entry.missing else next((r for r in records if entry.matches(r)), None)
        rows.append(Row(entry, found))
    return BenchmarkResult(spec, rows)


def benchmark_spec(config: Mapping[str, Any], tasks: Mapping[str, Any]) -> BenchmarkSpec:
    """The settings of a suite's ``benchmark`` (checked by clipeval.config.schema) resolved against its loaded
    ``tasks`` (clipeval.run.task.Task): each entry's dataset (the task's only one unless given), metric (the
    task's ``main_metric`` unless given) and why it is missing (marked unavailable, or its data absent)."""
    entries = []
    for name, raw in config["datasets"].items():
        raw = {"task": raw} if isinstance(raw, str) else dict(raw)
        task_name, params = str(raw["task"]), dict(raw.get("params") or {})
        if raw.get("unavailable"):
            entries.append(Entry(name, task_name, raw.get("dataset"), raw.get("metric"), params, raw["unavailable"]))
            continue
        task = tasks[task_name]
        datasets = list(task.sources) + [d for d in task.missing if d not in task.sources]
        dataset = raw.get("dataset")
        if dataset is None and len(datasets) != 1:
            raise ClipevalError(
                f"suite.benchmark.datasets.{name}: task '{task_name}' has {len(datasets)} datasets "
                f"({', '.join(datasets)}); say which one with dataset: <name>."
            )
        dataset = dataset or datasets[0]
        metric = raw.get("metric") or task.main_metric
        if metric is None:
            raise ClipevalError(
                f"suite.benchmark.datasets.{name}: task '{task_name}' declares no main_metric; set main_metric in its "
                "task.yaml, or metric: <name> in the suite's entry."
            )
        metric_info(metric)  # registered (a ClipevalError with a did-you-mean otherwise)
        missing = task.missing.get(dataset)
        entries.append(Entry(name, task_name, dataset, metric, params, _first_line(missing)))
    return BenchmarkSpec(str(config["label"]), entries, config.get("source"))


def _first_line(text: str | None) -> str | None:
    """A missing dataset's message in one line: where its data was looked for (the task's own message, with how to
    get the data, is in the run's log)."""
    if text is None:
        return None
    lines = text.strip().splitlines()
    looked = [line.strip()[2:] for line in lines if line.strip().startswith("- ")]
    return f"data absent (looked in {', '.join(looked)})" if looked else lines[0]
