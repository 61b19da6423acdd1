"""A suite's effective-robustness report: the evaluated model against its baselines, per shift.

Each setting's top-1 is pooled over its datasets. For each shift, the baselines' points
(in-distribution, shift) are fitted on logit axes (imagenet-testbed's protocol), with a
percentile bootstrap over baseline models for the fit's band. The model's effective
robustness is its shift top-1 minus the fit's prediction at its in-distribution top-1; for
class-subset shifts both sides use the in-distribution setting on the same classes.

The interval on effective robustness combines, conservatively, the shift accuracy's
Clopper–Pearson interval with the band of the prediction over the in-distribution accuracy's
interval: [shift_lo - pred_hi, shift_hi - pred_lo].

The headline, "average over shifts", is the CLIP paper's (Radford et al. 2021, Figure 13 left):
the baselines' mean accuracy over the shifts is fitted on logit axes against their accuracy on
the in-distribution set (ImageNet val, not the class-subset columns), and the model's effective
robustness is its own mean over the same shifts minus that fit at its in-distribution accuracy.
Its interval is built as a shift's: the mean of the shifts' Clopper–Pearson interval ends for
the model's mean (conservative: it holds whenever every shift's interval does), the percentile
bootstrap over baseline models of the average fit, read over the in-distribution interval.
The mean of the per-shift effective robustness values is a different number (each shift has
its own line and, for class subsets, its own x); it is reported too, labelled "mean of
per-shift ER", never as the average.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from clipeval.errors import ClipevalError
from clipeval.report.logit_fit import LogitFit, band, bootstrap_fits, effective_robustness, fit_baselines
from clipeval.results.metrics import clopper_pearson
from clipeval.results.record import Record

IN_DISTRIBUTION = "in_distribution"


@dataclass(frozen=True)
class Setting:
    """The evaluated model's pooled top-1 on one setting."""

    name: str
    datasets: list[str]
    correct: int
    n: int

    @property
    def top1(self) -> float:
        return self.correct / self.n

    @property
    def ci(self) -> tuple[float, float]:
        return clopper_pearson(self.correct, self.n)


def _setting_json(setting: Setting) -> dict[str, Any]:
    return {"datasets": setting.datasets, "top1": setting.top1, "n": setting.n, "ci": list(setting.ci)}


def _against_baselines(result: _AgainstBaselines) -> dict[str, Any]:
    """The JSON a shift and the average over shifts share: their x, the fit's prediction there, and ER."""
    return {
        "in_distribution": _setting_json(result.in_distribution),
        "baseline_prediction": result.prediction,
        "baseline_prediction_ci": list(result.prediction_interval),
        "effective_robustness": result.effective_robustness,
        "effective_robustness_ci": list(result.effective_robustness_ci),
        "fit": _fit_json(result.fit),
    }


def _fit_json(fit: LogitFit) -> dict[str, Any]:
    return {"slope": fit.slope, "intercept": fit.intercept, "n_models": fit.n_models}


class _AgainstBaselines:
    """What a shift and the average over shifts share: the baselines' fit (``fit``, bootstrap ``fits``) read at
    the model's in-distribution accuracy (``in_distribution``), and the effective robustness of the model's
    accuracy ``y_top1`` (interval ``y_ci``) above it."""

    @property
    def prediction(self) -> float:
        return float(self.fit.predict(self.in_distribution.top1))

    @property
    def prediction_interval(self) -> tuple[float, float]:
        lows, highs = band(self.fits, np.array(self.in_distribution.ci))
        return float(min(lows)), float(max(highs))

    @property
    def effective_robustness(self) -> float:
        return effective_robustness(self.fit, self.in_distribution.top1, self.y_top1)

    @property
    def effective_robustness_ci(self) -> tuple[float, float]:
        (y_lo, y_hi), (p_lo, p_hi) = self.y_ci, self.prediction_interval
        return y_lo - p_hi, y_hi - p_lo


@dataclass(frozen=True)
class ShiftResult(_AgainstBaselines):
    shift: Setting
    in_distribution: Setting
    baselines: pd.DataFrame  # index model, columns id, shift
    fit: LogitFit
    fits: np.ndarray  # bootstrap (slope, intercept) pairs

    @property
    def y_top1(self) -> float:
        return self.shift.top1

    @property
    def y_ci(self) -> tuple[float, float]:
        return self.shift.ci

    def to_json(self) -> dict[str, Any]:
        return {
            "shift": self.shift.name,
            "datasets": self.shift.datasets,
            "top1": self.shift.top1,
            "n": self.shift.n,
            "ci": list(self.shift.ci),
            **_against_baselines(self),
        }  # fmt: skip


@dataclass(frozen=True)
class AverageResult(_AgainstBaselines):
    """The mean over shifts against the in-distribution accuracy (the CLIP paper's Figure 13, left)."""

    in_distribution: Setting  # the headline in-distribution set (ImageNet val), the x of every model
    shifts: list[Setting]  # the model's shifts, averaged with equal weight
    baselines: pd.DataFrame  # index model, columns id, shift (= the baseline's mean over the same shifts)
    fit: LogitFit
    fits: np.ndarray  # bootstrap (slope, intercept) pairs of the average fit

    @property
    def id_top1(self) -> float:
        return self.in_distribution.top1

    @property
    def mean_top1(self) -> float:
        """The model's mean top-1 over the shifts (fraction)."""
        return float(np.mean([s.top1 for s in self.shifts]))

    @property
    def mean_top1_ci(self) -> tuple[float, float]:
        """Mean of the shifts' Clopper–Pearson ends: holds whenever every shift's interval holds."""
        cis = np.array([s.ci for s in self.shifts])
        return float(cis[:, 0].mean()), float(cis[:, 1].mean())

    @property
    def y_top1(self) -> float:
        return self.mean_top1

    @property
    def y_ci(self) -> tuple[float, float]:
        return self.mean_top1_ci

    def to_json(self) -> dict[str, Any]:
        return {
            "method": AVERAGE_METHOD,
            "shifts": [s.name for s in self.shifts],
            "top1": self.mean_top1,
            "top1_ci": list(self.mean_top1_ci),
            **_against_baselines(self),
        }  # fmt: skip


AVERAGE_METHOD = (
    "CLIP paper Figure 13: the model's mean top-1 over the shifts minus the logit-linear fit of the baselines' "
    "mean over the same shifts against their in-distribution top-1"
)
AVERAGE = "average_over_shifts"  # record dataset of the headline
MEAN_OF_SHIFTS = "mean_of_per_shift_er"  # record dataset of the mean of the per-shift values


def average_result(in_distribution: Setting, shifts: list[Setting], points: pd.DataFrame) -> AverageResult:
    """The paper's average: ``points`` are the baselines' (id, mean over the same shifts), one row per model."""
    x, y = points["id"].to_numpy(), points["shift"].to_numpy()
    return AverageResult(in_distribution, shifts, points, fit_baselines(x, y, list(points.index)), bootstrap_fits(x, y))


@dataclass
class RobustnessReport:
    in_distribution: Setting
    shifts: list[ShiftResult]
    baselines_label: str
    average: AverageResult | None = None  # None when the baselines give no average over shifts

    @property
    def mean_of_shift_effective_robustness(self) -> tuple[float, tuple[float, float]]:
        """The plain mean of the per-shift values, with the mean of their interval ends (not the headline)."""
        ers = [s.effective_robustness for s in self.shifts]
        cis = np.array([s.effective_robustness_ci for s in self.shifts])
        return float(np.mean(ers)), (float(cis[:, 0].mean()), float(cis[:, 1].mean()))

    @property
    def headline(self) -> tuple[str, float, tuple[float, float]]:
        """(label, value, interval) of the number to quote: the paper's average when there is one."""
        if self.average is not None:
            return "average over shifts", self.average.effective_robustness, self.average.effective_robustness_ci
        return "mean of per-shift ER", *self.mean_of_shift_effective_robustness

    def records(self) -> list[Record]:
        """Effective-robustness records per shift, the average over shifts and the mean of per-shift values;
        params ``baselines``: the baselines' label (a re-fit against others is another record)."""
        baselines = {"baselines": self.baselines_label}
        n = sum(s.shift.n for s in self.shifts)
        out = [
            Record(s.shift.name, "effective_robustness", s.effective_robustness, s.shift.n, s.effective_robustness_ci,
                   "clopper-pearson+bootstrap-band", params=baselines)
            for s in self.shifts
        ]  # fmt: skip
        if self.average is not None:
            avg = self.average
            out.append(Record(AVERAGE, "effective_robustness", avg.effective_robustness, n,
                              avg.effective_robustness_ci, "fit-to-mean-over-shifts", params=baselines))  # fmt: skip
        mean, ci = self.mean_of_shift_effective_robustness
        out.append(
            Record(MEAN_OF_SHIFTS, "effective_robustness", mean, n, ci, "mean-of-per-shift-values", params=baselines)
        )
        return out

    def to_json(self) -> dict[str, Any]:
        mean, ci = self.mean_of_shift_effective_robustness
        label, value, interval = self.headline
        out = {
            "baselines": self.baselines_label,
            "shifts": [s.to_json() for s in self.shifts],
            "headline": {"label": label, "effective_robustness": value, "effective_robustness_ci": list(interval)},
            "mean_of_per_shift_effective_robustness": mean,
            "mean_of_per_shift_effective_robustness_ci": list(ci),
        }
        if self.average is not None:
            out[AVERAGE] = self.average.to_json()
        return out


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
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ClipevalError(f"{where} is malformed ({type(exc).__name__}: {exc}).") from None


def _points_json(frame: pd.DataFrame) -> dict[str, list]:
    return {"model": [str(m) for m in frame.index], "id": frame["id"].astype(float).tolist(),
            "shift": frame["shift"].astype(float).tolist()}  # fmt: skip


def _points_frame(data: dict[str, list], field: str = "points") -> pd.DataFrame:
    frame = pd.DataFrame({"id": data["id"], "shift": data["shift"]}, index=pd.Index(data["model"], name="model"))
    values = frame.to_numpy(dtype=float)
    if not np.isfinite(values).all() or (values < 0).any() or (values > 1).any():
        raise ValueError(f"{field}: baseline accuracies must be fractions in [0, 1]")
    inside = int(((values > 0) & (values < 1)).all(axis=1).sum())
    if inside < 2:
        raise ValueError(f"{field}: a fit needs two models strictly between 0 and 1 ({inside} of {len(frame)} are)")
    return frame


def zero_shot_top1(records: list[Record]) -> dict[DatasetRef, Record]:
    """The zero-shot top-1 record of each (task, dataset): the records a robustness report reads."""
    return {(r.task, r.dataset): r for r in records if r.metric == "top1" and not r.params}


def _setting(name: str, refs: list[DatasetRef], top1: dict[DatasetRef, Record]) -> Setting:
    absent = [f"{t}/{d}" if t else d for t, d in refs if (t, d) not in top1]
    if absent:
        raise ClipevalError(f"Setting '{name}' needs top-1 on {absent}, which the run did not produce (data absent?).")
    return Setting(name, [f"{t}/{d}" if t else d for t, d in refs], sum(round(top1[r].value * top1[r].n) for r in refs),
                   sum(top1[r].n for r in refs))  # fmt: skip


def build_report(spec: RobustnessSpec, records: list[Record]) -> RobustnessReport:
    """Effective robustness of the model whose ``records`` these are, per shift of ``spec`` and on average.

    Reads only the records' zero-shot top-1 (metric ``top1``, no params) and the spec's baseline points.
    """
    top1 = zero_shot_top1(records)
    missing = sorted(set(spec.shifts) - set(spec.points))
    if missing:
        raise ClipevalError(f"The baselines have no points for shift(s) {missing} (they have {sorted(spec.points)}).")
    headline = _setting(IN_DISTRIBUTION, spec.in_distribution, top1)
    results = []
    for name, shift in spec.shifts.items():
        pts = spec.points[name]
        x, y = pts["id"].to_numpy(), pts["shift"].to_numpy()
        ident = (
            _setting(f"{name} {IN_DISTRIBUTION}", shift.in_distribution, top1) if shift.in_distribution else headline
        )
        results.append(ShiftResult(_setting(name, shift.datasets, top1), ident, pts, fit_baselines(x, y, list(pts.index)),
                                   bootstrap_fits(x, y)))  # fmt: skip
    average = None
    if spec.average_points is not None:
        average = average_result(headline, [r.shift for r in results], spec.average_points)
    return RobustnessReport(headline, results, spec.baselines_label, average)


def format_report(report: RobustnessReport, model: str, title: str) -> str:
    """The plain-text robustness table: :func:`clipeval.report.tables.format_report` (kept here for importers)."""
    from clipeval.report.tables import format_report as text

    return text(report, model, title)
