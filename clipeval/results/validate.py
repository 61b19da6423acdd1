"""The rules every set of records obeys, whoever wrote it: the one check the runner, the store and the gate share.

Per record (beyond what :class:`~clipeval.results.record.Record` itself refuses): its value lies in
its metric's range (a fraction in [0, 1], a difference in [-1, 1], a count >= 0) and, unless the
metric is derived, inside its interval; its per-sample data, when it points at some, exist,
define its metric (or hold its named outcome), have its ``n`` samples and give its value. Across
records: no identity (task, dataset, metric, params) twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from clipeval.errors import ClipevalError, within
from clipeval.results.record import Metric, Record
from clipeval.results.samples import Samples
from clipeval.results.statistics import STATISTICS

#: the largest difference between a recorded value and the value recomputed from its per-sample data
VALUE_TOLERANCE = 1e-9
RANGES = {
    "fraction": (0.0, 1.0),
    "difference": (-1.0, 1.0),
    "count": (0.0, float("inf")),
    "ratio": (0.0, float("inf")),
    "signed_ratio": (-float("inf"), float("inf")),
}


def check_records(
    records: Sequence[Record],
    samples: Callable[[str], Samples | None],
    metric: Callable[[str], Metric],
    name: Callable[[int, Record], str],
) -> None:
    """Raise ClipevalError ``<name(i, record)>: <what is wrong and what to do>`` for the first record that breaks
    the rules of the module docstring. ``samples(key)``: the per-sample data under a key (None: absent);
    ``metric(name)``: the metric's definition (may raise ClipevalError for an unknown metric)."""
    seen: dict[tuple, int] = {}
    for i, record in enumerate(records):
        what = name(i, record)
        if record.key in seen:
            raise ClipevalError(
                f"{what} appears twice (as records[{seen[record.key]}] too): each record's identity (task, dataset, "
                "metric, params) may appear once; put what tells them apart into params."
            )
        seen[record.key] = i
        try:
            _check_record(record, samples, metric(record.metric))
        except ClipevalError as exc:
            raise ClipevalError(within(what, exc)) from None  # the file named once


def _check_record(record: Record, samples: Callable[[str], Samples | None], info: Metric) -> None:
    low, high = RANGES[info.unit]
    if not low <= record.value <= high:
        raise ClipevalError(f"value {record.value:g} is outside [{low:g}, {high:g}], the range of a {info.unit}.")
    lo, hi = record.ci
    slack = VALUE_TOLERANCE * max(1.0, abs(record.value))
    if not info.derived and record.n is not None and not lo - slack <= record.value <= hi + slack:
        raise ClipevalError(f"value {record.value:g} is outside its own interval [{lo:g}, {hi:g}].")
    if record.samples is None:
        if record.outcome is not None:
            raise ClipevalError(f"it names outcome '{record.outcome}' but no per-sample data ('samples').")
        return
    data = samples(record.samples)
    if data is None:
        raise ClipevalError(f"it points at per-sample data '{record.samples}', which are not there.")
    if record.outcome is not None and data.outcome(record.metric, record.outcome) is None:
        raise ClipevalError(
            f"its per-sample data '{record.samples}' have no outcome '{record.outcome}' "
            f"(they have: {sorted([*(data.correct or {}), *(data.scores or {})])})."
        )
    if not data.has(record.metric, record.outcome, info.class_weighted):
        return  # data that do not define this metric (a probe's predictions behind a derived number)
    if record.metric in STATISTICS and STATISTICS[record.metric].part is not None:
        expected = STATISTICS[record.metric].n(data, record.outcome)
        if record.n != expected:
            raise ClipevalError(
                f"n = {record.n}, but its per-sample data '{record.samples}' give {expected} samples in the part "
                f"{record.metric} is of (the worst group)."
            )
    elif record.n != data.n:
        raise ClipevalError(f"n = {record.n}, but its per-sample data '{record.samples}' hold {data.n} samples.")
    recomputed = data.value(record.metric, record.outcome, info.class_weighted)
    if abs(recomputed - record.value) > VALUE_TOLERANCE:
        raise ClipevalError(
            f"the per-sample data give {recomputed:.6f}, the record says {record.value:.6f}. The per-sample data "
            "and the results do not belong together: rerun the evaluation."
        )
