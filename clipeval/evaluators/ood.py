"""Out-of-distribution detection by the zero-shot classifier's confidence (ImageNet-O).

Hendrycks et al. 2021 ("Natural Adversarial Examples", section 3; the code of
hendrycks/natural-adv-examples, ``eval_many_models.py`` and ``calibration_tools.py``) score
ImageNet-O as follows, and so does :class:`OutOfDistribution`:

- the classifier is restricted to ImageNet-O's 200 classes (the logits are masked to them before
  the softmax);
- the in-distribution samples are the ImageNet validation images of those 200 classes (the code
  links the val folders of ImageNet-O's wnids), the anomalies are ImageNet-O's 2,000 images;
- the anomaly score is minus the maximum softmax probability (MSP) of the classifier (here minus
  its log, which orders samples the same way without rounding near-certain MSPs to ties: :func:`neg_log_msp`);
- AUPR with the anomalies as the positive class, as ``sklearn.metrics.average_precision_score``;
  AUROC and the false-positive rate at 95% recall beside it (clipeval.results.scores).

The softmax is taken at the model's own logit scale (``DualEncoder.logit_scale``, the exp'd
multiplier of cosine similarities, about 100 for CLIP): MSP, unlike top-1, depends on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field

from clipeval.contracts import EvaluationContext
from clipeval.errors import ClipevalError
from clipeval.evaluators.zeroshot import parse_class_subset
from clipeval.models.base import check_logit_scale
from clipeval.results.record import Record
from clipeval.results.scores import auroc, average_precision, bootstrap_interval, bootstrap_method, fpr_at_recall

Task = Any  # clipeval.run.task.Task, as in clipeval.evaluators.zeroshot

#: the detection metrics, each a function of (labels: anomaly or not, anomaly scores)
DETECTION = {"ood_aupr": average_precision, "ood_auroc": auroc, "ood_fpr95": fpr_at_recall}


class OutOfDistribution:
    """Detects the samples of ``anomalies`` among those of ``in_distribution`` by minus the top softmax probability.

    ``class_subset``: the classes the classifier scores (a list of indices or a task file of them; all
    classes when None). ``in_distribution_labels``: what the in-distribution data's labels index, ``full``
    (the class-name list: ImageNet val; samples outside the subset are left out, as the published
    protocol does) or ``subset``. ``name``: the dataset name of the records (default: ``anomalies``).
    ``resamples``/``seed``: of the stratified bootstrap interval (in-distribution and anomalies resampled
    apart, so each resample keeps both counts).
    """

    def __init__(
        self,
        anomalies: str,
        in_distribution: str,
        class_subset: Sequence[Any] | str | None = None,
        in_distribution_labels: str = "full",
        name: str | None = None,
        resamples: Annotated[int, Field(ge=1)] = 1000,
        seed: Annotated[int, Field(ge=0)] = 0,
    ):
        if in_distribution_labels not in ("full", "subset"):
            raise ClipevalError(
                f"OutOfDistribution in_distribution_labels must be 'full' or 'subset', not '{in_distribution_labels}'."
            )
        self.anomalies, self.in_distribution = anomalies, in_distribution
        self.class_subset, self.labels = class_subset, in_distribution_labels
        self.name, self.resamples, self.seed = name or anomalies, int(resamples), int(seed)

    def check(self, task: Task) -> None:
        """Refuse, before anything is encoded, datasets the task lacks or a class subset that does not parse."""
        for dataset in (self.anomalies, self.in_distribution):
            if dataset in task.missing:
                raise ClipevalError(
                    f"OutOfDistribution needs dataset '{dataset}', which is optional in task '{task.name}' and absent: "
                    "detection needs both the anomalies and the in-distribution data."
                )
            task.source(dataset)
        if isinstance(self.class_subset, list | tuple):
            parse_class_subset(self.class_subset)

    def _classes(self, ctx: EvaluationContext) -> list[int] | None:
        if self.class_subset is None:
            return None
        entries = (
            ctx.task_file(self.class_subset, "class_subset")
            if isinstance(self.class_subset, str)
            else self.class_subset
        )
        return parse_class_subset(entries)

    def evaluate(self, ctx: EvaluationContext) -> list[Record]:
        scale = check_logit_scale(ctx.model)
        classes = self._classes(ctx)
        ins = ctx.features(self.in_distribution)
        in_cos = ctx.zero_shot_logits(self.in_distribution, classes=classes)
        keep = torch.arange(len(ins.labels))
        if classes is not None and self.labels == "full":  # ImageNet val: only the images of the scored classes
            keep = torch.isin(ins.labels, torch.tensor(classes)).nonzero().flatten()
        out = ctx.features(self.anomalies)
        out_cos = ctx.zero_shot_logits(self.anomalies, classes=classes)
        if len(keep) == 0 or len(out.labels) == 0:
            raise ClipevalError(
                f"OutOfDistribution needs samples on both sides: '{self.in_distribution}' has {len(keep)} of the "
                f"scored classes, '{self.anomalies}' has {len(out.labels)}."
            )
        score = torch.cat([neg_log_msp(in_cos[keep], scale), neg_log_msp(out_cos, scale)])
        anomaly = torch.cat([torch.zeros(len(keep), dtype=torch.bool), torch.ones(len(out.labels), dtype=torch.bool)])
        ids = [f"{self.in_distribution}/{ins.ids[i]}" for i in keep.tolist()] + [
            f"{self.anomalies}/{s}" for s in out.ids
        ]
        in_labels = ins.labels[keep]
        if classes is not None and self.labels == "full":  # as the anomalies' labels: positions in the subset
            position = {c: j for j, c in enumerate(classes)}
            in_labels = torch.tensor([position[int(c)] for c in in_labels], dtype=torch.int64)
        labels = torch.cat([in_labels, out.labels])
        samples = ctx.keep_outcomes(self.name, ids, labels, {"anomaly": anomaly, "neg_log_msp": score}, name=self.name)
        return detection_records(self.name, anomaly.numpy(), score.double().numpy(), samples, self.resamples, self.seed)


def neg_log_msp(cosines: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """[N] float32 anomaly scores: minus the log of the largest softmax probability at ``logit_scale``.

    It orders samples as minus the MSP does (so AUPR, AUROC and FPR are those of the MSP), but does not
    saturate: at CLIP's scale of 100 many MSPs round to 1.0 in float32 and would tie, while
    logsumexp(z) - max(z), computed in float64, keeps its relative precision near 0."""
    z = logit_scale * cosines.double()
    return (torch.logsumexp(z, dim=1) - z.amax(dim=1)).float()


def detection_records(
    dataset: str,
    anomaly: np.ndarray,
    score: np.ndarray,
    samples: str | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> list[Record]:
    """ood_aupr, ood_auroc and ood_fpr95 of ``score`` (higher: more anomalous) for ``anomaly`` (the positives),
    each with its stratified bootstrap interval; params ``score: msp`` (minus the maximum softmax probability)."""
    groups = [np.flatnonzero(~anomaly), np.flatnonzero(anomaly)]
    method = bootstrap_method(resamples, seed, stratified=True)
    records = []
    for metric, fn in DETECTION.items():
        value = fn(anomaly, score)
        ci = bootstrap_interval(lambda i, f=fn: f(anomaly[i], score[i]), value, groups, resamples, seed)
        records.append(
            Record(dataset, metric, value, len(anomaly), ci, method, params={"score": "msp"}, samples=samples)
        )
    return records
