"""A suite's effective-robustness table: the evaluated model against its baselines, per shift."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from clipeval.construct import build
from clipeval.errors import ClipevalError
from clipeval.metrics import clopper_pearson
from clipeval.results import Record
from clipeval.robustness import LogitFit, effective_robustness, fit_baselines
from clipeval.task import Task

IN_DISTRIBUTION = "in_distribution"


@dataclass(frozen=True)
class SettingRow:
    setting: str
    datasets: list[str]
    correct: int
    n: int
    fit: LogitFit | None = None
    id_top1: float | None = None  # the model's in-distribution top-1, where the fit is read off

    @property
    def top1(self) -> float:
        return self.correct / self.n

    @property
    def ci(self) -> tuple[float, float]:
        return clopper_pearson(self.correct, self.n)

    @property
    def prediction(self) -> float | None:
        return None if self.fit is None else float(self.fit.predict(self.id_top1))

    @property
    def effective_robustness(self) -> float | None:
        return None if self.fit is None else effective_robustness(self.fit, self.id_top1, self.top1)

    def to_json(self) -> dict[str, Any]:
        out = {
            "setting": self.setting,
            "datasets": self.datasets,
            "top1": self.top1,
            "n": self.n,
            "ci": list(self.ci),
        }
        if self.fit is not None:
            lo, hi = self.ci
            out |= {
                "baseline_prediction": self.prediction,
                "effective_robustness": self.effective_robustness,
                "effective_robustness_ci": [lo - self.prediction, hi - self.prediction],
                "fit": {
                    "slope": self.fit.slope,
                    "intercept": self.fit.intercept,
                    "n_models": self.fit.n_models,
                },
            }
        return out


@dataclass
class RobustnessReport:
    rows: list[SettingRow]
    baselines: pd.DataFrame

    def records(self) -> list[Record]:
        """Effective robustness as records, its interval from the shift accuracy's (fit held fixed)."""
        return [
            Record(row.setting, "effective_robustness", row.effective_robustness, row.n,
                   (row.ci[0] - row.prediction, row.ci[1] - row.prediction), "clopper-pearson-shift")
            for row in self.rows if row.fit is not None
        ]  # fmt: skip


def _datasets(spec: str, tasks: dict[str, Task]) -> list[tuple[str, str]]:
    task_name, _, dataset = spec.partition("/")
    if task_name not in tasks:
        raise ClipevalError(
            f"Robustness setting names task '{task_name}', which the suite does not run ({list(tasks)})."
        )
    names = [dataset] if dataset else list(tasks[task_name].sources)
    return [(task_name, d) for d in names]


def build_report(cfg: DictConfig, records: list[Record], tasks: dict[str, Task]) -> RobustnessReport:
    """Pool each setting's top-1 over its datasets, fit the baselines' line per shift, read off ER."""
    specs = {IN_DISTRIBUTION: cfg.in_distribution, **OmegaConf.to_container(cfg.shifts)}
    members = {setting: _datasets(spec, tasks) for setting, spec in specs.items()}
    top1 = {r.dataset: r for r in records if r.metric == "top1"}
    baselines = build(cfg.baselines, "the suite's baselines").accuracies(
        {s: [tasks[t].sources[d] for t, d in pairs] for s, pairs in members.items()}
    )
    rows = []
    for setting, pairs in members.items():
        keys = [f"{t}/{d}" for t, d in pairs]
        correct = sum(round(top1[k].value * top1[k].n) for k in keys)
        n = sum(top1[k].n for k in keys)
        rows.append(SettingRow(setting, keys, correct, n))
    id_top1 = rows[0].top1
    for i, row in enumerate(rows[1:], start=1):
        fit = fit_baselines(
            baselines[IN_DISTRIBUTION].to_numpy(),
            baselines[row.setting].to_numpy(),
            list(baselines.index),
        )
        rows[i] = SettingRow(row.setting, row.datasets, row.correct, row.n, fit, id_top1)
    return RobustnessReport(rows, baselines)


def format_report(report: RobustnessReport, model: str, title: str) -> str:
    head = f"{title} · {model} · baselines: {len(report.baselines)} supervised models"
    lines = [
        head,
        f"{'setting':<18} {'top-1':>6}  {'95% interval':<16} {'n':>6}  {'baseline fit':>12}  {'eff. robustness (pp)':>20}",
    ]
    for row in report.rows:
        lo, hi = row.ci
        fit = f"{row.prediction:12.3f}" if row.prediction is not None else f"{'-':>12}"
        er = (
            f"{100 * row.effective_robustness:+7.1f} [{100 * (lo - row.prediction):+.1f}, {100 * (hi - row.prediction):+.1f}]"
            if row.fit
            else "-"
        )
        lines.append(f"{row.setting:<18} {row.top1:6.3f}  [{lo:.3f}, {hi:.3f}] {row.n:>6}  {fit}  {er:>20}")
    return "\n".join(lines)
