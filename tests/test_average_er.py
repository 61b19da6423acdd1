"""The headline "average over shifts" effective robustness is the CLIP paper's (Figure 13, left), computed
independently here, and the table, figure, JSON, records and store report all show that one number."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pandas as pd
import pytest
from conftest import PUBLISHED, TESTBED, needs_testbed

from clipeval.report import cli as reporting
from clipeval.report.baselines import TableBaselines
from clipeval.report.cli import main as report_main
from clipeval.report.figures import average_panel_figure, scatter_grid_figure
from clipeval.report.pages import run_section
from clipeval.report.robustness import build_report, format_report
from clipeval.report.tables import ROBUSTNESS_HEAD
from clipeval.results.record import Record
from clipeval.results.robustness import RobustnessSpec, ShiftSpec
from clipeval.results.store import KIND, SCHEMA_VERSION, ResultsDocument

MODEL = "vit_b_32_clip_zeroshot"
# the shift columns of conf/baselines/testbed.yaml, restated; the x of the average is ImageNet val
SHIFTS = ["imagenetv2-matched-frequency", "imagenet-sketch", "objectnet-1.0-beta", "imagenet-r", "imagenet-a"]


def logit(p):
    return np.log(p / (1 - p))


def papers_average_er(model: str) -> tuple[float, int]:
    """CLIP paper Figure 13 (left), with pandas and numpy only: fit logit(mean over the shifts) against
    logit(val) over the standard models (no aws / batch64) that have every shift, and read it off."""
    table = pd.read_csv(TESTBED / "robustness_top1s.csv").set_index("model") / 100
    types = pd.read_csv(TESTBED / "model_types.csv").set_index("model")["model_type"]
    standard = [m for m in table.index if types.get(m) == "STANDARD" and "aws" not in m and "batch64" not in m]
    rows = table.loc[standard, ["val", *SHIFTS]].dropna()
    x, y = rows["val"], rows[SHIFTS].mean(axis=1)
    inside = (x > 0) & (x < 1) & (y > 0) & (y < 1)  # logit axes: 0% and 100% have no place
    slope, intercept = np.polyfit(logit(x[inside]), logit(y[inside]), 1)
    ours = table.loc[model]
    predicted = 1 / (1 + np.exp(-(slope * logit(ours["val"]) + intercept)))
    return float(ours[SHIFTS].mean() - predicted), int(inside.sum())


@pytest.fixture(scope="module")
def report():
    baselines = reporting.testbed_baselines(str(TESTBED / "robustness_top1s.csv"), str(TESTBED / "model_types.csv"))
    sizes = json.loads((TESTBED / "eval_setting_sizes.json").read_text())
    return reporting.testbed_report(baselines, MODEL, sizes)


@needs_testbed
def test_the_headline_is_the_papers_average_not_the_mean_of_per_shift_values(report):
    expected, n_models = papers_average_er(MODEL)
    avg = report.average
    print(f"paper's method {100 * expected:+.2f} pp over {n_models} models; "
          f"mean of per-shift ER {100 * report.mean_of_shift_effective_robustness[0]:+.2f} pp")  # fmt: skip
    assert avg.fit.n_models == n_models
    assert avg.effective_robustness == pytest.approx(expected, abs=2e-4)  # accuracies rounded to whole images
    label, value, (lo, hi) = report.headline
    assert label == "average over shifts" and value == avg.effective_robustness
    assert lo < value < hi and hi - lo < 0.06
    mean, _ = report.mean_of_shift_effective_robustness
    assert abs(mean - value) > 0.02  # two different numbers, which is why only one may be called the average
    assert avg.in_distribution.datasets == ["val"]  # ImageNet val, not the class-subset columns


@needs_testbed
def test_table_figures_json_records_and_store_report_show_the_same_number(report, tmp_path):
    er, (lo, hi) = report.average.effective_robustness, report.average.effective_robustness_ci
    shown = f"{100 * er:+.1f}"
    mean_shown = f"{100 * report.mean_of_shift_effective_robustness[0]:+.1f}"
    table = {line[:20].strip(): line for line in format_report(report, MODEL, "t").splitlines()}
    assert table["average over shifts"].split()[-3] == shown
    assert table["mean of per-shift ER"].split()[-3] == mean_shown
    fig = average_panel_figure(report, MODEL)
    assert fig.axes[0].get_title().splitlines()[1] == f"ER {shown} pp [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    matplotlib.pyplot.close(fig)
    fig = scatter_grid_figure(report, MODEL)
    assert f"average over shifts ER {shown} pp [{100 * lo:+.1f}, {100 * hi:+.1f}]" in fig._suptitle.get_text()
    matplotlib.pyplot.close(fig)
    doc = report.to_json()
    assert doc["average_over_shifts"]["effective_robustness"] == er == doc["headline"]["effective_robustness"]
    assert doc["average_over_shifts"]["effective_robustness_ci"] == [lo, hi]
    assert "average_effective_robustness" not in doc  # the old, ambiguous name is gone
    records = {r.dataset: r for r in report.records()}
    assert records["average_over_shifts"].value == er
    assert records["mean_of_per_shift_er"].value == report.mean_of_shift_effective_robustness[0]
    baselines = reporting.testbed_baselines(str(TESTBED / "robustness_top1s.csv"), str(TESTBED / "model_types.csv"))
    sizes = json.loads((TESTBED / "eval_setting_sizes.json").read_text())
    spec, model_records = reporting.testbed_inputs(baselines, MODEL, sizes)
    stored = document(MODEL, [*model_records, *(r.with_task("t") for r in report.records())], spec)
    table = run_section(stored).table(ROBUSTNESS_HEAD)  # the store report recomputes it from the stored records
    head, rows = table.head, table.rows
    rows, er_column = {row[0]: row for row in rows}, head.index("ER (pp)")
    assert rows["average over shifts"][er_column] == shown and rows["mean of per-shift ER"][er_column] == mean_shown


@needs_testbed
def test_report_testbed_prints_and_draws_the_papers_average(report, tmp_path, capsys):
    report_main(["testbed", "--table", str(TESTBED / "robustness_top1s.csv"), "--model-types",
                 str(TESTBED / "model_types.csv"), "--sizes", str(TESTBED / "eval_setting_sizes.json"),
                 "--model", MODEL, "--out", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("average over shifts "))
    assert line.split()[-3] == f"{100 * report.average.effective_robustness:+.1f}"
    assert f"{100 * papers_average_er(MODEL)[0]:+.1f}" in line
    assert (tmp_path / f"average_over_shifts_{MODEL}.png").stat().st_size > 20_000


@needs_testbed
def test_the_papers_resnet101_sits_on_the_average_line_and_its_clip_far_above(report):
    """Figure 13 (right) published numbers: ImageNet ResNet-101 and zero-shot CLIP ViT-L/14@336px, both at 76.2%."""
    paper = pd.read_csv(PUBLISHED / "clip_paper_fig13_table16.csv").set_index("model")
    columns = ["ImageNetV2", "ImageNet-Sketch", "ObjectNet", "ImageNet-R", "ImageNet-A"]
    fit = report.average.fit
    er = {m: paper.loc[m, columns].mean() / 100 - float(fit.predict(paper.loc[m, "ImageNet"] / 100))
          for m in ("ImageNet ResNet101", "Zero-Shot CLIP ViT-L/14@336px")}  # fmt: skip
    assert abs(er["ImageNet ResNet101"]) < 0.03  # a standard model: on the line
    assert er["Zero-Shot CLIP ViT-L/14@336px"] > 0.3


def test_the_baselines_average_covers_exactly_the_reports_shifts(tmp_path):
    """A suite with fewer shifts than the baselines define averages the baselines over those shifts only."""
    (tmp_path / "t.csv").write_text("model,val,s1,s2,s3\na,60,30,50,10\nb,70,40,60,20\nc,80,50,70,45\n")
    base = TableBaselines({name: {"x": "val", "y": name} for name in ("s1", "s2", "s3")}, path=str(tmp_path / "t.csv"))
    pts = base.average_points({"in_distribution": [], "s1": [], "s3": []})
    assert pts.loc["b", "shift"] == pytest.approx((0.40 + 0.20) / 2)
    assert base.average_points().loc["b", "shift"] == pytest.approx((0.40 + 0.60 + 0.20) / 3)
    with pytest.raises(Exception, match="no shift"):
        base.average_points({"in_distribution": [], "s9": []})


def test_without_an_average_the_page_shows_only_the_mean_of_per_shift_values_under_that_name(tmp_path, caplog):
    """Baselines that give no average over shifts: the one summary number is the mean of the per-shift values,
    labelled so, never as the average. A document of an older clipeval (no kind) is skipped with a warning."""
    base = pd.DataFrame(
        {"id": [0.6, 0.7, 0.8], "shift": [0.3, 0.4, 0.5]}, index=pd.Index(["a", "b", "c"], name="model")
    )
    spec = RobustnessSpec([("t", "id")], {"s": ShiftSpec([("t", "s")])}, "b", {"s": base}, None)
    records = [
        Record("id", "top1", 0.75, 400, (0.7, 0.8), task="t"),
        Record("s", "top1", 0.69, 400, (0.64, 0.74), task="t"),
    ]
    rows = run_section(document("m", records, spec)).table(ROBUSTNESS_HEAD).rows
    report = build_report(spec, records)
    (er, (lo, hi)) = report.mean_of_shift_effective_robustness
    assert rows[-1] == [
        "mean of per-shift ER",
        "",
        "",
        "",
        "",
        "",
        "",
        f"{100 * er:+.1f}",
        f"[{100 * lo:+.1f}, {100 * hi:+.1f}]",
    ]
    assert er == pytest.approx(report.shifts[0].effective_robustness) and er > 0.2
    assert not any(row[0] == "average over shifts" for row in rows)
    store = tmp_path / "store"
    store.mkdir()
    (store / "old.json").write_text(json.dumps({"model": {"name": "m"}, "task": {"name": "t"}, "records": [],
                                                "effective_robustness": {"average_effective_robustness": 0.24}}))  # fmt: skip
    (store / "new.json").write_text(json.dumps(document("m", records, spec).raw))
    with caplog.at_level("WARNING"):
        report_main(["store", "--store", str(store), "--out", str(tmp_path / "out")])
    assert "Skipped old.json" in caplog.text and "not a clipeval results document" in caplog.text
    assert "| mean of per-shift ER |" in (tmp_path / "out" / "report.md").read_text()


def document(model: str, records, spec) -> ResultsDocument:
    """A stored suite run: its records and robustness settings (schema 3), as a run writes it."""
    return ResultsDocument.parse({
        "kind": KIND, "schema_version": SCHEMA_VERSION, "model": {"name": model, "fingerprint": "x" * 64},
        "selection": {"name": "t", "version": 1, "kind": "suite", "tasks": {"t": 1}}, "created": "now",
        "clipeval_version": "test", "records": [r.to_json() for r in records], "robustness": spec.to_json()})  # fmt: skip
