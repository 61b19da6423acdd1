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
from clipeval.robustness_report import IN_DISTRIBUTION, RobustnessReport  # noqa: E402

LIMIT = (0.005, 0.998)  # accuracies are clipped here: logit axes cannot show 0 or 1


def _limits(values: np.ndarray) -> tuple[float, float]:
    """The data's range on the logit scale, widened by a margin."""
    z = np.log(np.clip(values, *LIMIT) / (1 - np.clip(values, *LIMIT)))
    lo, hi = z.min() - 0.6, z.max() + 0.6
    return float(max(LIMIT[0], 1 / (1 + np.exp(-lo)))), float(min(LIMIT[1], 1 / (1 + np.exp(-hi))))


def scatter_grid(report: RobustnessReport, model: str, path: Path) -> Path:
    """One panel per shift: ID vs shift top-1 on logit axes, baselines, their fit, y = x, the model."""
    id_row, shifts = report.rows[0], report.rows[1:]
    cols = min(2, len(shifts))
    rows = math.ceil(len(shifts) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.6 * rows), squeeze=False)
    for ax, row in zip(axes.flat, shifts, strict=False):
        base = report.baselines
        values = np.concatenate([base[IN_DISTRIBUTION], base[row.setting], [*id_row.ci, *row.ci]])
        limits = _limits(values)
        grid = np.linspace(*limits, 200)
        ax.scatter(
            base[IN_DISTRIBUTION],
            base[row.setting],
            s=18,
            color="0.6",
            label=f"supervised baselines ({len(base)})",
            zorder=2,
        )
        ax.plot(
            grid,
            row.fit.predict(grid),
            color="0.3",
            lw=1.2,
            label="baseline fit (logit-linear)",
            zorder=1,
        )
        ax.plot(grid, grid, ls="--", color="0.75", lw=1, label="y = x", zorder=0)
        ilo, ihi = id_row.ci
        slo, shi = row.ci
        ax.errorbar(
            id_row.top1, row.top1, xerr=[[id_row.top1 - ilo], [ihi - id_row.top1]], yerr=[[row.top1 - slo], [shi - row.top1]],
            fmt="*", ms=13, color="tab:red", ecolor="tab:red", capsize=2, label=model, zorder=3,
        )  # fmt: skip
        ax.annotate(
            f"ER {100 * row.effective_robustness:+.1f} pp", (id_row.top1, row.top1), xytext=(-10, 10),
            textcoords="offset points", ha="right", color="tab:red", fontsize=9,
        )  # fmt: skip
        ax.set_xscale("logit")
        ax.set_yscale("logit")
        ax.set_xlim(*limits)
        ax.set_ylim(*limits)
        ax.xaxis.set_major_formatter(_percent)
        ax.yaxis.set_major_formatter(_percent)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title(row.setting)
        ax.set_xlabel("in-distribution top-1")
        ax.set_ylabel(f"{row.setting} top-1")
        ax.grid(alpha=0.3, which="major")
    for ax in list(axes.flat)[len(shifts) :]:
        ax.axis("off")
    axes.flat[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(f"Effective robustness of {model} (logit axes)")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format=Path(path).suffix.lstrip(".") or "png", dpi=120))
    plt.close(fig)
    return path


@FuncFormatter
def _percent(value: float, _pos: int) -> str:
    pct = 100 * value
    return f"{pct:.0f}%" if 1 <= pct <= 99 else f"{pct:.1f}%"
