"""Effective robustness from the imagenet-testbed table, checked by an independent calculation."""

from __future__ import annotations

import csv
import json
import math

import matplotlib
import pytest
from conftest import PUBLISHED, TESTBED, needs_testbed

from clipeval.report import cli as reporting
from clipeval.report.baselines import TableBaselines, read_model_types, read_table
from clipeval.report.cli import main as report_main
from clipeval.report.figures import scatter_grid_figure

# the protocol of ../shared/data/README.md, restated: (x column, y column, minimum x in percent)
PROTOCOL = {
    "imagenetv2": ("val", "imagenetv2-matched-frequency", 55),
    "imagenet-sketch": ("val", "imagenet-sketch", 55),
    "objectnet": ("val-on-objectnet-classes", "objectnet-1.0-beta", 55),
    "imagenet-r": ("val-on-imagenet-r-classes", "imagenet-r", 75),
    "imagenet-a": ("val-on-imagenet-a-classes", "imagenet-a", 75),
}


def independent_fit(shift: str) -> tuple[float, float, int]:
    """Least squares in logit space with the csv module and arithmetic, nothing from clipeval."""
    x_col, y_col, min_x = PROTOCOL[shift]
    with open(TESTBED / "model_types.csv") as f:
        standard = {r["model"] for r in csv.DictReader(f) if r["model_type"] == "STANDARD"}
    xs, ys = [], []
    with open(TESTBED / "robustness_top1s.csv") as f:
        for row in csv.DictReader(f):
            name = row["model"]
            if name not in standard or "aws" in name or "batch64" in name or not row[x_col] or not row[y_col]:
                continue
            x, y = float(row[x_col]) / 100, float(row[y_col]) / 100
            if x * 100 < min_x or not (0 < x < 1 and 0 < y < 1):
                continue
            xs.append(math.log(x / (1 - x)))
            ys.append(math.log(y / (1 - y)))
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((a - mx) * (b - my) for a, b in zip(xs, ys, strict=True)) / sum((a - mx) ** 2 for a in xs)
    return slope, my - slope * mx, len(xs)


@pytest.fixture(scope="module")
def report():
    baselines = reporting.testbed_baselines(str(TESTBED / "robustness_top1s.csv"), str(TESTBED / "model_types.csv"))
    sizes = json.loads((TESTBED / "eval_setting_sizes.json").read_text())
    return reporting.testbed_report(baselines, "vit_b_32_clip_zeroshot", sizes)


@needs_testbed
@pytest.mark.parametrize("shift", list(PROTOCOL))
def test_testbed_fit_matches_an_independent_calculation(report, shift):
    result = next(s for s in report.shifts if s.shift.name == shift)
    slope, intercept, n = independent_fit(shift)
    print(f"{shift}: slope {slope:.6f} intercept {intercept:.6f} over {n} models")
    assert (result.fit.slope, result.fit.intercept, result.fit.n_models) == (
        pytest.approx(slope, abs=1e-9),
        pytest.approx(intercept, abs=1e-9),
        n,
    )


@needs_testbed
def test_effective_robustness_of_the_testbeds_zero_shot_clip(report):
    with open(TESTBED / "robustness_top1s.csv") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    clip = rows["vit_b_32_clip_zeroshot"]
    for result in report.shifts:
        x_col, y_col, _ = PROTOCOL[result.shift.name]
        slope, intercept, _ = independent_fit(result.shift.name)
        x, y = float(clip[x_col]) / 100, float(clip[y_col]) / 100
        expected = y - 1 / (1 + math.exp(-(slope * math.log(x / (1 - x)) + intercept)))
        assert result.effective_robustness == pytest.approx(expected, abs=2e-4)  # x and y rounded to whole images
        lo, hi = result.effective_robustness_ci
        assert lo < result.effective_robustness < hi and hi - lo < 0.06
        assert result.effective_robustness > 0.05  # zero-shot CLIP is effectively robust on every shift
    mean, _ = report.mean_of_shift_effective_robustness
    assert mean == pytest.approx(sum(s.effective_robustness for s in report.shifts) / 5)


@needs_testbed
def test_scatter_grid_has_the_papers_elements(report):
    fig = scatter_grid_figure(report, "vit_b_32_clip_zeroshot")
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title().splitlines()[0] for ax in panels] == [s.shift.name for s in report.shifts]
    for ax, result in zip(panels, report.shifts, strict=True):
        assert ax.get_xscale() == ax.get_yscale() == "logit"
        assert any(isinstance(c, matplotlib.collections.PolyCollection) for c in ax.collections), "fit band"
        assert any(line.get_linestyle() == "--" for line in ax.get_lines()), "y = x"
        assert len(ax.containers) == 1, "the model's error bars"
        assert ax.get_title().splitlines()[1].startswith(f"ER {100 * result.effective_robustness:+.1f} pp [")
        labels = [ax.xaxis.get_major_formatter()(v, 0) for v in (0.5, 0.9)]
        assert labels == ["50%", "90%"]
    matplotlib.pyplot.close(fig)


@needs_testbed
def test_report_cli_prints_fits_and_draws_both_figures(tmp_path, capsys):
    args = [
        "--table",
        str(TESTBED / "robustness_top1s.csv"),
        "--model-types",
        str(TESTBED / "model_types.csv"),
        "--out",
        str(tmp_path),
    ]
    report_main(
        ["testbed", *args, "--sizes", str(TESTBED / "eval_setting_sizes.json"), "--model", "vit_b_32_clip_zeroshot"]
    )
    out = capsys.readouterr().out
    assert "average over shifts" in out and "fit imagenet-r" in out
    if (PUBLISHED / "clip_paper_fig13_table16.csv").is_file():
        report_main(
            ["figure13", *args, "--published", str(PUBLISHED / "clip_paper_fig13_table16.csv"), "--format", "svg"]
        )
        assert (tmp_path / "clip_figure13.svg").read_text().startswith("<?xml")


def test_report_cli_errors_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        report_main(
            [
                "testbed",
                "--table",
                str(tmp_path / "no.csv"),
                "--model-types",
                str(tmp_path / "no.csv"),
                "--sizes",
                "x",
                "--model",
                "m",
            ]
        )
    assert info.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def test_long_and_wide_tables_in_percent_or_fractions(tmp_path):
    (tmp_path / "wide.csv").write_text("model,val,shift\na,60,30\nb,70,40\nc,80,50\n")
    (tmp_path / "long.csv").write_text("model,setting,accuracy\n" + "".join(
        f"{m},{s},{v / 100}\n" for m, s, v in [("a", "val", 60), ("a", "shift", 30), ("b", "val", 70), ("b", "shift", 40), ("c", "val", 80), ("c", "shift", 50)]
    ))  # fmt: skip
    wide, long = read_table(tmp_path / "wide.csv"), read_table(tmp_path / "long.csv")
    assert wide.loc["b", "shift"] == pytest.approx(0.4) and long.loc["b", "shift"] == pytest.approx(0.4)
    (tmp_path / "wide.csv").write_text("model,val,shift\na,60,30\nb,70,40\nc,80,50\nd,90,60\n")
    (tmp_path / "types.csv").write_text("model,model_type\na,STANDARD\nb,STANDARD\nc,MORE_DATA\nd,STANDARD\n")
    base = TableBaselines(
        {"s": {"x": "val", "y": "shift", "min_x": 0.65}},
        path=str(tmp_path / "wide.csv"),
        model_types=str(tmp_path / "types.csv"),
    )
    assert list(base.points()["s"].index) == ["b", "d"]  # a is below min_x, c is not STANDARD


def test_model_types_from_the_testbeds_python_file(tmp_path):
    (tmp_path / "model_types.py").write_text(
        "model_types_map = {\n'resnet50': ModelTypes.STANDARD,\n'clip': ModelTypes.MORE_DATA,\n}\n"
    )
    assert read_model_types(tmp_path / "model_types.py").to_dict() == {"resnet50": "STANDARD", "clip": "MORE_DATA"}


def test_store_report_collects_runs_into_markdown_and_html(tmp_path, caplog):
    import shutil

    from conftest import run_in_process

    run_in_process([], tmp_path / "run")  # the embedded suite, with its figures
    figures = sorted(p.name for p in (tmp_path / "run").glob("*.png"))
    shutil.rmtree(tmp_path / "run")  # the report reads only the store: figures are drawn again from the document
    (tmp_path / "store" / "broken.json").write_text("{not json")
    with caplog.at_level("WARNING"):
        report_main(["store", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "out")])
    assert "Skipped broken.json" in caplog.text  # a bad entry is skipped with a warning, the rest reported
    md = (tmp_path / "out" / "report.md").read_text()
    page = (tmp_path / "out" / "report.html").read_text()
    assert "## digits_shifts (v1) · tiny_digits" in md
    assert "| digits/test | top1 |" in md and "| average over shifts |" in md and "| mean of per-shift ER |" in md
    assert "| digits_probe/test probe=few-shot train=train | k_matching_zero_shot | 1.00 | [1.00, 1.00] | count |" in md
    entry = next((tmp_path / "store").glob("*digits_shifts*.json")).stem
    assert f"](figures/{entry}/effective_robustness.png)" in md  # links relative to the report
    drawn = sorted(p.name for p in (tmp_path / "out" / "figures" / entry).glob("*.png"))
    assert "few_shot.png" in figures and "effective_robustness.png" in figures
    assert drawn == figures  # the same figures the run drew, derived from the stored document
    assert md.count("![") == len(figures)
    assert page.count("data:image/png;base64,") == len(figures) and ">digits/test</td>" in page
