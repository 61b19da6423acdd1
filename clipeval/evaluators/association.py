"""Zero-shot association (WinoGAViL): pick the candidate images that go with a text cue, scored by Jaccard index.

The protocol is DataComp's (mlfoundations/datacomp@4afedc4 ``eval_utils/wino_eval.py``), which open_clip's 38-dataset
table reports in its WinoGAViL column:

- each instance's cue is prompted as ``"A <cue>"``, or ``"An <cue>"`` when the lower-cased cue starts with a vowel
  letter (DataComp's ``get_clip_prompt``; the cue lower-cased), and encoded by the text tower;
- the model selects the k candidate images most similar (cosine) to the prompt, k the number of right associations;
- the instance scores the Jaccard index of the selected and the right sets, |S ∩ A| / |S ∪ A| (sklearn's
  ``jaccard_score`` of the two indicator vectors, as DataComp computes it);
- ``avg_jaccard_score`` is the mean over all instances, ``jaccard_score_<group>`` the mean over the instances whose
  number of candidates is in the group: by default DataComp's 5, 6, 10, 12, 5-6 and 10-12 (WinoGAViL has 5, 6, 10
  or 12 candidates per instance). ``jaccard_score_10-12`` is the benchmark's main metric.

Equal similarities are resolved against the model: among candidates that tie at the cut, the wrong ones are
selected first (DataComp's ``np.argsort`` leaves ties to the sort; they arise only from identical images or
features). n is the number of instances. The interval (95%) is Clopper–Pearson at the effective sample size n* =
p(1 - p) / v, v the variance of the mean of the per-instance scores (at most n; Korn & Graubard 1998), which
treats a mean of scores in [0, 1] as a proportion; it is deterministic and stays inside [0, 1]. Per-instance
scores are kept (outcome ``jaccard``, labels the instance's number of candidates), so a regression gate can pair
them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from clipeval.contracts import EvaluationContext
from clipeval.errors import ClipevalError, quoted
from clipeval.evaluators import TieExactScores, present_datasets
from clipeval.features.classifier import PLACEHOLDER
from clipeval.features.encode import AssociationSet
from clipeval.results.metrics import korn_graubard
from clipeval.results.record import Record, jaccard_metric, register_metric

#: DataComp's groups of instances by number of candidates (``wino_eval.py``'s jaccard_score_<group> keys)
GROUPS: dict[str, list[int]] = {"5": [5], "6": [6], "10": [10], "12": [12], "5-6": [5, 6], "10-12": [10, 12]}
CI_METHOD = "clopper-pearson-effective-n"
VOWELS = "aeiou"

Task = object  # clipeval.run.task.Task, not imported (evaluators stay below the runner)


def datacomp_prompt(cue: str) -> str:
    """DataComp's prompt of a cue: ``"An <cue>"`` when the lower-cased cue starts with a, e, i, o or u, else
    ``"A <cue>"``, the cue lower-cased."""
    cue = cue.lower()
    return f"{'An' if cue[:1] in VOWELS else 'A'} {cue}"


class Association:
    """Jaccard index of the candidates most similar to each cue against the right ones (see the module docstring).

    ``datasets``: which of the task's datasets (default: all present); ``groups``: {name: [numbers of candidates]},
    one ``jaccard_score_<name>`` record each (default DataComp's :data:`GROUPS`); ``template``: how a cue is
    prompted, a string with ``{c}`` where the cue goes, or None for DataComp's article rule
    (:func:`datacomp_prompt`).
    """

    def __init__(
        self,
        datasets: Sequence[str] | None = None,
        groups: Mapping[str, Sequence[int]] | None = None,
        template: str | None = None,
    ):
        self.datasets = list(datasets) if datasets else None
        self.groups = _checked_groups(GROUPS if groups is None else groups)
        if template is not None and (not isinstance(template, str) or PLACEHOLDER not in template):
            raise ClipevalError(
                f"Association template must be a string with {PLACEHOLDER} where the cue goes (or null for "
                f"DataComp's 'A <cue>' / 'An <cue>'), not {quoted(template, as_json=False)}."
            )
        self.template = template
        for name in ["avg", *self.groups]:
            register_metric(jaccard_metric(name))

    def prompt(self, cue: str) -> str:
        return datacomp_prompt(cue) if self.template is None else self.template.replace(PLACEHOLDER, cue)

    def check(self, task: Task) -> None:
        """Refuse, before a model loads, a dataset that holds no association instances."""
        for dataset in self.datasets or list(task.sources):
            if dataset in task.missing:
                continue
            source = task.source(dataset)
            if not callable(getattr(source, "instances", None)):
                raise ClipevalError(
                    f"Dataset '{dataset}' ({source.describe()}) holds no association instances (a cue with candidate "
                    "images), which the association evaluator needs: use task=winogavil."
                )

    def evaluate(self, ctx: EvaluationContext) -> list[Record]:
        records: list[Record] = []
        for dataset in present_datasets(self.datasets, ctx):
            fs = ctx.features(dataset)
            instances = ctx.associations(dataset, self.prompt)
            scores = jaccard_scores(fs.features, instances)
            sizes = np.array([len(c) for c in instances.candidates])
            records += self._records(ctx, dataset, instances, scores, sizes)
        return records

    def _records(self, ctx, dataset, instances: AssociationSet, scores: np.ndarray, sizes: np.ndarray) -> list[Record]:
        records, empty = [], []
        for group, counts in [("avg", None), *self.groups.items()]:
            chosen = np.ones(len(scores), bool) if counts is None else np.isin(sizes, counts)
            if not chosen.any():
                empty.append(group)
                continue
            name = f"{dataset}.jaccard" + ("" if counts is None else f"_{group}")
            ids = [i for i, keep in zip(instances.ids, chosen, strict=True) if keep]
            kept = ctx.keep_outcomes(
                dataset, ids, torch.from_numpy(sizes[chosen]), {"jaccard": torch.from_numpy(scores[chosen])}, name
            )
            records.append(mean_record(dataset, jaccard_metric(group).name, scores[chosen], kept))
        grouped = np.isin(sizes, [c for counts in self.groups.values() for c in counts])
        if not grouped.all():
            ctx.note(
                f"dataset '{dataset}': {int((~grouped).sum())} instance(s) have a number of candidates in no group "
                f"({sorted(set(sizes[~grouped].tolist()))}); they count in avg_jaccard_score only",
                dataset=dataset,
            )
        if empty:
            have = ", ".join(f"{m} ({k})" for m, k in zip(*np.unique(sizes, return_counts=True), strict=True))
            ctx.note(
                f"dataset '{dataset}': left out {', '.join(f'jaccard_score_{g}' for g in empty)}: no instance has "
                f"that many candidates (instances by number of candidates: {have})",
                dataset=dataset,
                left_out=[f"jaccard_score_{g}" for g in empty],
            )
        return records


def jaccard_scores(images: torch.Tensor, instances: AssociationSet) -> np.ndarray:
    """[I] float64: each instance's Jaccard index of the k candidates most similar to its cue against its k right
    ones. ``images``: [N, D] unit-norm features that ``instances.candidates`` index. Values are rounded to float32,
    as the per-sample data keep them, so that a mean recomputed from those equals the record."""
    out = np.empty(len(instances))
    for i, (rows, right) in enumerate(zip(instances.candidates, instances.answers, strict=True)):
        # identical images must score exactly alike for the tie rule to see the tie
        similarity = TieExactScores(images[rows]).scores(instances.features[i][None])[0].numpy()
        answers = right.numpy()
        k = int(answers.sum())
        order = np.lexsort((answers, -similarity))  # most similar first; of equal ones, the wrong first
        selected = np.zeros(len(answers), bool)
        selected[order[:k]] = True
        both = int((selected & answers).sum())
        out[i] = both / (2 * k - both)
    return out.astype(np.float32).astype(np.float64)


def mean_record(dataset: str, metric: str, scores: np.ndarray, samples: str) -> Record:
    """The record of the mean of per-instance ``scores`` in [0, 1] with its effective-n Clopper–Pearson interval."""
    n = len(scores)
    p = float(scores.mean())
    variance = float(scores.var(ddof=1)) / n if n > 1 else 0.0
    return Record(dataset, metric, p, n, korn_graubard(p, variance, n), CI_METHOD, samples=samples, outcome="jaccard")


def _checked_groups(groups: object) -> dict[str, list[int]]:
    """``groups`` as {name: [numbers of candidates]}; ClipevalError saying what is wrong with it otherwise."""
    shape = 'a mapping from a group name to the numbers of candidates it holds, e.g. {"10-12": [10, 12]}'
    if not isinstance(groups, Mapping) or not groups:
        raise ClipevalError(f"Association groups must be {shape}, not {quoted(groups, as_json=False)}.")
    out = {}
    for name, counts in groups.items():
        name = str(name)
        if not name or not all(ch.isalnum() or ch in "-_" for ch in name) or name == "avg":
            raise ClipevalError(
                f"Association group name {quoted(name, as_json=False)} must be letters, digits, '-' or '_' (it names "
                "the metric jaccard_score_<name>) and not 'avg'."
            )
        if (
            isinstance(counts, str | bytes)
            or not isinstance(counts, Sequence)
            or not counts
            or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in counts)
        ):
            raise ClipevalError(
                f"Association group '{name}': {quoted(counts, as_json=False)} is not a list of numbers of candidates "
                f"(positive whole numbers); groups are {shape}."
            )
        if name in GROUPS and sorted(set(counts)) != GROUPS[name]:
            raise ClipevalError(
                f"Association group '{name}' is DataComp's, of {' and '.join(map(str, GROUPS[name]))} candidates "
                f"(jaccard_score_{name} is the published metric); give a group of {sorted(set(counts))} another name."
            )
        out[name] = sorted(set(counts))
    return out
