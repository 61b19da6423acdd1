"""What a run prints and draws when it finishes, computed from its results document alone.

A task prints its records; a suite with a benchmark prints each dataset's main metric and the average over
datasets (clipeval.results.benchmark); a suite prints its robustness table and then the records of the
tasks the table does not cover (probes, attacks) whose metric is a summary metric
(clipeval.results.record.METRICS). Figures: the suite's configured robustness figures, and one
figure per few-shot probe and per attacked dataset, drawn from the records.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clipeval.config.construct import build
from clipeval.report.robustness import RobustnessReport, build_report
from clipeval.report.tables import (
    CALIBRATION_HEAD,
    calibration_caption,
    calibration_rows,
    format_benchmark,
    format_records,
    format_report,
    text_table,
)
from clipeval.results.benchmark import BenchmarkResult, BenchmarkSpec, benchmark_result
from clipeval.results.robustness import RobustnessSpec
from clipeval.results.store import ResultsDocument


def run_label(doc: ResultsDocument) -> str:
    """How figures and headings name a run: the model, then ``@ step N`` and ``[tags]`` when it has them."""
    step = f" @ step {_number(doc.step)}" if doc.step is not None else ""
    tags = f" [{', '.join(doc.tags)}]" if doc.tags else ""
    return f"{doc.model_label}{step}{tags}"


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def stored_spec(doc: ResultsDocument) -> RobustnessSpec | None:
    """The document's stored robustness settings and baseline points (None: not a suite, or it failed)."""
    spec = doc.raw.get("robustness")
    if not spec or doc.failures or doc.raw.get("effective_robustness_error"):
        return None
    return RobustnessSpec.from_json(spec, f"{doc.where}: robustness")


def robustness_report(doc: ResultsDocument) -> RobustnessReport | None:
    """The document's effective-robustness report, recomputed from its records and stored settings (None: none)."""
    spec = stored_spec(doc)
    return None if spec is None else build_report(spec, doc.records)


def summary(doc: ResultsDocument) -> str:
    """The printed summary of a finished run (headed by its run directory), then its notes."""
    where = f"Run directory: {doc.raw['run_dir']}\n\n" if doc.raw.get("run_dir") else ""
    return where + _tables(doc) + format_notes(doc.raw)


def benchmark(doc: ResultsDocument) -> BenchmarkResult | None:
    """The document's benchmark average and its datasets, from its records and stored settings (None: none)."""
    raw = doc.raw.get("benchmark")
    return None if not raw else benchmark_result(BenchmarkSpec.from_json(raw, f"{doc.where}: benchmark"), doc.records)


def _tables(doc: ResultsDocument) -> str:
    title = f"{doc.selection['name']} (v{doc.selection['version']})"
    result = benchmark(doc)
    if result is not None:  # the benchmark's main metrics and average; the other records are in results.json
        return format_benchmark(f"{title} · {doc.model_label}", result)
    spec = stored_spec(doc)
    if spec is None:
        return format_records(f"{title} · {doc.model_label}", doc.records, doc.info)
    covered = {t for t, _ in spec.in_distribution}
    covered |= {t for s in spec.shifts.values() for t, _ in s.datasets + (s.in_distribution or [])}
    covered.add(doc.selection["name"])  # the effective-robustness records themselves
    rest = [r for r in doc.records if r.task not in covered and doc.info(r.metric).in_summary(r)]
    report = build_report(spec, doc.records)
    table = format_report(report, doc.model_label, title) + _calibration(doc, report)
    return table + ("\n\n" + format_records(f"{title} · {doc.model_label}", rest, doc.info) if rest else "")


def _calibration(doc: ResultsDocument, report: RobustnessReport) -> str:
    """The calibration table printed under the robustness table ('' when the run has no ``ece`` records)."""
    if not any(r.metric == "ece" for r in doc.records):
        return ""
    return (
        "\n\n"
        + calibration_caption(doc.records)
        + "\n"
        + text_table(CALIBRATION_HEAD, calibration_rows(doc.records, report))
    )


def format_notes(document: dict[str, Any]) -> str:
    """The run's notes (what an evaluator left out, and why), one line each after a blank line; '' if none."""
    lines = [f"note: {n['task']}/{n['evaluator']}: {n['message']}" for n in document.get("notes") or []]
    return "\n\n" + "\n".join(lines) if lines else ""


#: the figures of a robustness report when no list is given (a report of stored runs draws these)
ROBUSTNESS_FIGURES = (
    {"_target_": "clipeval.report.figures.scatter_grid", "file": "effective_robustness.png"},
    {"_target_": "clipeval.report.figures.paired_bars", "file": "effective_robustness_bars.png"},
    {"_target_": "clipeval.report.figures.average_panel", "file": "average_over_shifts.png"},
)


def draw_run_figures(
    doc: ResultsDocument,
    out: Path,
    figures: Sequence[dict[str, Any]] | None = None,
    report: RobustnessReport | None = None,
) -> list[Path]:
    """Draw the document's figures into ``out``; returns the files written.

    ``figures`` ({_target_: drawing function of (report, model name, path), file}; None:
    :data:`ROBUSTNESS_FIGURES`, the average panel only when the baselines give an average) are
    drawn when the run has a robustness report (``report``, else computed from the document),
    then the record figures (:func:`clipeval.report.figures.record_figures`) and the reliability diagrams of the
    ``ece`` records (:func:`clipeval.report.figures.calibration_figures`).
    """
    from clipeval.report.figures import calibration_figures, record_figures

    written = []
    report = report if report is not None else robustness_report(doc)
    if report is not None:
        if figures is None:
            figures = [f for f in ROBUSTNESS_FIGURES if report.average is not None or "average" not in f["_target_"]]
        for spec in figures:
            draw = build(
                {k: v for k, v in spec.items() if k != "file"} | {"_partial_": True}, f"figure {spec.get('file')}"
            )
            written.append(draw(report, doc.model_label, Path(out) / spec["file"]))
    return written + record_figures(doc.records, doc.model_label, Path(out)) + calibration_figures(doc, Path(out))
