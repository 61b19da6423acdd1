"""Linear-probe and few-shot evaluation on the cached image features."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from clipeval.contracts import EvaluationContext
from clipeval.errors import ClipevalError
from clipeval.evaluators import checked_logits
from clipeval.evaluators.probe_training import MAX_ITER, kshot, matching_k, too_small, train_probe
from clipeval.results.metrics import classification_records, clopper_pearson
from clipeval.results.record import Record

log = logging.getLogger(__name__)


def _xy(ctx: EvaluationContext, dataset: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
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


def _listed(names: list[str] | None, counts: dict[int, int], most: int = 10) -> str:
    """Classes by name (by index without names) with their counts, smallest first: 'cat' (3), 'dog' (5)."""
    order = sorted(counts.items(), key=lambda item: (item[1], item[0]))
    shown = [f"'{names[c]}' ({n})" if names else f"class {c} ({n})" for c, n in order[:most]]
    return ", ".join(shown) + (f" and {len(order) - most} more" if len(order) > most else "")


def _classnames(ctx: EvaluationContext, dataset: str) -> list[str] | None:
    """The task's class names for ``dataset``, or None when it has none (a probe does not need them)."""
    try:
        return ctx.classnames(dataset)
    except ClipevalError:
        return None


def _check_train_classes(ctx, dataset: str, y: np.ndarray, names: list[str] | None) -> None:
    """ClipevalError with fewer than two classes to learn; a note naming the classes without examples."""
    classes = np.unique(y)
    if len(classes) < 2:
        raise ClipevalError(
            f"A probe trained on '{dataset}' needs examples of at least 2 classes; it has {len(classes)}."
        )
    if names is not None:
        ctx.check_labels(dataset, torch.from_numpy(y), len(names))
    present = set(classes.tolist())
    absent = {c: 0 for c in range(len(names) if names else max(present) + 1) if c not in present}
    if absent:
        ctx.note(
            f"{len(absent)} classes have no training examples in '{dataset}', so the probe chooses among the "
            f"{len(present)} others and never predicts them: {_listed(names, absent)}.",
            dataset=dataset,
            classes_without_examples=[names[c] if names else c for c in sorted(absent)],
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

    @staticmethod
    def zero_shot_top1(options: Mapping[str, Any], datasets: Sequence[str]) -> list[str]:
        """None of the records it writes is a zero-shot top-1 (its top-1 records carry the probe in their params)."""
        return []

    def __init__(self, train: str, test: Sequence[str], val_fraction: float = 0.2, seed: int = 0):
        self.train, self.test, self.val_fraction, self.seed = train, list(test), val_fraction, seed

    def check(self, task) -> None:
        """Before anything is encoded: the datasets exist and share the training set's classes."""
        check_same_classes(task, self.train, self.test)

    def evaluate(self, ctx: EvaluationContext) -> list[Record]:
        x, y, _ = _xy(ctx, self.train)
        _check_train_classes(ctx, self.train, y, _classnames(ctx, self.train))
        log.info(
            "Linear probe on %s: training on %d examples of %d-dim features (C chosen on a %.0f%% validation split)",
            self.train,
            len(y),
            x.shape[1],
            100 * self.val_fraction,
        )
        probe = train_probe(x, y, self.val_fraction, self.seed)
        log.info("Linear probe on %s: %d examples, C = %.3g", self.train, len(y), probe.c)
        if not probe.converged:
            ctx.note(
                f"The linear probe on '{self.train}' (C = {probe.c:.3g}) stopped at {MAX_ITER} L-BFGS iterations "
                "without converging (the CLIP paper's limit, kept for comparability); its accuracy may be below "
                "the optimum's.",
                dataset=self.train,
                max_iter=MAX_ITER,
            )
        records = []
        for dataset in self.test:
            xt, yt, ids = _xy(ctx, dataset)
            topk = _topk(probe.model, xt)
            labels = torch.from_numpy(yt)
            samples = ctx.keep_predictions(dataset, ids, labels, topk, name=f"{dataset}.linear_probe")
            params = {"probe": "linear", "train": self.train}
            records += classification_records(dataset, topk, labels, len(probe.model.classes_), params, samples)
        return records


class FewShot:
    """k examples per class from ``train`` (several seeds), scored on ``test``, against zero-shot.

    Records: ``top1`` on ``test`` with params ``probe: few-shot``, ``k`` and ``train``; ``k = 0``
    is the zero-shot classifier on the same test set, the reference the CLIP paper's Figure 6
    draws at zero shots; and ``k_matching_zero_shot`` where the probe's curve crosses it.

    The validation data for choosing C comes from the k shots themselves (a quarter of them,
    at least one per class); with k = 1 there is none, and C is scikit-learn's default, 1.
    Records hold the mean top-1 over seeds with its standard deviation (``std``); their
    interval is Clopper–Pearson for that mean on the n test samples (the seeds score the same
    samples, so pooling them would overstate n); the spread over seeds is the ``std``.

    A k that some class has fewer than k (but some) training examples of is skipped, with a
    warning and a note in results.json naming those classes; ClipevalError when no k is left.
    Classes without any training examples are named in a note; the probe chooses among the others.
    """

    @staticmethod
    def zero_shot_top1(options: Mapping[str, Any], datasets: Sequence[str]) -> list[str]:
        """None of the records it writes is a zero-shot top-1 (its top-1 records carry the probe in their params)."""
        return []

    def __init__(self, train: str, test: str, ks: Sequence[int] = (1, 2, 4, 8, 16), seeds: int = 3,
                 val_fraction: float = 0.25):  # fmt: skip
        self.train, self.test, self.ks, self.seeds = train, test, [int(k) for k in ks], int(seeds)
        self.val_fraction = val_fraction
        if not self.ks or self.ks[0] < 1 or self.ks != sorted(set(self.ks)) or self.seeds < 1:
            raise ClipevalError(
                f"Few-shot on '{train}' needs ks increasing from at least 1 and seeds >= 1 "
                f"(got ks={list(ks)}, seeds={seeds})."
            )

    def check(self, task) -> None:
        """Before anything is encoded: the datasets share their classes; the zero-shot names fit the test set."""
        check_same_classes(task, self.train, [self.test])
        task.check_classes(self.test)

    def evaluate(self, ctx: EvaluationContext) -> list[Record]:
        x, y, _ = _xy(ctx, self.train)
        xt, yt, _ = _xy(ctx, self.test)
        ks = self._feasible_ks(ctx, y)
        log.info(
            "Few-shot probes on %s: k = %s, %d seeds each (%d probes), scored on %d examples of %s",
            self.train,
            ", ".join(map(str, ks)),
            self.seeds,
            len(ks) * self.seeds,
            len(yt),
            self.test,
        )
        params = {"probe": "few-shot", "train": self.train}
        zero_shot_records = self._zero_shot(ctx, params)
        zero_shot = next(r.value for r in zero_shot_records if r.metric == "top1")
        records, means, stds, unconverged = zero_shot_records, [], [], []
        for k in ks:
            accs = []
            for seed in range(self.seeds):
                idx = kshot(y, k, seed)
                probe = train_probe(x[idx], y[idx], self.val_fraction, seed)
                accs.append(float((probe.model.predict(xt) == yt).mean()))
                if not probe.converged:
                    unconverged.append((k, seed))
            mean, std = float(np.mean(accs)), float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0
            correct = round(mean * len(yt))
            means.append(mean)
            stds.append(std)
            records.append(Record(self.test, "top1", mean, len(yt), clopper_pearson(correct, len(yt)),
                                  "clopper-pearson-of-mean", std, params=params | {"k": k}))  # fmt: skip
            log.info("%d-shot on %s: top-1 %.3f ± %.3f over %d seeds", k, self.test, mean, std, self.seeds)
        if unconverged:
            ctx.note(
                f"{len(unconverged)} few-shot probes on '{self.train}' stopped at {MAX_ITER} L-BFGS iterations without "
                "converging (the CLIP paper's limit); their accuracies may be below the optimum's.",
                dataset=self.train,
                unconverged=[list(pair) for pair in unconverged],
            )
        match = matching_k(ks, means, zero_shot)
        log.info(
            "Few-shot probe matches zero-shot (%.3f) at k = %s",
            zero_shot,
            "never (within the ks)" if match is None else f"{match:.2f}",
        )
        if match is not None:
            records.append(
                Record(
                    self.test, "k_matching_zero_shot", match, self.seeds, (match, match), "interpolated", params=params
                )
            )
        return records

    def _feasible_ks(self, ctx, y: np.ndarray) -> list[int]:
        """The ks every class with training examples has enough examples for.

        The others are skipped with a note naming the classes that are too small (results.json
        "notes": ``skipped_ks``, ``too_small``); ClipevalError when no k is left.
        """
        names = ctx.classnames(self.train)
        _check_train_classes(ctx, self.train, y, names)
        short = {k: too_small(y, k) for k in self.ks}
        skipped = [k for k in self.ks if short[k]]
        if not skipped:
            return self.ks
        worst = short[skipped[-1]]  # the ks grow, so the largest skipped k has the most classes too small
        fewer = "; ".join(f"for k = {k}, {_listed(names, short[k])} have fewer than {k}" for k in skipped)
        why = f"k-shot needs k training examples of every class, and in '{self.train}' {fewer}"
        if len(skipped) == len(self.ks):
            raise ClipevalError(
                f"Few-shot on '{self.train}' cannot run any of ks={self.ks}: {why}. Choose smaller ks or add examples."
            )
        ctx.note(
            f"few-shot skipped k = {', '.join(map(str, skipped))}: {why}. The smaller ks are reported.",
            dataset=self.train,
            skipped_ks=skipped,
            too_small=[[names[c], n] for c, n in sorted(worst.items())],
        )
        return [k for k in self.ks if not short[k]]

    def _zero_shot(self, ctx: EvaluationContext, params: dict) -> list[Record]:
        """The zero-shot classifier's records on the test set, as k = 0 (the reference the probe is matched to)."""
        fs, logits = checked_logits(ctx, self.test)
        topk = logits.topk(min(5, logits.shape[1]), dim=1).indices
        samples = ctx.keep_predictions(self.test, fs.ids, fs.labels, topk, name=f"{self.test}.few_shot_k0")
        return classification_records(self.test, topk, fs.labels, logits.shape[1], params | {"k": 0}, samples)
