"""A report of stored runs, as Markdown and as one self-contained HTML file, from results documents alone.

Each run's section is computed from its document (clipeval.results.store.ResultsDocument): the
effective-robustness table first, under its caption, recomputed from the records and the stored
baseline points; the calibration table (ECE beside top-1 and effective robustness) when the run has
``ece`` records; then the long table of every record (:mod:`clipeval.report.tables`), collapsed
(``<details>``); then the run's figures, drawn again from the document into the report's folder
(``figures/<store entry>/``). Nothing is read from a run
directory, so a store copied to another machine reports the same. Both files are written from
the same blocks, so they always agree; the HTML embeds the figures as data URIs, so it can be
mailed or attached to a CI job. The HTML is the Markdown rendered by markdown-it-py (CommonMark
and pipe tables), so code spans, escapes and tables read the same in both.
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipeval.atomic import atomic_write
from clipeval.errors import ClipevalError
from clipeval.report.run_summary import benchmark, draw_run_figures, robustness_report, run_label
from clipeval.report.tables import (
    BENCHMARK_HEAD,
    CALIBRATION_HEAD,
    HEAD,
    ROBUSTNESS_HEAD,
    benchmark_caption,
    benchmark_rows,
    calibration_caption,
    calibration_rows,
    record_rows,
    robustness_rows,
)
from clipeval.results.store import ResultsDocument, Selector


@dataclass
class Table:
    """A table of a section: ``caption`` is printed above it; a ``collapsed`` table (the long one) is folded
    under that caption in HTML (``<details>``) and in Markdown (GitHub renders the same element)."""

    head: list[str]
    rows: list[list[str]]
    caption: str = ""
    collapsed: bool = False


@dataclass
class Section:
    title: str
    #: Markdown lines (code spans in backticks; what came from documents escaped by :func:`escape`)
    lines: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)

    def table(self, head: list[str]) -> Table | None:
        """The section's table with this header (None: none)."""
        return next((t for t in self.tables if t.head == head), None)


def run_section(doc: ResultsDocument, figures: Path | None = None) -> Section:
    """The section of one stored run; its figures are drawn into the folder ``figures`` (None: no figures).

    The effective-robustness table comes first, under its caption (the numbers a paper quotes); the long
    table of every record follows, collapsed."""
    failed = " · INCOMPLETE (failed)" if doc.failures else ""
    selection = doc.selection
    section = Section(f"{selection['name']} (v{selection.get('version')}) · {run_label(doc)}{failed}")
    raw = doc.raw
    section.lines.append(
        f"model fingerprint `{str(doc.model.get('fingerprint', ''))[:12]}` · created {escape(str(doc.created))} · "
        f"clipeval {escape(str(raw.get('clipeval_version')))}"
        + (f" · git `{str(raw['git_sha'])[:10]}`" if raw.get("git_sha") else "")
        + (f" · store entry `{doc.path.name}`" if doc.path else "")
    )
    section.lines += _incomplete_lines(doc)
    report = robustness_report(doc)
    if report is not None:
        section.tables.append(
            Table(
                ROBUSTNESS_HEAD,
                robustness_rows(report),
                f"Effective robustness against {escape(report.baselines_label)}, recomputed from the stored records "
                "and baseline points (accuracies in %, effective robustness (ER) in percentage points, pp):",
            )
        )
    result = benchmark(doc)
    if result is not None:
        section.tables.append(Table(BENCHMARK_HEAD, benchmark_rows(result), escape(benchmark_caption(result)) + ":"))
    if any(r.metric == "ece" for r in doc.records):
        section.tables.append(
            Table(CALIBRATION_HEAD, calibration_rows(doc.records, report), escape(calibration_caption(doc.records)))
        )
    records = [r for r in doc.records if r.metric != "effective_robustness"]
    section.tables.append(
        Table(
            HEAD,
            record_rows(records, doc.info),
            f"All {len(records)} records (each value in its row's unit)",
            collapsed=True,
        )
    )
    if figures is not None:
        section.figures = draw_run_figures(doc, figures, report=report)
    return section


def _incomplete_lines(doc: ResultsDocument) -> list[str]:
    """A failed run's failures (its records are incomplete: the tasks after the failure were not run), the
    robustness table that was not computed, and the notes (what an evaluator left out, and why)."""
    lines = [
        escape(f"Incomplete: evaluator {f.get('evaluator')} of task {f.get('task')} failed "
               f"({f.get('type', 'error')}): {f.get('error')}. The records below are those finished before it.")
        for f in doc.failures
    ]  # fmt: skip
    if doc.raw.get("effective_robustness_error"):
        lines.append(escape(f"Effective robustness: {doc.raw['effective_robustness_error']}"))
    lines += [
        escape(f"Note: {n.get('task')}/{n.get('evaluator')}: {n.get('message')}") for n in doc.raw.get("notes") or []
    ]
    return lines


_SPECIAL = re.compile(r"[\\`*<|]|&(?=#?\w+;)|(?<=!)\[|\](?=\()|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def escape(text: str) -> str:
    """``text`` as literal Markdown: what Markdown would read as markup (code, emphasis, HTML, table cells, links
    and images) backslash-escaped, and only that, so labels such as ``digits_probe/test`` and intervals such as
    ``[93.6, 97.9]`` read as they are in the .md file."""
    return _SPECIAL.sub(lambda m: "\\" + m.group(0), text)


_NUMBER = re.compile(r"$|[-+\[?\d]")  # a number, an interval, '?' (n not stated) or nothing


def _table_markdown(table: Table) -> list[str]:
    """A pipe table: columns of numbers (and intervals) right-aligned, the others left-aligned."""
    head = "| " + " | ".join(escape(h) for h in table.head) + " |"
    columns = zip(*table.rows, strict=True) if table.rows else [[] for _ in table.head]
    align = "|" + "|".join("---:" if all(_NUMBER.match(c) for c in col) else ":---" for col in columns) + "|"
    return [head, align, *("| " + " | ".join(escape(c) for c in row) + " |" for row in table.rows)]


def to_markdown(title: str, sections: list[Section], here: Path | None = None) -> str:
    """Markdown; figure links are relative to ``here`` (the report's folder) when given."""
    out = [f"# {escape(title)}", ""]
    for s in sections:
        out += [f"## {escape(s.title)}", "", *[f"{line}\n" for line in s.lines]]
        for table in s.tables:
            if table.collapsed:
                out += [f"<details><summary>{html.escape(table.caption, quote=False)}</summary>", ""]
            elif table.caption:
                out += [f"{table.caption}", ""]
            out += [*_table_markdown(table), ""]
            out += ["</details>", ""] if table.collapsed else []
        out += [f"![{f.stem}]({Path(os.path.relpath(f, here)).as_posix() if here else f})" for f in s.figures] + [""]
    return "\n".join(out)


STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:0 12px}"
    "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;white-space:nowrap}"
    "code{background:#f3f3f3;padding:0 3px;border-radius:3px}summary{cursor:pointer;margin:8px 0}"
    "img{max-width:100%}figure{margin:12px 0}figcaption{color:#555;font-size:90%}"
)


def _markdown() -> Any:
    from markdown_it import MarkdownIt

    # no raw HTML: whatever a document holds is shown as text; pipe tables on
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def to_html(title: str, sections: list[Section]) -> str:
    """One self-contained page: the same blocks as :func:`to_markdown`, rendered by markdown-it-py (CommonMark with
    pipe tables; raw HTML in the text is escaped), the long tables in ``<details>``, the figures as data URIs."""
    md = _markdown()
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           f"<style>{STYLE}</style></head><body>", md.render(f"# {escape(title)}")]  # fmt: skip
    for s in sections:
        out.append("<section>" + md.render(f"## {escape(s.title)}"))
        out += [md.render(line) for line in s.lines]
        for table in s.tables:
            rendered = md.render("\n".join(_table_markdown(table)))
            if table.collapsed:
                summary = md.renderInline(table.caption)
                out.append(f"<details><summary>{summary}</summary>\n{rendered}</details>")
            else:
                out += [md.render(table.caption) if table.caption else "", rendered]
        for fig in s.figures:
            data = base64.b64encode(fig.read_bytes()).decode()
            out.append(
                f"<figure><img alt='{html.escape(fig.stem)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(fig.name)}</figcaption></figure>"
            )
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)


def write_pages(title: str, runs: Sequence[ResultsDocument], out: Path) -> tuple[Path, Path]:
    """``report.md`` and ``report.html`` of ``runs`` (newest first) in ``out``, figures under ``out/figures``."""
    out = Path(out).resolve()
    sections = [run_section(doc, out / "figures" / _entry(doc, i)) for i, doc in enumerate(reversed(runs))]
    return _write(title, sections, out)


def _write(title: str, sections: list[Section], out: Path) -> tuple[Path, Path]:
    md = atomic_write(out / "report.md", lambda f: f.write(to_markdown(title, sections, out).encode()))
    page = atomic_write(out / "report.html", lambda f: f.write(to_html(title, sections).encode()))
    return md, page


def _entry(doc: ResultsDocument, index: int) -> str:
    """A folder name unique to the run: its store entry's name, else its position."""
    return doc.path.stem if doc.path is not None else f"run{index:03d}"


def write_store_report(store: Path, out: Path, selector: Selector | None = None) -> tuple[Path, Path]:
    """The report of the store's runs (those ``selector`` selects); unreadable entries are skipped with a warning.

    Raises ClipevalError when there is no store, or when no run is selected."""
    from clipeval.report.selection import each_run, select_runs

    out = Path(out).resolve()
    runs = select_runs(store, selector or Selector())
    sections = [
        s for _, s in each_run(list(reversed(runs)), lambda doc: run_section(doc, out / "figures" / _entry(doc, 0)))
    ]
    if not sections:
        raise ClipevalError(f"No report of any selected run of {store} could be computed: see the warnings above.")
    what = "" if selector is None or selector == Selector() else f" selected by {selector.describe()}"
    return _write(f"clipeval results: {len(sections)} run(s) in {store}{what}", sections, out)
