"""Zero-shot classification: nearest text prototype for each image embedding."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

import torch
from pydantic import Field

from clipeval.config.lists import read_strings
from clipeval.contracts import EvaluationContext
from clipeval.errors import ClipevalError
from clipeval.evaluators import present_datasets
from clipeval.models.base import check_logit_scale
from clipeval.results.metrics import classification_records
from clipeval.results.record import Record
from clipeval.results.scores import BOOTSTRAP, ECE_BINS, bootstrap_interval, expected_calibration_error

#: the task being loaded (clipeval.run.task.Task, given by the runner): ``sources``, ``missing``, ``dir``,
#: ``source(name)`` and ``check_classes(...)``; not imported, so that evaluators stay below the runner
Task = Any

LABEL_SPACES = ("subset", "full")


class ZeroShot:
    """Scores datasets of the task against the task's text classifier.

    Only the prototypes of the classes it scores are built (each class's prototype is cached on
    its own, so subsets share them across tasks and runs). The logits are then reduced to the
    scored classes:

    - ``class_subset``: indices of the classes to score over (ImageNet-R's 200 of 1,000);
    - a source's ``class_groups`` (ObjectNet): each scored class is a group of classes of the
      class-name list, and its logit is the group's maximum;
    - neither: all classes.

    ``labels`` says what the data's labels index: ``subset`` (the scored classes, as in
    ImageNet-R's own 200 folders) or ``full`` (the whole class list, as in ImageNet val;
    samples outside the scored classes are dropped, the way imagenet-testbed restricts
    ImageNet val to a shift's classes). ``groups_from`` takes the class groups of another
    dataset of the task (ImageNet val scored on ObjectNet's classes). ``name`` renames the
    dataset in the records.

    ``calibration``: also write the expected calibration error (``ece``, with ``calibration_bins``
    equal-width bins; clipeval.results.scores) of the top prediction's softmax probability over the
    scored classes at the model's own logit scale, and keep each sample's confidence with its
    predictions (the reliability diagram is drawn from them). Off by default: it adds a float per
    sample to the results document and a record that a regression gate then compares, which a run
    that asks for accuracy alone should not get; the ImageNet shift tasks turn it on.
    """

    def __init__(
        self,
        datasets: Sequence[str] | None = None,
        class_subset: Sequence[Any] | str | None = None,  # its entries are judged by check(), naming them
        labels: str = "subset",
        name: str | None = None,
        groups_from: str | None = None,
        calibration: bool = False,
        calibration_bins: Annotated[int, Field(ge=1)] = ECE_BINS,
    ):
        if labels not in LABEL_SPACES:
            raise ClipevalError(f"ZeroShot labels must be one of {LABEL_SPACES}, not '{labels}'.")
        self.datasets = list(datasets) if datasets else None
        self.class_subset = class_subset
        self.labels = labels
        self.name = name
        self.groups_from = groups_from
        self.calibration, self.calibration_bins = bool(calibration), int(calibration_bins)
        if name and (self.datasets is None or len(self.datasets) != 1):
            raise ClipevalError("ZeroShot 'name' renames one dataset: give exactly one in 'datasets'.")

    @staticmethod
    def zero_shot_top1(options: Mapping[str, Any], datasets: Sequence[str]) -> list[str]:
        """The names of the zero-shot top-1 records it writes, configured with ``options`` in a task with
        ``datasets``: each of its datasets (all of the task's by default), or its ``name``."""
        if options.get("name"):
            return [str(options["name"])]
        return [str(d) for d in options.get("datasets") or datasets]

    def check(self, task: Task) -> None:
        """Refuse, before anything is encoded, a class subset, class groups or class names that do not fit the data."""
        if self.groups_from is not None:
            task.source(self.groups_from)
        for dataset in self.datasets or list(task.sources):
            if dataset in task.missing:
                continue  # an optional dataset that is absent: evaluate() skips it
            task.source(dataset)
            task.check_classes(dataset, self._groups(task, dataset), self.labels)

    def evaluate(self, ctx: EvaluationContext) -> list[Record]:
        records: list[Record] = []
        for dataset in present_datasets(self.datasets, ctx):
            fs = ctx.features(dataset)
            groups = self._scored_classes(
                ctx.class_groups(self.groups_from or dataset), lambda p: ctx.task_file(p, "class_subset")
            )
            labels, keep = fs.labels, slice(None)
            if groups is None:
                logits = ctx.zero_shot_logits(dataset)
            else:  # the prototypes of the classes in a group only: the others are never built
                used = sorted({c for group in groups for c in group})
                column = {c: j for j, c in enumerate(used)}
                logits = ctx.zero_shot_logits(dataset, classes=used)
                logits = torch.stack([logits[:, [column[c] for c in g]].amax(dim=1) for g in groups], dim=1)
                if self.labels == "full":
                    labels, keep = _to_group_labels(fs.labels, groups)
                    logits = logits[keep]
            ids = [fs.ids[i] for i in keep.tolist()] if isinstance(keep, torch.Tensor) else fs.ids
            out = self.name or dataset
            ctx.check_labels(out, labels, logits.shape[1])
            topk = logits.topk(min(5, logits.shape[1]), dim=1).indices
            if not self.calibration:
                samples = ctx.keep_predictions(dataset, ids, labels, topk, name=out)
                records += classification_records(out, topk, labels, logits.shape[1], samples=samples)
                continue
            confidence = top_confidence(logits, check_logit_scale(ctx.model))
            samples = ctx.keep_predictions(dataset, ids, labels, topk, name=out, scores={"confidence": confidence})
            records += classification_records(out, topk, labels, logits.shape[1], samples=samples)
            records.append(calibration_record(out, confidence, topk[:, 0] == labels, self.calibration_bins, samples))
        return records

    def _groups(self, task: Task, dataset: str) -> list[list[int]] | None:
        """The classifier classes behind each scored class of ``dataset`` (None: every class on its own)."""
        return self._scored_classes(
            getattr(task.sources[self.groups_from or dataset], "class_groups", None),
            lambda path: read_strings(path, "class_subset", task.dir),
        )

    def _scored_classes(self, groups: list[list[int]] | None, read: Callable[[str], list[str]]):
        if self.class_subset is not None:
            if groups is not None:
                raise ClipevalError("A dataset with class groups (ObjectNet) cannot also take a class_subset.")
            entries = read(self.class_subset) if isinstance(self.class_subset, str) else self.class_subset
            groups = [[i] for i in parse_class_subset(entries)]
        return groups


def top_confidence(cosines: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """[N] float32: the largest softmax probability of ``logit_scale`` times the cosine similarities ([N, C])."""
    return torch.softmax(logit_scale * cosines.double(), dim=1).amax(dim=1).float()


def calibration_record(
    dataset: str, confidence: torch.Tensor, correct: torch.Tensor, bins: int = ECE_BINS, samples: str | None = None
) -> Record:
    """The ``ece`` record of confidences and right/wrong top-1 outcomes, with its seeded bootstrap interval."""
    conf, right = confidence.double().numpy(), correct.numpy().astype(bool)
    value = expected_calibration_error(conf, right, bins)
    ci = bootstrap_interval(lambda i: expected_calibration_error(conf[i], right[i], bins), value, len(conf))
    return Record(dataset, "ece", value, len(conf), ci, BOOTSTRAP, params={"bins": bins}, samples=samples)


def parse_class_subset(value: Sequence[int | str]) -> list[int]:
    """Class indices from a list (of a config, or a file's lines); each an integer, each once, at least one.

    Raises ClipevalError naming the entries that are not integers or are repeated.
    """
    entries = [str(e).strip() for e in value]
    not_integers = [e for e in entries if not re.fullmatch(r"[+-]?[0-9]+", e)]
    if not_integers:
        raise ClipevalError(
            f"class_subset entries must be integer class indices; these are not: {not_integers[:5]}. "
            "Give the indices of the scored classes in the class-name list, counting from 0."
        )
    indices = [int(e) for e in entries]
    if not indices:
        raise ClipevalError("class_subset is empty: give the indices of the scored classes, at least two.")
    counts = Counter(indices)
    repeated = sorted(i for i, n in counts.items() if n > 1)
    if repeated:
        shown = ", ".join(f"class {i} {_times(counts[i])}" for i in repeated[:5])
        raise ClipevalError(
            f"class_subset has duplicates: it lists {shown} ({repeated[:5]}); give each scored class once, in the "
            "order of the data's labels."
        )
    return indices


def _times(n: int) -> str:
    return "twice" if n == 2 else f"{n} times"


def _to_group_labels(labels: torch.Tensor, groups: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-space labels -> index of the group containing them; samples in no group are dropped."""
    lookup = {c: g for g, members in enumerate(groups) for c in members}
    keep = torch.tensor([int(label) in lookup for label in labels], dtype=torch.bool).nonzero().flatten()
    return torch.tensor([lookup[int(labels[i])] for i in keep], dtype=torch.int64), keep
