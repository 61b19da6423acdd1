"""Records as tables: one set of columns for the terminal and for Markdown/HTML pages.

Values are shown in their metric's unit (clipeval.results.record.METRICS): fractions in
percent on pages and as fractions in the terminal (4 decimals, as printed since 0.1),
differences in percentage points, counts as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

from clipeval.results.record import Record

HEAD = ["task/dataset and params", "metric", "value", "95% interval", "n"]


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
    width = max([20, *(len(r.label) for r in records)])
    lines = [title, f"{HEAD[0]:<{width}} {'metric':<22} {'value':>7}  {'95% interval':<17} {'n':>7}"]
    for r in records:
        lo, hi = r.ci
        spread = f"  sd {r.std:.4f}" if r.std is not None else ""
        n = "?" if r.n is None else r.n  # a published number whose sample count is not stated
        lines.append(f"{r.label:<{width}} {r.metric:<22} {r.value:>7.4f}  [{lo:.4f}, {hi:.4f}] {n:>7}{spread}")
    return "\n".join(lines)
