"""The gate's printed table: one line per golden record, then a summary of what failed."""

from __future__ import annotations

import math

from clipeval.check.compare import Row


def format_rows(rows: list[Row]) -> str:
    """The table of ``rows`` (label, metric, reference, candidate, change, verdict, evidence) and a summary line,
    then the regressed and inconclusive records by name."""
    width = max([12, *(len(r.label) for r in rows)])
    named = max([22, *(len(r.metric) for r in rows)])  # image_retrieval_recall@10 is longer than the others
    lines = [
        f"{'record':<{width}} {'metric':<{named}} {'reference':>9} {'candidate':>9} {'change':>8}  {'verdict':<12} evidence"
    ]
    for r in rows:
        mark = {"regressed": "REGRESSED", "inconclusive": "INCONCLUSIVE"}.get(r.verdict, r.verdict)
        absent = math.isnan(r.candidate)  # a derived record the candidate lacks (its inputs are gated)
        candidate, change = ("—", "—") if absent else (f"{r.candidate:.4f}", f"{r.candidate - r.reference:+.4f}")
        lines.append(
            f"{r.label:<{width}} {r.metric:<{named}} {r.reference:9.4f} {candidate:>9} {change:>8}  {mark:<12} {r.evidence}"
        )
    bad = [r for r in rows if r.verdict == "regressed"]
    unsure = [r for r in rows if r.verdict == "inconclusive"]
    absent = [r for r in rows if r.verdict == "absent"]
    lines.append(
        f"{len(rows) - len(absent)} checked: {len(bad)} regressed, {len(unsure)} inconclusive, "
        f"{sum(r.verdict == 'improved' for r in rows)} improved."
        + (f" {len(absent)} of the golden file's records are not in the candidate (not compared)." if absent else "")
    )
    if bad:
        lines.append("Regressed: " + ", ".join(f"{r.label} {r.metric}" for r in bad))
    if unsure:
        lines.append(
            "Inconclusive (a drop on too few samples to decide; evaluate more data): "
            + ", ".join(f"{r.label} {r.metric}" for r in unsure)
        )
    return "\n".join(lines)
