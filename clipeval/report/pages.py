"""A report of every run in the results store, as Markdown and as one self-contained HTML file.

Both are written from the same blocks (headings, tables, figures), so they always agree;
the HTML embeds the run's figures as data URIs, so it can be mailed or attached to a CI job.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipeval.atomic import atomic_write
from clipeval.results.store import load_store


@dataclass
class Section:
    title: str
    lines: list[str] = field(default_factory=list)
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


NOT_FRACTIONS = {"k_matching_zero_shot"}  # metrics whose value is a count, not a proportion


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def _value(metric: str, value: float) -> str:
    return f"{value:.2f}" if metric in NOT_FRACTIONS else _pct(value)


def run_section(run: dict[str, Any]) -> Section:
    model, task = run["model"], run["task"]
    failed = " · INCOMPLETE (failed)" if run.get("failures") else ""
    section = Section(f"{task['name']} (v{task['version']}) · {model['name']}{failed}")
    section.lines.append(
        f"model fingerprint `{model['fingerprint'][:12]}` · created {run['created']} · clipeval {run['clipeval_version']}"
        + (f" · git {run['git_sha'][:10]}" if run.get("git_sha") else "")
    )
    section.lines += _incomplete_lines(run)
    rows = [
        [
            r["dataset"],
            r["metric"],
            _value(r["metric"], r["value"]),
            f"[{_value(r['metric'], r['ci'][0])}, {_value(r['metric'], r['ci'][1])}]",
            str(r["n"]),
        ]
        for r in run["records"]
        if r["metric"] != "effective_robustness"
    ]
    section.tables.append((["dataset", "metric", "value (% unless a count)", "95% interval", "n"], rows))
    er = run.get("effective_robustness")
    if er:
        section.lines.append(f"Effective robustness against {er['baselines']} (percentage points):")
        er_rows = [
            [s["shift"], _pct(s["top1"]), _pct(s["in_distribution"]["top1"]), _pct(s["baseline_prediction"]),
             f"{100 * s['effective_robustness']:+.1f}",
             f"[{100 * s['effective_robustness_ci'][0]:+.1f}, {100 * s['effective_robustness_ci'][1]:+.1f}]"]
            for s in er["shifts"]
        ]  # fmt: skip
        er_rows += _average_rows(er)
        section.tables.append(
            (["shift", "top-1 (%)", "ID top-1 (%)", "baseline fit (%)", "ER (pp)", "95% interval"], er_rows)
        )
    run_dir = Path(run.get("run_dir", ""))
    if run.get("run_dir") and run_dir.is_dir():
        section.figures = sorted(run_dir.glob("*.png"))
    return section


def _incomplete_lines(run: dict[str, Any]) -> list[str]:
    """A failed run's failures (its records are incomplete: the tasks after the failure were not run), the
    robustness table that was not computed, and the notes (what an evaluator left out, and why)."""
    lines = [
        f"Incomplete: evaluator {f.get('evaluator')} of task {f.get('task')} failed "
        f"({f.get('type', 'error')}): {f.get('error')}. The records below are those finished before it."
        for f in run.get("failures") or []
    ]
    if run.get("effective_robustness_error"):
        lines.append(f"Effective robustness: {run['effective_robustness_error']}")
    lines += [f"Note: {n.get('task')}/{n.get('evaluator')}: {n.get('message')}" for n in run.get("notes") or []]
    return lines


def _average_rows(er: dict[str, Any]) -> list[list[str]]:
    """The headline "average over shifts" (CLIP paper Figure 13) and the mean of the per-shift values.

    Runs stored before the headline existed hold only ``average_effective_robustness``: that was the
    mean of the per-shift values, and is shown under that name.
    """
    ci = lambda lo, hi: f"[{100 * lo:+.1f}, {100 * hi:+.1f}]"  # noqa: E731
    rows = []
    avg = er.get("average_over_shifts")
    if avg is not None and "effective_robustness" in avg:
        rows.append(["average over shifts", _pct(avg["top1"]), _pct(avg["in_distribution"]["top1"]),
                     _pct(avg["baseline_prediction"]), f"{100 * avg['effective_robustness']:+.1f}",
                     ci(*avg["effective_robustness_ci"])])  # fmt: skip
    mean = er.get("mean_of_per_shift_effective_robustness", er.get("average_effective_robustness"))
    lo, hi = er.get("mean_of_per_shift_effective_robustness_ci", er.get("average_effective_robustness_ci"))
    rows.append(["mean of per-shift ER", "", "", "", f"{100 * mean:+.1f}", ci(lo, hi)])
    return rows


def to_markdown(title: str, sections: list[Section], here: Path | None = None) -> str:
    """Markdown; figure links are relative to ``here`` (the report's folder) when given."""
    out = [f"# {title}", ""]
    for s in sections:
        out += [f"## {s.title}", "", *[f"{line}\n" for line in s.lines]]
        for head, rows in s.tables:
            out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            out += ["| " + " | ".join(row) + " |" for row in rows]
            out.append("")
        out += [f"![{f.stem}]({os.path.relpath(f, here) if here else f})" for f in s.figures] + [""]
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
        for head, rows in s.tables:
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


def write_store_report(store: Path, out: Path) -> tuple[Path, Path]:
    runs = load_store(store)
    sections = [run_section(run) for run in reversed(runs)]  # newest first
    title = f"clipeval results: {len(runs)} run(s) in {store}"
    out = Path(out).resolve()
    md = atomic_write(out / "report.md", lambda f: f.write(to_markdown(title, sections, out).encode()))
    page = atomic_write(Path(out) / "report.html", lambda f: f.write(to_html(title, sections).encode()))
    return md, page
