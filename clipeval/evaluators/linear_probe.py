"""Linear-probe and few-shot evaluation on the cached image features."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from clipeval.errors import ClipevalError
from clipeval.metrics import classification_records, clopper_pearson
from clipeval.probe import kshot, matching_k, train_probe
from clipeval.results import Record

log = logging.getLogger(__name__)


def _xy(ctx, dataset: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    fs = ctx.features(dataset)
    return fs.features.numpy().astype(np.float64), fs.labels.numpy(), fs.ids


def check_same_classes(task, train: str, tests: Sequence[str]) -> None:
    """Every dataset exists, and the test datasets have as many classes as ``train`` (where the data says)."""
    have = {d: task.source(d).num_classes for d in [train, *tests]}
    for dataset in tests:
        if None not in (have[train], have[dataset]) and have[dataset] != have[train]:
            raise ClipevalError(
                f"dataset '{dataset}' has {have[dataset]} classes but the probe is trained on '{train}', which has "
                f"{have[train]}: a probe scores only the classes it was trained on, with the same labels."
            )


def _topk(model, x: np.ndarray) -> torch.Tensor:
    scores = torch.from_numpy(model.predict_proba(x))
    full = torch.full((len(x), int(model.classes_.max()) + 1), -1.0, dtype=scores.dtype)
    full[:, torch.from_numpy(model.classes_)] = scores  # columns in label order, even if a class is absent
    return full.topk(min(5, full.shape[1]), dim=1).indices


class LinearProbe:
    """Fit on ``train`` (C chosen on ``val_fraction`` of it), score on each of ``test``.

    Scoring a probe trained on one distribution on other datasets of the task is the CLIP
    paper's "adapt to ImageNet" experiment (its Figure 14).
    """

    def __init__(
        self, train: str, test: Sequence[str], val_fraction: float = 0.2, seed: int = 0, prefix: str = "probe"
    ):
        self.train, self.test, self.val_fraction, self.seed, self.prefix = train, list(test), val_fraction, seed, prefix

    def check(self, task) -> None:
        """Before anything is encoded: the datasets exist and share the training set's classes."""
        check_same_classes(task, self.train, self.test)

    def evaluate(self, ctx) -> list[Record]:
        x, y, _ = _xy(ctx, self.train)
        probe = train_probe(x, y, self.val_fraction, self.seed)
        log.info("Linear probe on %s: %d examples, C = %.3g", self.train, len(y), probe.c)
        records = []
        for dataset in self.test:
            xt, yt, ids = _xy(ctx, dataset)
            topk = _topk(probe.model, xt)
            name = f"{self.prefix}:{dataset}"
            records += classification_records(name, topk, torch.from_numpy(yt), len(probe.model.classes_))
            ctx.save_predictions(name, ids, torch.from_numpy(yt), topk)
        return records


class FewShot:
    """k examples per class from ``train`` (several seeds), scored on ``test``, against zero-shot.

    The validation data for choosing C comes from the k shots themselves (a quarter of them,
    at least one per class); with k = 1 there is none, and C is scikit-learn's default, 1.
    Records hold the mean top-1 over seeds with its standard deviation (``std``); their
    interval is Clopper–Pearson for that mean on the n test samples (the seeds score the same
    samples, so pooling them would overstate n); the spread over seeds is the ``std``.
    """

    def __init__(self, train: str, test: str, ks: Sequence[int] = (1, 2, 4, 8, 16), seeds: int = 3,
                 val_fraction: float = 0.25, figure: str | None = "few_shot.png"):  # fmt: skip
        self.train, self.test, self.ks, self.seeds = train, test, list(ks), int(seeds)
        self.val_fraction, self.figure = val_fraction, figure

    def check(self, task) -> None:
        """Before anything is encoded: the datasets share their classes; the zero-shot names fit the test set."""
        check_same_classes(task, self.train, [self.test])
        task.check_classes(self.test)

    def evaluate(self, ctx) -> list[Record]:
        x, y, _ = _xy(ctx, self.train)
        xt, yt, _ = _xy(ctx, self.test)
        zero_shot = self._zero_shot(ctx)
        records, means, stds = [], [], []
        for k in self.ks:
            accs = []
            for seed in range(self.seeds):
                idx = kshot(y, k, seed)
                probe = train_probe(x[idx], y[idx], self.val_fraction, seed)
                accs.append(float((probe.model.predict(xt) == yt).mean()))
            mean, std = float(np.mean(accs)), float(np.std(accs))
            correct = round(mean * len(yt))
            means.append(mean)
            stds.append(std)
            records.append(Record(f"{k}-shot:{self.test}", "top1", mean, len(yt), clopper_pearson(correct, len(yt)),
                                  "clopper-pearson-of-mean", std))  # fmt: skip
            log.info("%d-shot on %s: top-1 %.3f ± %.3f over %d seeds", k, self.test, mean, std, self.seeds)
        match = matching_k(self.ks, means, zero_shot)
        log.info(
            "Few-shot probe matches zero-shot (%.3f) at k = %s",
            zero_shot,
            "never (within the ks)" if match is None else f"{match:.2f}",
        )
        if match is not None:
            records.append(
                Record(
                    f"few-shot:{self.test}", "k_matching_zero_shot", match, self.seeds, (match, match), "interpolated"
                )
            )
        if self.figure:
            from clipeval.figures import few_shot_curve

            few_shot_curve(self.ks, means, stds, zero_shot, match, ctx.model.name, ctx.run_dir / self.figure)
        return records

    def _zero_shot(self, ctx) -> float:
        fs = ctx.features(self.test)
        weights = ctx.classifier(ctx.task.classnames(self.test), ctx.task.templates(self.test))
        return float(((fs.features @ weights.T).argmax(1) == fs.labels).float().mean())
