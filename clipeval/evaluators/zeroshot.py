"""Zero-shot classification: nearest text prototype for each image embedding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from clipeval.errors import ClipevalError
from clipeval.lists import read_strings
from clipeval.metrics import classification_records
from clipeval.results import Record

LABEL_SPACES = ("subset", "full")


class ZeroShot:
    """Scores datasets of the task against the task's text classifier.

    The classifier is always built over the task's full class list (one cached classifier
    serves every subset). Its logits are then reduced to the scored classes:

    - ``class_subset``: indices of the classes to score over (ImageNet-R's 200 of 1,000);
    - a source's ``class_groups`` (ObjectNet): each scored class is a group of classifier
      classes, and its logit is the group's maximum;
    - neither: all classes.

    ``labels`` says what the data's labels index: ``subset`` (the scored classes, as in
    ImageNet-R's own 200 folders) or ``full`` (the whole class list, as in ImageNet val;
    samples outside the scored classes are dropped, the way imagenet-testbed restricts
    ImageNet val to a shift's classes). ``groups_from`` takes the class groups of another
    dataset of the task (ImageNet val scored on ObjectNet's classes). ``name`` renames the
    dataset in the records.
    """

    def __init__(
        self,
        datasets: Sequence[str] | None = None,
        class_subset: Sequence[int] | str | None = None,
        labels: str = "subset",
        name: str | None = None,
        groups_from: str | None = None,
    ):
        if labels not in LABEL_SPACES:
            raise ClipevalError(f"ZeroShot labels must be one of {LABEL_SPACES}, not '{labels}'.")
        self.datasets = list(datasets) if datasets else None
        self.class_subset = class_subset
        self.labels = labels
        self.name = name
        self.groups_from = groups_from
        if name and (self.datasets is None or len(self.datasets) != 1):
            raise ClipevalError("ZeroShot 'name' renames one dataset: give exactly one in 'datasets'.")

    def evaluate(self, ctx) -> list[Record]:
        records: list[Record] = []
        for dataset in self.datasets or list(ctx.task.sources):
            if dataset in ctx.task.missing:
                continue  # an optional dataset that is absent; load_task has said so
            source = ctx.task.sources[dataset]
            fs = ctx.features(dataset)
            weights = ctx.classifier(ctx.task.classnames(dataset), ctx.task.templates(dataset))
            groups = self._groups(ctx.task.sources[self.groups_from] if self.groups_from else source, weights.shape[0])
            logits = fs.features @ weights.T
            labels, keep = fs.labels, slice(None)
            if groups is not None:
                logits = torch.stack([logits[:, g].amax(dim=1) for g in groups], dim=1)
                if self.labels == "full":
                    labels, keep = _to_group_labels(fs.labels, groups)
                    logits = logits[keep]
            ids = [fs.ids[i] for i in keep.tolist()] if isinstance(keep, torch.Tensor) else fs.ids
            out = self.name or dataset
            ctx.check_labels(out, labels, logits.shape[1])
            topk = logits.topk(min(5, logits.shape[1]), dim=1).indices
            records += classification_records(out, topk, labels, logits.shape[1])
            ctx.save_predictions(out, ids, labels, topk)
        return records

    def _groups(self, source: Any, num_classes: int) -> list[list[int]] | None:
        groups = getattr(source, "class_groups", None)
        if self.class_subset is not None:
            subset = [int(i) for i in read_strings(self.class_subset, "class_subset")]
            if groups is not None:
                raise ClipevalError("A dataset with class groups (ObjectNet) cannot also take a class_subset.")
            groups = [[i] for i in subset]
        if groups is not None:
            bad = [i for g in groups for i in g if not 0 <= i < num_classes]
            if bad:
                raise ClipevalError(f"Class indices {bad[:5]} are outside the task's {num_classes} classes.")
        return groups


def _to_group_labels(labels: torch.Tensor, groups: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-space labels -> index of the group containing them; samples in no group are dropped."""
    lookup = {c: g for g, members in enumerate(groups) for c in members}
    keep = torch.tensor([int(label) in lookup for label in labels], dtype=torch.bool).nonzero().flatten()
    return torch.tensor([lookup[int(labels[i])] for i in keep], dtype=torch.int64), keep
