"""Zero-shot image-text retrieval: recall@k from images to captions and back (CLIP paper, Table 13).

Definitions (CLIP_benchmark's ``clip_benchmark/metrics/zeroshot_retrieval.py``, whose metric names the
records take):

- ``text_retrieval_recall@k`` (image -> text): the share of images with at least one of their own
  captions among the k captions most similar to the image; n = the number of images.
- ``image_retrieval_recall@k`` (text -> image): the share of captions whose image is among the k images
  most similar to the caption; n = the number of captions.
- ``mean_recall@k``: the mean of the two (DataComp, ``eval_utils/retr_eval.py``, takes ``mean_recall@1`` as
  its retrieval datasets' main metric); n = the number of images.

Similarity is the cosine of unit-norm image and text features. A query is retrieved at k when fewer than k
wrong candidates score at least as high as its best right one: a tie with a wrong candidate counts against
the query. Without ties this is what ``torch.topk`` gives (CLIP_benchmark); with ties (identical captions,
which MS-COCO has across images) ``topk``'s order is arbitrary and changed with the deepest k asked for, so
recall@1 depended on whether recall@10 was computed too. The similarity matrix is never held whole: it is
scored in blocks of rows (:data:`BLOCK_ELEMENTS` scores at a time), so 100,000 captions take as little
memory as 1,000.

Intervals (95%): Clopper–Pearson for ``text_retrieval_recall@k``, whose images are independent. A
caption's outcome is not independent of the other captions of its image (they are retrieved against
the same image), so ``image_retrieval_recall@k`` and ``mean_recall@k`` take a cluster-robust interval
with images as clusters: the Korn–Graubard interval (Korn & Graubard 1998, Survey Methodology 24:193),
a Clopper–Pearson interval at the effective sample size n* = p(1 - p) / v, where v is the
cluster-robust (linearised, images as clusters) variance of the estimate p; n* is at most the record's
n, and is n when v is 0 (every outcome alike). No degrees-of-freedom correction is applied. Closed
form, so deterministic.

A recall@k that is 1 whatever the model is left out, with a note (``ctx.note``), as top5 is with 5 classes
or fewer: ``image_retrieval_recall@k`` when k reaches the number of images N (each caption has N - 1 wrong
images), ``text_retrieval_recall@k`` when k exceeds the wrong captions of every image (k > T - the fewest
captions of an image, T captions in all; so whenever k >= T), and ``mean_recall@k`` when either is left out.

Per-sample outcomes are kept: per image (``<dataset>.text_retrieval``, outcomes ``recall@k``) and per
caption (``<dataset>.image_retrieval``, ids ``<image id>#<j>``, labels the image's row).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from clipeval.contracts import EvaluationContext
from clipeval.data.captions import no_captions
from clipeval.errors import ClipevalError
from clipeval.evaluators import TieExactScores, present_datasets
from clipeval.results.metrics import clopper_pearson, clustered_variance, korn_graubard
from clipeval.results.record import Record, register_metric, retrieval_metrics

KS = (1, 5, 10)
#: scores held at once while ranking: rows per block = BLOCK_ELEMENTS // columns (64 MiB of float32)
BLOCK_ELEMENTS = 1 << 24
CLUSTER_CI = "korn-graubard-clustered-by-image"

Task = object  # clipeval.run.task.Task, not imported (evaluators stay below the runner)


def register_retrieval_metrics(ks: Sequence[int]) -> None:
    """Register the three recall metrics of each k (k = 1, 5, 10 are built in: clipeval.results.record)."""
    for k in ks:
        for metric in retrieval_metrics(k):
            register_metric(metric)


class Retrieval:
    """Recall@k both ways over the images of each dataset and their captions.

    ``datasets``: which of the task's datasets (default: all present); ``ks``: the k of recall@k
    (default 1, 5, 10). A recall@k that k makes 1 whatever the model (k reaching the number of candidates)
    is left out with a note; see the module's docstring.
    """

    def __init__(self, datasets: Sequence[str] | None = None, ks: Sequence[int] = KS):
        if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
            raise ClipevalError(f"Retrieval ks must be positive whole numbers (the k of recall@k), not {list(ks)}.")
        self.datasets = list(datasets) if datasets else None
        self.ks = sorted(set(ks))
        register_retrieval_metrics(self.ks)

    def check(self, task: Task) -> None:
        """Refuse, before a model loads, a dataset that carries no captions."""
        for dataset in self.datasets or list(task.sources):
            if dataset in task.missing:
                continue
            source = task.source(dataset)
            if getattr(source, "captions", None) is None or source.captions() is None:
                raise no_captions(source, dataset)

    def evaluate(self, ctx: EvaluationContext) -> list[Record]:
        records: list[Record] = []
        for dataset in present_datasets(self.datasets, ctx):
            fs = ctx.features(dataset)
            caps = ctx.captions(dataset)
            by_image, by_caption = retrieval_hits(fs.features, caps.features, caps.image, self.ks)
            records += self._records(ctx, dataset, fs.ids, caps, by_image, by_caption)
        return records

    def _records(self, ctx, dataset, image_ids, caps, by_image, by_caption) -> list[Record]:
        n_images, n_captions = len(image_ids), len(caps)
        rows = torch.arange(n_images)
        names = [f"recall@{k}" for k in self.ks]
        per_image = ctx.keep_outcomes(
            dataset, image_ids, rows, dict(zip(names, by_image, strict=True)), name=f"{dataset}.text_retrieval"
        )
        per_caption = ctx.keep_outcomes(
            dataset, caps.ids, caps.image, dict(zip(names, by_caption, strict=True)), name=f"{dataset}.image_retrieval"
        )
        owner = caps.image.numpy()
        sizes = np.bincount(owner, minlength=n_images).astype(np.float64)
        records = []
        fewest = int(sizes.min()) if n_images else 0
        left_out: list[str] = []
        for k, name, image_hits, caption_hits in zip(self.ks, names, by_image, by_caption, strict=True):
            hits_i = image_hits.numpy().astype(np.float64)
            hits_c = np.bincount(owner, weights=caption_hits.numpy().astype(np.float64), minlength=n_images)
            text_r = hits_i.mean()
            image_r = hits_c.sum() / sizes.sum()
            # each image's share of the estimate's deviation (linearisation; images are the clusters)
            image_infl = (hits_c - image_r * sizes) / sizes.sum()
            mean_infl = 0.5 * ((hits_i - text_r) / n_images + image_infl)
            text_certain = k > n_captions - fewest  # every image has one of its captions among any k
            image_certain = k >= n_images  # every caption's image is among any k images
            if not text_certain:
                records.append(Record(dataset, f"text_retrieval_recall@{k}", text_r, n_images,
                                      clopper_pearson(int(hits_i.sum()), n_images), samples=per_image,
                                      outcome=name))  # fmt: skip
            if not image_certain:
                records.append(Record(dataset, f"image_retrieval_recall@{k}", image_r, n_captions,
                                      korn_graubard(image_r, clustered_variance(image_infl), n_captions), CLUSTER_CI,
                                      samples=per_caption, outcome=name))  # fmt: skip
            if not (text_certain or image_certain):
                records.append(Record(dataset, f"mean_recall@{k}", 0.5 * (text_r + image_r), n_images,
                                      korn_graubard(0.5 * (text_r + image_r), clustered_variance(mean_infl), n_images),
                                      CLUSTER_CI))  # fmt: skip
            left_out += [f"text_retrieval_recall@{k}"] * text_certain + [f"image_retrieval_recall@{k}"] * image_certain
            left_out += [f"mean_recall@{k}"] * (text_certain or image_certain)
        if left_out:
            ctx.note(
                f"dataset '{dataset}': left out {', '.join(left_out)}: with {n_images} images and {n_captions} "
                f"captions (at least {fewest} per image), k reaches the number of candidates, so these recalls "
                "are 1 whatever the model (as top5 is left out with 5 classes or fewer)",
                dataset=dataset,
                left_out=left_out,
            )
        return records


def retrieval_hits(
    images: torch.Tensor, texts: torch.Tensor, image_of: torch.Tensor, ks: Sequence[int]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Who is retrieved at each k of ``ks``.

    ``images``: [N, D], ``texts``: [T, D] unit-norm features; ``image_of``: [T] the row of each text's image.
    Returns ([N] bool per k: fewer than k wrong texts score at least as high as the image's best own text,
    [T] bool per k: fewer than k wrong images score at least as high as the text's own image). Scored in
    blocks of rows; the outcome does not depend on ``ks``, the block size or the order of equal scores.
    """
    image_of = image_of.long()
    rows, columns = torch.arange(len(images)), torch.arange(len(images))
    by_image = _wrong_ahead(images, texts, lambda span: image_of[None, :] == rows[span, None])
    by_text = _wrong_ahead(texts, images, lambda span: columns[None, :] == image_of[span, None])
    per_k = lambda wrong: [wrong < k for k in ks]  # noqa: E731
    return per_k(by_image), per_k(by_text)


def _wrong_ahead(queries: torch.Tensor, keys: torch.Tensor, right) -> torch.Tensor:
    """[Q] int64: for each query, how many wrong keys score at least as high as its best right key
    (``right(span)``: [rows of the span, K] bool, which keys are right for each query of the span)."""
    step = max(1, BLOCK_ELEMENTS // max(1, len(keys)))
    scorer = TieExactScores(keys)  # identical keys (the same caption under two images) must tie exactly
    out = []
    for start in range(0, len(queries), step):
        span = slice(start, start + step)
        scores, mask = scorer.scores(queries[span]), right(span)
        best = scores.masked_fill(~mask, float("-inf")).amax(dim=1, keepdim=True)
        out.append(((scores >= best) & ~mask).sum(dim=1))
    return torch.cat(out)
