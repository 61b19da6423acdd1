"""Every table clipeval shows, in one place: records and effective-robustness reports, for the terminal
and for Markdown/HTML pages.

Each table is made once as rows of numbers (:func:`robustness_values`, the records themselves);
two renderers lay them out: plain text (fractions, as printed since 0.1: records with 4
decimals, robustness settings with 3) and pages (percent). Values are shown in their metric's
unit (clipeval.results.record.METRICS): fractions, differences in percentage points, counts as
they are. Nothing else in clipeval formats a results table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clipeval.results.benchmark import BenchmarkResult
from clipeval.results.record import Metric, Record, metric_info

if TYPE_CHECKING:
    from clipeval.report.robustness import RobustnessReport

HEAD = ["task/dataset and params", "metric", "value", "95% interval", "unit", "n"]

#: how pages name each metric unit (clipeval.results.record.UNITS) in the unit column
PAGE_UNITS = {"fraction": "%", "difference": "pp", "count": "count", "ratio": "%", "signed_ratio": "%"}
#: how the plain-text tables name them (values as printed there: fractions, not percent)
TEXT_UNITS = {
    "fraction": "fraction",
    "difference": "difference",
    "count": "count",
    "ratio": "ratio",
    "signed_ratio": "ratio",
}


# ---------------------------------------------------------------- records


def page_number(unit: str, value: float) -> str:
    """A value of a metric with ``unit`` as pages and figures show it: a fraction in percent with 2 decimals, a
    difference in percentage points with a sign and 1 decimal, a count with 2 decimals; the unit is shown apart
    (:data:`PAGE_UNITS`)."""
    if unit == "difference":
        return f"{100 * value:+.1f}"
    if unit == "count":
        return f"{value:.2f}"
    return f"{100 * value:.2f}"


def record_rows(records: Sequence[Record], metric: Callable[[str], Metric] = metric_info) -> list[list[str]]:
    """Rows of :data:`HEAD` for pages: each value and its interval in its metric's unit, which the row names
    (% for fractions, pp for differences, count). ``metric``: a metric's definition by name (a document's
    :meth:`~clipeval.results.store.ResultsDocument.info`, which knows a plugin's metrics without the plugin)."""
    rows = []
    for r in records:
        unit = metric(r.metric).unit
        show = lambda v, u=unit: page_number(u, v)  # noqa: E731
        rows.append([r.label, r.metric, show(r.value), f"[{show(r.ci[0])}, {show(r.ci[1])}]", PAGE_UNITS[unit],
                     "?" if r.n is None else str(r.n)])  # fmt: skip
    return rows


def format_records(title: str, records: Sequence[Record], metric: Callable[[str], Metric] = metric_info) -> str:
    """A plain-text table of ``records`` under ``title`` (values as fractions or counts, 4 decimals; the unit
    column says which; ``metric`` as for :func:`record_rows`)."""
    width = max([len(HEAD[0]), *(len(r.label) for r in records)])
    named = max([22, *(len(r.metric) for r in records)])  # image_retrieval_recall@10 is longer than the others
    lines = [title, f"{HEAD[0]:<{width}} {'metric':<{named}} {'unit':<10} {'value':>7}  {'95% interval':<17} {'n':>7}"]
    for r in records:
        lo, hi = r.ci
        spread = f"  sd {r.std:.4f}" if r.std is not None else ""
        n = "?" if r.n is None else r.n  # a published number whose sample count is not stated
        unit = TEXT_UNITS[metric(r.metric).unit]
        lines.append(
            f"{r.label:<{width}} {r.metric:<{named}} {unit:<10} {r.value:>7.4f}  [{lo:.4f}, {hi:.4f}] {n:>7}{spread}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- effective robustness

AVERAGE_ROW = "average over shifts"
MEAN_ROW = "mean of per-shift ER"
ROBUSTNESS_HEAD = ["setting", "top-1 (%)", "95% interval (%)", "n", "ID top-1 (%)", "baseline fit (%)",
                   "95% interval (%)", "ER (pp)", "95% interval (pp)"]  # fmt: skip


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


def percent(value: float | None) -> str:
    """An accuracy (fraction) as the robustness tables and figures show it: percent, 1 decimal; '' for None."""
    return "" if value is None else f"{100 * value:.1f}"


def points(value: float | None) -> str:
    """A difference of accuracies as the robustness tables and figures show it: percentage points, signed,
    1 decimal; '' for None."""
    return "" if value is None else f"{100 * value:+.1f}"


def interval(ci: tuple[float, float] | None, show=percent) -> str:
    return "" if ci is None else f"[{show(ci[0])}, {show(ci[1])}]"


def er_text(er: float, ci: tuple[float, float]) -> str:
    """Effective robustness and its interval as one phrase (figure titles and legends): the table's numbers."""
    return f"ER {points(er)} pp {interval(ci, points)}"


def robustness_rows(report: RobustnessReport) -> list[list[str]]:
    """Rows of :data:`ROBUSTNESS_HEAD` for pages: accuracies in percent, effective robustness in pp."""
    return [
        [r.setting, percent(r.top1), interval(r.top1_ci), "" if r.n is None else str(r.n), percent(r.id_top1),
         percent(r.prediction), interval(r.prediction_ci), points(r.er), interval(r.er_ci, points)]
        for r in robustness_values(report)
    ]  # fmt: skip


def format_report(report: RobustnessReport, model: str, title: str) -> str:
    """The plain-text robustness table (fractions with 3 decimals, effective robustness in pp) and the headline's
    definition."""
    lines = [
        f"{title} · {model} · baselines: {report.baselines_label}",
        f"{'setting':<20} {'top-1':>6}  {'95% interval':<16} {'n':>6}  {'ID top-1':>8}  {'baseline fit':>20}  "
        f"{'eff. robustness (pp)':>22}",
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
            line += f"  {points(r.er):>6} {interval(r.er_ci, points)}"
        lines.append(line)
    lines.append("Units: top-1, ID top-1 and the baseline fit as fractions (0-1); effective robustness in percentage "
                 "points (pp).")  # fmt: skip
    avg = report.average
    if avg is not None:
        lines.append(
            f"Headline: average over shifts (CLIP paper Figure 13), the mean top-1 over the {len(avg.shifts)} shifts "
            f"minus the fit of the {avg.fit.n_models} baselines' mean against their in-distribution top-1 "
            f"({', '.join(avg.in_distribution.datasets)}); "
            "mean of per-shift ER: the plain mean of the rows above."
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- calibration beside effective robustness

CALIBRATION_HEAD = ["task/dataset", "setting", "top-1 (%)", "ECE (%)", "95% interval (%)", "n", "ER (pp)",
                    "95% interval (pp)"]  # fmt: skip
CALIBRATION_CAPTION = (
    "Calibration: expected calibration error (ECE) of the top prediction's softmax confidence at the model's own "
    "logit scale ({bins} equal-width bins; 95% interval: percentile bootstrap, 1,000 resamples, seed 0), beside "
    "each dataset's top-1 and, where it is one setting of the robustness table, its effective robustness (ER):"
)


def calibration_values(records: Sequence[Record], report: RobustnessReport | None = None) -> list[list]:
    """For each ``ece`` record: [label, setting, top-1 record or None, ece record, ER or None, ER interval or None].

    ``setting``: the robustness setting made of this dataset alone (a shift, the in-distribution setting, or a
    shift's paired in-distribution setting, named ``<shift> (ID)``), '' when none."""
    top1 = {(r.task, r.dataset): r for r in records if r.metric == "top1" and not r.params}
    settings: dict[str, tuple[str, float | None, tuple[float, float] | None]] = {}
    if report is not None:
        settings[_only(report.in_distribution.datasets)] = (report.in_distribution.name, None, None)
        for s in report.shifts:
            settings.setdefault(_only(s.in_distribution.datasets), (f"{s.shift.name} (ID)", None, None))
            settings[_only(s.shift.datasets)] = (s.shift.name, s.effective_robustness, s.effective_robustness_ci)
    rows = []
    for r in (r for r in records if r.metric == "ece"):
        name, er, er_ci = settings.get(f"{r.task}/{r.dataset}", ("", None, None))
        rows.append([_where(r), name, top1.get((r.task, r.dataset)), r, er, er_ci])
    return rows


def _where(record: Record) -> str:
    """``task/dataset`` (the bins are in the caption)."""
    return f"{record.task}/{record.dataset}" if record.task else record.dataset


def _only(datasets: Sequence[str]) -> str:
    return datasets[0] if len(datasets) == 1 else ""


def calibration_rows(records: Sequence[Record], report: RobustnessReport | None = None) -> list[list[str]]:
    """Rows of :data:`CALIBRATION_HEAD`: accuracies and ECE in percent (ECE with 2 decimals), ER in pp."""
    return [
        [label, setting, percent(top.value if top else None), page_number("fraction", ece.value),
         f"[{page_number('fraction', ece.ci[0])}, {page_number('fraction', ece.ci[1])}]", str(ece.n), points(er),
         interval(er_ci, points)]
        for label, setting, top, ece, er, er_ci in calibration_values(records, report)
    ]  # fmt: skip


def calibration_caption(records: Sequence[Record]) -> str:
    bins = sorted({str(r.params.get("bins", "?")) for r in records if r.metric == "ece"})
    return CALIBRATION_CAPTION.format(bins=" or ".join(bins))


# ---------------------------------------------------------------- generic


def text_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=True)]
    fmt = lambda row: "  ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
    )
    return "\n".join([fmt(head), *(fmt(r) for r in rows)])


# ---------------------------------------------------------------- benchmark average


def format_benchmark(title: str, result: BenchmarkResult) -> str:
    """The benchmark's table: each dataset's main metric, interval and n (or why it is missing), then the average
    over all datasets, or INCOMPLETE with the number missing and the mean of those present, labelled as such."""
    rows = result.rows
    width = max(len("dataset"), *(len(r.entry.name) for r in rows))
    source = max(len("task/dataset"), *(len(f"{r.entry.task}/{r.entry.dataset or '?'}") for r in rows))
    lines = [
        f"{title} · {result.spec.label}",
        f"{'dataset':<{width}} {'task/dataset':<{source}} {'main metric':<24} {'value':>7}  {'95% interval':<17} "
        f"{'n':>7}",
    ]
    for row in rows:
        where = f"{row.entry.task}/{row.entry.dataset or '?'}"
        metric = row.entry.metric or "?"
        if row.entry.params:
            metric += " " + " ".join(f"{k}={v}" for k, v in sorted(row.entry.params.items()))
        if row.record is None:
            lines.append(f"{row.entry.name:<{width}} {where:<{source}} {metric:<24} {'-':>7}  {row.status}")
            continue
        r = row.record
        n = "?" if r.n is None else r.n
        lines.append(
            f"{row.entry.name:<{width}} {where:<{source}} {metric:<24} {r.value:>7.4f}  [{r.ci[0]:.4f}, {r.ci[1]:.4f}] "
            f"{n:>7}"
        )
    total = len(rows)
    if result.complete:
        lines.append(f"average over {total} datasets: {result.average:.4f}")
    else:
        missing = total - len(result.present)
        partial = result.mean_of_present
        shown = f"; mean of the {len(result.present)} present (not the benchmark's average): {partial:.4f}" if (
            partial is not None) else ""  # fmt: skip
        lines.append(f"average over {total} datasets: INCOMPLETE ({missing} of {total} missing){shown}")
    return "\n".join(lines)


BENCHMARK_HEAD = ["dataset", "task/dataset", "main metric", "value (%)", "95% interval (%)", "n"]


def benchmark_rows(result: BenchmarkResult) -> list[list[str]]:
    """The benchmark's rows for pages (percent): each dataset's main metric, or why it is missing."""
    rows = []
    for row in result.rows:
        where = f"{row.entry.task}/{row.entry.dataset or '?'}"
        metric = " ".join([row.entry.metric or "?", *(f"{k}={v}" for k, v in sorted(row.entry.params.items()))])
        if row.record is None:
            rows.append([row.entry.name, where, metric, "", row.status, ""])
            continue
        r = row.record
        rows.append([row.entry.name, where, metric, f"{100 * r.value:.2f}",
                     f"[{100 * r.ci[0]:.2f}, {100 * r.ci[1]:.2f}]", "?" if r.n is None else str(r.n)])  # fmt: skip
    return rows


def benchmark_caption(result: BenchmarkResult) -> str:
    """The benchmark's headline: the average over all its datasets, or INCOMPLETE with how many are missing."""
    total = len(result.rows)
    if result.complete:
        return f"{result.spec.label}: {100 * result.average:.2f}% (average over {total} datasets)"
    missing = total - len(result.present)
    partial = result.mean_of_present
    shown = "" if partial is None else (
        f"; mean of the {len(result.present)} present, not the benchmark's average: {100 * partial:.2f}%")  # fmt: skip
    return f"{result.spec.label}: INCOMPLETE ({missing} of {total} datasets missing){shown}"
