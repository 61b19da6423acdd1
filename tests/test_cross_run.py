"""Figures across stored runs, re-fits and the store report, from results documents written here by hand:
no model runs. Expected coordinates and fits are computed independently (csv module, numpy)."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging

import matplotlib
import numpy as np
import pandas as pd
import pytest
from conftest import PUBLISHED

from clipeval.report.cli import main as report_main
from clipeval.report.cross_run import collect_runs, cross_run_figure, load_reference, step_figure
from clipeval.report.selection import select_runs
from clipeval.results.metrics import clopper_pearson
from clipeval.results.record import Record
from clipeval.results.robustness import RobustnessSpec, ShiftSpec
from clipeval.results.store import KIND, SCHEMA_VERSION, Selector, add_to_store

OPENCLIP = PUBLISHED / "openclip_results.csv"
needs_published = pytest.mark.skipif(not OPENCLIP.is_file(), reason="../shared/data/published is absent")

# natural_shifts' settings: shift -> (task, dataset, the shift's own in-distribution dataset or None)
NATURAL = {
    "imagenetv2": ("imagenet_v2", "imagenetv2", None),
    "imagenet-sketch": ("imagenet_sketch", "imagenet-sketch", None),
    "objectnet": ("objectnet", "objectnet", "val-on-objectnet-classes"),
    "imagenet-r": ("imagenet_r", "imagenet-r", "val-on-imagenet-r-classes"),
    "imagenet-a": ("imagenet_a", "imagenet-a", "val-on-imagenet-a-classes"),
}
N = 10_000  # samples per dataset
BASELINE_LABEL = "synthetic supervised models"


def logit(p):
    return np.log(p / (1 - p))


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def baseline_points(seed: int = 0) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Ten supervised models near a logit line per shift (class-subset shifts have their own x)."""
    rng = np.random.default_rng(seed)
    ident = np.linspace(0.58, 0.84, 10)
    names = pd.Index([f"sup{i}" for i in range(10)], name="model")
    points, ys = {}, []
    for i, name in enumerate(NATURAL):
        x = sigmoid(logit(ident) + 0.7) if NATURAL[name][2] else ident
        y = sigmoid(0.9 * logit(x) - 0.6 - 0.3 * i + rng.normal(0, 0.08, len(x)))
        points[name] = pd.DataFrame({"id": x, "shift": y}, index=names)
        ys.append(y)
    return points, pd.DataFrame({"id": ident, "shift": np.mean(ys, axis=0)}, index=names)


def natural_spec(label: str = BASELINE_LABEL, seed: int = 0) -> RobustnessSpec:
    shifts = {
        name: ShiftSpec([(task, ds)], [(task, paired)] if paired else None)
        for name, (task, ds, paired) in NATURAL.items()
    }
    points, average = baseline_points(seed)
    return RobustnessSpec([("imagenet", "val")], shifts, label, points, average)


def accuracies(val: float, robust: float) -> dict[tuple[str, str], float]:
    """A model's top-1 per (task, dataset): ``robust`` lifts every shift above the supervised line (logit units)."""
    out = {("imagenet", "val"): val}
    for i, (task, ds, paired) in enumerate(NATURAL.values()):
        x = val
        if paired:
            x = float(sigmoid(logit(val) + 0.7))
            out[(task, paired)] = x
        out[(task, ds)] = float(sigmoid(0.9 * logit(x) - 0.6 - 0.3 * i + robust))
    return out


def records_of(accs: dict[tuple[str, str], float]) -> list[Record]:
    out = []
    for (task, ds), acc in accs.items():
        correct = round(acc * N)
        out.append(Record(ds, "top1", correct / N, N, clopper_pearson(correct, N), task=task))
    # records the figures must not read: a few-shot probe on val (params) and a top-5
    out.append(Record("val", "top1", 0.5, N, (0.49, 0.51), task="imagenet", params={"probe": "few-shot", "k": 4}))
    out.append(Record("val", "top5", 0.9, N, (0.89, 0.91), task="imagenet"))
    return out


def document(model: str, records: list[Record], spec: RobustnessSpec, *, step=None, tags=(), suite="natural_shifts",
             created: str = "2026-01-01T00:00:00+00:00", run_id: str = "0" * 32) -> dict:  # fmt: skip
    """A suite's results document as a run writes it (schema 3), without samples."""
    tasks = sorted({t for t, _ in spec.in_distribution} | {t for s in spec.shifts.values() for t, _ in s.datasets})
    return {
        "kind": KIND, "schema_version": SCHEMA_VERSION, "run_id": run_id, "clipeval_version": "test",
        "created": created, "git_sha": None, "model": {"name": model, "fingerprint": "f" * 64},
        "selection": {"name": suite, "version": 1, "kind": "suite", "tasks": dict.fromkeys(tasks, 1)},
        "tags": list(tags), "step": step, "records": [r.to_json() for r in records], "samples": {},
        "robustness": spec.to_json(), "config": {"step": step, "tags": list(tags)},
    }  # fmt: skip


# the stored runs: three checkpoints of one model (written out of step order) and another model
RUNS = {
    ("ViT-B-32", 3000): dict(val=0.70, robust=0.9, tags=["series"]),
    ("ViT-B-32", 1000): dict(val=0.55, robust=0.5, tags=["series"]),
    ("ViT-B-32", 2000): dict(val=0.64, robust=0.7, tags=["series"]),
    ("RN50", None): dict(val=0.60, robust=0.1, tags=["other"]),
}


def write_store(store, extra: list[dict] = ()) -> dict[tuple[str, int | None], dict[tuple[str, str], float]]:
    """The four runs of :data:`RUNS` (plus ``extra`` documents) in ``store``; returns each run's accuracies."""
    spec, out = natural_spec(), {}
    for i, ((model, step), run) in enumerate(RUNS.items()):
        accs = accuracies(run["val"], run["robust"])
        out[(model, step)] = {k: round(v * N) / N for k, v in accs.items()}
        doc = document(model, records_of(accs), spec, step=step, tags=run["tags"],
                       created=f"2026-01-0{i + 1}T00:00:00+00:00", run_id=f"{i:032d}")  # fmt: skip
        add_to_store(store, doc)
    for doc in extra:
        add_to_store(store, doc)
    return out


def label(model: str, step, tags) -> str:
    return f"{model}{f' @ step {step}' if step is not None else ''} [{', '.join(tags)}]"


@pytest.fixture
def store(tmp_path):
    store = tmp_path / "store"
    return store, write_store(store)


def containers(ax) -> dict[str, tuple[float, float]]:
    """Each run's point on a panel: its error-bar container's label -> (x, y)."""
    out = {}
    for c in ax.containers:
        if isinstance(c, matplotlib.container.ErrorbarContainer):
            (x, y), = c.lines[0].get_xydata()  # fmt: skip
            out[c.get_label()] = (x, y)
    return out


def independent_fit(x, y) -> tuple[float, float]:
    lx, ly = logit(np.asarray(x, float)), logit(np.asarray(y, float))
    slope = ((lx - lx.mean()) * (ly - ly.mean())).sum() / ((lx - lx.mean()) ** 2).sum()
    return slope, ly.mean() - slope * lx.mean()


def published_columns(x_col: str, y_col: str) -> tuple[list[float], list[float]]:
    with open(OPENCLIP) as f:
        rows = list(csv.DictReader(f))
    return [float(r[x_col]) for r in rows], [float(r[y_col]) for r in rows]


# ---------------------------------------------------------------- the cross-run figure


@needs_published
def test_every_run_and_both_reference_lines_are_on_every_panel(store):
    folder, accs = store
    cross = collect_runs(select_runs(folder, Selector()))
    reference = load_reference(OPENCLIP)
    fig = cross_run_figure(cross, reference)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert list(panels) == [*NATURAL, "average over shifts"]
    labels = {key: label(key[0], key[1], RUNS[key]["tags"]) for key in RUNS}
    for name, (task, ds, paired) in NATURAL.items():
        ax = panels[name]
        assert ax.get_xscale() == ax.get_yscale() == "logit"
        points = containers(ax)
        assert set(points) == set(labels.values())
        for key, run_label in labels.items():
            expected = (accs[key][(task, paired) if paired else ("imagenet", "val")], accs[key][(task, ds)])
            assert points[run_label] == pytest.approx(expected, abs=1e-12)
        # the published points: ImageNet 1k against the mapped column, as the CSV has them
        column = {"imagenetv2": "ImageNet v2", "imagenet-sketch": "ImageNet Sketch", "objectnet": "ObjectNet",
                  "imagenet-r": "ImageNet-R", "imagenet-a": "ImageNet-A"}[name]  # fmt: skip
        xs, ys = published_columns("ImageNet 1k", column)
        ref = next(c for c in ax.collections if c.get_label().startswith("open_clip published zero-shot models"))
        assert (
            len(xs) >= 100
            and ref.get_label() == f"open_clip published zero-shot models (x: ImageNet 1k) ({len(xs)} models)"
        )
        np.testing.assert_allclose(sorted(map(tuple, ref.get_offsets())), sorted(zip(xs, ys, strict=True)), rtol=1e-12)
        # published points outside the axes (the table's weakest models) are counted on the panel, not hidden
        lo, hi = ax.get_xlim()
        assert ax.get_ylim() == (lo, hi)
        outside = sum(not (lo <= x <= hi and lo <= y <= hi) for x, y in zip(xs, ys, strict=True))
        shown = [t.get_text() for t in ax.texts if t.get_gid() == "out-of-view"]
        assert shown == ([f"{outside} of the {len(xs)} points of open_clip published zero-shot models outside the axes"]
                         if outside else [])  # fmt: skip
        # both fits are the least-squares lines in logit space, drawn over the panel
        lines = {line.get_label(): line for line in ax.get_lines()}
        for line_label, (x, y) in [
            (f"supervised baselines: {BASELINE_LABEL}: logit-linear fit", (cross.spec.points[name]["id"], cross.spec.points[name]["shift"])),
            ("open_clip published zero-shot models (x: ImageNet 1k): logit-linear fit", (xs, ys)),
        ]:  # fmt: skip
            slope, intercept = independent_fit(x, y)
            gx, gy = lines[line_label].get_xdata(), lines[line_label].get_ydata()
            assert gy == pytest.approx(sigmoid(slope * logit(gx) + intercept), rel=1e-9)
        # the x-note: the table has no top-1 on the shift's classes, so its points use full ImageNet
        notes = [" ".join(t.get_text().split()) for t in ax.texts if t.get_gid() == "x-note"]
        if paired:
            assert notes == ["open_clip published zero-shot models: x = 'ImageNet 1k' (all classes); the table has no "
                             "top-1 on this shift's classes"]  # fmt: skip
            assert ref.get_facecolors().size == 0 or ref.get_facecolors()[0][3] == 0  # hollow
        else:
            assert notes == []
    # the average panel: each run's mean over the five shifts against its ImageNet val top-1
    average = containers(panels["average over shifts"])
    for key, run_label in labels.items():
        mean = np.mean([accs[key][(task, ds)] for task, ds, _ in NATURAL.values()])
        assert average[run_label] == pytest.approx((accs[key][("imagenet", "val")], mean), abs=1e-12)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert f"supervised baselines: {BASELINE_LABEL}: logit-linear fit" in legend
    assert "open_clip published zero-shot models (x: ImageNet 1k): logit-linear fit" in legend
    assert set(labels.values()) <= set(legend)
    matplotlib.pyplot.close(fig)


@needs_published
def test_report_figure_cli_writes_both_figures_and_prints_every_run(store, tmp_path, capsys):
    folder, _ = store
    out = tmp_path / "out"
    report_main(["figure", "--store", str(folder), "--published", str(OPENCLIP), "--out", str(out)])
    printed = capsys.readouterr().out
    assert (out / "cross_run.png").stat().st_size > 50_000 and (out / "steps.png").stat().st_size > 20_000
    for key, run in RUNS.items():
        assert label(key[0], key[1], run["tags"]) in printed
    assert "ER average over shifts" in printed


def test_runs_with_different_settings_or_baselines_are_refused_with_the_groups_named(tmp_path, capsys):
    digits = RobustnessSpec([("digits", "test")], {"sketch": ShiftSpec([("digits_sketch", "sketch")])}, "digits zoo",
                            {"sketch": baseline_points()[0]["imagenetv2"]}, None)  # fmt: skip
    other = document("tiny_digits", [Record("test", "top1", 0.9, 360, (0.86, 0.93), task="digits"),
                                     Record("sketch", "top1", 0.4, 360, (0.35, 0.45), task="digits_sketch")],
                     digits, suite="digits_shifts", created="2026-02-01T00:00:00+00:00", run_id="d" * 32)  # fmt: skip
    refitted = document("CLIP", records_of(accuracies(0.6, 0.5)), natural_spec("another table", seed=1),
                        tags=["refit"], created="2026-03-01T00:00:00+00:00", run_id="e" * 32)  # fmt: skip
    folder = tmp_path / "store"
    write_store(folder, [other, refitted])
    with pytest.raises(SystemExit) as info:
        report_main(["figure", "--store", str(folder), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "different robustness settings" in err and "--task" in err
    assert "tiny_digits" in err and "ViT-B-32 @ step 1000 [series]" in err
    with pytest.raises(SystemExit) as info:
        report_main(["figure", "--store", str(folder), "--task", "natural_shifts", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "different baselines" in err
    assert f"'{BASELINE_LABEL}': " in err and "'another table': CLIP [refit]" in err
    report_main(["figure", "--store", str(folder), "--task", "digits*", "--out", str(tmp_path / "digits")])
    assert (tmp_path / "digits" / "cross_run.png").is_file() and not (tmp_path / "digits" / "steps.png").exists()
    # re-fitted against one table, the same runs share one supervised line
    points, average = baseline_points(seed=2)
    table = pd.DataFrame({"val": 100 * average["id"]}, index=average.index)
    shifts = []
    for name, frame in points.items():
        table[f"{name}_x"], table[name] = 100 * frame["id"], 100 * frame["shift"]
        shifts += ["--shift", f"{name}={name}_x:{name}"]
    table.reset_index().to_csv(tmp_path / "table.csv", index=False)
    report_main(["figure", "--store", str(folder), "--task", "natural_shifts", "--table", str(tmp_path / "table.csv"),
                 *shifts, "--label", "one table", "--out", str(tmp_path / "refit")])  # fmt: skip
    printed = capsys.readouterr().out
    assert "against one table:" in printed and "CLIP [refit]" in printed and "ViT-B-32 @ step 1000" in printed
    with pytest.raises(SystemExit) as info:
        report_main(["figure", "--store", str(folder), "--shift", "a=b:c"])
    assert info.value.code == 2 and "need --table" in capsys.readouterr().err


# ---------------------------------------------------------------- selection


@pytest.mark.parametrize(
    ("options", "selected"),
    [
        (["--model", "ViT*"], {("ViT-B-32", 1000), ("ViT-B-32", 2000), ("ViT-B-32", 3000)}),
        (["--tag", "other"], {("RN50", None)}),
        (["--glob", "*RN50*"], {("RN50", None)}),
        (["--task", "objectnet", "--tag", "ser*"], {("ViT-B-32", 1000), ("ViT-B-32", 2000), ("ViT-B-32", 3000)}),
    ],
)
def test_runs_are_selected_by_model_tag_task_or_file_glob(store, tmp_path, capsys, options, selected):
    folder, _ = store
    report_main(["figure", "--store", str(folder), *options, "--out", str(tmp_path / "out")])
    table = capsys.readouterr().out.split("\n\n")[0]
    shown = {key for key, run in RUNS.items() if label(key[0], key[1], run["tags"]) in table}
    assert shown == selected


def test_nothing_selected_is_exit_2_with_what_the_store_holds(store, tmp_path, capsys):
    folder, _ = store
    with pytest.raises(SystemExit) as info:
        report_main(["figure", "--store", str(folder), "--model", "ViT-L*", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert f"No stored run in {folder} matches --model 'ViT-L*'" in err
    assert "models RN50, ViT-B-32" in err and "tags other, series" in err
    with pytest.raises(SystemExit) as info:
        report_main(["figure", "--store", str(tmp_path / "nowhere")])
    assert info.value.code == 2 and "No results store at" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(SystemExit) as info:
        report_main(["store", "--store", str(tmp_path / "a_file")])
    assert info.value.code == 2 and "is a file, not a folder" in capsys.readouterr().err


def test_a_bad_published_table_or_mapping_is_exit_2_naming_the_column(store, tmp_path, capsys):
    folder, _ = store
    (tmp_path / "table.csv").write_text("name,pretrained,ImageNet 1k\nm,x,0.5\n")
    with pytest.raises(SystemExit) as info:
        report_main(["figure", "--store", str(folder), "--published", str(tmp_path / "table.csv")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "has no column(s) ['ImageNet v2'" in err and "openclip.yaml" in err


def test_a_users_own_table_and_mapping_draw_the_published_line(store, tmp_path):
    """A percent table with the paired class-subset x for objectnet: no x-note on that panel."""
    folder, _ = store
    rng = np.random.default_rng(3)
    rows = ["model,in1k,v2,sketch,objnet,objnet_x,r,a"] + [
        f"m{i},{x:.2f},{x - 10:.2f},{x / 2:.2f},{x - 25:.2f},{x + 8:.2f},{x / 1.5:.2f},{x / 4:.2f}"
        for i, x in enumerate(rng.uniform(40, 80, 12))
    ]
    (tmp_path / "mine.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "mine.yaml").write_text(
        "label: my models\nmodel: model\nin_distribution: in1k\nshifts:\n  imagenetv2: v2\n  imagenet-sketch: sketch\n"
        "  objectnet: {x: objnet_x, y: objnet}\n  imagenet-r: r\n  imagenet-a: a\n"
    )
    reference = load_reference(tmp_path / "mine.csv", tmp_path / "mine.yaml")
    assert reference.points["objectnet"].loc["m0", "id"] == pytest.approx(float(rows[1].split(",")[5]) / 100)
    fig = cross_run_figure(collect_runs(select_runs(folder, Selector())), reference)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    notes = {
        name: [" ".join(t.get_text().split()) for t in ax.texts if t.get_gid() == "x-note"]
        for name, ax in panels.items()
    }
    assert notes["objectnet"] == [] and notes["imagenetv2"] == []
    assert notes["imagenet-r"] == [
        "my models: x = 'in1k' (all classes); the table has no top-1 on this shift's classes"
    ]
    matplotlib.pyplot.close(fig)


# ---------------------------------------------------------------- checkpoint series


def test_the_step_figure_plots_each_metric_against_the_step_in_step_order(store):
    folder, accs = store
    cross = collect_runs(select_runs(folder, Selector()))
    fig = step_figure(cross)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    shifts = [f"{name} top-1" for name in NATURAL]
    assert list(panels) == [
        "in-distribution top-1 (imagenet/val)",
        *shifts,
        "effective robustness, average over shifts",
    ]
    steps = [1000, 2000, 3000]

    def series(title):
        (bars,) = [c for c in panels[title].containers if c.get_label() == "ViT-B-32 [series]"]
        return list(bars.lines[0].get_xdata()), list(bars.lines[0].get_ydata())

    assert series("in-distribution top-1 (imagenet/val)") == (
        steps,
        pytest.approx([100 * accs[("ViT-B-32", s)][("imagenet", "val")] for s in steps]),
    )
    for name, (task, ds, _) in NATURAL.items():
        assert series(f"{name} top-1")[1] == pytest.approx([100 * accs[("ViT-B-32", s)][(task, ds)] for s in steps])
    runs = {r.step: r for r in cross.runs if r.step is not None}
    er = series("effective robustness, average over shifts")[1]
    assert er == pytest.approx([100 * runs[s].report.average.effective_robustness for s in steps])
    assert er == sorted(er)  # the fixture's checkpoints grow more robust
    assert "RN50" not in " ".join(t.get_text() for t in fig.legends[0].get_texts())  # no step: not a series
    matplotlib.pyplot.close(fig)


def test_a_series_is_one_model_and_its_tags_and_a_repeated_step_keeps_the_newest(store, tmp_path, caplog):
    """Two training runs of one model (told apart by tags) are two lines; a rerun at a step does not zig-zag."""
    from clipeval.report.cross_run import _series

    folder, _ = store
    runs = collect_runs(select_runs(folder, Selector())).runs
    other = [dataclasses.replace(r, doc=dataclasses.replace(r.doc, raw=r.doc.raw | {"tags": ["B"]})) for r in runs
             if r.step is not None]  # fmt: skip
    rerun = [dataclasses.replace(r, doc=dataclasses.replace(r.doc, raw=r.doc.raw | {"created": "2099-01-01"}))
             for r in runs if r.step == 2000]  # fmt: skip
    series = _series([*runs, *other, *rerun])
    assert sorted(series) == ["ViT-B-32 [B]", "ViT-B-32 [series]"]
    assert [r.step for r in series["ViT-B-32 [series]"]] == [1000, 2000, 3000]
    assert series["ViT-B-32 [series]"][1].doc.created == "2099-01-01"
    assert "Two runs of ViT-B-32 [series] at step 2000" in caplog.text


def test_a_step_that_is_not_a_number_is_exit_2(tmp_path, capsys, caplog):
    """The entry is not a valid document: skipped with a warning naming the field, and with nothing left, exit 2."""
    folder = tmp_path / "store"
    add_to_store(folder, document("m", records_of(accuracies(0.6, 0.5)), natural_spec(), step="late"))
    with pytest.raises(SystemExit) as info:
        report_main(["figure", "--store", str(folder)])
    assert info.value.code == 2 and "'step' must be a number" in caplog.text + capsys.readouterr().err


# ---------------------------------------------------------------- re-fit against another table


def digits_document() -> tuple[dict, dict[str, float]]:
    """A digits-suite-like stored run (in distribution digits/test; shifts renditions and sketch)."""
    spec = RobustnessSpec(
        [("digits", "test")],
        {"renditions": ShiftSpec([("digits_renditions", "renditions")]), "sketch": ShiftSpec([("digits_sketch", "sketch")])},
        "digits zoo", {name: baseline_points()[0]["imagenetv2"] for name in ("renditions", "sketch")},
        baseline_points()[1],
    )  # fmt: skip
    counts = {("digits", "test"): (346, 360), ("digits_renditions", "renditions"): (298, 510),
              ("digits_sketch", "sketch"): (115, 360)}  # fmt: skip
    records = [Record(ds, "top1", k / n, n, clopper_pearson(k, n), task=t) for (t, ds), (k, n) in counts.items()]
    return document("tiny_digits", records, spec, suite="digits_shifts"), {
        ds: k / n for (_, ds), (k, n) in counts.items()
    }


def test_refit_recomputes_a_stored_run_against_another_table(tmp_path, capsys):
    doc, acc = digits_document()
    entry = add_to_store(tmp_path / "store", doc)
    table = pd.DataFrame({"model": [f"cnn{i}" for i in range(6)], "clean": [70, 78, 84, 88, 91, 95.5],
                          "rend": [30, 38, 45, 52, 57, 66], "sk": [12, 18, 20, 28, 33, 41]})  # fmt: skip
    table.to_csv(tmp_path / "table.csv", index=False)
    report_main(["refit", entry.name, "--store", str(tmp_path / "store"), "--table", str(tmp_path / "table.csv"),
                 "--shift", "renditions=clean:rend", "--shift", "sketch=clean:sk:0.8", "--in-distribution", "clean",
                 "--label", "my CNNs", "--out", str(tmp_path / "out")])  # fmt: skip
    out = capsys.readouterr().out
    assert out.startswith("digits_shifts (v1) re-fitted · tiny_digits · baselines: my CNNs")
    rows = {line[:20].strip(): line.split() for line in out.splitlines()}
    x = table["clean"] / 100
    for shift, column, keep in [("renditions", "rend", x >= 0), ("sketch", "sk", x >= 0.8)]:
        slope, intercept = independent_fit(x[keep], table[column][keep] / 100)
        expected = acc[shift] - sigmoid(slope * logit(acc["test"]) + intercept)
        assert rows[shift][-3] == f"{100 * expected:+.1f}"
    mean_y = (table["rend"] + table["sk"]) / 200
    slope, intercept = independent_fit(x, mean_y)
    expected = (acc["renditions"] + acc["sketch"]) / 2 - sigmoid(slope * logit(acc["test"]) + intercept)
    assert rows["average over shifts"][-3] == f"{100 * expected:+.1f}"
    for name in ("effective_robustness", "effective_robustness_bars", "average_over_shifts"):
        assert (tmp_path / "out" / f"{name}_refit_tiny_digits.png").stat().st_size > 10_000


def test_refit_without_a_mapping_for_the_runs_shifts_is_exit_2(tmp_path, capsys):
    doc, _ = digits_document()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps(doc))
    (tmp_path / "t.csv").write_text("model,val,imagenetv2-matched-frequency\na,60,50\nb,70,60\n")
    with pytest.raises(SystemExit) as info:  # the default protocol is the testbed's: no digits shifts
        report_main(["refit", str(tmp_path / "run"), "--table", str(tmp_path / "t.csv")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "The run's shifts are ['renditions', 'sketch']" in err and "--shift" in err
    with pytest.raises(SystemExit) as info:
        report_main(["refit", str(tmp_path / "run"), "--table", str(tmp_path / "t.csv"), "--shift", "sketch=val"])
    assert info.value.code == 2 and "expected NAME=X_COLUMN:Y_COLUMN" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        report_main(["refit", str(tmp_path / "run"), "--table", str(tmp_path / "t.csv"),
                     "--shift", "renditions=val:nope", "--shift", "sketch=val:val"])  # fmt: skip
    assert info.value.code == 2 and "has no column(s) ['nope']" in capsys.readouterr().err


# ---------------------------------------------------------------- the store report from documents alone


def test_store_report_from_documents_alone_skips_a_bad_entry(store, tmp_path, caplog):
    folder, _ = store
    (folder / "truncated.json").write_text('{"kind": "clipeval-results", "schema_')
    with caplog.at_level(logging.WARNING):
        report_main(["store", "--store", str(folder), "--tag", "series", "--out", str(tmp_path / "out")])
    assert "Skipped truncated.json" in caplog.text
    md = (tmp_path / "out" / "report.md").read_text()
    assert md.count("\n## natural_shifts (v1) · ViT-B-32 @ step") == 3 and "RN50" not in md
    assert "selected by --tag 'series'" in md
    assert md.count("| average over shifts |") == 3
    figures = sorted((tmp_path / "out" / "figures").glob("*/*.png"))
    assert len(figures) == 3 * 3 and md.count("![") == 9  # per run: panels, bars, average
