"""Zero-shot metrics beyond top-k that the 38-dataset benchmark (datacomp, open_clip's table) uses.

- :class:`WorstGroup`: top-k accuracy in each group of samples (a field of each sample's metadata array), and the
  group where it is lowest: datacomp's ``acc_wg`` (GeoDE: by region), ``acc_top5_wg`` (Dollar Street: by income
  group) and ``acc_worst_region`` (FMoW). Groups without samples do not count (as WILDS' ``standard_group_eval``).
- :class:`MacroF1`: the mean over classes of each class's F1 of the top-1 prediction, over the classes found in the
  labels only: WILDS' ``F1`` (``wilds/common/metrics/all_metrics.py``, ``F1._compute`` calls scikit-learn's
  ``f1_score(y_true, y_pred, average="macro", labels=torch.unique(y_true))``), which datacomp's iWildCam
  ``F1-macro_all`` is. A class that is predicted but absent from the labels adds no term of its own (its
  predictions still count as false positives of no labelled class, i.e. as misses of their samples' classes).

Both score the task's zero-shot logits (:meth:`EvaluationContext.zero_shot_logits`), as the zero-shot evaluator does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from clipeval.contracts import EvaluationContext
from clipeval.errors import ClipevalError
from clipeval.evaluators import checked_logits, present_datasets
from clipeval.results.metrics import clopper_pearson
from clipeval.results.record import Record

log = logging.getLogger(__name__)

Task = object  # clipeval.run.task.Task, not imported (evaluators stay below the runner)

#: bootstrap resamples and seed of the macro-F1 interval
RESAMPLES, SEED = 1000, 0


def group_accuracies(hits: np.ndarray, groups: np.ndarray) -> dict[int, tuple[int, int]]:
    """{group: (correct, count)} for each group that has samples; ``hits``: [N] bool, ``groups``: [N] int."""
    values, inverse = np.unique(groups, return_inverse=True)
    correct = np.bincount(inverse, weights=hits.astype(np.float64), minlength=len(values))
    counts = np.bincount(inverse, minlength=len(values))
    return {int(v): (int(round(c)), int(n)) for v, c, n in zip(values, correct, counts, strict=True)}


def worst_group(hits: np.ndarray, groups: np.ndarray) -> tuple[int, int, int]:
    """(group, correct, count) of the group with the lowest accuracy (on a tie, the smallest group value)."""
    per_group = group_accuracies(hits, groups)
    group = min(per_group, key=lambda g: (per_group[g][0] / per_group[g][1], g))
    return group, *per_group[group]


def macro_f1(pred: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes present in ``labels`` (as WILDS' ``F1``: ``labels=torch.unique(y_true)``) of
    2·TP / (2·TP + FP + FN); a class only predicted adds no term."""
    classes = np.unique(labels)
    index = np.searchsorted(classes, labels)
    tp = np.bincount(index[pred == labels], minlength=len(classes))
    support = np.bincount(index, minlength=len(classes))  # TP + FN, > 0 for every class kept
    known = np.isin(pred, classes)  # predictions of a class absent from the labels are no class's TP + FP here
    predicted = np.bincount(np.searchsorted(classes, pred[known]), minlength=len(classes))  # TP + FP
    return float(np.mean(2 * tp / (support + predicted)))


def bootstrap_interval(
    pred: np.ndarray, labels: np.ndarray, value: float, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float, float]:
    """95% percentile bootstrap interval of :func:`macro_f1` over samples, widened to hold ``value`` itself."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    draws = [macro_f1(pred[i], labels[i]) for i in (rng.integers(0, n, n) for _ in range(resamples))]
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return min(float(lo), value), max(float(hi), value)


class WorstGroup:
    """Zero-shot top-``k`` accuracy of the worst group of samples, the groups being one field of each sample's
    metadata array (``field``: its index; ``group_by``: its name, in the log and messages).

    With ``k`` classes or fewer the record is left out, with a note (it would be 1 whatever the model).
    The record's ``n`` and Clopper–Pearson interval are the worst group's (the interval does not account for
    the choice of that group among the others). Each group's accuracy is logged.
    """

    def __init__(self, field: int, group_by: str, k: int = 1, datasets: Sequence[str] | None = None):
        if k not in (1, 5):
            raise ClipevalError(f"WorstGroup k must be 1 or 5 (worst_group_top1, worst_group_top5), not {k!r}.")
        if isinstance(field, bool) or not isinstance(field, int) or field < 0:
            raise ClipevalError(f"WorstGroup field must be the index (0, 1, ...) of a metadata field, not {field!r}.")
        self.field, self.group_by, self.k = field, str(group_by), k
        self.datasets = list(datasets) if datasets else None

    def check(self, task: Task) -> None:
        """Refuse, before a model loads, data whose samples cannot be grouped: no metadata at all, or (a local
        mirror, whose metadata members are read without its images) an array without the field or a value there
        that is no group. A streamed mirror is checked when it is evaluated (reading it here means downloading it)."""
        for dataset in self.datasets or list(task.sources):
            if dataset in task.missing or dataset not in task.sources:
                continue
            source = task.source(dataset)
            read = getattr(source, "sample_metadata", None)
            if read is None:
                self._groups(None, [], dataset)  # the error of a source without metadata
            if getattr(source, "remote", None) is not None:
                continue
            metadata = read()
            if not metadata:
                raise ClipevalError(
                    f"Dataset '{dataset}' ({source.describe()}): none of its samples has a metadata array (.npy), so "
                    f"they cannot be grouped by {self.group_by}. Download the mirror again."
                )
            self._field_values(dataset, list(metadata.items()))

    def evaluate(self, ctx: EvaluationContext) -> list[Record]:
        records = []
        for dataset in present_datasets(self.datasets, ctx):
            fs, logits = checked_logits(ctx, dataset)
            groups = self._groups(ctx.sample_metadata(dataset), fs.ids, dataset)
            if self.k >= logits.shape[1]:  # every label is among the top k: 1 whatever the model, as top5 is
                ctx.note(
                    f"dataset '{dataset}': left out worst_group_top{self.k}: with {logits.shape[1]} classes every "
                    f"label is among the top {self.k}, so it is 1 whatever the model (as top5 is left out with 5 "
                    "classes or fewer)",
                    dataset=dataset,
                    left_out=[f"worst_group_top{self.k}"],
                )
                continue
            topk = logits.topk(min(self.k, logits.shape[1]), dim=1).indices
            hits = (topk == fs.labels[:, None]).any(dim=1).numpy()
            group, correct, count = worst_group(hits, groups)
            shown = ", ".join(f"{g}: {c}/{n}" for g, (c, n) in group_accuracies(hits, groups).items())
            log.info("Task %s, %s: top-%d by %s (correct/count): %s; worst: %s", ctx.task, dataset, self.k,
                     self.group_by, shown, group)  # fmt: skip
            # per sample: its hit and its group (as the label), so a gate can pair two runs sample by sample
            kept = ctx.keep_outcomes(dataset, fs.ids, torch.from_numpy(groups), {f"top{self.k}": torch.from_numpy(hits)},
                                     name=f"{dataset}.worst_group_top{self.k}")  # fmt: skip
            records.append(Record(dataset, f"worst_group_top{self.k}", correct / count, count,
                                  clopper_pearson(correct, count), samples=kept, outcome=f"top{self.k}"))  # fmt: skip
        return records

    def _groups(self, metadata: Mapping[str, Any] | None, ids: Sequence[str], dataset: str) -> np.ndarray:
        if metadata is None:
            raise ClipevalError(
                f"Dataset '{dataset}' carries no per-sample metadata, so its samples cannot be grouped by "
                f"{self.group_by}. Use a source that ships it (a webdataset mirror with a .npy per sample)."
            )
        absent = [i for i in ids if i not in metadata]
        if absent:
            raise ClipevalError(
                f"Dataset '{dataset}': {len(absent)} of {len(ids)} samples have no metadata array (.npy), e.g. "
                f"{absent[0]!r}; every sample needs its {self.group_by} to be grouped. Download the mirror again."
            )
        return self._field_values(dataset, [(i, metadata[i]) for i in ids])

    def _field_values(self, dataset: str, items: Sequence[tuple[str, Any]]) -> np.ndarray:
        """The group of each (sample id, metadata array) in ``items``; ClipevalError naming the first sample whose
        array has no such field, or whose value there is no group (a whole number >= 0)."""
        ids = [i for i, _ in items]
        arrays = [np.asarray(a) for _, a in items]
        scalar = next((i for i, a in zip(ids, arrays, strict=True) if a.ndim == 0), None)
        if scalar is not None:
            raise ClipevalError(
                f"Dataset '{dataset}': the metadata of sample {scalar!r} is a single value, not an array of fields, "
                f"so it has no field {self.field} ({self.group_by}); check the mirror and the task's WorstGroup field."
            )
        rows = [a.reshape(-1) for a in arrays]
        short = next((i for i, r in zip(ids, rows, strict=True) if len(r) <= self.field), None)
        if short is not None:
            raise ClipevalError(
                f"Dataset '{dataset}': the metadata of sample {short!r} has no field {self.field} ({self.group_by}); "
                "check the task's WorstGroup field."
            )
        for i, r in zip(ids, rows, strict=True):
            value = r[self.field]
            if not isinstance(value, (np.integer, np.floating)) or not np.isfinite(value) or value % 1 or value < 0:
                shown = value.item() if isinstance(value, np.generic) else value
                raise ClipevalError(
                    f"Dataset '{dataset}': sample {i!r} has {self.group_by} {shown!r} (metadata field {self.field}); "
                    "a group must be a whole number >= 0 (WILDS' grouper refuses negative groups). "
                    "Check the mirror and the task's WorstGroup field."
                )
        return np.array([int(r[self.field]) for r in rows], dtype=np.int64)


class MacroF1:
    """Zero-shot macro-averaged F1 of the top-1 prediction; the interval is a percentile bootstrap over samples
    (1,000 resamples, seed 0), widened to hold the estimate."""

    def __init__(self, datasets: Sequence[str] | None = None):
        self.datasets = list(datasets) if datasets else None

    def evaluate(self, ctx: EvaluationContext) -> list[Record]:
        records = []
        for dataset in present_datasets(self.datasets, ctx):
            fs, logits = checked_logits(ctx, dataset)
            pred = torch.argmax(logits, dim=1).numpy()
            labels = fs.labels.numpy()
            value = macro_f1(pred, labels)
            ci = bootstrap_interval(pred, labels, value)
            kept = ctx.keep_predictions(dataset, fs.ids, fs.labels, torch.from_numpy(pred)[:, None],
                                        name=f"{dataset}.macro_f1")  # fmt: skip
            records.append(Record(dataset, "macro_f1", value, len(labels), ci, "bootstrap-percentile", samples=kept))
        return records
