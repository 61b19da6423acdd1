"""Every figure clipeval draws, checked on its matplotlib Figure against the rules a paper's figure follows
(clipeval.report.figures): intervals drawn where the data have them, a title, no text over the data, accuracy
axes that end at 100%, and the table's numbers. Reports are computed from synthetic records (no model runs)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from conftest import PUBLISHED, TESTBED, needs_testbed
from matplotlib.container import BarContainer, ErrorbarContainer
from test_cross_run import OPENCLIP, accuracies, needs_published, records_of, write_store

from clipeval.report import figures
from clipeval.report.cross_run import collect_runs, cross_run_figure, load_reference, step_figure
from clipeval.report.robustness import build_report
from clipeval.report.selection import select_runs
from clipeval.report.tables import ROBUSTNESS_HEAD, record_rows, robustness_rows
from clipeval.results.metrics import clopper_pearson
from clipeval.results.record import Record
from clipeval.results.store import Selector

MODEL = "ViT-B-32"


def data_axes(fig) -> list:
    """The axes that plot data (panels left empty are switched off)."""
    return [ax for ax in fig.axes if ax.axison and (ax.lines or ax.collections or ax.patches or ax.containers)]


def check_paper_rules(fig) -> None:
    """Nothing cut off at the figure's edges; a title on the figure or on each panel; no text or legend over a plotting area; accuracy axes that end at
    100% (percent) or below 1 (logit axes, fractions)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    panels = data_axes(fig)
    assert panels
    assert all(ax.get_title() for ax in panels) or (fig._suptitle is not None and fig._suptitle.get_text())
    inked = fig.get_tightbbox(renderer)  # inches: every label, tick label, title and legend drawn
    width, height = fig.get_size_inches()
    tolerance = 1 / fig.dpi  # a pixel
    assert inked.x0 >= -tolerance and inked.y0 >= -tolerance, f"text cut off at the left or bottom edge: {inked}"
    assert inked.x1 <= width + tolerance and inked.y1 <= height + tolerance, (
        f"text cut off at the right or top edge: {inked} on a {width} x {height} in figure"
    )
    texts = [t for ax in fig.axes for t in ax.texts if t.get_text() and t.get_visible()] + list(fig.texts)
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    for ax in panels:
        area = ax.get_window_extent(renderer).padded(-1)  # touching the frame is not covering the data
        for artist in [*texts, *legends]:
            box = artist.get_window_extent(renderer)
            assert not area.overlaps(box), (
                f"{type(artist).__name__} {getattr(artist, 'get_text', str)()!r} over a panel"
            )
        (x_lo, x_hi), (y_lo, y_hi) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
        for container in (c for c in ax.containers if isinstance(c, ErrorbarContainer) and c.lines[0] is not None):
            for x, y in container.lines[0].get_xydata():  # every point with intervals is in view
                assert x_lo <= x <= x_hi and y_lo <= y <= y_hi, f"{container.get_label()} point ({x}, {y}) out of view"
        for axis, limits in (("x", ax.get_xlim()), ("y", ax.get_ylim())):
            scale = ax.get_xscale() if axis == "x" else ax.get_yscale()
            label = ax.get_xlabel() if axis == "x" else ax.get_ylabel()
            if scale == "logit":
                assert min(limits) > 0 and max(limits) < 1
            elif "(%)" in label:
                assert min(limits) >= 0 and max(limits) <= 100, f"{label} axis ends at {max(limits)}"


def errorbar_spans(container: ErrorbarContainer) -> np.ndarray:
    """The (low, high) ends of each error bar of a container (horizontal ones first), in data units."""
    return np.array([_span(s) for lines in container[2] for s in lines.get_segments()])


def _span(segment) -> tuple[float, float]:
    (x0, y0), (x1, y1) = segment
    return (min(y0, y1), max(y0, y1)) if x0 == x1 else (min(x0, x1), max(x0, x1))


@pytest.fixture
def report():
    from test_cross_run import natural_spec

    records = records_of(accuracies(0.7, 0.5))
    return build_report(natural_spec(), records)


def er_cells(report) -> dict[str, str]:
    """The robustness table's ER and its interval per setting, as the page prints them."""
    er, ci = ROBUSTNESS_HEAD.index("ER (pp)"), ROBUSTNESS_HEAD.index("95% interval (pp)")
    return {row[0]: f"ER {row[er]} pp {row[ci]}" for row in robustness_rows(report)}


# ---------------------------------------------------------------- one run's robustness figures


def test_the_scatter_grid_titles_each_panel_with_the_tables_er_and_draws_the_models_intervals(report):
    fig = figures.scatter_grid_figure(report, MODEL)
    check_paper_rules(fig)
    cells = er_cells(report)
    panels = data_axes(fig)
    assert [ax.get_title() for ax in panels] == [f"{s.shift.name}\n{cells[s.shift.name]}" for s in report.shifts]
    assert cells["average over shifts"] in fig._suptitle.get_text()
    for ax, result in zip(panels, report.shifts, strict=True):
        (bars,) = ax.containers
        np.testing.assert_allclose(errorbar_spans(bars), [result.in_distribution.ci, result.shift.ci])
        assert not ax.texts  # the ER is in the title, not beside the star
    matplotlib.pyplot.close(fig)


def test_the_average_panel_has_the_tables_headline_in_its_title(report):
    fig = figures.average_panel_figure(report, MODEL)
    check_paper_rules(fig)
    (ax,) = data_axes(fig)
    assert ax.get_title().splitlines() == [f"{MODEL}: average over 5 shifts", er_cells(report)["average over shifts"]]
    (bars,) = ax.containers
    np.testing.assert_allclose(errorbar_spans(bars), [report.average.in_distribution.ci, report.average.mean_top1_ci])
    matplotlib.pyplot.close(fig)


def test_the_paired_bars_draw_both_intervals_end_at_100_and_list_the_er_beside_the_axes(report):
    fig = figures.paired_bars_figure(report, MODEL)
    check_paper_rules(fig)
    (ax,) = data_axes(fig)
    assert ax.get_xlim() == (0, 100)
    bars = {c.get_label(): c for c in ax.containers if isinstance(c, BarContainer)}
    assert set(bars) == {f"{MODEL} (95% interval)", "supervised baseline at the same in-distribution top-1 (fit) "
                         "(95% interval)"}  # fmt: skip
    model = errorbar_spans(bars[f"{MODEL} (95% interval)"].errorbar)
    fit = errorbar_spans(next(c for label, c in bars.items() if label.startswith("supervised")).errorbar)
    np.testing.assert_allclose(model, [[100 * v for v in s.shift.ci] for s in report.shifts])
    np.testing.assert_allclose(fit, [[100 * v for v in s.prediction_interval] for s in report.shifts])
    right = next(child for child in ax.get_children() if type(child).__name__ == "SecondaryAxis")
    shown = [t.get_text() for t in right.get_yticklabels()]
    cells = er_cells(report)
    assert shown == [cells[s.shift.name].removeprefix("ER ").replace(" pp", "") for s in report.shifts]
    matplotlib.pyplot.close(fig)


# ---------------------------------------------------------------- record figures (few-shot, attacks)


def few_shot_records() -> list[Record]:
    n = 400
    out = [Record("test", "top1", 0.6, n, clopper_pearson(240, n), task="probe", params={"probe": "few-shot", "k": 0})]
    for k, acc in ((1, 0.42), (2, 0.55), (4, 0.63), (8, 0.7)):
        out.append(Record("test", "top1", acc, n, clopper_pearson(round(acc * n), n), task="probe", std=0.02,
                          params={"probe": "few-shot", "k": k}))  # fmt: skip
    out.append(
        Record("test", "k_matching_zero_shot", 3.25, 4, (3.25, 3.25), task="probe", params={"probe": "few-shot"})
    )
    return out


def attack_records() -> list[Record]:
    n = 100
    out = [Record("test", "clean_top1", 0.95, n, clopper_pearson(95, n), task="adv")]
    for attack in ("pgd", "apgd-ce", "worst"):
        for eps, correct in ((2, 85), (4, 60), (8, 7 if attack == "worst" else 12)):
            out.append(Record("test", "robust_top1", correct / n, n, clopper_pearson(correct, n), task="adv",
                              params={"attack": attack, "eps": eps, "eps_scale": 255, "norm": "linf"}))  # fmt: skip
    return out


def record_figures_drawn(records: list[Record], model: str, tmp_path, monkeypatch) -> list:
    """The Figure objects :func:`figures.record_figures` draws for ``records``, instead of saving them."""
    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, path: drawn.append(fig) or path)
    figures.record_figures(records, model, tmp_path)
    return drawn


def test_the_few_shot_figure_draws_each_ks_interval_zero_shots_band_and_the_tables_k(tmp_path, monkeypatch):
    records = few_shot_records()
    (fig,) = record_figures_drawn(records, MODEL, tmp_path, monkeypatch)
    check_paper_rules(fig)
    (ax,) = data_axes(fig)
    assert ax.get_title() == f"Few-shot linear probe vs zero-shot {MODEL} on probe/test"
    (probe,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    shots = [r for r in records if r.params.get("k", 0) > 0]
    np.testing.assert_allclose(errorbar_spans(probe), [[100 * r.ci[0], 100 * r.ci[1]] for r in shots])
    (band,) = ax.patches  # zero-shot's interval around its line
    span = (band.get_y(), band.get_y() + band.get_height())
    np.testing.assert_allclose(span, [100 * v for v in records[0].ci])
    table = {row[1]: row[2] for row in record_rows(records)}
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"matches zero-shot at k = {table['k_matching_zero_shot']}" in legend  # the table's cell, 3.25
    matplotlib.pyplot.close(fig)


def test_the_attack_figure_draws_every_points_interval_within_0_to_100(tmp_path, monkeypatch):
    records = attack_records()
    (fig,) = record_figures_drawn(records, MODEL, tmp_path, monkeypatch)
    check_paper_rules(fig)
    (ax,) = data_axes(fig)
    assert ax.get_ylim() == (0, 100) and ax.get_title()
    bars = {c.get_label(): c for c in ax.containers}
    assert set(bars) == {"pgd", "apgd-ce", "worst case over attacks"}
    clean = records[0]
    worst = sorted((r for r in records if r.params.get("attack") == "worst"), key=lambda r: r.params["eps"])
    np.testing.assert_allclose(
        errorbar_spans(bars["worst case over attacks"]), [[100 * r.ci[0], 100 * r.ci[1]] for r in [clean, *worst]]
    )
    assert list(bars["pgd"].lines[0].get_xdata()) == [0, 2, 4, 8]  # drawn apart, yet at their eps
    lo, hi = ax.get_xlim()
    assert lo < 0 and 8 < hi < 9  # every eps in view
    matplotlib.pyplot.close(fig)


LONG_NAME = "tiny_digits (ckpt_100) · open_clip ViT-B-32 laion2b_s34b_b79k, a sweep's third checkpoint"
VERY_LONG_NAME = "model_" + "with_a_very_long_name " * 7  # 160 characters, as a user's model.name can be


@pytest.mark.parametrize("name", [LONG_NAME, VERY_LONG_NAME])
def test_a_long_model_name_is_wrapped_not_cut_off_at_the_figures_edges(report, tmp_path, monkeypatch, name):
    """Run labels name the weights, and can be long: every one-run figure still fits its canvas."""
    drawn = [
        figures.scatter_grid_figure(report, name),
        figures.average_panel_figure(report, name),
        figures.paired_bars_figure(report, name),
        *record_figures_drawn(few_shot_records() + attack_records(), name, tmp_path, monkeypatch),
    ]
    assert len(drawn) == 5
    for fig in drawn:
        check_paper_rules(fig)  # nothing past the figure's edges
        matplotlib.pyplot.close(fig)


# ---------------------------------------------------------------- figures across runs


@pytest.fixture
def cross(tmp_path):
    write_store(tmp_path / "store")
    return collect_runs(select_runs(tmp_path / "store", Selector()))


@needs_published
def test_the_cross_run_figure_keeps_its_notes_under_the_axes(cross):
    fig = cross_run_figure(cross, load_reference(OPENCLIP))
    check_paper_rules(fig)  # the out-of-view and x-notes are below the x-axis label, not over the points
    notes = [t for ax in fig.axes for t in ax.texts if t.get_gid() in ("out-of-view", "x-note")]
    assert notes
    matplotlib.pyplot.close(fig)


def test_the_step_figure_caps_accuracy_at_100_and_keeps_its_legend_outside(cross):
    fig = step_figure(cross)
    check_paper_rules(fig)
    assert fig.legends and not any(ax.get_legend() for ax in fig.axes)
    matplotlib.pyplot.close(fig)


def test_a_run_near_100_percent_is_drawn_on_an_axis_that_ends_at_100(tmp_path):
    """Accuracies near 100% with their intervals: the autoscaled top-1 axes stop at 100%."""
    from test_cross_run import RUNS

    saved = dict(RUNS)
    RUNS.clear()
    RUNS.update({("ViT-B-32", 1): dict(val=0.995, robust=2.5, tags=["s"]), ("ViT-B-32", 2): dict(val=0.999, robust=3.0,
                 tags=["s"])})  # fmt: skip
    try:
        write_store(tmp_path / "store")
    finally:
        RUNS.clear()
        RUNS.update(saved)
    fig = step_figure(collect_runs(select_runs(tmp_path / "store", Selector())))
    check_paper_rules(fig)
    tops = [ax.get_ylim()[1] for ax in data_axes(fig) if ax.get_ylabel() == "top-1 (%)"]
    assert tops and max(tops) <= 100 and np.isclose(max(tops), 100)
    matplotlib.pyplot.close(fig)


@needs_testbed
def test_the_papers_figure_13_follows_the_same_rules():
    from clipeval.report.testbed import figure13_figure, testbed_baselines

    baselines = testbed_baselines(str(TESTBED / "robustness_top1s.csv"), str(TESTBED / "model_types.csv"))
    fig = figure13_figure(baselines, str(PUBLISHED / "clip_paper_fig13_table16.csv"))
    check_paper_rules(fig)
    matplotlib.pyplot.close(fig)
