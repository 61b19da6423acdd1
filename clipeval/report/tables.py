"""Every table clipeval shows, in one place: records and effective-robustness reports, for the terminal
and for Markdown/HTML pages.

Each table is made once as rows of numbers (:func:`robustness_values`, the records themselves);
two renderers lay them out: plain text (fractions, as printed since 0.1: records with 4
decimals, robustness settings with 3) and pages (percent). Values are shown in their metric's
unit (clipeval.results.record.METRICS): fractions, differences in percentage points, counts as
they are. Nothing else in clipeval formats a results table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clipeval.results.record import Record

if TYPE_CHECKING:
    from clipeval.report.robustness import RobustnessReport

HEAD = ["task/dataset and params", "metric", "value", "95% interval", "n"]


# ---------------------------------------------------------------- records


def _page_value(record: Record, value: float) -> str:
    unit = record.info.unit
    if unit == "difference":
        return f"{100 * value:+.1f} pp"
    if unit == "count":
        return f"{value:.2f}"
    return f"{100 * value:.2f}%"


def record_rows(records: Sequence[Record]) -> list[list[str]]:
    """Rows of :data:`HEAD` for pages: values in percent, percentage points or counts by the metric's unit."""
    return [
        [r.label, r.metric, _page_value(r, r.value), f"[{_page_value(r, r.ci[0])}, {_page_value(r, r.ci[1])}]",
         "?" if r.n is None else str(r.n)]
        for r in records
    ]  # fmt: skip


def format_records(title: str, records: Sequence[Record]) -> str:
    """A plain-text table of ``records`` under ``title`` (values as fractions or counts, 4 decimals)."""
    width = max([len(HEAD[0]), *(len(r.label) for r in records)])
    lines = [title, f"{HEAD[0]:<{width}} {'metric':<22} {'value':>7}  {'95% interval':<17} {'n':>7}"]
    for r in records:
        lo, hi = r.ci
        spread = f"  sd {r.std:.4f}" if r.std is not None else ""
        n = "?" if r.n is None else r.n  # a published number whose sample count is not stated
        lines.append(f"{r.label:<{width}} {r.metric:<22} {r.value:>7.4f}  [{lo:.4f}, {hi:.4f}] {n:>7}{spread}")
    return "\n".join(lines)


# ---------------------------------------------------------------- effective robustness

AVERAGE_ROW = "average over shifts"
MEAN_ROW = "mean of per-shift ER"
ROBUSTNESS_HEAD = ["setting", "top-1 (%)", "95% interval", "n", "ID top-1 (%)", "baseline fit (%)", "95% interval",
                   "ER (pp)", "95% interval"]  # fmt: skip


@dataclass(frozen=True)
class RobustnessRow:
    """One row of a robustness table, as fractions; None where the row has no such value.

    ``setting``: the in-distribution setting, a shift, :data:`AVERAGE_ROW` (the headline: the model's
    mean top-1 over the shifts) or :data:`MEAN_ROW` (the plain mean of the per-shift ER values).
    """

    setting: str
    top1: float | None = None
    top1_ci: tuple[float, float] | None = None
    n: int | None = None
    id_top1: float | None = None
    prediction: float | None = None
    prediction_ci: tuple[float, float] | None = None
    er: float | None = None
    er_ci: tuple[float, float] | None = None


def robustness_values(report: RobustnessReport) -> list[RobustnessRow]:
    """The rows of a robustness table: in-distribution, each shift, the average over shifts (when the
    baselines give one) and the mean of per-shift values."""
    ident = report.in_distribution
    rows = [RobustnessRow(ident.name, ident.top1, ident.ci, ident.n)]
    rows += [
        RobustnessRow(s.shift.name, s.shift.top1, s.shift.ci, s.shift.n, s.in_distribution.top1, s.prediction,
                      s.prediction_interval, s.effective_robustness, s.effective_robustness_ci)
        for s in report.shifts
    ]  # fmt: skip
    avg = report.average
    if avg is not None:
        rows.append(RobustnessRow(AVERAGE_ROW, avg.mean_top1, avg.mean_top1_ci, None, avg.id_top1, avg.prediction,
                                  avg.prediction_interval, avg.effective_robustness, avg.effective_robustness_ci))  # fmt: skip
    mean, ci = report.mean_of_shift_effective_robustness
    rows.append(RobustnessRow(MEAN_ROW, er=mean, er_ci=ci))
    return rows


def _pp(value: float) -> str:
    return f"{100 * value:+.1f}"


def robustness_rows(report: RobustnessReport) -> list[list[str]]:
    """Rows of :data:`ROBUSTNESS_HEAD` for pages: accuracies in percent, effective robustness in pp."""
    pct = lambda v: "" if v is None else f"{100 * v:.1f}"  # noqa: E731
    interval = lambda ci, f: "" if ci is None else f"[{f(ci[0])}, {f(ci[1])}]"  # noqa: E731
    return [
        [r.setting, pct(r.top1), interval(r.top1_ci, pct), "" if r.n is None else str(r.n), pct(r.id_top1),
         pct(r.prediction), interval(r.prediction_ci, pct), "" if r.er is None else _pp(r.er), interval(r.er_ci, _pp)]
        for r in robustness_values(report)
    ]  # fmt: skip


def format_report(report: RobustnessReport, model: str, title: str) -> str:
    """The plain-text robustness table (fractions with 3 decimals, effective robustness in pp) and the headline's
    definition."""
    lines = [
        f"{title} · {model} · baselines: {report.baselines_label}",
        f"{'setting':<20} {'top-1':>6}  {'95% interval':<16} {'n':>6}  {'ID top-1':>8}  {'baseline fit':>20}  {'eff. robustness (pp)':>22}",
    ]
    for r in robustness_values(report):
        line = f"{r.setting:<20} "
        line += (
            f"{r.top1:6.3f}  [{r.top1_ci[0]:.3f}, {r.top1_ci[1]:.3f}]" if r.top1 is not None else f"{'':>6}  {'':<16}"
        )
        line += f" {'' if r.n is None else r.n:>6}"
        if r.er is not None:
            if r.prediction is not None:
                p_lo, p_hi = r.prediction_ci
                line += f"  {r.id_top1:8.3f}  {r.prediction:6.3f} [{p_lo:.3f}, {p_hi:.3f}]"
            else:
                line += f"  {'':>8}  {'':>20}"
            line += f"  {_pp(r.er):>6} [{_pp(r.er_ci[0])}, {_pp(r.er_ci[1])}]"
        lines.append(line)
    avg = report.average
    if avg is not None:
        lines.append(
            f"Headline: average over shifts (CLIP paper Figure 13), the mean top-1 over the {len(avg.shifts)} shifts "
            f"minus the fit of the {avg.fit.n_models} baselines' mean against their in-distribution top-1 "
            f"({', '.join(avg.in_distribution.datasets)}); "
            "mean of per-shift ER: the plain mean of the rows above."
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- generic


def text_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=True)]
    fmt = lambda row: "  ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
    )
    return "\n".join([fmt(head), *(fmt(r) for r in rows)])
