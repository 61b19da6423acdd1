"""Choosing stored runs for a report: the store's readable documents that a Selector selects.

A store entry that is not a readable results document is skipped with a warning
(:func:`clipeval.results.store.load_store`), and so is one whose stored robustness settings
(``robustness``: the report's part of the document) are malformed (:func:`readable`); when
nothing is selected, the error says what the store holds, so the user can fix the selection.
A run whose report cannot be computed, for whatever reason, is skipped the same way
(:func:`each_run`), so one entry never stops the report of the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from clipeval.errors import ClipevalError
from clipeval.results.store import ResultsDocument, Selector, load_store, skipped

log = logging.getLogger(__name__)
T = TypeVar("T")


def select_runs(store: Path, selector: Selector) -> list[ResultsDocument]:
    """The store's runs that ``selector`` selects, oldest first.

    Raises ClipevalError when the store does not exist or nothing is selected (naming what it holds).
    """
    runs = load_store(Path(store))  # an entry whose fields or robustness settings are malformed is skipped there
    chosen = selector.select(runs)
    if not chosen:
        raise ClipevalError(f"No stored run in {store} matches {selector.describe()}. {store_contents(runs)}")
    return chosen


def each_run(
    docs: Sequence[ResultsDocument], compute: Callable[[ResultsDocument], T]
) -> Iterator[tuple[ResultsDocument, T]]:
    """(doc, compute(doc)) for every run whose computation succeeds; a run for which it raises anything is
    skipped with a warning naming the entry and the error (its type too when it is not a ClipevalError, so a
    fault of clipeval is seen, with its traceback in the log at DEBUG), and the rest go on."""
    for doc in docs:
        try:
            yield doc, compute(doc)
        except ClipevalError as exc:
            log.warning("%s", skipped(doc.path, exc) if doc.path is not None else f"Skipped {doc.where}: {exc}")
        except Exception as exc:  # noqa: BLE001 - one run's fault must not stop the report of the others
            log.warning("Skipped %s: its report could not be computed (%s: %s); the other runs are reported. "
                        "This is a fault of clipeval or of the entry: please report it.", _name(doc),
                        type(exc).__name__, exc)  # fmt: skip
            log.debug("The error computing the report of %s", _name(doc), exc_info=True)


def _name(doc: ResultsDocument) -> str:
    return doc.path.name if doc.path is not None else doc.where


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
