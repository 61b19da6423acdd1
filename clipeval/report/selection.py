"""Choosing stored runs for a report: the store's readable documents that a Selector selects.

A store entry that is not a readable results document is skipped with a warning
(:func:`clipeval.results.store.load_store`), and so is one whose stored robustness settings
(``robustness``: the report's part of the document) are malformed (:func:`readable`); when
nothing is selected, the error says what the store holds, so the user can fix the selection.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from clipeval.errors import ClipevalError
from clipeval.results.store import ResultsDocument, Selector, load_store

log = logging.getLogger(__name__)


def select_runs(store: Path, selector: Selector) -> list[ResultsDocument]:
    """The store's runs that ``selector`` selects, oldest first.

    Raises ClipevalError when the store does not exist or nothing is selected (naming what it holds).
    """
    runs = load_store(Path(store))  # an entry whose fields or robustness settings are malformed is skipped there
    chosen = selector.select(runs)
    if not chosen:
        raise ClipevalError(f"No stored run in {store} matches {selector.describe()}. {store_contents(runs)}")
    return chosen


def store_contents(runs: Sequence[ResultsDocument]) -> str:
    """One sentence on what the runs are: their models, tasks and tags (for messages)."""
    if not runs:
        return "The store holds no readable results document."
    values = lambda get: ", ".join(sorted({v for r in runs for v in get(r)})) or "none"  # noqa: E731
    return (
        f"The store holds {len(runs)} run(s): models {values(lambda r: [r.model['name']])}; "
        f"tasks {values(lambda r: [r.selection['name'], *(r.selection.get('tasks') or {})])}; "
        f"tags {values(lambda r: r.tags)}."
    )
