"""Mean corruption error (Hendrycks & Dietterich, ICLR 2019) relative to a baseline model (AlexNet).

For each corruption c with its five severities s, the corruption error is the model's top-1 error summed over
the severities, divided by the baseline's: CE_c = sum_s E_{s,c} / sum_s E^base_{s,c}; mCE is the mean of CE_c
over the corruptions. The relative version subtracts each model's clean error first:
rCE_c = sum_s (E_{s,c} - E_clean) / sum_s (E^base_{s,c} - E^base_clean). The model's errors are its zero-shot
top-1 errors on the task's datasets named ``<corruption>_<severity>`` (and ``val`` for the clean error).

Intervals (95%, normal): every CE is a mean over images of a per-image score (the image's errors weighted by
1 / the baseline's sum), so when each dataset holds the same images (ImageNet-C: the same files under every
corruption) the interval is the mean's normal interval over images, which keeps the correlation between the
75 settings (``ci_method: normal-paired``; the delta method is exact here, as the statistic is linear). When a few
images are missing from some settings (an unreadable file, a missing class folder), the interval pairs the images
common to all settings (by sample id) and a note names what was left out; the value still counts every image of each
setting (each setting's own top-1 error, as the definition and the top-1 records have it). Only when the datasets
hold mostly different images are the settings taken as independent binomials (``normal-independent``). CE and mCE
cannot be negative (their intervals stop at 0); relative mCE can (a corruption that lowers a model's error), so its
interval is not clipped (unit ``signed_ratio``). A mCE over fewer than the 15 corruptions has ``corruptions: <count>``
in its params.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.special import ndtri

from clipeval.contracts import EvaluationContext
from clipeval.data.corruptions import CORRUPTIONS, SEVERITIES
from clipeval.errors import ClipevalError, PartialRecords
from clipeval.evaluators import checked_logits
from clipeval.results.metrics import CONFIDENCE
from clipeval.results.record import Record

#: AlexNet's ImageNet-C top-1 errors averaged over the five severities, in CORRUPTIONS order, as published with the
#: AugMix code (google-research/augmix, imagenet.py: "Raw AlexNet errors taken from
#: https://github.com/hendrycks/robustness"); the mean equals the sum over severities up to the factor 5
ALEXNET_PUBLISHED = dict(
    zip(
        CORRUPTIONS,
        (0.886428, 0.894468, 0.922640, 0.819880, 0.826268, 0.785948, 0.798360, 0.866816, 0.826572, 0.819324,
         0.564592, 0.853204, 0.646056, 0.717840, 0.606500),
        strict=True,
    )
)  # fmt: skip


NAME = re.compile(r"^(?P<corruption>[a-z_]+)_(?P<severity>[1-5])$")


class CorruptionError:
    """CE per corruption and mCE (and relative mCE, given a clean dataset and the baseline's clean error).

    ``baseline``: ``published`` (AlexNet's mean errors per corruption as published; no clean error, so no relative
    mCE unless ``baseline_clean`` is given), or a mapping of each corruption to its mean error or its five errors
    (fractions), with optional ``clean`` (the clean error) and ``label``; imagenet-testbed's rows give one with
    ``{_target_: clipeval.report.baselines.testbed_corruption_errors, path: .../robustness_top1s.csv}``.
    ``datasets``: each corruption's five datasets (severities 1..5); by default the task's datasets named
    ``<corruption>_<severity>``. ``clean``: the dataset of clean images (absent: no relative mCE). ``name``: the
    dataset name of the mCE records.
    """

    def __init__(
        self,
        baseline: str | Mapping[str, Any] = "published",
        baseline_clean: float | None = None,
        datasets: Mapping[str, list[str]] | None = None,
        clean: str = "val",
        name: str = "all_corruptions",
    ):
        self.label, self.errors, self.clean_error = _baseline(baseline)
        if baseline_clean is not None:
            if not 0 < baseline_clean < 1:
                raise ClipevalError(f"baseline_clean is {baseline_clean}: the baseline's clean top-1 error, in (0, 1).")
            self.clean_error = float(baseline_clean)
        self.datasets = None if datasets is None else {str(c): [str(d) for d in v] for c, v in datasets.items()}
        bad = {c: v for c, v in (self.datasets or {}).items() if c not in self.errors or len(v) != len(SEVERITIES)}
        if bad:
            raise ClipevalError(
                f"datasets {bad}: each corruption with a baseline error ({', '.join(self.errors)}) maps to its five "
                "datasets, severities 1 to 5."
            )
        self.clean, self.name = clean, name

    def check(self, task: Any) -> None:
        absent = [d for v in (self.datasets or {}).values() for d in v if d not in task.sources]
        if absent:
            raise ClipevalError(
                f"datasets names {sorted(set(absent))}, which the task lacks (it has {list(task.sources)})."
            )
        if not self._settings(list(task.sources)):
            raise ClipevalError(
                "the mean corruption error needs the datasets <corruption>_<severity> of at least one corruption at "
                f"all five severities (corruptions with a baseline: {', '.join(self.errors)}); the task has "
                f"{', '.join(task.sources)}."
            )

    def _settings(self, datasets: Sequence[str]) -> dict[str, list[str]]:
        if self.datasets is not None:
            return {c: v for c, v in self.datasets.items() if all(d in datasets for d in v)}
        return _settings(datasets, self.errors)

    def evaluate(self, ctx: EvaluationContext) -> list[Record]:
        settings = self._settings(ctx.datasets())
        missing = [c for c in CORRUPTIONS if c not in settings]
        params: dict[str, Any] = {"baseline": self.label}
        if missing:
            ctx.note(
                f"mCE is the mean over {len(settings)} of ImageNet-C's 15 corruptions; it lacks {', '.join(missing)} "
                "(no dataset at every severity, or no baseline error)"
            )
            params["corruptions"] = len(settings)  # a partial mCE is never taken for the full one
        wrong = {d: _wrong(ctx, d) for c in settings for d in settings[c]}
        clean = _wrong(ctx, self.clean) if self.clean in ctx.datasets() and self.clean_error is not None else None
        if self.clean_error is None and self.clean in ctx.datasets():
            ctx.note(
                f"no relative mCE: the baseline {self.label} has no clean error (AlexNet's published ImageNet-C errors "
                "come without one); give it with task.evaluators.mce.baseline_clean=ERROR, or use imagenet-testbed's "
                "AlexNet row: task.evaluators.mce.baseline='{_target_: clipeval.report.baselines."
                "testbed_corruption_errors, path: .../robustness_top1s.csv}'"
            )
        records: list[Record] = []
        problems: list[str] = []

        def add(dataset: str, metric: str, result: tuple, record_params: dict) -> None:
            try:
                records.append(Record(dataset, metric, *result, params=record_params))
            except ClipevalError as exc:  # one bad record never loses the others (errors.PartialRecords)
                problems.append(str(exc))

        weights = {c: 1.0 / sum(self.errors[c]) for c in settings}
        for c in settings:  # one corruption's CE is the same whichever others are there: no 'corruptions' param
            ce = _linear(_sum([(d, weights[c]) for d in settings[c]]), wrong)[0]
            add(c, "corruption_error", ce, {"baseline": self.label})
        mean, left_out = _linear(_sum([(d, weights[c] / len(settings)) for c in settings for d in settings[c]]), wrong)
        if left_out is not None:
            ctx.note(left_out)
        add(self.name, "mce", mean, params)
        if clean is not None:
            rel = self._relative(ctx, settings, {**wrong, self.clean: clean})
            if rel is not None:
                add(self.name, "relative_mce", rel, params)
        if problems:
            raise PartialRecords("; ".join(problems), records)
        return records

    def _relative(self, ctx: EvaluationContext, settings: Mapping[str, list[str]], wrong: Mapping[str, pd.Series]):
        """relative mCE as (value, n, ci, ci_method), or None (noted) when a baseline gap is not positive.

        A mean of ratios of differences: each term's denominator (the baseline's error above its clean error) is
        positive, its numerator (the model's) may be negative, so the value and its interval may be below 0."""
        assert self.clean_error is not None
        terms = []
        for c in settings:
            gap = sum(self.errors[c]) - len(settings[c]) * self.clean_error
            if gap <= 0:
                ctx.note(f"no relative mCE: the baseline's {c} error is not above its clean error")
                return None
            terms += [(d, 1.0 / (gap * len(settings))) for d in settings[c]]
        rel = _sum([*terms, (self.clean, -sum(w for _, w in terms))])  # each error minus the clean error
        result, note = _linear(rel, wrong, floor=None)
        if note is not None:
            ctx.note(f"relative mCE (the corruption settings and {self.clean}): {note}")
        return result


def _settings(datasets: Sequence[str], errors: Mapping[str, list[float]]) -> dict[str, list[str]]:
    """corruption -> its five datasets (severity order), for the corruptions with a baseline and all five."""
    found: dict[str, dict[int, str]] = {}
    for d in datasets:
        m = NAME.match(d)
        if m and m["corruption"] in errors:
            found.setdefault(m["corruption"], {})[int(m["severity"])] = d
    return {c: [found[c][s] for s in SEVERITIES] for c in errors if len(found.get(c, {})) == len(SEVERITIES)}


def _wrong(ctx: EvaluationContext, dataset: str) -> pd.Series:
    """1.0 for each image (by sample id) whose zero-shot top-1 prediction is wrong, else 0.0."""
    fs, logits = checked_logits(ctx, dataset)
    wrong = (logits.argmax(dim=1) != fs.labels).to(torch.float64).numpy()
    return pd.Series(wrong, index=pd.Index(fs.ids))


def _linear(
    weights: Mapping[str, float], wrong: Mapping[str, pd.Series], floor: float | None = 0.0
) -> tuple[tuple, str | None]:
    """((value, n, ci, ci_method), note or None) of sum_d weights[d] * error rate of d.

    The value is each dataset's error rate over its own images (the plain definition). The interval pairs the
    images across the datasets (module docstring) over the images common to all of them (by sample id): when a
    few are missing from some datasets (an unreadable file, a missing class folder), they are left out of the
    interval alone, and the note says how many and where; n is then the number of common images. Only when the
    datasets share fewer than half their images (they are different images) are they taken as independent.
    ``floor``: the lowest value the statistic can take (the interval is clipped there); None: no limit.
    """
    z = float(ndtri(0.5 + CONFIDENCE / 2))
    names = list(weights)
    value = sum(weights[d] * float(wrong[d].mean()) for d in names)
    clip = (lambda low: low) if floor is None else (lambda low: max(floor, low))
    unique = all(wrong[d].index.is_unique for d in names)
    common = wrong[names[0]].index
    for d in names[1:]:
        common = common.intersection(wrong[d].index, sort=False)
    largest = max(len(wrong[d]) for d in names)
    if unique and len(common) >= 2 and 2 * len(common) >= largest:
        score = sum(weights[d] * wrong[d].reindex(common).to_numpy() for d in names)
        n = len(common)
        half = z * float(np.std(score, ddof=1)) / np.sqrt(n)
        union = common
        for d in names:
            union = union.union(wrong[d].index, sort=False)
        if len(union) == n:
            return (value, n, (clip(value - half), value + half), "normal-paired"), None
        method = f"normal-paired over the {n} images common to all {len(names)} datasets"
        lacking = {d: len(union) - len(wrong[d]) for d in names if len(wrong[d]) < len(union)}
        shown = ", ".join(f"{d} ({k})" for d, k in sorted(lacking.items())[:10])
        more = f" and {len(lacking) - 10} more" if len(lacking) > 10 else ""
        note = (
            f"{len(union) - n} of the {len(union)} images are not in every corruption setting, so the intervals pair "
            f"the {n} images common to all settings and leave those out; settings lacking images (how many): "
            f"{shown}{more}. The values count every image of each setting"
        )
        return (value, n, (clip(value - half), value + half), method), note
    var = sum(weights[d] ** 2 * float(wrong[d].mean()) * (1 - float(wrong[d].mean())) / len(wrong[d]) for d in names)
    half = z * float(np.sqrt(var))
    n = min(len(wrong[d]) for d in names)
    note = (
        f"the corruption settings share only {len(common)} of up to {largest} images (or repeat sample ids): their "
        "errors are taken as independent (normal-independent), which understates the interval if they are the same "
        "images under other names"
    )
    return (value, n, (clip(value - half), value + half), "normal-independent"), note


def _sum(terms: list[tuple[str, float]]) -> dict[str, float]:
    """dataset -> the sum of its weights (a dataset may stand for several severities)."""
    out: dict[str, float] = {}
    for d, w in terms:
        out[d] = out.get(d, 0.0) + w
    return out


def _baseline(baseline: str | Mapping[str, Any]):
    """(label, corruption -> the baseline's five errors, clean error or None)."""
    if baseline == "published":
        return "alexnet-published", {c: [e] * 5 for c, e in ALEXNET_PUBLISHED.items()}, None
    if not isinstance(baseline, Mapping):
        raise ClipevalError(
            f"baseline is {baseline!r}: 'published' (AlexNet's published errors) or a mapping of each corruption to "
            "its error(s), with optional 'clean' and 'label' (imagenet-testbed's rows: {_target_: "
            "clipeval.report.baselines.testbed_corruption_errors, path: .../robustness_top1s.csv, model: alexnet})."
        )
    errors, clean, label = {}, baseline.get("clean"), str(baseline.get("label", "given"))
    for c, v in baseline.items():
        if c in ("clean", "label"):
            continue
        if c not in CORRUPTIONS:
            raise ClipevalError(
                f"baseline names '{c}', which is not an ImageNet-C corruption ({', '.join(CORRUPTIONS)}), "
                "'clean' or 'label'."
            )
        values = [v] if isinstance(v, int | float) else list(v)
        if len(values) not in (1, 5) or not all(isinstance(e, int | float) and 0 < e <= 1 for e in values):
            raise ClipevalError(
                f"baseline error of '{c}' is {v!r}: one mean error or five (severities 1..5), fractions in (0, 1]."
            )
        errors[c] = values * 5 if len(values) == 1 else [float(e) for e in values]
    if clean is not None and not (isinstance(clean, int | float) and 0 < clean < 1):
        raise ClipevalError(f"baseline 'clean' is {clean!r}: the baseline's clean top-1 error, in (0, 1).")
    if not errors:
        raise ClipevalError("baseline gives no corruption's error.")
    return label, errors, None if clean is None else float(clean)
