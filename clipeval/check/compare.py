"""The decision rule: one :class:`Row` per golden record, matched to the candidate's by ``Record.key``
(task, dataset, metric, params).

- Paired test, whenever both sides have per-sample data that define the metric on the same
  samples (same sorted sample ids, same labels), :mod:`clipeval.check.stats`:
  - top-1 and top-5 (and an attack's clean/robust top-1): McNemar's exact test, the
    two-sided binomial test on the discordant samples;
  - class-weighted metrics (mean per-class recall): a paired permutation test over samples,
    stratified by class: each sample's pair of outcomes (reference, candidate) is swapped with
    probability 1/2, which keeps every sample in its class; the statistic is the change of the
    metric, p the two-sided share of swaps with a change at least as large. Exact (every swap)
    with at most 16 discordant samples, else ``resamples`` random swaps drawn with a fixed seed
    (0), so the verdict is deterministic; p = (1 + hits) / (1 + resamples).
  - means of per-sample scores in [0, 1] (the Jaccard index of an association instance): the same paired
    permutation test, each sample weighted 1 / n.
  - metrics of per-sample sums (the worst group's top-k, macro F1: :mod:`clipeval.results.statistics`): a paired
    permutation test that swaps each sample's contributions and recomputes the metric.
  A regression is a drop of at least ``min_effect`` with p < ``alpha``; a significant gain of
  that size is an improvement. A drop of at least ``min_effect`` that the test could not have
  found significant is ``inconclusive``: with m discordant samples the smallest p either test
  can give is 2 * 0.5**m (random swaps cannot go below 1 / (1 + resamples) either), so when that
  is >= ``alpha`` (m < 6 at alpha 0.05) no drop, however large, could fail. Such a row says how
  many discordant samples (and, at the observed rate, roughly how many samples) a decision
  needs. Anything else is ok: a drop below ``min_effect``, or one the test had the power to find
  significant and did not.
- Derived metrics (``metric_info(m).derived``: effective robustness) of a golden file recorded
  from a run (it has ``samples``) get the verdict ``derived`` and never fail: the top-1 records
  they are computed from are gated by the paired tests, and a fixed tolerance would fail a
  noise-level change those pass. A derived record with its own ``tolerance`` is gated by it.
- Fixed tolerance, only for records without per-sample data on one side (published numbers,
  few-shot means over seeds): a drop larger than the record's own ``tolerance`` (else the golden
  file's, else ``Options.tolerance``) is a regression; the candidate's 95% interval is shown.
  Where both sides know ``n`` it must be equal. Metrics where lower is better
  (``metric_info(m).higher_is_better``) are compared the other way round.

A golden record the candidate lacks is an error (exit 2), or with ``present_only`` (``--present-only``) a row
``absent`` that is never a pass: the summary counts them.

Before any comparison the per-sample data are checked against their record (the metric
recomputed from them must equal the recorded value), every number is finite (the records are
validated when read), and the scored data are the same (:mod:`clipeval.check.data`).
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from clipeval.check.data import check_same_data, merged, scored_data
from clipeval.check.documents import Entry, candidate_entries, check_golden, describe, document_tolerance, entries
from clipeval.check.stats import (
    PERMUTATION_SEED,
    discordant_needed,
    mcnemar_exact,
    paired_permutation_test,
    paired_score_test,
    paired_statistic_test,
    smallest_p,
)
from clipeval.errors import ClipevalError
from clipeval.results.record import Record, finite
from clipeval.results.statistics import STATISTICS
from clipeval.results.store import ResultsDocument

log = logging.getLogger(__name__)

#: what each derived metric is computed from, and how those rows are gated, for the evidence column of its
#: (ungated) row
DERIVED_FROM = {
    "k_matching_zero_shot": "the few-shot and zero-shot top-1 rows of its settings (gated there by paired tests)",
    "effective_robustness": "the zero-shot top-1 rows of its settings (gated there by paired tests)",
    "benchmark_average": "each dataset's main-metric row (gated there)",
}


def derived_evidence(metric: str) -> str:
    """The evidence column of a derived metric's row: what it is computed from, how that is gated, and that it is
    not gated itself."""
    if metric.startswith("mean_recall@"):
        k = metric.removeprefix("mean_recall@")
        source = f"its text_retrieval_recall@{k} and image_retrieval_recall@{k} rows (gated there by paired tests)"
    else:
        source = DERIVED_FROM.get(metric, "other rows of the run (gated there)")
    return f"computed from {source}; not gated"


@dataclass(frozen=True)
class Options:
    """The decision rule's parameters (see the module docstring)."""

    alpha: float = 0.05
    min_effect: float = 0.005
    tolerance: float = 0.01
    resamples: int = 20000
    #: compare the golden records the candidate has, listing the others as absent (a benchmark run on some datasets)
    present_only: bool = False

    def check(self) -> None:
        """ClipevalError naming the option that is not finite or out of its range."""
        for name, value in (
            ("--alpha", self.alpha),
            ("--min-effect", self.min_effect),
            ("--tolerance", self.tolerance),
        ):
            finite(value, name)
        if self.tolerance < 0:
            raise ClipevalError(f"--tolerance is {self.tolerance}: a tolerance is an allowed drop, at least 0.")
        if not 0 < self.alpha < 1:
            raise ClipevalError(f"--alpha is {self.alpha}: a significance level lies strictly between 0 and 1.")
        if not 0 <= self.min_effect < 1:
            raise ClipevalError(f"--min-effect is {self.min_effect}: a drop in a fraction, from 0 up to (not) 1.")
        if self.resamples < 1000:
            raise ClipevalError(f"--resamples is {self.resamples}: use at least 1000 for a stable p-value.")


@dataclass(frozen=True)
class Row:
    """The verdict on one golden record: ok | regressed | improved | inconclusive (a drop too few samples can
    decide) | derived (not gated) | absent (not in the candidate, with ``present_only``; never a pass)."""

    record: Record  # the golden record
    candidate: float
    evidence: str
    verdict: str

    @property
    def label(self) -> str:
        return self.record.label

    @property
    def metric(self) -> str:
        return self.record.metric

    @property
    def reference(self) -> float:
        return self.record.value


def compare(golden: ResultsDocument, candidates: Sequence[ResultsDocument], options: Options = Options()) -> list[Row]:
    """One Row per golden record, by the decision rule of the module docstring.

    ``golden``: a golden file (:func:`clipeval.check.documents.load_golden`); ``candidates``: results
    documents of finished runs (:func:`clipeval.check.documents.load_run`). Raises ClipevalError
    (exit 2) for anything that would make a verdict meaningless.
    """
    options.check()
    check_golden(golden)
    refs = entries(golden)
    cands = candidate_entries(candidates)
    compared = [e.record for key, e in refs.items() if key in cands or not options.present_only]
    check_same_data(
        scored_data(golden), merged(scored_data(c) for c in candidates), {(r.task, r.dataset) for r in compared}
    )
    from_run = bool(golden.raw.get("samples"))
    if not from_run and any(r.tolerance is None for r in golden.records):
        log.warning(
            "The golden file has no per-sample data ('samples'), so every record uses the fixed tolerance instead "
            "of a paired test: record the golden file again from a finished run (clipeval check record RUN --out FILE)."
        )
    tolerance = document_tolerance(golden)
    tolerance = options.tolerance if tolerance is None else tolerance
    unpaired: dict[str, list[str]] = {"golden file": [], "candidate": []}
    absent = sum(key not in cands for key in refs)
    if options.present_only and absent == len(refs):
        raise ClipevalError(
            f"The candidate run(s) have none of the golden file's {len(refs)} records: there is nothing to compare "
            "(is it a run of the same tasks?)."
        )
    rows = []
    for key, ref in refs.items():
        got = cands.get(key)
        if got is None and ref.info.derived and ref.record.tolerance is None:
            rows.append(Row(ref.record, math.nan, "not in the candidate (a derived record; its inputs are gated)",
                            "derived"))  # fmt: skip
            continue
        if got is None and options.present_only:
            rows.append(Row(ref.record, math.nan, "not in the candidate (--present-only): not compared", "absent"))
            continue
        if got is None:
            raise _missing(ref.record, cands.values(), absent, absent < len(refs))
        if not got.info.same_as(ref.info):
            raise ClipevalError(
                f"{describe(ref.record)}: the golden file defines metric '{ref.record.metric}' as {ref.info.to_json()}, "
                f"the candidate {got.origin} as {got.info.to_json()}: the comparison would have no meaning."
            )
        if ref.paired and got.paired:
            rows.append(_paired(ref, got, options))
            continue
        if ref.paired or (ref.samples is not None and got.paired):  # one side has per-sample data
            unpaired["candidate" if ref.paired else "golden file"].append(describe(ref.record))
        rows.append(_by_tolerance(ref, got.record, tolerance, from_run))
    for side, which in unpaired.items():
        if which:
            log.warning(
                "The %s has no per-sample data for %s, so these use the fixed tolerance instead of a paired test: %s.",
                side,
                ", ".join(which),
                "record the golden file again from a run of this clipeval if it should hold them"
                if side == "golden file"
                else "the candidate's results document holds no per-sample data for them; run it with this clipeval",
            )
    return rows


def _missing(ref: Record, have: Sequence[Entry], absent: int = 1, some_present: bool = True) -> ClipevalError:
    same_metric = {e.record.label for e in have if e.record.metric == ref.metric}
    labels = difflib.get_close_matches(ref.label, same_metric, n=12, cutoff=0) or sorted({e.record.label for e in have})
    hint = (
        " The old 'average' effective robustness was the mean of the per-shift values; it is now "
        "'mean_of_per_shift_er', and the headline is 'average_over_shifts' (the CLIP paper's method): "
        "record the golden file again."
        if ref.metric == "effective_robustness" and ref.dataset == "average"
        else ""
    )
    more = ""
    if absent > 1:
        more = f" {absent - 1} more of the golden file's records are not in the candidate either" + (
            "; to compare those it has (a benchmark run on some of its datasets), add --present-only."
            if some_present
            else ": it has none of them (is it a run of the same tasks?)."
        )
    return ClipevalError(
        f"The candidate run(s) have no {ref.metric} on '{ref.label}' (nearest first, they have: "
        f"{', '.join(labels[:12])}).{hint}{more}"
    )


def _by_tolerance(entry: Entry, got: Record, tolerance: float, from_run: bool) -> Row:
    """The fixed-tolerance rule; ``tolerance``: the golden file's (or the option's), for records without their own."""
    ref, info = entry.record, entry.info
    if ref.n is not None and got.n is not None and ref.n != got.n:
        raise ClipevalError(
            f"'{ref.label}' {ref.metric}: the golden value is on n = {ref.n} samples, the candidate's on n = {got.n}: "
            "compare like with like (same data, no runtime.limit)."
        )
    if info.derived and ref.tolerance is None and from_run:
        return Row(ref, got.value, derived_evidence(ref.metric), "derived")
    change = (got.value - ref.value) * (1.0 if info.higher_is_better else -1.0)
    tol = tolerance if ref.tolerance is None else ref.tolerance
    lo, hi = got.ci
    verdict = "regressed" if change < -tol else ("improved" if change > tol else "ok")
    return Row(ref, got.value, f"tolerance {tol:g}, 95% [{lo:.4f}, {hi:.4f}]", verdict)


def _paired(ref: Entry, got: Entry, opts: Options) -> Row:
    """The paired rule, on two entries whose per-sample data define the metric."""
    r, c = ref.samples, got.samples
    label = ref.record.label
    if c.ids_sha256 != r.ids_sha256 or c.n != r.n:
        raise ClipevalError(
            f"'{label}' was evaluated on a different set of samples than the golden file "
            f"({c.n} vs {r.n} samples, or other ids): compare like with like (the same data and runtime.limit, and "
            "for an evaluator that draws its own sample, such as an attack's limit and seed, the same settings)."
        )
    if r.labels is not None and c.labels is not None and (r.labels != c.labels).any():
        changed = int((r.labels != c.labels).sum())
        raise ClipevalError(
            f"'{label}': {changed} of the same samples have other labels than in the golden file: "
            "the data (or its class list) changed; compare like with like."
        )
    p, m, p_min, evidence = _paired_test(ref, got, opts)
    reference, candidate = ref.record.value, got.record.value
    change = candidate - reference
    large = abs(change) >= opts.min_effect
    if p < opts.alpha and large:
        return Row(ref.record, candidate, evidence, "regressed" if change < 0 else "improved")
    if large and change < 0 and p_min >= opts.alpha:
        return Row(ref.record, candidate, _too_few(evidence, m, p_min, r.n, opts.alpha), "inconclusive")
    return Row(ref.record, candidate, evidence, "ok")


def _paired_test(ref: Entry, got: Entry, opts: Options) -> tuple[float, int, float, str]:
    """(p, discordant samples m, the smallest p the test could give with m, evidence) of the metric's paired test."""
    metric, weighted = ref.record.metric, ref.info.class_weighted
    if metric in STATISTICS:  # a metric of per-sample sums: swap each sample's contributions, recompute the metric
        statistic = STATISTICS[metric]
        (v_ref, fixed), (v_got, _) = (statistic.vectors(e.samples, e.record.outcome) for e in (ref, got))
        test = paired_statistic_test(v_ref, v_got, lambda t: statistic.finish(t, fixed), opts.resamples)
        return _permutation(test, opts, f"samples differ, {metric} recomputed")
    before = ref.samples.per_sample(metric, ref.record.outcome, weighted)
    after = got.samples.per_sample(metric, got.record.outcome, weighted)
    if before.dtype != bool or after.dtype != bool:  # per-sample scores (a Jaccard index): the metric is their mean
        return _permutation(paired_score_test(before, after, opts.resamples), opts, "samples scored differently")
    if weighted:
        test = paired_permutation_test(before, after, ref.samples.weights(), opts.resamples)
        return _permutation(test, opts, "discordant samples, by class")
    b, c, p = mcnemar_exact(before, after)
    return p, b + c, smallest_p(b + c), f"McNemar p={p:.3g} ({b} lost, {c} gained)"


def _permutation(test: tuple[float, int, str], opts: Options, what: str) -> tuple[float, int, float, str]:
    """:func:`_paired_test`'s answer from a permutation test's (p, m, "exact" or "random"): random swaps cannot give
    less than 1 / (1 + resamples), whatever m."""
    p, m, how = test
    draws = "all swaps" if how == "exact" else f"{opts.resamples} random swaps, seed {PERMUTATION_SEED}"
    p_min = smallest_p(m) if how == "exact" else max(smallest_p(m), 1 / (1 + opts.resamples))
    return p, m, p_min, f"paired permutation p={p:.3g} ({m} {what}; {draws})"


def _too_few(evidence: str, m: int, p_min: float, n: int, alpha: float) -> str:
    need = discordant_needed(alpha)
    rate = f"; at this run's rate of {m} in {n}, about {math.ceil(n * need / m)} samples" if m else ""
    return (
        f"{evidence}; too few data to decide: with {m} discordant samples p cannot fall below "
        f"{p_min:.3g} >= alpha {alpha:g}, so no drop could fail. A decision needs at least {need} "
        f"discordant samples{rate}"
    )
