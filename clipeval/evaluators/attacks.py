"""White-box attacks on zero-shot classifiers: PGD, APGD-CE and targeted APGD (APGD-T).

The attacked function takes images in [0, 1] at the model's input resolution and returns
zero-shot logits: normalisation, the image tower, L2 normalisation and the product with the
class prototypes all sit inside it, so gradients flow from the logits to the pixels. The
perturbation is bounded in that pixel space (the RobustBench convention).

APGD follows Croce and Hein (2020): a step size that starts at 2·eps and halves at
checkpoints when progress stalls, momentum 0.75, and restarts from the best point found.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

Logits = Callable[[torch.Tensor], torch.Tensor]

#: the fewest classes the targeted DLR loss (APGD-T) is defined for: its denominator uses z_pi3 and z_pi4
DLR_TARGETED_MIN_CLASSES = 4


class ZeroShotLogits(torch.nn.Module):
    """x in [0, 1] -> logit_scale · normalised image embedding · class prototypes."""

    def __init__(self, model, weights: torch.Tensor, normalize: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.model, self.normalize = model, normalize
        self.register_buffer("weights", weights)
        self.scale = model.logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.model.encode_image(self.normalize(x)) @ self.weights.T


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Back into the eps-ball around x and into [0, 1]."""
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        scale = (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
        delta = delta * scale.view(-1, *[1] * (x.dim() - 1))
    return (x + delta).clamp(0, 1)


def _ascent(grad: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return grad.sign()
    return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (grad.dim() - 1))


def _random_start(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    noise = torch.rand(x.shape, generator=gen, device="cpu").to(x) * 2 - 1
    if norm == "l2":
        noise = _ascent(noise, "l2") * eps * torch.rand(len(x), generator=gen).to(x).view(-1, *[1] * (x.dim() - 1))
    else:
        noise = noise * eps
    return project(x + noise, x, eps, norm)


def _check_budget(eps: float, steps: int) -> None:
    if not (math.isfinite(eps) and eps >= 0) or steps < 1:
        raise ValueError(f"an attack needs a finite eps >= 0 and at least one step (got eps={eps}, steps={steps})")


def _grad(f: Logits, x: torch.Tensor, loss_fn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    logits = f(x)
    losses = loss_fn(logits)
    (grad,) = torch.autograd.grad(losses.sum(), x)
    return grad.detach(), losses.detach(), logits.detach()


def pgd(f: Logits, x, y, eps: float, steps: int = 100, step_size: float | None = None, norm: str = "linf",
        random_start: bool = True, seed: int = 0) -> torch.Tensor:  # fmt: skip
    """Projected gradient ascent on cross-entropy (Madry et al. 2018); keeps the first misclassifying point.

    Raises ValueError for a negative eps or fewer than one step.
    """
    _check_budget(eps, steps)
    if eps == 0:
        return x.clone()
    step_size = step_size or 2.5 * eps / steps
    x_adv = _random_start(x, eps, norm, torch.Generator().manual_seed(seed)) if random_start else x.clone()
    x_out, fooled = x_adv.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(steps):
        grad, _, logits = _grad(f, x_adv, lambda z: F.cross_entropy(z, y, reduction="none"))
        newly = (logits.argmax(1) != y) & ~fooled
        x_out[newly], fooled = x_adv[newly], fooled | newly
        x_adv = project(x_adv + step_size * _ascent(grad, norm), x, eps, norm)
    with torch.no_grad():
        newly = (f(x_adv).argmax(1) != y) & ~fooled
    x_out[newly], fooled = x_adv[newly], fooled | newly
    x_out[~fooled] = x_adv[~fooled]
    return x_out.detach()


def dlr_targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2), the targeted DLR loss of AutoAttack.

    z_pi1 >= z_pi2 >= ... are the sorted logits, so the loss needs at least
    :data:`DLR_TARGETED_MIN_CLASSES` classes: with two the ratio is the constant ±1 (no
    gradient, so the attack never moves), and AutoAttack refuses fewer than four
    (``autoattack/checks.py``, ``check_n_classes``). Raises ValueError below that.
    """
    if logits.shape[1] < DLR_TARGETED_MIN_CLASSES:
        raise ValueError(
            f"the targeted DLR loss needs at least {DLR_TARGETED_MIN_CLASSES} classes, got {logits.shape[1]}"
        )
    ordered = logits.sort(dim=1, descending=True).values
    denom = ordered[:, 0] - (ordered[:, 2] + ordered[:, 3]) / 2 + 1e-12
    return -(logits.gather(1, y[:, None])[:, 0] - logits.gather(1, target[:, None])[:, 0]) / denom


def _checkpoints(steps: int) -> list[int]:
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(q * steps) for q in p[1:] if q <= 1})


def apgd(f: Logits, x, y, eps: float, steps: int = 100, norm: str = "linf", loss: str = "ce",
         target: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:  # fmt: skip
    """Auto-PGD (Croce and Hein 2020) with cross-entropy, or targeted DLR towards ``target``.

    Raises ValueError for a negative eps, fewer than one step, an unknown loss, or the
    targeted DLR loss without targets or on fewer than :data:`DLR_TARGETED_MIN_CLASSES` classes.
    """
    _check_budget(eps, steps)
    if loss not in ("ce", "dlr-t") or (loss == "dlr-t" and target is None):
        raise ValueError(f"loss must be 'ce', or 'dlr-t' with a target (got {loss!r}, target {target is not None})")
    if eps == 0:
        return x.clone()

    def loss_on(mask: torch.Tensor):
        if loss == "ce":
            return lambda z: F.cross_entropy(z, y[mask], reduction="none")
        return lambda z: dlr_targeted(z, y[mask], target[mask])

    everyone = torch.ones(len(x), dtype=torch.bool, device=x.device)
    loss_fn = loss_on(everyone)
    shape = (-1, *[1] * (x.dim() - 1))
    gen = torch.Generator().manual_seed(seed)
    x_adv = _random_start(x, eps, norm, gen)
    eta = torch.full((len(x),), 2 * eps, device=x.device)
    grad, cur, logits = _grad(f, x_adv, loss_fn)
    best_loss, x_best = cur.clone(), x_adv.clone()
    x_fool = x_adv.clone()
    fooled = logits.argmax(1) != y
    x_prev = x_adv.clone()
    checks = _checkpoints(steps)
    last_check, successes = 0, torch.zeros(len(x), device=x.device)
    eta_at_check, best_at_check = eta.clone(), best_loss.clone()
    for k in range(steps):
        z = project(x_adv + eta.view(shape) * _ascent(grad, norm), x, eps, norm)
        alpha = 1.0 if k == 0 else 0.75
        x_new = project(x_adv + alpha * (z - x_adv) + (1 - alpha) * (x_adv - x_prev), x, eps, norm)
        x_prev = x_adv
        grad_new, cur, logits = _grad(f, x_new, loss_fn)
        now_fooled = logits.argmax(1) != y
        x_fool[now_fooled & ~fooled] = x_new[now_fooled & ~fooled]
        fooled |= now_fooled
        improved = cur > best_loss
        successes += improved.float()
        best_loss = torch.where(improved, cur, best_loss)
        x_best[improved] = x_new[improved]
        x_adv, grad = x_new, grad_new
        if k + 1 in checks:
            window = k + 1 - last_check
            stalled = (successes < 0.75 * window) | ((eta == eta_at_check) & (best_loss == best_at_check))
            eta = torch.where(stalled, eta / 2, eta)
            if stalled.any():  # restart the stalled samples from their best point
                x_adv[stalled] = x_best[stalled]
                x_prev[stalled] = x_best[stalled]
                grad[stalled] = _grad(f, x_best[stalled], loss_on(stalled))[0]
            last_check, successes = k + 1, torch.zeros_like(successes)
            eta_at_check, best_at_check = eta.clone(), best_loss.clone()

    return torch.where(fooled.view(shape), x_fool, x_best).detach()
