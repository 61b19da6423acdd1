"""``python -m clipeval.report`` (or ``clipeval report``): robustness from published numbers alone.

    clipeval report testbed --table robustness_top1s.csv --model-types model_types.csv \\
        --sizes eval_setting_sizes.json --model vit_b_32_clip_zeroshot [--out DIR]
    clipeval report figure13 --table ... --model-types ... --published clip_paper_fig13_table16.csv [--out DIR]
    clipeval report store [--store outputs/store] [--out reports/out]

``testbed`` reads a model's row of the imagenet-testbed table and computes its effective
robustness on each natural shift against the table's standard models, with the same code a
run uses. ``figure13`` redraws the CLIP paper's Figure 13 (Radford et al. 2021) from the
testbed table and the paper's published zero-shot numbers; no model runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from clipeval.config.paths import conf_dir
from clipeval.errors import USAGE_EXIT_CODE, ClipevalError
from clipeval.report.baselines import TableBaselines
from clipeval.report.logit_fit import bootstrap_fits, fit_baselines
from clipeval.report.robustness import RobustnessReport, Setting, ShiftResult, average_result, format_report

# Columns of the paper's table (published/clip_paper_fig13_table16.csv) -> testbed columns
PAPER_TO_TESTBED = {
    "ImageNetV2": "imagenetv2-matched-frequency",
    "ImageNet-Sketch": "imagenet-sketch",
    "ObjectNet": "objectnet-1.0-beta",
    "ImageNet-R": "imagenet-r",
    "ImageNet-A": "imagenet-a",
}


def testbed_baselines(table: str, model_types: str) -> TableBaselines:
    """The testbed protocol as configured in conf/baselines/testbed.yaml, on the given files."""
    spec = OmegaConf.load(conf_dir() / "baselines" / "testbed.yaml")
    return TableBaselines(
        shifts=OmegaConf.to_container(spec.shifts),
        path=table,
        model_types=model_types,
        include_types=list(spec.include_types),
        exclude_names=list(spec.exclude_names),
        label=spec.label,
    )


def _setting(name: str, column: str, accuracy: float, sizes: dict[str, int]) -> Setting:
    if column not in sizes:
        raise ClipevalError(f"No test-set size for '{column}' in the sizes file.")
    n = int(sizes[column])
    return Setting(name, [column], int(round(accuracy * n)), n)


def testbed_report(baselines: TableBaselines, model: str, sizes: dict[str, int]) -> RobustnessReport:
    """Effective robustness of one row of the table, per shift of ``baselines.shifts``."""
    if model not in baselines.table.index:
        from clipeval.errors import did_you_mean

        raise ClipevalError(f"Model '{model}' is not in the table. {did_you_mean(model, baselines.table.index)}")
    row = baselines.table.loc[model]
    points = baselines.points()
    results = []
    for shift, spec in baselines.shifts.items():
        pts = points[shift].drop(index=model, errors="ignore")
        fit = fit_baselines(pts["id"].to_numpy(), pts["shift"].to_numpy(), list(pts.index))
        ident = _setting(f"{shift} in_distribution", spec["x"], row[spec["x"]], sizes)
        results.append(ShiftResult(_setting(shift, spec["y"], row[spec["y"]], sizes), ident, pts, fit,
                                   bootstrap_fits(pts["id"].to_numpy(), pts["shift"].to_numpy())))  # fmt: skip
    headline = _setting("in_distribution", baselines.in_distribution, row[baselines.in_distribution], sizes)
    points = baselines.average_points().drop(index=model, errors="ignore")
    average = average_result(headline, [r.shift for r in results], points)
    return RobustnessReport(headline, results, baselines.label, average)


def figure13(baselines: TableBaselines, published: str, path: Path) -> Path:
    """Left: average accuracy over the shifts vs ImageNet accuracy, standard models and their fit, CLIP
    highlighted. Right: per shift, ImageNet ResNet-101 next to zero-shot CLIP at the same ImageNet accuracy."""
    import matplotlib.pyplot as plt

    from clipeval.report.figures import logit_axes, save

    paper = pd.read_csv(published).set_index("model")
    shifts = list(PAPER_TO_TESTBED)
    columns = {spec["y"] for spec in baselines.shifts.values()}
    if columns != set(PAPER_TO_TESTBED.values()) or baselines.in_distribution != "val":
        raise ClipevalError(
            f"figure13 needs the baselines' shifts to be the paper's five ({sorted(PAPER_TO_TESTBED.values())})."
        )
    pts = baselines.average_points().rename(columns={"shift": "avg"})  # the same line as every report's average
    fit = fit_baselines(pts["id"].to_numpy(), pts["avg"].to_numpy(), list(pts.index))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.2), gridspec_kw={"width_ratios": [1, 1.15]})
    grid = np.linspace(0.5, 0.9, 100)
    left.scatter(pts["id"], pts["avg"], s=14, color="0.55", label=f"standard ImageNet models ({len(pts)})")
    left.plot(grid, fit.predict(grid), color="0.25", lw=1.2, label="logit-linear fit")
    left.plot(grid, grid, ls="--", color="0.7", lw=1, label="ideal robust model (y = x)")
    clip = paper.loc["Zero-Shot CLIP ViT-L/14@336px"]
    clip_avg = np.mean([clip[s] for s in shifts]) / 100
    left.scatter([clip["ImageNet"] / 100], [clip_avg], marker="*", s=160, color="tab:purple", zorder=4,
                 label="zero-shot CLIP ViT-L/14@336px (paper)")  # fmt: skip
    for name in [m for m in baselines.table.index if "clip_zeroshot" in m]:
        r = baselines.table.loc[name]
        left.scatter(
            [r["val"]], [np.mean([r[PAPER_TO_TESTBED[s]] for s in shifts])], marker="*", s=70, color="tab:red", zorder=3
        )
    left.scatter([], [], marker="*", s=70, color="tab:red", label="zero-shot CLIP models (testbed)")
    logit_axes(left, (0.5, 0.9))
    left.set_xlim(0.55, 0.9)
    left.set_ylim(0.1, 0.9)
    left.set_xlabel("ImageNet top-1")
    left.set_ylabel(f"average top-1 on {len(shifts)} natural shifts")
    left.legend(fontsize=7, loc="upper left")
    resnet = paper.loc["ImageNet ResNet101"]
    rows = ["ImageNet", *shifts]
    y = np.arange(len(rows))[::-1]
    right.barh(y + 0.2, [resnet[r] for r in rows], height=0.4, color="0.6", label="ImageNet ResNet-101")
    right.barh(y - 0.2, [clip[r] for r in rows], height=0.4, color="tab:purple", label="zero-shot CLIP ViT-L/14@336px")
    for yi, r in zip(y, rows, strict=True):
        delta = clip[r] - resnet[r]
        right.text(max(clip[r], resnet[r]) + 1, yi, f"{delta:+.1f}", va="center", fontsize=9,
                   color="tab:green" if delta > 0 else "0.3")  # fmt: skip
    right.set_yticks(y, rows)
    right.set_xlim(0, 105)
    right.set_xlabel("top-1 (%)")
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    fig.suptitle("CLIP paper Figure 13, redrawn from published numbers (Radford et al. 2021; Taori et al. 2020)")
    fig.tight_layout()
    return save(fig, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="clipeval report", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    store = sub.add_parser("store", help="Markdown and HTML report of every run in the results store")
    store.add_argument(
        "--store",
        type=Path,
        default=Path(os.environ.get("CLIPEVAL_STORE", "outputs/store")),
        help="the results store (default: $CLIPEVAL_STORE, else outputs/store, as the runs use)",
    )
    store.add_argument("--out", type=Path, default=Path("reports/out"))
    for name in ("testbed", "figure13"):
        p = sub.add_parser(name)
        p.add_argument("--table", required=True, help="imagenet-testbed robustness_top1s.csv")
        p.add_argument(
            "--model-types", required=True, help="model_types.csv (model,model_type) or plotting/model_types.py"
        )
        p.add_argument("--out", type=Path, default=Path("reports/out"))
    sub.choices["testbed"].add_argument(
        "--model", required=True, help="a row of the table, e.g. vit_b_32_clip_zeroshot"
    )
    sub.choices["testbed"].add_argument("--sizes", required=True, help="eval_setting_sizes.json (n per setting)")
    sub.choices["figure13"].add_argument("--published", required=True, help="clip_paper_fig13_table16.csv")
    sub.choices["figure13"].add_argument("--format", default="png", choices=["png", "pdf", "svg"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        if args.command == "store":
            from clipeval.report.pages import write_store_report

            if not args.store.is_dir():
                raise ClipevalError(f"No results store at {args.store}: run an evaluation first, or pass --store DIR.")
            for path in write_store_report(args.store, args.out):
                print("wrote", path)
            return
        baselines = testbed_baselines(args.table, args.model_types)
        if args.command == "testbed":
            sizes = json.loads(Path(args.sizes).read_text())
            report = testbed_report(baselines, args.model, sizes)
            print(format_report(report, args.model, "imagenet-testbed"))
            for s in report.shifts:
                print(
                    f"fit {s.shift.name:<16} slope {s.fit.slope:.6f}  intercept {s.fit.intercept:.6f}  ({s.fit.n_models} models)"
                )
            avg = report.average
            print(f"fit {'average over shifts':<16} slope {avg.fit.slope:.6f}  intercept {avg.fit.intercept:.6f}  "
                  f"({avg.fit.n_models} models)")  # fmt: skip
            from clipeval.report.figures import average_panel, scatter_grid

            print("figure:", scatter_grid(report, args.model, args.out / f"effective_robustness_{args.model}.png"))
            print("figure:", average_panel(report, args.model, args.out / f"average_over_shifts_{args.model}.png"))
        else:
            print("figure:", figure13(baselines, args.published, args.out / f"clip_figure13.{args.format}"))
    except (ClipevalError, OSError) as exc:
        print(f"clipeval report: error: {exc}", file=sys.stderr)
        raise SystemExit(USAGE_EXIT_CODE) from None


if __name__ == "__main__":
    main()
