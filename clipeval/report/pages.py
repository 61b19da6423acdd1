"""A report of stored runs, as Markdown and as one self-contained HTML file, from results documents alone.

Each run's section is computed from its document (clipeval.results.store.ResultsDocument): the
records table and the effective-robustness table (:mod:`clipeval.report.tables`), recomputed
from the records and the stored baseline points, and the run's figures, drawn again from the
document into the report's folder (``figures/<store entry>/``). Nothing is read from a run
directory, so a store copied to another machine reports the same. Both files are written from
the same blocks, so they always agree; the HTML embeds the figures as data URIs, so it can be
mailed or attached to a CI job.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clipeval.atomic import atomic_write
from clipeval.report.run_summary import draw_run_figures, robustness_report, run_label
from clipeval.report.tables import HEAD, ROBUSTNESS_HEAD, record_rows, robustness_rows
from clipeval.results.store import ResultsDocument, Selector

Table = tuple[list[str], list[list[str]]]


@dataclass
class Section:
    title: str
    lines: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    #: a line printed just before a table, by the table's index
    captions: dict[int, str] = field(default_factory=dict)


def run_section(doc: ResultsDocument, figures: Path | None = None) -> Section:
    """The section of one stored run; its figures are drawn into the folder ``figures`` (None: no figures)."""
    failed = " · INCOMPLETE (failed)" if doc.failures else ""
    selection = doc.selection
    section = Section(f"{selection['name']} (v{selection.get('version')}) · {run_label(doc)}{failed}")
    raw = doc.raw
    section.lines.append(
        f"model fingerprint `{str(doc.model.get('fingerprint', ''))[:12]}` · created {doc.created} · "
        f"clipeval {raw.get('clipeval_version')}"
        + (f" · git {str(raw['git_sha'])[:10]}" if raw.get("git_sha") else "")
        + (f" · store entry {doc.path.name}" if doc.path else "")
    )
    section.lines += _incomplete_lines(doc)
    rows = record_rows([r for r in doc.records if r.metric != "effective_robustness"])
    section.tables.append((HEAD, rows))
    report = robustness_report(doc)
    if report is not None:
        section.captions[len(section.tables)] = (
            f"Effective robustness against {report.baselines_label}, recomputed from the stored records and "
            "baseline points (accuracies in %, effective robustness in percentage points):"
        )
        section.tables.append((ROBUSTNESS_HEAD, robustness_rows(report)))
    if figures is not None:
        section.figures = draw_run_figures(doc, figures, report=report)
    return section


def _incomplete_lines(doc: ResultsDocument) -> list[str]:
    """A failed run's failures (its records are incomplete: the tasks after the failure were not run), the
    robustness table that was not computed, and the notes (what an evaluator left out, and why)."""
    lines = [
        f"Incomplete: evaluator {f.get('evaluator')} of task {f.get('task')} failed "
        f"({f.get('type', 'error')}): {f.get('error')}. The records below are those finished before it."
        for f in doc.failures
    ]
    if doc.raw.get("effective_robustness_error"):
        lines.append(f"Effective robustness: {doc.raw['effective_robustness_error']}")
    lines += [f"Note: {n.get('task')}/{n.get('evaluator')}: {n.get('message')}" for n in doc.raw.get("notes") or []]
    return lines


def to_markdown(title: str, sections: list[Section], here: Path | None = None) -> str:
    """Markdown; figure links are relative to ``here`` (the report's folder) when given."""
    out = [f"# {title}", ""]
    for s in sections:
        out += [f"## {s.title}", "", *[f"{line}\n" for line in s.lines]]
        for i, (head, rows) in enumerate(s.tables):
            out += [f"{s.captions[i]}\n"] if i in s.captions else []
            out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            out += ["| " + " | ".join(row) + " |" for row in rows]
            out.append("")
        out += [f"![{f.stem}]({Path(os.path.relpath(f, here)).as_posix() if here else f})" for f in s.figures] + [""]
    return "\n".join(out)


def to_html(title: str, sections: list[Section]) -> str:
    esc = html.escape
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
           "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;margin:8px 0}"
           "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
           "img{max-width:100%}</style></head><body>", f"<h1>{esc(title)}</h1>"]  # fmt: skip
    for s in sections:
        out.append(f"<h2>{esc(s.title)}</h2>")
        out += [f"<p>{esc(line)}</p>" for line in s.lines]
        for i, (head, rows) in enumerate(s.tables):
            out += [f"<p>{esc(s.captions[i])}</p>"] if i in s.captions else []
            out.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows]
            out.append("</table>")
        for fig in s.figures:
            data = base64.b64encode(fig.read_bytes()).decode()
            out.append(
                f"<figure><img alt='{esc(fig.stem)}' src='data:image/png;base64,{data}'><figcaption>{esc(fig.name)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out)


def write_pages(title: str, runs: Sequence[ResultsDocument], out: Path) -> tuple[Path, Path]:
    """``report.md`` and ``report.html`` of ``runs`` (newest first) in ``out``, figures under ``out/figures``."""
    out = Path(out).resolve()
    sections = [run_section(doc, out / "figures" / _entry(doc, i)) for i, doc in enumerate(reversed(runs))]
    md = atomic_write(out / "report.md", lambda f: f.write(to_markdown(title, sections, out).encode()))
    page = atomic_write(out / "report.html", lambda f: f.write(to_html(title, sections).encode()))
    return md, page


def _entry(doc: ResultsDocument, index: int) -> str:
    """A folder name unique to the run: its store entry's name, else its position."""
    return doc.path.stem if doc.path is not None else f"run{index:03d}"


def write_store_report(store: Path, out: Path, selector: Selector | None = None) -> tuple[Path, Path]:
    """The report of the store's runs (those ``selector`` selects); unreadable entries are skipped with a warning.

    Raises ClipevalError when there is no store, or when no run is selected."""
    from clipeval.report.selection import select_runs

    runs = select_runs(store, selector or Selector())
    what = "" if selector is None or selector == Selector() else f" selected by {selector.describe()}"
    return write_pages(f"clipeval results: {len(runs)} run(s) in {store}{what}", runs, out)
