"""The robustness settings a suite's run stores, and the baselines' points on them.

A run of a suite keeps, in its results document (``robustness``), which datasets make each
setting (the in-distribution set, each shift, a class-subset shift's own in-distribution set)
and the baseline models' accuracies it was fitted against, so effective robustness can be
recomputed from the document alone, or re-fitted against other baselines
(:meth:`RobustnessSpec.with_baselines`). clipeval.report computes the report from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from clipeval.errors import ClipevalError, quoted
from clipeval.results.record import Record

#: a dataset of a task, as records name it: (task, dataset)
DatasetRef = tuple[str, str]


@dataclass
class ShiftSpec:
    """A shift: the datasets whose pooled top-1 it is, and its own in-distribution datasets (class-subset
    shifts: ImageNet val on the shift's classes), else None for the report's in-distribution setting."""

    datasets: list[DatasetRef]
    in_distribution: list[DatasetRef] | None = None


@dataclass
class RobustnessSpec:
    """What a report is computed from besides the model's records: the settings and the baselines' points.

    A run stores it (results document ``robustness``), so effective robustness can be recomputed from
    the document alone, or re-fitted against other baselines (:meth:`with_baselines`).
    ``points``: {shift: DataFrame(index=model, columns=[id, shift])}; ``average_points``: the
    baselines' (in-distribution, mean over the shifts), or None when the baselines give none.
    """

    in_distribution: list[DatasetRef]
    shifts: dict[str, ShiftSpec]
    baselines_label: str
    points: dict[str, pd.DataFrame]
    average_points: pd.DataFrame | None = None

    def with_baselines(self, baselines: Any) -> RobustnessSpec:
        """The same settings against another provider's points (a table: clipeval.report.baselines)."""
        points = baselines.points(None)
        missing = sorted(set(self.shifts) - set(points))
        if missing:
            raise ClipevalError(f"The baselines have no points for shift(s) {missing} (they have {sorted(points)}).")
        average = baselines.average_points(self.shifts) if hasattr(baselines, "average_points") else None
        label = getattr(baselines, "label", type(baselines).__name__)
        return RobustnessSpec(self.in_distribution, self.shifts, label, points, average)

    def to_json(self) -> dict[str, Any]:
        refs = lambda rs: [{"task": t, "dataset": d} for t, d in rs]  # noqa: E731
        shifts = {
            name: {"datasets": refs(s.datasets)} | ({"in_distribution": refs(s.in_distribution)} if s.in_distribution else {})
            for name, s in self.shifts.items()
        }  # fmt: skip
        return {
            "in_distribution": refs(self.in_distribution),
            "shifts": shifts,
            "baselines": {
                "label": self.baselines_label,
                "points": {name: _points_json(frame) for name, frame in self.points.items()},
                "average_points": None if self.average_points is None else _points_json(self.average_points),
            },
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "robustness") -> RobustnessSpec:
        try:
            refs = lambda rs: [(str(r["task"]), str(r["dataset"])) for r in rs]  # noqa: E731
            shifts = {
                str(name): ShiftSpec(refs(s["datasets"]), refs(s["in_distribution"]) if s.get("in_distribution") else None)
                for name, s in data["shifts"].items()
            }  # fmt: skip
            base = data["baselines"]
            points = {str(name): _points_frame(p, f"baselines.points.{name}") for name, p in base["points"].items()}
            average = base.get("average_points")
            average = None if average is None else _points_frame(average, "baselines.average_points")
            return cls(refs(data["in_distribution"]), shifts, str(base["label"]), points, average)
        except _Malformed as exc:
            raise ClipevalError(f"{where}.{exc}.") from None
        except KeyError as exc:
            raise ClipevalError(f"{where} is malformed: it has no {quoted(exc.args[0])}. {SHAPE}") from None
        except (TypeError, ValueError, AttributeError):
            raise ClipevalError(f"{where} is malformed: a field is not of its kind. {SHAPE}") from None


#: what a document's ``robustness`` holds, for messages about one that does not
SHAPE = (
    "It holds in_distribution (a list of {task, dataset}), shifts ({name: {datasets: [...], in_distribution: [...]}}) "
    "and baselines ({label, points: {shift: {model, id, shift}}, average_points}), as clipeval writes them: run the "
    "evaluation again, or recompute the report with clipeval report refit."
)


class _Malformed(ValueError):
    """A field of ``robustness`` that is not what it must be; the message starts with the field."""


def _points_json(frame: pd.DataFrame) -> dict[str, list]:
    return {"model": [str(m) for m in frame.index], "id": frame["id"].astype(float).tolist(),
            "shift": frame["shift"].astype(float).tolist()}  # fmt: skip


def _points_frame(data: dict[str, list], field: str = "points") -> pd.DataFrame:
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("model", "id", "shift")):
        raise _Malformed(f"{field}: must be an object of lists 'model', 'id' and 'shift'")
    lengths = {k: len(data[k]) for k in ("model", "id", "shift")}
    if len(set(lengths.values())) > 1:
        raise _Malformed(f"{field}: 'model', 'id' and 'shift' must be lists of equal length (one point per model), "
                         f"not of {', '.join(f'{n} {k}' for k, n in lengths.items())}")  # fmt: skip
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for k in ("id", "shift") for v in data[k]):
        raise _Malformed(f"{field}: 'id' and 'shift' must be lists of numbers (accuracies as fractions)")
    frame = pd.DataFrame({"id": data["id"], "shift": data["shift"]}, index=pd.Index(data["model"], name="model"))
    values = frame.to_numpy(dtype=float)
    if not np.isfinite(values).all() or (values < 0).any() or (values > 1).any():
        raise _Malformed(f"{field}: baseline accuracies must be fractions in [0, 1]")
    inside = int(((values > 0) & (values < 1)).all(axis=1).sum())
    if inside < 2:
        raise _Malformed(f"{field}: a fit needs two models strictly between 0 and 1 ({inside} of {len(frame)} are)")
    return frame


def zero_shot_top1(records: list[Record]) -> dict[DatasetRef, Record]:
    """The zero-shot top-1 record of each (task, dataset): the records a robustness report reads."""
    return {(r.task, r.dataset): r for r in records if r.metric == "top1" and not r.params}


def check_settings(spec: RobustnessSpec, records: list[Record], where: str) -> None:
    """ClipevalError naming ``where`` unless every shift has baseline points and every setting's datasets have a
    zero-shot top-1 record (so a report can be computed from the document)."""
    missing = sorted(set(spec.shifts) - set(spec.points))
    if missing:
        raise ClipevalError(
            f"{where}: the baselines have no points for shift(s) {missing} (they have {sorted(spec.points)})."
        )
    top1 = zero_shot_top1(records)
    refs = [
        *spec.in_distribution,
        *(r for s in spec.shifts.values() for r in [*s.datasets, *(s.in_distribution or [])]),
    ]
    absent = sorted({f"{t}/{d}" for t, d in refs if (t, d) not in top1})
    if absent:
        raise ClipevalError(
            f"{where}: its robustness settings need zero-shot top-1 on {absent}, which it does not hold."
        )
