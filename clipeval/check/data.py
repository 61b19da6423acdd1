"""Which data were scored: the gate refuses a candidate scored on other data than its golden file.

A results document's ``data`` is ``{task: {dataset: {key, limit}}}``: ``key`` is the source's
content key (a hash of the data's content: every file of an image folder, every shard, the
Hugging Face dataset's fingerprint and files) and ``limit`` the number of samples
``runtime.limit`` kept (null: all). Two runs scored the same samples when both are equal.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from clipeval.errors import ClipevalError
from clipeval.results.store import ResultsDocument, Scored, Where, parse_data

log = logging.getLogger(__name__)


def scored_data(doc: ResultsDocument) -> dict[Where, Scored] | None:
    """{(task, dataset): Scored} of a document's ``data``; None when it has none (checked when it was read)."""
    return parse_data(doc.raw.get("data"), doc.where)


def merged(parts: Iterable[dict[Where, Scored] | None]) -> dict[Where, Scored] | None:
    """The scored data of several documents together; None when any of them has none."""
    out: dict[Where, Scored] = {}
    for part in parts:
        if part is None:
            return None
        out |= part
    return out


def check_same_data(
    golden: dict[Where, Scored] | None, candidate: dict[Where, Scored] | None, compared: set[Where]
) -> None:
    """Refuse (ClipevalError) a dataset the candidate scored on other content, or on other samples of it.

    Every dataset both sides hold is checked (a probe's training split too); ``compared``: the
    (task, dataset) of the golden records, for a warning when the candidate holds no key for one
    the golden file has. Without ``data`` on one side it warns and compares anyway.
    """
    if golden is None or candidate is None:
        log.warning(
            "The %s records no content keys of its data ('data'), so a candidate scored on other data under the "
            "same file names would not be noticed: %s.",
            "golden file" if golden is None else "candidate run",
            "a golden file recorded from a run has them (clipeval check record RUN --out FILE); published numbers "
            "do not"
            if golden is None
            else "run the candidate with this clipeval",
        )
        return
    name = lambda where: "/".join(where)  # noqa: E731
    changed = sorted(w for w in golden.keys() & candidate.keys() if golden[w] != candidate[w])
    limited = [w for w in changed if golden[w].key == candidate[w].key]
    if limited:
        limits = "; ".join(
            f"{name(w)}: {golden[w].samples()} in the golden file, {candidate[w].samples()} now" for w in limited
        )
        raise ClipevalError(
            f"The same data were scored on a different set of samples ({limits}): compare like with like "
            "(the same runtime.limit), or record the golden file again."
        )
    if changed:
        raise ClipevalError(
            f"The data changed: {', '.join(map(name, changed))} scored other content than the golden file's (its "
            "content key differs: other images or labels, even under the same file names). The comparison would be "
            "meaningless. If the new data are intended, record the golden file again from a run of the reference "
            "model on them (clipeval check record RUN --out FILE); else restore the data."
        )
    missing = sorted(name(w) for w in compared if w in golden and w not in candidate)
    if missing:
        log.warning("The candidate run(s) record no content key for %s: not checked for changed data.", missing)
