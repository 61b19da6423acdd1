"""Adversarial robustness of the zero-shot classifier: clean and robust top-1 per attack and eps."""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from clipeval.contracts import EvaluationContext
from clipeval.distributed import world
from clipeval.errors import ClipevalError
from clipeval.evaluators.attacks import DLR_TARGETED_MIN_CLASSES, ZeroShotLogits, apgd, pgd
from clipeval.progress import progress
from clipeval.results.metrics import clopper_pearson
from clipeval.results.record import Record

log = logging.getLogger(__name__)

ATTACKS = ("pgd", "apgd-ce", "apgd-t")


def split_preprocess(preprocess):
    """(transform to [0, 1] pixels at the model's input size, the Normalize that follows it)."""
    from torchvision.transforms import Compose, Normalize

    steps = getattr(preprocess, "transforms", None)
    if not steps or not isinstance(steps[-1], Normalize):
        raise ClipevalError(
            "Adversarial evaluation needs the model's preprocessing as a torchvision Compose ending in Normalize "
            "(open_clip models have one), so that the attack can work in [0, 1] pixel space."
        )
    return Compose(steps[:-1]), steps[-1]


class Adversarial:
    """Attacks a fixed, seeded sample of ``dataset`` at each eps (in units of 1/``eps_scale``); under torchrun
    the ranks share the batches of each attack.

    As in AutoAttack and RobustBench, only the samples the model classifies correctly are
    attacked: a sample counts as robust under an attack if it is classified correctly both
    clean and at the attack's output, so robust top-1 never exceeds clean top-1. ``worst`` is
    robust under every attack that ran (and clean). APGD-T attacks the ``targets`` most likely
    wrong classes in turn, as AutoAttack does, or all of them when there are fewer.

    Attacks that are undefined for the classifier are not run, as AutoAttack's rule
    (``autoattack/checks.py``) has it: APGD-T's targeted DLR loss needs at least four classes.
    They get no record, the run says so in the log and in results.json's ``notes``, and
    ``worst`` combines the attacks that did run. Raises ClipevalError for a classifier with
    fewer than two classes (nothing to attack) and for settings that make no sense.
    """

    @staticmethod
    def zero_shot_top1(options: Mapping[str, Any], datasets: Sequence[str]) -> list[str]:
        """None of the records it writes is a zero-shot top-1 (it writes clean_top1 and robust_top1)."""
        return []

    def __init__(self, dataset: str, eps: Sequence[float] = (1, 2, 4), eps_scale: float = 255, norm: str = "linf",
                 attacks: Sequence[str] = ATTACKS, steps: int = 100, limit: int | None = 500, seed: int = 0,
                 targets: int = 9, batch_size: int = 256):  # fmt: skip
        unknown = sorted(set(attacks) - set(ATTACKS))
        if unknown or norm not in ("linf", "l2"):
            raise ClipevalError(f"Attacks must be among {ATTACKS} and norm linf or l2 (got {list(attacks)}, {norm}).")
        self.dataset, self.eps, self.eps_scale, self.norm = dataset, [float(e) for e in eps], float(eps_scale), norm
        self.attacks, self.steps, self.limit, self.seed = list(attacks), int(steps), limit, int(seed)
        self.targets, self.batch_size = int(targets), int(batch_size)
        self._check_settings()

    def _check_settings(self) -> None:
        where = f"Adversarial evaluation of '{self.dataset}'"
        if not self.attacks or len(set(self.attacks)) != len(self.attacks):
            raise ClipevalError(f"{where}: 'attacks' must name each attack once, at least one (got {self.attacks}).")
        labels = [f"{e:g}" for e in self.eps]
        if not self.eps or not all(math.isfinite(e) and e >= 0 for e in self.eps) or len(set(labels)) != len(labels):
            raise ClipevalError(f"{where}: 'eps' must be distinct finite values >= 0, at least one (got {self.eps}).")
        if not (math.isfinite(self.eps_scale) and self.eps_scale > 0):
            raise ClipevalError(f"{where}: 'eps_scale' must be positive (got {self.eps_scale:g}).")
        for key in ("steps", "targets", "batch_size") + (("limit",) if self.limit is not None else ()):
            if int(getattr(self, key)) < 1:
                raise ClipevalError(f"{where}: '{key}' must be at least 1 (got {getattr(self, key)}).")

    def check(self, task) -> None:
        """Before anything is encoded: the dataset exists and the class names fit it."""
        task.source(self.dataset)
        task.check_classes(self.dataset)

    def evaluate(self, ctx: EvaluationContext) -> list[Record]:
        pixel, normalize = split_preprocess(ctx.model.preprocess)
        x, y, ids = self._sample(ctx, pixel)
        weights = ctx.classifier(self.dataset).to(ctx.runtime.device)
        ctx.check_labels(self.dataset, y, weights.shape[0])
        attacks, targets = self.plan(weights.shape[0], ctx.note)
        log.info(
            "Adversarial evaluation of %s: %d images, attacks %s at eps %s/%g, %d steps each",
            self.dataset,
            len(y),
            ", ".join(attacks) or "none",
            ", ".join(f"{e:g}" for e in self.eps),
            self.eps_scale,
            self.steps,
        )
        f = ZeroShotLogits(
            ctx.model, weights, normalize.to(ctx.runtime.device) if hasattr(normalize, "to") else normalize
        )
        params = [p for p in _weights(ctx.model) if p.requires_grad]
        for p in params:  # only the input needs gradients
            p.requires_grad_(False)
        try:
            outcomes = self._attack(
                f, x.to(ctx.runtime.device), y.to(ctx.runtime.device), attacks, targets, ctx.runtime
            )
        finally:
            for p in params:
                p.requires_grad_(True)
        return self._records(ctx, outcomes, ids, y, attacks, targets)

    def plan(self, num_classes: int, note: Callable[..., None]) -> tuple[list[str], int]:
        """(the attacks that are defined for ``num_classes`` classes, APGD-T's number of target classes).

        Each attack left out, and a reduced number of targets, is reported through ``note``
        (a message and details; RunContext.note logs it and puts it in results.json).
        """
        if num_classes < 2:
            raise ClipevalError(
                f"Adversarial evaluation of '{self.dataset}' needs at least 2 classes; the classifier has "
                f"{num_classes}, so every prediction is right whatever the attack. Check task.classnames."
            )
        attacks = list(self.attacks)
        if "apgd-t" in attacks and num_classes < DLR_TARGETED_MIN_CLASSES:
            attacks.remove("apgd-t")
            combined = f"robust_top1:worst combines {', '.join(attacks)} only" if attacks else "no attack ran"
            note(
                f"apgd-t was not run on '{self.dataset}': its targeted DLR loss needs at least "
                f"{DLR_TARGETED_MIN_CLASSES} classes and the classifier has {num_classes} (below that the loss is "
                f"undefined or constant; AutoAttack does not run it either). It has no records; {combined}.",
                dataset=self.dataset,
                not_run=["apgd-t"],
                worst_over=attacks,
            )
        targets = min(self.targets, num_classes - 1)
        if "apgd-t" in attacks and targets < self.targets:
            note(
                f"apgd-t on '{self.dataset}' attacks all {targets} wrong classes: targets={self.targets} was asked, "
                f"but a classifier with {num_classes} classes has only {targets}.",
                dataset=self.dataset,
                apgd_t_targets=targets,
            )
        return attacks, targets

    def _sample(self, ctx, pixel):
        data = ctx.images(self.dataset, pixel)
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(self.seed))
        chosen = sorted(order[: self.limit].tolist()) if self.limit else list(range(len(data)))
        items = [it for it in (data[i] for i in chosen) if it.error is None]
        if len(items) < len(chosen):
            log.warning(
                "Adversarial sample of %s: %d unreadable images left out", self.dataset, len(chosen) - len(items)
            )
        if not items:
            raise ClipevalError(f"Adversarial evaluation of '{self.dataset}': no readable image in the sample.")
        return (
            torch.stack([it.image for it in items]),
            torch.tensor([it.label for it in items]),
            [it.sample_id for it in items],
        )

    def _attack(self, f, x, y, attacks: list[str], targets: int, runtime) -> dict[str, torch.Tensor]:
        """Per-sample outcomes: "clean", "<attack>@<eps>" and, if an attack ran, "worst@<eps>"."""
        with torch.no_grad():
            clean_logits = torch.cat([f(b) for b in x.split(self.batch_size)])
        clean = clean_logits.argmax(1) == y
        wrong_first = clean_logits.scatter(1, y[:, None], float("-inf")).argsort(1, descending=True)
        # under torchrun, rank 0's: every rank then cuts the same batches (:func:`_each_batch`)
        clean, wrong_first = (t.to(x.device) for t in world().broadcast((clean.cpu(), wrong_first.cpu())))
        out = {"clean": clean.cpu()}
        # only the correctly classified samples are attacked (AutoAttack's rule): the rest are not robust
        attacked = clean.nonzero().flatten()
        batches = list(zip(*(t[attacked].split(self.batch_size) for t in (x, y, wrong_first)), strict=True))
        _log_span(len(batches))
        mine = len(world().span(len(batches))) if len(attacked) else 0
        total = len(self.eps) * len(attacks) * mine  # this rank's batches to attack, for the progress lines
        with progress(total, "attack", "batch", runtime, log) as bar:
            for eps in self.eps:
                e = eps / self.eps_scale
                worst = clean.clone()
                for attack in attacks:
                    start = time.perf_counter()
                    robust = torch.zeros_like(clean)
                    if len(attacked):
                        run = functools.partial(self._run, attack, f, eps=e, targets=targets)
                        outcomes = _each_batch(
                            lambda xb, yb, tb, run=run: run(xb, yb, wrong_first=tb),
                            batches,
                            f"{attack} at eps {eps:g}",
                            bar.update,
                        )
                        robust[attacked] = torch.cat(outcomes).to(robust.device)
                    out[f"{attack}@{eps:g}"] = robust.cpu()
                    worst &= robust
                    log.info(
                        "%s eps=%g/%g: robust top-1 %.3f (%.1f s)",
                        attack,
                        eps,
                        self.eps_scale,
                        robust.float().mean(),
                        time.perf_counter() - start,
                    )
                if attacks:
                    out[f"worst@{eps:g}"] = worst.cpu()
        return out

    def _run(self, attack: str, f, x, y, eps: float, wrong_first, targets: int) -> torch.Tensor:
        if attack == "pgd":
            advs = [pgd(f, x, y, eps, self.steps, norm=self.norm, seed=self.seed)]
        elif attack == "apgd-ce":
            advs = [apgd(f, x, y, eps, self.steps, norm=self.norm, loss="ce", seed=self.seed)]
        else:
            advs = [apgd(f, x, y, eps, self.steps, norm=self.norm, loss="dlr-t", target=wrong_first[:, t], seed=self.seed)
                    for t in range(targets)]  # fmt: skip
        robust = torch.ones(len(x), dtype=torch.bool, device=x.device)
        with torch.no_grad():
            for adv in advs:
                _check_ball(adv, x, eps, self.norm)
                robust &= f(adv).argmax(1) == y
        return robust

    def _records(self, ctx: EvaluationContext, outcomes: dict[str, torch.Tensor], ids: list[str], y: torch.Tensor,
                 attacks: list[str], targets: int) -> list[Record]:  # fmt: skip
        """clean_top1, and robust_top1 per eps and attack (``worst``: every attack) with params attack, norm, eps,
        eps_scale and the attack's strength (steps; APGD-T's number of target classes, for it and for the worst
        case it enters), so a weaker attack is another record, never an "improvement"; their per-sample
        outcomes are kept under the names of :meth:`_attack`."""
        n = len(ids)
        samples = ctx.keep_outcomes(self.dataset, ids, y, outcomes, name=f"{self.dataset}.adversarial")

        def record(metric: str, outcome: str, **params) -> Record:
            k = int(outcomes[outcome].sum())
            return Record(self.dataset, metric, k / n, n, clopper_pearson(k, n), params=params, samples=samples,
                          outcome=outcome)  # fmt: skip

        records = [record("clean_top1", "clean")]
        for eps in self.eps if attacks else []:
            setting = {"norm": self.norm, "eps": eps, "eps_scale": self.eps_scale, "steps": self.steps}
            for a in [*attacks, "worst"]:
                strength = {"targets": targets} if a == "apgd-t" or (a == "worst" and "apgd-t" in attacks) else {}
                records.append(record("robust_top1", f"{a}@{eps:g}", attack=a, **setting, **strength))
        return records


def _each_batch(
    attack: Callable[..., torch.Tensor], batches: list[tuple], what: str, done: Callable[[int], object]
) -> list[torch.Tensor]:
    """``attack(*batch)`` of every batch, in order, calling ``done(1)`` after each batch this process attacked.
    Under torchrun each rank attacks its span of the batches and every rank gets all the outcomes
    (:meth:`clipeval.distributed.World.each`); each attack is seeded per batch, so the outcomes do not depend on
    which rank ran them."""
    ranks = world()
    mine = ranks.span(len(batches))

    def work() -> list[torch.Tensor]:
        outcomes = []
        for i in mine:
            outcomes.append(attack(*batches[i]).cpu())
            done(1)
        return outcomes

    shares = ranks.each(work, f"attacking ({what})")
    return [outcome for share in shares for outcome in share]


def _log_span(batches: int) -> None:
    ranks = world()
    if ranks.distributed:
        mine = ranks.span(batches)
        log.info(
            "Rank %d of %d attacks batches %s of %d",
            ranks.rank,
            ranks.size,
            f"{mine.start}-{mine.stop - 1}" if mine else "none",
            batches,
        )


def _weights(model) -> list[torch.nn.Parameter]:
    """The model's parameters (its own ``parameters()``, else its wrapped module's), to freeze during an attack."""
    for owner in (model, getattr(model, "model", None)):
        if callable(getattr(owner, "parameters", None)):
            return list(owner.parameters())
    return []


def _check_ball(adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> None:
    delta = (adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    if (size > eps * (1 + 1e-5) + 1e-7).any() or adv.min() < 0 or adv.max() > 1:
        raise RuntimeError("an attack left the eps-ball or [0, 1]; this is a bug in clipeval")
