"""Effective-robustness figures (matplotlib, headless), drawn as a paper would print them.

Every figure follows the same rules, which the tests check on the Figure objects:

- each interval the data has is drawn (error bars on points, bands on fits and lines), not only written;
- each figure has a title, and each panel its own; titles and labels that name a model are wrapped
  (:func:`fitted`) so that nothing is cut off at the figure's edges, however long the model's name;
- no text is drawn inside a plotting area, over points or lines: numbers go to titles, legends, a
  secondary axis' tick labels or notes under the x-axis label, and legends sit outside the axes;
- accuracy axes end at 100% (logit axes below it, at 99.8%);
- a number shown on a figure is the table's cell for the same record, formatted by the same function
  (:mod:`clipeval.report.tables`).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.font_manager import FontProperties  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

from clipeval.atomic import atomic_write, safe_file_name  # noqa: E402
from clipeval.report.logit_fit import band, inverse_logit, logit  # noqa: E402
from clipeval.report.robustness import RobustnessReport, ShiftResult  # noqa: E402
from clipeval.report.tables import er_text, interval, page_number, points  # noqa: E402
from clipeval.results.record import Record  # noqa: E402

LIMIT = (0.005, 0.998)  # accuracies are clipped here: logit axes cannot show 0 or 1
TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)
MODEL_COLOR = "tab:red"
EM_PER_CHARACTER = (
    0.7  # DejaVu Sans, matplotlib's default font: wider than its average letter (w, m: 0.8), so lines fit
)


def fitted(text: str, inches: float, fontsize: float | str = "large") -> str:
    """``text`` with each line wrapped at spaces to fit ``inches`` at ``fontsize`` (points, or a matplotlib size
    name; titles are "large"). A model's name can be long (``tiny (ckpt_100) · open_clip ViT-B-32 laion2b...``)."""
    points = FontProperties(size=fontsize).get_size_in_points()
    width = max(20, int(inches * 72 / (EM_PER_CHARACTER * points)))
    return "\n".join(textwrap.fill(line, width, break_on_hyphens=False) or line for line in text.splitlines())


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
        label=fitted(f"{model} (95% intervals)", ax.figure.get_figwidth() / 3, 7),  # the legend has 3 columns
        zorder=4,
    )
    logit_axes(ax, limits)
    ax.set_title(f"{shift.name}\n{er_text(result.effective_robustness, result.effective_robustness_ci)}", fontsize=10)
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
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    label, value, ci = report.headline
    title = f"Effective robustness of {model}: {label} {er_text(value, ci)} ({n} shifts; logit axes)"
    fig.suptitle(fitted(title, fig.get_figwidth()))
    fig.tight_layout(rect=(0, 0.5 / fig.get_figheight(), 1, 1))  # the legend's two rows below the panels
    return fig


def save(fig, path: Path) -> Path:
    """PNG, PDF or SVG by the file's suffix; written atomically."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=120))
    plt.close(fig)
    return path


def paired_bars(report: RobustnessReport, model: str, path: Path) -> Path:
    """The CLIP paper's Figure 13 (right): per shift, a supervised model of the same in-distribution accuracy
    (the baselines' fit read off there) next to the evaluated model."""
    return save(paired_bars_figure(report, model), path)


def paired_bars_figure(report: RobustnessReport, model: str):
    """Bars with their 95% intervals (the fit's band at the model's in-distribution interval, the model's
    Clopper–Pearson interval); each shift's effective robustness, as the table shows it, on the right axis."""
    shifts = report.shifts
    y = np.arange(len(shifts))[::-1]
    fig, ax = plt.subplots(figsize=(8.2, 0.7 * len(shifts) + 2.0))
    for offset, color, label, values in (
        (0.2, "0.6", "supervised baseline at the same in-distribution top-1 (fit)",
         [(s.prediction, s.prediction_interval) for s in shifts]),
        (-0.2, MODEL_COLOR, model, [(s.shift.top1, s.shift.ci) for s in shifts]),
    ):  # fmt: skip
        width = np.array([100 * v for v, _ in values])
        err = np.array([[100 * (v - lo), 100 * (hi - v)] for v, (lo, hi) in values]).T
        ax.barh(y + offset, width, height=0.4, color=color, xerr=err, capsize=2,
                error_kw={"elinewidth": 0.8, "ecolor": "0.15"},
                label=fitted(f"{label} (95% interval)", fig.get_figwidth(), 7))  # fmt: skip
    ax.set_yticks(y, [s.shift.name for s in shifts])
    ax.set_xlim(0, 100)
    ax.set_xlabel("top-1 (%)")
    right = ax.secondary_yaxis("right")
    right.set_yticks(y, [f"{points(s.effective_robustness)} {interval(s.effective_robustness_ci, points)}"
                         for s in shifts])  # fmt: skip
    for tick, s in zip(right.get_yticklabels(), shifts, strict=True):
        lo, hi = s.effective_robustness_ci
        tick.set_color("tab:green" if lo > 0 else ("tab:red" if hi < 0 else "0.3"))
    right.set_ylabel("effective robustness, pp [95% interval]", fontsize=8)
    right.tick_params(labelsize=8)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
    ax.set_title(fitted(f"{model} vs the supervised line: top-1 per shift (95% intervals)", fig.get_figwidth()))
    fig.tight_layout()
    return fig


def average_panel(report: RobustnessReport, model: str, path: Path) -> Path:
    """The CLIP paper's Figure 13 (left): mean accuracy over the shifts against in-distribution accuracy."""
    return save(average_panel_figure(report, model), path)


def average_panel_figure(report: RobustnessReport, model: str):
    """Baselines' (in-distribution, mean over shifts), their fit and bootstrap band, y = x, and the model
    with its intervals, annotated with the report's headline effective robustness (``report.average``)."""
    avg = report.average
    if avg is None:
        raise ValueError("these baselines give no average over shifts")
    fig, ax = plt.subplots(figsize=(5.6, 5.6))
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
                capsize=2, label=fitted(f"{model} (95% intervals)", fig.get_figwidth() / 2 - 0.6, 7), zorder=4)  # fmt: skip
    logit_axes(ax, limits)
    ax.set_title(fitted(f"{model}: average over {len(avg.shifts)} shifts", fig.get_figwidth(), 10) + "\n"
                 + er_text(avg.effective_robustness, avg.effective_robustness_ci), fontsize=10)  # fmt: skip
    ax.set_xlabel(f"in-distribution top-1 ({', '.join(avg.in_distribution.datasets)})")
    ax.set_ylabel(f"mean top-1 over {len(avg.shifts)} shifts")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def note_below(ax, text: str, gid: str, color: str = "0.3", fontsize: float = 6.5):
    """A note about a panel, under its x-axis label (and under the notes already there), never over its data."""
    below = [t for t in ax.texts if getattr(t, "_clipeval_note", False)]
    anchor = below[-1] if below else ax.xaxis.label
    note = ax.annotate(text, xy=(0.5, 0), xycoords=anchor, xytext=(0, -3), textcoords="offset points", ha="center",
                       va="top", fontsize=fontsize, color=color, gid=gid, annotation_clip=False)  # fmt: skip
    note._clipeval_note = True
    return note


def cap_percent(ax, axis: str = "y") -> None:
    """An axis in percent ends at 100% (and starts at 0% or above)."""
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    limits = (max(0.0, lo), min(100.0, hi))
    (ax.set_ylim if axis == "y" else ax.set_xlim)(*limits)


def few_shot_curve(ks, means, stds, zero_shot: float, match: float | None, model: str, path: Path, cis=None,
                   zero_ci: tuple[float, float] | None = None, title: str | None = None) -> Path:  # fmt: skip
    """The CLIP paper's Figures 6-7: few-shot linear-probe accuracy against k, zero-shot as a line.

    ``cis``: each k's 95% interval (the records'), drawn as error bars; ``stds``: the spread over seeds, a band;
    ``zero_ci``: zero-shot's interval, a band around its line. Without ``cis`` the error bars are ± sd."""
    return save(few_shot_figure(ks, means, stds, zero_shot, match, model, cis, zero_ci, title), path)


def few_shot_figure(ks, means, stds, zero_shot: float, match: float | None, model: str, cis=None,
                    zero_ci: tuple[float, float] | None = None, title: str | None = None):  # fmt: skip
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    means, stds = 100 * np.asarray(means, float), 100 * np.asarray(stds, float)
    if cis is not None:
        cis = 100 * np.asarray(cis, float)
        err, what = np.array([means - cis[:, 0], cis[:, 1] - means]), "95% interval"
    else:
        err, what = stds, "± sd over seeds"
    ax.errorbar(ks, means, yerr=err, marker="o", capsize=3, color="0.3",
                label=f"few-shot linear probe, mean over seeds ({what})")  # fmt: skip
    if cis is not None and np.any(stds > 0):
        ax.fill_between(ks, means - stds, means + stds, color="0.3", alpha=0.15, lw=0, label="± sd over seeds")
    ax.axhline(100 * zero_shot, color=MODEL_COLOR, ls="--",
               label=fitted(f"zero-shot {model}" + (" (95% interval)" if zero_ci is not None else ""),
                            fig.get_figwidth(), 7))  # fmt: skip
    if zero_ci is not None:
        ax.axhspan(100 * zero_ci[0], 100 * zero_ci[1], color=MODEL_COLOR, alpha=0.12, lw=0)
    if match is not None:
        ax.axvline(match, color=MODEL_COLOR, lw=0.8, alpha=0.6,
                   label=f"matches zero-shot at k = {page_number('count', match)}")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("labelled examples per class (k)")
    ax.set_ylabel("top-1 (%)")
    cap_percent(ax)
    ax.grid(alpha=0.3)
    ax.set_title(fitted(title or f"Few-shot linear probe vs zero-shot {model}", fig.get_figwidth(), 10), fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), frameon=False)
    fig.tight_layout()
    return fig


def robust_accuracy_curve(clean: Record, robust: list[Record], model: str, path: Path) -> Path:
    """Robust top-1 against eps, one line per attack (``worst``: the per-sample worst case); eps = 0 is clean.

    ``robust``: robust_top1 records of one dataset and norm (params attack, eps, eps_scale, norm)."""
    return save(robust_accuracy_figure(clean, robust, model), path)


def robust_accuracy_figure(clean: Record, robust: list[Record], model: str):
    """Each point with its record's 95% interval (error bars); the legend beside the axes."""
    from matplotlib.transforms import ScaledTranslation

    fig, ax = plt.subplots(figsize=(7.4, 4.2))
    attacks = sorted({r.params["attack"] for r in robust}, key=lambda a: (a == "worst", a))
    for i, attack in enumerate(attacks):
        # each attack's error bars a little apart (in display space: the data stay at their eps)
        dodge = ax.transData + ScaledTranslation(0.04 * (i - (len(attacks) - 1) / 2), 0, fig.dpi_scale_trans)
        mine = sorted((r for r in robust if r.params["attack"] == attack), key=lambda r: float(r.params["eps"]))
        shown = [clean, *mine]
        x = [0.0, *(float(r.params["eps"]) for r in mine)]
        y = np.array([100 * r.value for r in shown])
        err = np.array([[y_ - 100 * r.ci[0], 100 * r.ci[1] - y_] for y_, r in zip(y, shown, strict=True)]).T
        style = {"color": MODEL_COLOR, "lw": 2} if attack == "worst" else {"lw": 1}
        ax.errorbar(x, y, yerr=err, marker="o", capsize=2, elinewidth=0.8, transform=dodge,
                    label="worst case over attacks" if attack == "worst" else attack, **style)  # fmt: skip
    scale = float(robust[0].params.get("eps_scale", 1))
    unit = f"{robust[0].params.get('norm')}, eps in units of 1" + (f"/{scale:g}" if scale != 1 else "")
    ax.set_xlabel(f"eps ({unit})")
    ax.set_ylabel("top-1 (%)")
    ax.set_ylim(0, 100)
    top = max(float(r.params["eps"]) for r in robust)  # the dodged error bars do not autoscale the x axis
    ax.set_xlim(-0.05 * top, 1.05 * top)
    title = f"Adversarial robustness of zero-shot {model} on {clean.label}"
    ax.set_title(fitted(title, 0.7 * fig.get_figwidth(), 10), fontsize=10)  # over the axes: the legend is beside them
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="95% intervals", title_fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1),
              frameon=False)  # fmt: skip
    fig.tight_layout()
    return fig


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
        name = "few_shot.png" if len(groups) == 1 else safe_file_name(f"few_shot_{task}_{dataset}.png")
        title = f"Few-shot linear probe vs zero-shot {model} on {zero.label.split(' ')[0]}"
        written.append(few_shot_curve([r.params["k"] for r in shots], [r.value for r in shots],
                                      [r.std or 0.0 for r in shots], zero.value, match, model, out / name,
                                      cis=[r.ci for r in shots], zero_ci=zero.ci, title=title))  # fmt: skip
    robust = [r for r in records if r.metric == "robust_top1"]
    settings = sorted({(r.task, r.dataset, str(r.params.get("norm"))) for r in robust})
    for task, dataset, norm in settings:
        clean = next((r for r in records if r.metric == "clean_top1" and (r.task, r.dataset) == (task, dataset)), None)
        mine = [r for r in robust if (r.task, r.dataset, str(r.params.get("norm"))) == (task, dataset, norm)]
        if clean is None:
            continue
        name = (
            "robust_accuracy.png"
            if len(settings) == 1
            else safe_file_name(f"robust_accuracy_{task}_{dataset}_{norm}.png")
        )
        written.append(robust_accuracy_curve(clean, mine, model, out / name))
    return written


# ---------------------------------------------------------------- calibration


def reliability_panel(ax, label: str, ece: Record, confidence: np.ndarray, correct: np.ndarray) -> None:
    """One dataset's reliability diagram: each non-empty confidence bin's accuracy (bars over the bin, and a point
    at the bin's mean confidence with its Clopper-Pearson 95% interval) against y = x; the ECE in the title."""
    from clipeval.results.metrics import clopper_pearson
    from clipeval.results.scores import calibration_bins

    bins = int(ece.params.get("bins", 15))
    count, mean_conf, acc = calibration_bins(confidence, correct, bins)
    used = np.flatnonzero(count > 0)
    edges = np.linspace(0, 100, bins + 1)
    ax.bar(edges[used], 100 * acc[used], width=100 / bins, align="edge", color="0.8", edgecolor="0.5", lw=0.5,
           label="accuracy of each confidence bin", zorder=1)  # fmt: skip
    ax.plot([0, 100], [0, 100], ls="--", color="0.3", lw=1, label="perfect calibration (y = x)", zorder=2)
    ci = np.array([clopper_pearson(int(round(acc[m] * count[m])), int(count[m])) for m in used]).reshape(-1, 2)
    y = 100 * acc[used]
    ax.errorbar(100 * mean_conf[used], y, yerr=[y - 100 * ci[:, 0], 100 * ci[:, 1] - y], fmt="o", ms=3,
                color=MODEL_COLOR, capsize=2, elinewidth=0.8, zorder=3,
                label="at the bin's mean confidence (95% interval)")  # fmt: skip
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_xlabel("confidence (%)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    lo, hi = ece.ci
    stats = f"ECE {page_number('fraction', ece.value)}% [{page_number('fraction', lo)}, {page_number('fraction', hi)}]"
    ax.set_title(f"{fitted(label, ax.figure.get_figwidth() / 3, 10)}\n{stats} · n {ece.n}", fontsize=10)


def reliability_figure(panels: list[tuple[str, Record, np.ndarray, np.ndarray]], model: str, subtitle: str = ""):
    """One reliability diagram per (label, ece record, confidences, right/wrong) in a grid; the legend below;
    ``subtitle``: a line under the title (which panels these are, when not all)."""
    n = len(panels)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.3 * rows + 0.6), squeeze=False)
    for ax, (label, ece, confidence, correct) in zip(axes.flat, panels, strict=False):
        reliability_panel(ax, label, ece, confidence, correct)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3 if cols == 3 else 1, fontsize=7, frameon=False)
    bins = int(panels[0][1].params.get("bins", 15))
    title = f"Reliability of zero-shot {model} (softmax at its logit scale, {bins} equal-width bins)"
    title = fitted(title, fig.get_figwidth())
    fig.suptitle(f"{title}\n{fitted(subtitle, fig.get_figwidth(), 'medium')}" if subtitle else title)
    legend_rows = 1 if cols == 3 else 3
    top = 1 - 0.25 * (title.count("\n") + (subtitle.count("\n") + 1 if subtitle else 0)) / fig.get_figheight()
    fig.tight_layout(rect=(0, (0.2 + 0.15 * legend_rows) / fig.get_figheight(), 1, top))
    return fig


#: the most reliability diagrams one figure holds; with more datasets (ImageNet-C's 75 settings), reliability.png
#: shows those of the largest ECE and ece.png every dataset's ECE
MAX_RELIABILITY_PANELS = 12


def ece_figure(records: list[Record], model: str):
    """Every dataset's ECE with its 95% interval, one row each (in the records' order)."""
    n = len(records)
    fig, ax = plt.subplots(figsize=(8.0, 1.4 + 0.2 * n))
    y = np.arange(n)[::-1]
    values = np.array([100 * r.value for r in records])
    lo, hi = np.array([100 * r.ci[0] for r in records]), np.array([100 * r.ci[1] for r in records])
    ax.errorbar(values, y, xerr=[values - lo, hi - values], fmt="o", ms=3, color=MODEL_COLOR, capsize=2, elinewidth=0.8)
    ax.set_yticks(y, [f"{r.task}/{r.dataset}" if r.task else r.dataset for r in records], fontsize=7)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlim(0, min(100.0, max(1.0, 1.08 * float(hi.max()))))  # an ECE is in [0, 100]%
    ax.set_xlabel("expected calibration error (%), 95% interval")
    ax.grid(alpha=0.3, axis="x")
    bins = int(records[0].params.get("bins", 15))
    ax.set_title(fitted(f"ECE of zero-shot {model} on each of {n} datasets ({bins} equal-width bins)", 7.5))
    fig.tight_layout()
    return fig


def calibration_figures(doc, out: Path) -> list[Path]:
    """``reliability.png``: a reliability diagram per ``ece`` record of ``doc`` (a ResultsDocument) whose per-sample
    data hold each sample's confidence; nothing when there are none. With more than
    :data:`MAX_RELIABILITY_PANELS` such datasets (a 76-panel grid is over 100 inches tall), reliability.png holds
    the diagrams of the datasets with the largest ECE (its title says so) and ``ece.png`` every dataset's ECE with
    its interval; the calibration table lists them all."""
    panels = []
    for record in (r for r in doc.records if r.metric == "ece"):
        samples = doc.samples(record.samples)
        if samples is None or "confidence" not in (samples.scores or {}) or samples.outcome("top1") is None:
            continue
        where = f"{record.task}/{record.dataset}" if record.task else record.dataset  # the bins are in the title
        panels.append((where, record, samples.scores["confidence"], samples.outcome("top1")))
    if not panels:
        return []
    if len(panels) <= MAX_RELIABILITY_PANELS:
        return [save(reliability_figure(panels, doc.model_label), Path(out) / "reliability.png")]
    worst = sorted(panels, key=lambda p: -p[1].value)[:MAX_RELIABILITY_PANELS]
    subtitle = f"the {len(worst)} of {len(panels)} datasets with the largest ECE (every ECE: ece.png)"
    return [
        save(reliability_figure(worst, doc.model_label, subtitle), Path(out) / "reliability.png"),
        save(ece_figure([p[1] for p in panels], doc.model_label), Path(out) / "ece.png"),
    ]
