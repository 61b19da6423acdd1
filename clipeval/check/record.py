"""``clipeval check record``: a golden file is the results document of a finished run, validated."""

from __future__ import annotations

from pathlib import Path

from clipeval.check.documents import check_golden, entries, load_run
from clipeval.results.store import write_json


def record_golden(run: Path, out: Path) -> Path:
    """Write the results document of ``run`` (a run directory, its results.json or a store entry) to ``out``.

    The document is copied whole (records, samples, data, model, selection, config, ...), with a
    ``source`` naming where it came from when it has none. ClipevalError (exit 2) when the run did
    not finish, has no records, or its per-sample data disagree with its records: a golden file
    ``clipeval check compare`` would refuse is never written. Returns ``out``.
    """
    doc = load_run(run)
    check_golden(doc)
    entries(doc)  # every record's per-sample data give its value
    golden = dict(doc.raw)
    golden.setdefault("source", f"clipeval run {golden.get('run_id')} of {doc.created or 'unknown date'} ({doc.where})")
    return write_json(Path(out), golden)
