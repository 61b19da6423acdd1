"""What the gate reads: results documents (schema 3), as golden files and as candidates.

A golden file is a results document (:mod:`clipeval.results.store`), recorded from a finished
run by ``clipeval check record`` or written by hand from published numbers; a candidate is a
run directory, its results.json, or a store entry (the same document). Everything the gate
needs is in the document: the records, the per-sample data behind them (``samples``) and the
content keys of the scored data (``data``), so a store copied to another machine is enough.

Golden-only fields: a record's ``tolerance`` (the drop it allows; with it, ``n`` may be null
when the source does not state its sample count) and a document-level ``tolerance`` (for its
records without their own).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipeval.errors import ClipevalError, quoted
from clipeval.results.record import Metric, Record, finite
from clipeval.results.samples import Samples
from clipeval.results.store import ResultsDocument

RecordKey = tuple[str, str, str, tuple[tuple[str, Any], ...]]


@dataclass(frozen=True)
class Entry:
    """A record of a document, with the per-sample data it points at (None: it points at none)."""

    record: Record
    samples: Samples | None
    origin: str  # the document it came from, for messages
    info: Metric  # the metric as the document defines it

    @property
    def paired(self) -> bool:
        """Whether its per-sample data define its metric (so a paired test can use them)."""
        return self.samples is not None and self.samples.has(
            self.record.metric, self.record.outcome, self.info.class_weighted
        )


def describe(record: Record) -> str:
    """``task/dataset [params] metric``, for messages (display only)."""
    return f"{record.label} {record.metric}"


def load_run(path: Path, what: str = "") -> ResultsDocument:
    """The results document of a run directory, its results.json or a store entry; ClipevalError (exit 2)
    when it is not a valid document or its run did not finish (its records are incomplete)."""
    doc = ResultsDocument.load(Path(path), what)
    if doc.failures:
        what = "; ".join(f"{f.get('task')}/{f.get('evaluator')}: {f.get('error')}" for f in doc.failures)
        raise ClipevalError(
            f"The run at {doc.where} did not finish: {what}. Its records are incomplete; fix the failure and run again."
        )
    return doc


def load_golden(path: Path) -> ResultsDocument:
    """A golden file, validated by :func:`check_golden`; ClipevalError (exit 2) naming the file and field."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ClipevalError(f"Golden file {path} {what}. Make one with: clipeval check record RUN --out FILE")
    try:
        doc = load_run(path, "Golden file")
    except ClipevalError:
        if _kind(path) == "clipeval-golden":
            raise ClipevalError(
                f"{path} is a golden file of an older clipeval (kind 'clipeval-golden'). A golden file is now a "
                "results document (schema 3): record it again from a run (clipeval check record RUN --out FILE)."
            ) from None
        raise
    check_golden(doc)
    return doc


def check_golden(doc: ResultsDocument) -> None:
    """ClipevalError unless ``doc`` has records to check, every record's ``n`` is unknown (null, with its own
    tolerance) or positive, and its document-level ``tolerance`` (if any) is a finite drop >= 0."""
    if not doc.records:
        raise ClipevalError(
            f"The golden file {doc.where} has no records, so there is nothing to check: record it from a finished run "
            "(clipeval check record RUN --out FILE)."
        )
    for i, record in enumerate(doc.records):
        if record.n is not None and record.n < 1:
            raise ClipevalError(
                f"{doc.where}: records[{i}] ({describe(record)}): 'n' must be a positive whole number of samples "
                f"(got {quoted(record.n)}). Fix the golden file."
            )
    document_tolerance(doc)


def document_tolerance(doc: ResultsDocument) -> float | None:
    """The golden file's ``tolerance`` (for records without their own), or None."""
    value = doc.raw.get("tolerance")
    if value is None:
        return None
    value = finite(value, f"{doc.where}: tolerance")
    if value < 0:
        raise ClipevalError(f"{doc.where}: tolerance is {value}: a tolerance is an allowed drop, at least 0.")
    return value


def entries(doc: ResultsDocument) -> dict[RecordKey, Entry]:
    """{Record.key: Entry} of a document (which ResultsDocument.parse has checked: no key twice, per-sample data
    that give their records' values)."""
    return {r.key: Entry(r, doc.samples(r.samples), doc.where, doc.metric(r.metric)) for r in doc.records}


def candidate_entries(docs: Iterable[ResultsDocument]) -> dict[RecordKey, Entry]:
    """The records of every candidate document; ClipevalError when two documents hold the same record, or are runs of
    different models (one candidate is one model's results, perhaps spread over several runs)."""
    docs = list(docs)
    models = {doc.model.get("fingerprint"): doc for doc in docs}
    if len(models) > 1:
        shown = "; ".join(f"{doc.where}: {doc.model_label}" for doc in models.values())
        raise ClipevalError(
            f"The candidate runs are of {len(models)} different models ({shown}): a candidate is one model's results, "
            "perhaps spread over several runs. Compare each model on its own."
        )
    out: dict[RecordKey, Entry] = {}
    for doc in docs:
        for key, entry in entries(doc).items():
            if key in out:
                raise ClipevalError(
                    f"{describe(entry.record)} is in both {out[key].origin} and {entry.origin}: give each run once "
                    "(the gate would not know which to check)."
                )
            out[key] = entry
    return out


def _kind(path: Path) -> Any:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return raw.get("kind") if isinstance(raw, dict) else None
