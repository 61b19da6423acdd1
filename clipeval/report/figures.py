"""Effective-robustness figures (matplotlib, headless)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

from clipeval.atomic import atomic_write  # noqa: E402
from clipeval.report.logit_fit import band, inverse_logit, logit  # noqa: E402
from clipeval.report.robustness import RobustnessReport, ShiftResult  # noqa: E402
from clipeval.results.record import Record  # noqa: E402

LIMIT = (0.005, 0.998)  # accuracies are clipped here: logit axes cannot show 0 or 1
TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)
MODEL_COLOR = "tab:red"


def logit_limits(values: np.ndarray, margin: float = 0.6) -> tuple[float, float]:
    """The values' range on the logit scale, widened by ``margin`` logit units, within :data:`LIMIT`."""
    z = logit(np.clip(np.asarray(values, float), *LIMIT))
    z = z[np.isfinite(z)]
    return float(max(LIMIT[0], inverse_logit(z.min() - margin))), float(min(LIMIT[1], inverse_logit(z.max() + margin)))


@FuncFormatter
def _percent(value: float, _pos: int) -> str:
    pct = 100 * value
    return f"{pct:.0f}%" if 1 <= pct <= 99 else f"{pct:.1f}%"


def logit_axes(ax, limits: tuple[float, float]) -> None:
    """Logit-scaled axes with percent tick labels, as the robustness papers draw them."""
    ax.set_xscale("logit")
    ax.set_yscale("logit")
    ax.set_xlim(*limits)
    ax.set_ylim(*limits)
    ticks: list[float] = []
    for t in (t for t in TICKS if limits[0] <= t <= limits[1]):  # no two labels closer than 0.8 in logit
        if not ticks or logit(t) - logit(ticks[-1]) >= 0.8:
            ticks.append(t)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_ticks(ticks)
        axis.set_major_formatter(_percent)
        axis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3, which="major")


def shift_panel(ax, result: ShiftResult, model: str) -> None:
    base = result.baselines
    ident, shift = result.in_distribution, result.shift
    limits = logit_limits(np.concatenate([base["id"], base["shift"], [*ident.ci, *shift.ci]]))
    grid = np.linspace(*limits, 200)
    lo, hi = band(result.fits, grid)
    ax.fill_between(grid, lo, hi, color="0.5", alpha=0.2, lw=0, label="fit, 95% bootstrap band", zorder=1)
    ax.scatter(base["id"], base["shift"], s=16, color="0.55", label=f"baseline models ({len(base)})", zorder=2)
    ax.plot(grid, result.fit.predict(grid), color="0.25", lw=1.2, label="baseline fit (logit-linear)", zorder=2)
    ax.plot(grid, grid, ls="--", color="0.7", lw=1, label="y = x", zorder=0)
    x_err = [[ident.top1 - ident.ci[0]], [ident.ci[1] - ident.top1]]
    y_err = [[shift.top1 - shift.ci[0]], [shift.ci[1] - shift.top1]]
    ax.errorbar(
        ident.top1,
        shift.top1,
        xerr=x_err,
        yerr=y_err,
        fmt="*",
        ms=13,
        color=MODEL_COLOR,
        capsize=2,
        label=model,
        zorder=4,
    )
    ax.annotate(f"ER {100 * result.effective_robustness:+.1f} pp", (ident.top1, shift.top1), xytext=(-10, 10),
                textcoords="offset points", ha="right", color=MODEL_COLOR, fontsize=9)  # fmt: skip
    logit_axes(ax, limits)
    ax.set_title(shift.name)
    ax.set_xlabel(
        f"in-distribution top-1 ({', '.join(ident.datasets)})" if len(ident.datasets) == 1 else "in-distribution top-1"
    )
    ax.set_ylabel(f"{shift.name} top-1")


def scatter_grid(report: RobustnessReport, model: str, path: Path) -> Path:
    """One panel per shift: baselines, their fit and band, y = x, and the evaluated model."""
    return save(scatter_grid_figure(report, model), path)


def scatter_grid_figure(report: RobustnessReport, model: str):
    n = len(report.shifts)
    cols = min(3 if n > 4 else 2, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.6 * rows), squeeze=False)
    for ax, result in zip(axes.flat, report.shifts, strict=False):
        shift_panel(ax, result, model)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(loc="upper left", fontsize=7)
    label, value, (lo, hi) = report.headline
    fig.suptitle(f"Effective robustness of {model}: {label} {100 * value:+.1f} pp [{100 * lo:+.1f}, {100 * hi:+.1f}] "
                 f"({n} shifts; logit axes)")  # fmt: skip
    fig.tight_layout()
    return fig


def save(fig, path: Path) -> Path:
    """PNG, PDF or SVG by the file's suffix; written atomically."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=120))
    plt.close(fig)
    return path


def paired_bars(report: RobustnessReport, model: str, path: Path) -> Path:
    """The CLIP paper's Figure 13 (right): per shift, a supervised model of the same
    in-distribution accuracy (the baselines' fit read off there) next to the evaluated model."""
    shifts = report.shifts
    y = np.arange(len(shifts))[::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.7 * len(shifts) + 1.8))
    base = [100 * s.prediction for s in shifts]
    ours = [100 * s.shift.top1 for s in shifts]
    ax.barh(y + 0.2, base, height=0.4, color="0.6", label="supervised baseline at the same in-distribution top-1 (fit)")
    ax.barh(y - 0.2, ours, height=0.4, color=MODEL_COLOR, label=model)
    for yi, result, b, o in zip(y, shifts, base, ours, strict=True):
        lo, hi = result.effective_robustness_ci
        ax.text(max(b, o) + 1, yi, f"{o - b:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]", va="center", fontsize=8,
                color="tab:green" if lo > 0 else ("tab:red" if hi < 0 else "0.3"))  # fmt: skip
    ax.set_yticks(y, [s.shift.name for s in shifts])
    ax.set_xlim(0, 115)
    ax.set_xlabel("top-1 (%)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=1)
    ax.set_title(f"{model} vs the supervised line (differences in pp, 95% intervals)")
    fig.tight_layout()
    return save(fig, path)


def average_panel(report: RobustnessReport, model: str, path: Path) -> Path:
    """The CLIP paper's Figure 13 (left): mean accuracy over the shifts against in-distribution accuracy."""
    return save(average_panel_figure(report, model), path)


def average_panel_figure(report: RobustnessReport, model: str):
    """Baselines' (in-distribution, mean over shifts), their fit and bootstrap band, y = x, and the model
    with its intervals, annotated with the report's headline effective robustness (``report.average``)."""
    avg = report.average
    if avg is None:
        raise ValueError("these baselines give no average over shifts")
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    (x_lo, x_hi), (y_lo, y_hi) = avg.in_distribution.ci, avg.mean_top1_ci
    limits = logit_limits(np.concatenate([avg.baselines["id"], avg.baselines["shift"], [x_lo, x_hi, y_lo, y_hi]]))
    grid = np.linspace(*limits, 200)
    lo, hi = band(avg.fits, grid)
    ax.fill_between(grid, lo, hi, color="0.5", alpha=0.2, lw=0, label="fit, 95% bootstrap band", zorder=1)
    ax.scatter(avg.baselines["id"], avg.baselines["shift"], s=16, color="0.55",
               label=f"baseline models ({len(avg.baselines)})", zorder=2)  # fmt: skip
    ax.plot(grid, avg.fit.predict(grid), color="0.25", lw=1.2, label="baseline fit (logit-linear)", zorder=2)
    ax.plot(grid, grid, ls="--", color="0.7", lw=1, label="y = x", zorder=0)
    ax.errorbar(avg.id_top1, avg.mean_top1, xerr=[[avg.id_top1 - x_lo], [x_hi - avg.id_top1]],
                yerr=[[avg.mean_top1 - y_lo], [y_hi - avg.mean_top1]], fmt="*", ms=13, color=MODEL_COLOR,
                capsize=2, label=model, zorder=4)  # fmt: skip
    er, (e_lo, e_hi) = avg.effective_robustness, avg.effective_robustness_ci
    ax.annotate(f"ER {100 * er:+.1f} pp [{100 * e_lo:+.1f}, {100 * e_hi:+.1f}]", (avg.id_top1, avg.mean_top1),
                xytext=(-10, 10), textcoords="offset points", ha="right", color=MODEL_COLOR)  # fmt: skip
    logit_axes(ax, limits)
    ax.set_title(f"average over {len(avg.shifts)} shifts")
    ax.set_xlabel(f"in-distribution top-1 ({', '.join(avg.in_distribution.datasets)})")
    ax.set_ylabel(f"mean top-1 over {len(avg.shifts)} shifts")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def few_shot_curve(ks, means, stds, zero_shot: float, match: float | None, model: str, path: Path) -> Path:
    """The CLIP paper's Figures 6-7: few-shot linear-probe accuracy against k, zero-shot as a line."""
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    means, stds = np.asarray(means), np.asarray(stds)
    ax.errorbar(
        ks,
        100 * means,
        yerr=100 * stds,
        marker="o",
        capsize=3,
        color="0.3",
        label="few-shot linear probe (mean ± sd over seeds)",
    )
    ax.axhline(100 * zero_shot, color=MODEL_COLOR, ls="--", label=f"zero-shot {model}")
    if match is not None:
        ax.axvline(match, color=MODEL_COLOR, lw=0.8, alpha=0.6)
        ax.annotate(
            f"matches zero-shot at k ≈ {match:.1f}",
            (match, 100 * zero_shot),
            xytext=(6, -14),
            textcoords="offset points",
            fontsize=8,
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("labelled examples per class (k)")
    ax.set_ylabel("top-1 (%)")
    ax.set_ylim(top=min(100.0, ax.get_ylim()[1]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save(fig, path)


def robust_accuracy_curve(clean: Record, robust: list[Record], model: str, path: Path) -> Path:
    """Robust top-1 against eps, one line per attack (``worst``: the per-sample worst case); eps = 0 is clean.

    ``robust``: robust_top1 records of one dataset and norm (params attack, eps, eps_scale, norm)."""
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    attacks = sorted({r.params["attack"] for r in robust}, key=lambda a: (a == "worst", a))
    for attack in attacks:
        points = sorted((float(r.params["eps"]), r.value) for r in robust if r.params["attack"] == attack)
        style = {"color": MODEL_COLOR, "lw": 2} if attack == "worst" else {"lw": 1}
        ax.plot([0.0, *(e for e, _ in points)], [100 * clean.value, *(100 * v for _, v in points)], marker="o",
                label="worst case over attacks" if attack == "worst" else attack, **style)  # fmt: skip
    scale = float(robust[0].params.get("eps_scale", 1))
    unit = f"{robust[0].params.get('norm')}, eps in units of 1" + (f"/{scale:g}" if scale != 1 else "")
    ax.set_xlabel(f"eps ({unit})")
    ax.set_ylabel("top-1 (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Adversarial robustness of zero-shot {model}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def record_figures(records: list[Record], model: str, out: Path) -> list[Path]:
    """Figures drawn from records alone: per few-shot probe (``few_shot.png``) and per attacked dataset and
    norm (``robust_accuracy.png``); a task's name is added to the file name when several tasks have one."""
    written = []
    few = [r for r in records if r.metric == "top1" and r.params.get("probe") == "few-shot"]
    groups = sorted({(r.task, r.dataset) for r in few})
    for task, dataset in groups:
        mine = [r for r in few if (r.task, r.dataset) == (task, dataset)]
        zero = next((r for r in mine if r.params["k"] == 0), None)
        shots = sorted((r for r in mine if r.params["k"] > 0), key=lambda r: r.params["k"])
        if zero is None or not shots:
            continue
        match = next((r.value for r in records if r.metric == "k_matching_zero_shot" and (r.task, r.dataset) ==
                      (task, dataset)), None)  # fmt: skip
        name = "few_shot.png" if len(groups) == 1 else f"few_shot_{task}_{dataset}.png"
        written.append(few_shot_curve([r.params["k"] for r in shots], [r.value for r in shots],
                                      [r.std or 0.0 for r in shots], zero.value, match, model, out / name))  # fmt: skip
    robust = [r for r in records if r.metric == "robust_top1"]
    settings = sorted({(r.task, r.dataset, str(r.params.get("norm"))) for r in robust})
    for task, dataset, norm in settings:
        clean = next((r for r in records if r.metric == "clean_top1" and (r.task, r.dataset) == (task, dataset)), None)
        mine = [r for r in robust if (r.task, r.dataset, str(r.params.get("norm"))) == (task, dataset, norm)]
        if clean is None:
            continue
        name = "robust_accuracy.png" if len(settings) == 1 else f"robust_accuracy_{task}_{dataset}_{norm}.png"
        written.append(robust_accuracy_curve(clean, mine, model, out / name))
    return written
