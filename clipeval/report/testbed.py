"""Reports from the imagenet-testbed table and published numbers alone; no model runs.

``testbed``: a row of the testbed table (e.g. ``vit_b_32_clip_zeroshot``) becomes a model's
zero-shot top-1 records, and its effective robustness is computed by
:func:`clipeval.report.robustness.build_report`, the code every run's report uses, against the
table's standard models (conf/baselines/testbed.yaml). ``figure13`` redraws the CLIP paper's
Figure 13 (Radford et al. 2021) from the testbed table and the paper's published numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from clipeval.config.paths import conf_dir
from clipeval.errors import ClipevalError, did_you_mean
from clipeval.report.baselines import TableBaselines
from clipeval.report.inputs import accuracies, labels, numbers, read_csv, require_columns
from clipeval.report.logit_fit import fit_baselines
from clipeval.report.robustness import RobustnessReport, build_report
from clipeval.results.metrics import clopper_pearson
from clipeval.results.record import Record
from clipeval.results.robustness import RobustnessSpec, ShiftSpec

# Columns of the paper's table (published/clip_paper_fig13_table16.csv) -> testbed columns
PAPER_TO_TESTBED = {
    "ImageNetV2": "imagenetv2-matched-frequency",
    "ImageNet-Sketch": "imagenet-sketch",
    "ObjectNet": "objectnet-1.0-beta",
    "ImageNet-R": "imagenet-r",
    "ImageNet-A": "imagenet-a",
}
#: the rows of the paper's table figure13 draws
PAPER_CLIP, PAPER_RESNET = "Zero-Shot CLIP ViT-L/14@336px", "ImageNet ResNet101"


def read_paper_table(path: str | Path) -> pd.DataFrame:
    """The CLIP paper's numbers (published/clip_paper_fig13_table16.csv), in percent, indexed by model: the
    columns ``ImageNet`` and :data:`PAPER_TO_TESTBED`'s, rows :data:`PAPER_CLIP` and :data:`PAPER_RESNET` at least.
    ClipevalError naming the file, column and row of anything missing or not an accuracy in percent."""
    path, frame = read_csv(path, "Published results table")
    columns = ["ImageNet", *PAPER_TO_TESTBED]
    require_columns(frame, ["model", *columns], str(path), "the CLIP paper's Figure 13 and Table 16")
    rows = labels(frame, ["model"], str(path))
    table = 100 * accuracies(numbers(frame, columns, str(path), rows), str(path), percent=True)
    for model in (PAPER_CLIP, PAPER_RESNET):
        if model not in table.index:
            raise ClipevalError(f"{path} has no row '{model}' (column 'model'). {did_you_mean(model, table.index)}")
        if (table.index == model).sum() > 1:
            raise ClipevalError(f"{path}: model '{model}' has more than one row.")
        empty = [c for c in columns if not np.isfinite(table.loc[model, c])]
        if empty:
            raise ClipevalError(f"{path}: row '{model}' has no value in column(s) {empty}.")
    return table


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


def testbed_inputs(baselines: TableBaselines, model: str, sizes: dict[str, int]) -> tuple[RobustnessSpec, list[Record]]:
    """A row of the table as a model's records, and the spec of ``baselines``' shifts to compute its report on.

    The records are zero-shot top-1 (no task) on every column the shifts and the average use, each
    with its test-set size from ``sizes`` (the accuracy rounded to whole images); the spec's
    baseline points leave the row itself out. Raises ClipevalError for a model not in the table
    or a column without a size.
    """
    if model not in baselines.table.index:
        raise ClipevalError(f"Model '{model}' is not in the table. {did_you_mean(model, baselines.table.index)}")
    row = baselines.table.loc[model]
    columns = [baselines.in_distribution, *(c for s in baselines.shifts.values() for c in (s["x"], s["y"]))]
    records = [_record(column, row[column], sizes) for column in dict.fromkeys(columns)]
    shifts = {name: ShiftSpec([("", s["y"])], [("", s["x"])]) for name, s in baselines.shifts.items()}
    points = {name: frame.drop(index=model, errors="ignore") for name, frame in baselines.points().items()}
    average = baselines.average_points().drop(index=model, errors="ignore")
    spec = RobustnessSpec([("", baselines.in_distribution)], shifts, baselines.label, points, average)
    return spec, records


def _record(column: str, accuracy: float, sizes: dict[str, int]) -> Record:
    if column not in sizes:
        raise ClipevalError(f"No test-set size for '{column}' in the sizes file. {did_you_mean(column, sizes)}")
    if not np.isfinite(accuracy):
        raise ClipevalError(f"The model's row has no value in column '{column}'.")
    n = int(sizes[column])
    correct = int(round(accuracy * n))
    return Record(column, "top1", correct / n, n, clopper_pearson(correct, n))


def testbed_report(baselines: TableBaselines, model: str, sizes: dict[str, int]) -> RobustnessReport:
    """Effective robustness of one row of the table, per shift of ``baselines.shifts`` and on average: the
    row's records and the shifts' spec (:func:`testbed_inputs`) through the report every run uses."""
    return build_report(*testbed_inputs(baselines, model, sizes))


def figure13(baselines: TableBaselines, published: str, path: Path) -> Path:
    """Left: average accuracy over the shifts vs ImageNet accuracy, standard models and their fit, CLIP
    highlighted. Right: per shift, ImageNet ResNet-101 next to zero-shot CLIP at the same ImageNet accuracy."""
    from clipeval.report.figures import save

    return save(figure13_figure(baselines, published), path)


def figure13_figure(baselines: TableBaselines, published: str):
    """The Figure of :func:`figure13`."""
    import matplotlib.pyplot as plt

    from clipeval.report.figures import logit_axes

    shifts = list(PAPER_TO_TESTBED)
    columns = {spec["y"] for spec in baselines.shifts.values()}
    if columns != set(PAPER_TO_TESTBED.values()) or baselines.in_distribution != "val":
        raise ClipevalError(
            f"figure13 needs the baselines' shifts to be the paper's five ({sorted(PAPER_TO_TESTBED.values())})."
        )
    paper = read_paper_table(published)
    pts = baselines.average_points().rename(columns={"shift": "avg"})  # the same line as every report's average
    fit = fit_baselines(pts["id"].to_numpy(), pts["avg"].to_numpy(), list(pts.index))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12.5, 5.8), gridspec_kw={"width_ratios": [1, 1.15]})
    grid = np.linspace(0.5, 0.9, 100)
    left.scatter(pts["id"], pts["avg"], s=14, color="0.55", label=f"standard ImageNet models ({len(pts)})")
    left.plot(grid, fit.predict(grid), color="0.25", lw=1.2, label="logit-linear fit")
    left.plot(grid, grid, ls="--", color="0.7", lw=1, label="ideal robust model (y = x)")
    clip = paper.loc[PAPER_CLIP]
    clip_avg = np.mean([clip[s] for s in shifts]) / 100
    left.scatter([clip["ImageNet"] / 100], [clip_avg], marker="*", s=160, color="tab:purple", zorder=4,
                 label="zero-shot CLIP ViT-L/14@336px (paper)")  # fmt: skip
    for name in [m for m in baselines.table.index if "clip_zeroshot" in m]:
        r = baselines.table.loc[name]
        left.scatter(
            [r["val"]], [np.mean([r[PAPER_TO_TESTBED[s]] for s in shifts])], marker="*", s=70, color="tab:red", zorder=3
        )
    left.scatter([], [], marker="*", s=70, color="tab:red", label="zero-shot CLIP models (testbed)")
    logit_axes(left, (0.1, 0.9))
    left.set_xlim(0.55, 0.9)
    left.set_ylim(0.1, 0.9)
    left.set_xlabel("ImageNet top-1")
    left.set_ylabel(f"average top-1 on {len(shifts)} natural shifts")
    left.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    left.set_title("average over the shifts against ImageNet top-1 (logit axes)", fontsize=10)
    resnet = paper.loc[PAPER_RESNET]
    rows = ["ImageNet", *shifts]
    y = np.arange(len(rows))[::-1]
    right.barh(y + 0.2, [resnet[r] for r in rows], height=0.4, color="0.6", label="ImageNet ResNet-101")
    right.barh(y - 0.2, [clip[r] for r in rows], height=0.4, color="tab:purple", label="zero-shot CLIP ViT-L/14@336px")
    right.set_yticks(y, rows)
    right.set_xlim(0, 100)
    right.set_xlabel("top-1 (%)")
    deltas = right.secondary_yaxis("right")  # the differences beside the bars, not over them
    deltas.set_yticks(y, [f"{clip[r] - resnet[r]:+.1f}" for r in rows])
    for tick, r in zip(deltas.get_yticklabels(), rows, strict=True):
        tick.set_color("tab:green" if clip[r] > resnet[r] else "0.3")
    deltas.set_ylabel("CLIP minus ResNet-101 (pp)", fontsize=8)
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    right.set_title("the same ImageNet top-1, per dataset (published numbers)", fontsize=10)
    fig.suptitle("CLIP paper Figure 13, redrawn from published numbers (Radford et al. 2021; Taori et al. 2020)")
    fig.tight_layout()
    return fig
