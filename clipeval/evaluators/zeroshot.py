"""Zero-shot classification: nearest text prototype for each image embedding."""

from __future__ import annotations

from collections.abc import Sequence

from clipeval.metrics import classification_records
from clipeval.results import Record


class ZeroShot:
    """Scores every dataset of the task (or those named) against the task's text classifier.

    With a class subset, the classifier is built over the full class list and its logits are
    indexed by the subset, so one cached classifier serves every subset of the same classes.
    """

    name = "zeroshot"

    def __init__(self, datasets: Sequence[str] | None = None):
        self.datasets = list(datasets) if datasets else None

    def evaluate(self, ctx) -> list[Record]:
        records: list[Record] = []
        for dataset in self.datasets or list(ctx.task.sources):
            fs = ctx.features(dataset)
            weights = ctx.classifier(ctx.task.classnames(dataset), ctx.task.templates(dataset))
            subset = ctx.task.class_subset()
            if subset is not None:
                weights = weights[subset]
            logits = fs.features @ weights.T
            k = min(5, logits.shape[1])
            topk = logits.topk(k, dim=1).indices
            ctx.check_labels(dataset, fs.labels, logits.shape[1])
            records += classification_records(dataset, topk, fs.labels, logits.shape[1])
            ctx.save_predictions(dataset, fs.ids, fs.labels, topk)
        return records
