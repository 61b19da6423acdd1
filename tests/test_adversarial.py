"""Attacks on the tiny CLIP's zero-shot classifier: the sanity checks every robustness paper owes."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from conftest import compose_config

from clipeval.embedded import digits
from clipeval.evaluators.adversarial import split_preprocess
from clipeval.evaluators.attacks import ZeroShotLogits, apgd, pgd
from clipeval.models.open_clip import OpenClipEncoder


@pytest.fixture(scope="module")
def attacked():
    """(f, x, y): the tiny model's zero-shot logits as a function of [0, 1] pixels, 60 test digits."""
    cfg = compose_config(["model=tiny_digits"])
    model = OpenClipEncoder(**{k: v for k, v in cfg.model.items() if k != "_target_"})
    model.model.requires_grad_(False)
    pixel, normalize = split_preprocess(model.preprocess)
    x_all, y_all = digits.splits()["test"]
    x = torch.stack([pixel(digits.to_pil(im)) for im in x_all[:60]])
    prompts = ["a photo of the number {c}."]
    with torch.no_grad():
        w = torch.stack(
            [model.encode_text(model.tokenize([p.replace("{c}", c) for p in prompts]))[0] for c in digits.CLASSNAMES]
        )
    return ZeroShotLogits(model, w, normalize), x, torch.tensor(y_all[:60])


def robust(f, x_adv, y) -> float:
    with torch.no_grad():
        return float((f(x_adv).argmax(1) == y).float().mean())


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("attack", ["pgd", "apgd-ce", "apgd-t"])
def test_adversarial_images_stay_in_the_ball_and_in_range(attacked, attack, norm):
    f, x, y = attacked
    eps = 8 / 255 if norm == "linf" else 0.5
    with torch.no_grad():
        target = f(x).scatter(1, y[:, None], float("-inf")).argmax(1)
    adv = {"pgd": lambda: pgd(f, x, y, eps, 10, norm=norm),
           "apgd-ce": lambda: apgd(f, x, y, eps, 10, norm=norm),
           "apgd-t": lambda: apgd(f, x, y, eps, 10, norm=norm, loss="dlr-t", target=target)}[attack]()  # fmt: skip
    delta = (adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-6).all() and adv.min() >= 0 and adv.max() <= 1
    assert robust(f, adv, y) < robust(f, x, y)  # and it does attack


def test_eps_zero_is_clean_and_accuracy_falls_with_eps(attacked):
    f, x, y = attacked
    clean = robust(f, x, y)
    assert robust(f, pgd(f, x, y, 0.0), y) == clean == robust(f, apgd(f, x, y, 0.0), y)
    accs = [robust(f, apgd(f, x, y, e / 255, 20), y) for e in (1, 4, 8, 16)]
    assert all(a >= b for a, b in zip([clean, *accs], accs, strict=False)), accs
    assert accs[-1] < 0.1


def test_more_iterations_do_not_raise_robust_accuracy(attacked):
    f, x, y = attacked
    short, long = robust(f, apgd(f, x, y, 4 / 255, 10), y), robust(f, apgd(f, x, y, 4 / 255, 50), y)
    assert long <= short + 2 / len(y)


def test_gradients_reach_the_input(attacked):
    f, x, y = attacked
    xg = x[:4].clone().requires_grad_(True)
    F.cross_entropy(f(xg), y[:4]).backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_pgd_agrees_with_an_independent_implementation(attacked):
    """A from-scratch L-inf PGD (no random start, same step size): robust accuracy within one sample."""
    f, x, y = attacked
    eps, steps = 4 / 255, 20
    step = 2.5 * eps / steps
    adv, fooled_ever = x.clone(), torch.zeros(len(y), dtype=torch.bool)
    for _ in range(steps):
        adv.requires_grad_(True)
        logits = f(adv)
        fooled_ever |= (logits.argmax(1) != y).detach()
        grad = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), adv)[0]
        adv = torch.min(torch.max(adv.detach() + step * grad.sign(), x - eps), x + eps).clamp(0, 1)
    with torch.no_grad():
        fooled_ever |= f(adv).argmax(1) != y
    independent = 1 - float(fooled_ever.float().mean())
    ours = robust(f, pgd(f, x, y, eps, steps, random_start=False), y)
    assert abs(ours - independent) <= 1 / len(y)


def test_the_task_reports_per_eps_and_attack(tmp_path, caplog):
    from conftest import run_in_process

    caplog.set_level(logging.INFO, logger="clipeval")
    doc = run_in_process(
        ["task=digits_adversarial", "task.evaluators.adversarial.eps=[0,8]", "task.evaluators.adversarial.steps=5",
         "task.evaluators.adversarial.limit=40", "task.evaluators.adversarial.targets=2"],
        tmp_path / "adv",
    )  # fmt: skip
    rec = {(r["dataset"], r["metric"], r.get("params", {}).get("attack"), r.get("params", {}).get("eps")): r
           for r in doc["records"]}  # fmt: skip
    clean = rec[("test", "clean_top1", None, None)]["value"]
    assert rec[("test", "robust_top1", "worst", 0.0)]["value"] == clean
    worst8 = rec[("test", "robust_top1", "worst", 8.0)]["value"]
    assert worst8 <= min(rec[("test", "robust_top1", a, 8.0)]["value"] for a in ("pgd", "apgd-ce", "apgd-t"))
    assert rec[("test", "clean_top1", None, None)]["n"] == 40
    robust = [r for r in doc["records"] if r["metric"] == "robust_top1"]
    assert len(robust) == 2 * 4  # two eps, three attacks and the worst case
    assert all(r["params"]["norm"] == "linf" and r["params"]["eps_scale"] == 255.0 for r in robust)
    assert (tmp_path / "adv" / "robust_accuracy.png").is_file()
    assert "Adversarial evaluation of test: 40 images, attacks pgd, apgd-ce, apgd-t at eps 0, 8/255, 5 steps each" in (
        caplog.text
    )  # said before the attacks start


def test_attacks_agree_with_torchattacks(attacked):
    """An independent implementation (torchattacks 3.5.1, installed by .ci/run with --no-deps because it
    pins requests~=2.25.1): robust accuracies agree within 2 of the 60 samples."""
    torchattacks = pytest.importorskip("torchattacks")
    f, x, y = attacked
    tolerance = 2 / len(y)
    for eps in (4 / 255,):
        theirs = {
            "apgd-ce": torchattacks.APGD(f, norm="Linf", eps=eps, steps=50, n_restarts=1, loss="ce", seed=0)(x, y),
            "apgd-t": torchattacks.APGDT(f, norm="Linf", eps=eps, steps=50, n_restarts=1, n_classes=10, seed=0)(x, y),
            "pgd": torchattacks.PGD(f, eps=eps, alpha=2.5 * eps / 50, steps=50, random_start=True)(x, y),
        }
        with torch.no_grad():
            wrong_first = f(x).scatter(1, y[:, None], float("-inf")).argsort(1, descending=True)
        targeted = [apgd(f, x, y, eps, 50, loss="dlr-t", target=wrong_first[:, t]) for t in range(9)]
        with torch.no_grad():
            ours_t = float(torch.stack([f(a).argmax(1) == y for a in targeted]).all(0).float().mean())
        ours = {
            "apgd-ce": robust(f, apgd(f, x, y, eps, 50), y),
            "apgd-t": ours_t,
            "pgd": robust(f, pgd(f, x, y, eps, 50), y),
        }
        for attack, adv in theirs.items():
            assert abs(ours[attack] - robust(f, adv, y)) <= tolerance, (attack, eps, ours[attack], robust(f, adv, y))
