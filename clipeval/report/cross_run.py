"""Figures across stored runs: many models, or one model's checkpoints, on the effective-robustness panels.

:func:`cross_run_figure` draws one logit-axes panel per shift and one for the average over shifts
(the CLIP paper's Figure 13, left). Each panel holds

- every selected run (its in-distribution top-1 against its shift top-1, with Clopper–Pearson
  intervals; checkpoints of one model joined in step order), labelled by :func:`run_label`;
- the supervised baselines the runs were fitted against (their stored points), with their
  logit-linear fit and its 95% bootstrap band. Runs fitted against different baselines cannot
  share one line: they are refused, with the groups named;
- optionally, a second reference line: published CLIP-family models (:class:`Reference`, e.g.
  open_clip's results table mapped by ``conf/published/openclip.yaml``), their points and their
  own logit-linear fit. Where the table has no top-1 on the shift's class subset (the x of the
  ObjectNet, ImageNet-R and ImageNet-A panels), its points use the table's in-distribution
  column instead: they are drawn hollow and the panel says which x they use.

:func:`step_figure` draws a checkpoint series: in-distribution top-1, each shift's top-1 and
the headline effective robustness against the training step (results document ``step``).
Everything is computed from results documents (records and stored baseline points); the drawing
functions return matplotlib Figures, which :func:`clipeval.report.figures.save` writes.
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clipeval.config.paths import conf_dir
from clipeval.errors import ClipevalError
from clipeval.report.figures import cap_percent, fitted, logit_axes, logit_limits, note_below, plt
from clipeval.report.inputs import (
    accuracies,
    labels,
    numbers,
    published_mapping,
    read_csv,
    read_yaml_mapping,
    require_columns,
)
from clipeval.report.logit_fit import LogitFit, band, fit_baselines
from clipeval.report.refit import refit_spec
from clipeval.report.robustness import RobustnessReport, build_report
from clipeval.report.run_summary import run_label, stored_spec
from clipeval.report.selection import each_run
from clipeval.report.tables import text_table
from clipeval.results.robustness import RobustnessSpec
from clipeval.results.store import ResultsDocument

log = logging.getLogger(__name__)

DEFAULT_MAPPING = conf_dir() / "published" / "openclip.yaml"
AVERAGE_TITLE = "average over shifts"
BASELINE_COLOR, REFERENCE_COLOR = "0.45", "tab:blue"
RUN_COLORS = ["tab:red", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
              "tab:cyan", "crimson", "darkgoldenrod", "teal", "indigo"]  # fmt: skip
RUN_MARKERS = ["*", "D", "^", "s", "P", "X", "v", "o", "<", ">", "h", "p"]


# ---------------------------------------------------------------- the published reference


@dataclass
class Reference:
    """Published models as a second reference line.

    ``points``: {shift: DataFrame(index=model, columns=[id, shift])} for the shifts the table maps;
    ``x_columns``: {shift: the column its x comes from}; ``paired``: {shift: whether that column is the
    shift's own in-distribution column (given as ``x`` in the mapping) rather than the table's
    ``in_distribution`` column}; ``table``: the wide table (fractions) by model, for the average.
    """

    label: str
    in_distribution: str
    points: dict[str, pd.DataFrame]
    x_columns: dict[str, str]
    paired: dict[str, bool]
    y_columns: dict[str, str]
    table: pd.DataFrame
    source: str = ""

    def average_points(self, shifts: Sequence[str]) -> pd.DataFrame | None:
        """(in-distribution column, mean over ``shifts``' columns) per model; None unless every shift is mapped."""
        if not all(s in self.y_columns for s in shifts):
            return None
        y = self.table[[self.y_columns[s] for s in shifts]].mean(axis=1, skipna=False)
        return pd.DataFrame({"id": self.table[self.in_distribution], "shift": y}).dropna()

    def x_note(self, shift: str) -> str:
        return (
            f"{self.label}: x = '{self.x_columns[shift]}' (all classes); the table has no top-1 on this shift's classes"
        )


def load_reference(table: Path, mapping: Path | None = None) -> Reference:
    """Published points from ``table`` (CSV, fractions or percent, each column by itself) as ``mapping`` (YAML;
    default conf/published/openclip.yaml; :func:`clipeval.report.inputs.published_mapping`) maps its columns to
    shifts. ClipevalError naming the file, key, column and row for anything missing or not an accuracy."""
    mapping = Path(mapping) if mapping is not None else DEFAULT_MAPPING
    mapping, raw = read_yaml_mapping(mapping, "Published mapping")
    cfg = published_mapping(raw, str(mapping))
    table, frame = read_csv(table, "Published results table")
    x_cols = {name: s["x"] for name, s in cfg["shifts"].items()}
    y_cols = {name: s["y"] for name, s in cfg["shifts"].items()}
    columns = list(dict.fromkeys([cfg["in_distribution"], *x_cols.values(), *y_cols.values()]))
    require_columns(frame, [*cfg["model"], *columns], str(table), f"{mapping} maps them")
    index = labels(frame, cfg["model"], str(table))
    values = numbers(frame, columns, str(table), index)
    values = pd.concat([accuracies(values[[c]], str(table)) for c in columns], axis=1)  # percent: per column
    min_x = cfg["min_x"]
    points = {}
    for name in cfg["shifts"]:
        pts = pd.DataFrame({"id": values[x_cols[name]], "shift": values[y_cols[name]]}).dropna()
        points[name] = pts[pts["id"] >= min_x]
    return Reference(cfg["label"], cfg["in_distribution"], points, x_cols, cfg["paired"], y_cols, values, str(table))


# ---------------------------------------------------------------- the selected runs


@dataclass
class Run:
    label: str
    doc: ResultsDocument
    report: RobustnessReport

    @property
    def step(self) -> float | None:
        return self.doc.step


@dataclass
class CrossRun:
    """Runs with one set of settings and one set of baselines (``spec``: the first run's)."""

    runs: list[Run]
    spec: RobustnessSpec
    skipped: list[str] = field(default_factory=list)  # runs left out (no robustness report), with why

    @property
    def shifts(self) -> list[str]:
        return list(self.spec.shifts)

    def class_subset(self, shift: str) -> bool:
        """Whether the shift's x is its own in-distribution setting (ImageNet val on its classes)."""
        return self.spec.shifts[shift].in_distribution is not None

    @property
    def reference_report(self) -> RobustnessReport:
        return self.runs[0].report


def _limits_note(docs: Sequence[ResultsDocument]) -> None:
    """Warn when the runs scored different numbers of samples (runtime.limit): their points are not alike."""
    limits = {d.where: {ds.get("limit") for task in (d.data or {}).values() for ds in task.values()} for d in docs}
    if len({frozenset(v) for v in limits.values()}) > 1:
        shown = "; ".join(f"{Path(w).name}: {sorted(v, key=str)}" for w, v in limits.items())
        log.warning("The selected runs scored different numbers of samples (runtime.limit, null = all): %s. Their "
                    "points are on different samples of the data; compare like with like.", shown)  # fmt: skip


def collect_runs(docs: Sequence[ResultsDocument], baselines: Any = None) -> CrossRun:
    """The runs' reports, checked to share settings and baselines.

    ``baselines``: a provider (a table: :func:`clipeval.report.refit.table_baselines`) every run is re-fitted
    against; None: each run's stored baseline points. Runs without robustness settings (a single task, or a
    failed suite) are left out with a warning. Raises ClipevalError when none is left, or when the runs have
    different shifts or baselines (one figure has one supervised line), naming the groups.
    """
    runs, skipped, specs = [], [], []
    _limits_note(docs)
    suites = []
    for doc in docs:
        if doc.step is not None and (isinstance(doc.step, bool) or not isinstance(doc.step, int | float)):
            raise ClipevalError(f"{doc.where}: 'step' must be a number (the training step), not {doc.step!r}.")
        if stored_spec(doc) is None:
            why = "failed" if doc.failures or doc.raw.get("effective_robustness_error") else "not a suite"
            skipped.append(f"{_where(doc)} ({why})")
        else:
            suites.append(doc)

    def computed(doc: ResultsDocument) -> tuple[RobustnessSpec, RobustnessReport]:
        spec = stored_spec(doc)
        spec = spec if baselines is None else refit_spec(spec, baselines)
        return spec, build_report(spec, doc.records)

    for doc, (spec, report) in each_run(suites, computed):  # a run whose report fails is skipped with a warning
        runs.append(Run(run_label(doc), doc, report))
        specs.append(spec)
    for line in skipped:
        log.warning("Left out of the figure, no effective-robustness report: %s", line)
    if not runs and suites:
        raise ClipevalError("No effective-robustness report of the selected runs could be computed: see the "
                            f"warnings above{''.join(f'; {line}' for line in skipped)}.")  # fmt: skip
    if not runs:
        raise ClipevalError(f"None of the selected runs has an effective-robustness report: {', '.join(skipped)}.")
    _same_settings(runs, specs)
    _same_baselines(runs, specs)
    _unique_labels(runs)
    return CrossRun(runs, specs[0], skipped)


def _where(doc: ResultsDocument) -> str:
    return f"{run_label(doc)} ({doc.path.name if doc.path else doc.selection['name']})"


def _groups(runs: list[Run], keys: list[Any], describe) -> str:
    groups: dict[int, list[Run]] = {}
    firsts: list[Any] = []
    for run, key in zip(runs, keys, strict=True):
        i = next((i for i, k in enumerate(firsts) if k == key), None)
        if i is None:
            firsts.append(key)
            i = len(firsts) - 1
        groups.setdefault(i, []).append(run)
    return "; ".join(f"{describe(firsts[i])}: {', '.join(_where(r.doc) for r in g)}" for i, g in groups.items())


def _same_settings(runs: list[Run], specs: list[RobustnessSpec]) -> None:
    keys = [(s.in_distribution, s.shifts) for s in specs]
    if any(k != keys[0] for k in keys):
        describe = lambda k: f"shifts {list(k[1])} on {['/'.join(r) for r in k[0]]}"  # noqa: E731
        raise ClipevalError(
            "The selected runs have different robustness settings, so they cannot share panels: "
            f"{_groups(runs, keys, describe)}. Select one suite's runs (e.g. --task <suite name>)."
        )


def _same_points(a: pd.DataFrame | None, b: pd.DataFrame | None) -> bool:
    if a is None or b is None:
        return a is b
    return list(a.index) == list(b.index) and np.allclose(a.to_numpy(float), b.to_numpy(float), rtol=0, atol=1e-9)


def _same_baselines(runs: list[Run], specs: list[RobustnessSpec]) -> None:
    first = specs[0]
    same = [
        s.baselines_label == first.baselines_label
        and all(_same_points(s.points[n], first.points[n]) for n in first.shifts)
        and _same_points(s.average_points, first.average_points)
        for s in specs
    ]
    if not all(same):
        keys = [(s.baselines_label, i if not ok else 0) for i, (s, ok) in enumerate(zip(specs, same, strict=True))]
        raise ClipevalError(
            "The selected runs were fitted against different baselines, and one figure has one supervised line: "
            f"{_groups(runs, keys, lambda k: repr(k[0]))}. Select runs with the same baselines (--task, --tag, "
            "--glob), or re-fit them all against one table (--table TABLE with --shift or --protocol)."
        )


def _unique_labels(runs: list[Run]) -> None:
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.label] = counts.get(run.label, 0) + 1
    for run in runs:
        if counts[run.label] > 1:
            run.label = f"{run.label} ({run.doc.created or run.doc.raw.get('run_id', '')[:8]})"


# ---------------------------------------------------------------- the figure


def _style(i: int) -> dict[str, Any]:
    return {"color": RUN_COLORS[i % len(RUN_COLORS)], "marker": RUN_MARKERS[i % len(RUN_MARKERS)]}


def _limits(*arrays: Any) -> tuple[float, float]:
    return logit_limits(np.concatenate([np.asarray(a, float).ravel() for a in arrays]), margin=0.5)


def _panel_limits(own: list[Any], ref: pd.DataFrame | None) -> tuple[float, float]:
    """Axes limits (the same for x and y) around the runs and the supervised baselines (``own``: arrays of
    accuracies, the first two the baselines' x and y), and the published models whose x falls in that range: the
    panel shows the region where the runs are measured, not the table's weakest models."""
    arrays = list(own)
    if ref is not None:
        x_lo, x_hi = _limits(*own[:1], *own[2:])
        near = ref[(ref["id"] >= x_lo) & (ref["id"] <= x_hi)]
        arrays += [near["id"], near["shift"]]
    return _limits(*arrays)


def _out_of_view(ax, ref: pd.DataFrame, limits: tuple[float, float], label: str) -> None:
    lo, hi = limits
    outside = int((~(ref["id"].between(lo, hi) & ref["shift"].between(lo, hi))).sum())
    if outside:
        note_below(
            ax, f"{outside} of the {len(ref)} points of {label} outside the axes", "out-of-view", REFERENCE_COLOR
        )


def _line(ax, points: pd.DataFrame, fit: LogitFit, fits: np.ndarray | None, grid: np.ndarray, color: str,
          label: str, hollow: bool = False) -> None:  # fmt: skip
    """A reference line: its models' points, its logit-linear fit and (``fits``) its bootstrap band."""
    if fits is not None:
        lo, hi = band(fits, grid)
        ax.fill_between(
            grid, lo, hi, color=color, alpha=0.15, lw=0, zorder=1, label=f"{label}: fit, 95% bootstrap band"
        )
    face = "none" if hollow else color
    ax.scatter(points["id"], points["shift"], s=12, facecolors=face, edgecolors=color, linewidths=0.7, alpha=0.8,
               zorder=2, label=f"{label} ({len(points)} models)")  # fmt: skip
    ax.plot(grid, fit.predict(grid), color=color, lw=1.3, zorder=2, label=f"{label}: logit-linear fit")


def _runs(ax, cross: CrossRun, xy) -> None:
    """Each run as a marker with its intervals; the checkpoints of one model joined in step order."""
    for i, run in enumerate(cross.runs):
        (x, (x_lo, x_hi)), (y, (y_lo, y_hi)) = xy(run)
        style = _style(i)
        ax.errorbar(x, y, xerr=[[x - x_lo], [x_hi - x]], yerr=[[y - y_lo], [y_hi - y]], fmt=style["marker"],
                    ms=9 if style["marker"] == "*" else 6, color=style["color"], capsize=2, elinewidth=0.8,
                    label=run.label, zorder=4)  # fmt: skip
    for series in _series(cross.runs).values():
        if len(series) > 1:
            xs, ys = zip(*((xy(r)[0][0], xy(r)[1][0]) for r in series), strict=True)
            i = cross.runs.index(series[0])
            ax.plot(xs, ys, color=_style(i)["color"], lw=0.8, alpha=0.6, zorder=3)


def _series(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs with a step, by model name and tags (one training run's checkpoints), in step order: the checkpoint
    series. Two runs of a series at the same step: the newest is kept, with a warning."""
    out: dict[str, dict[float, Run]] = {}
    for run in sorted(runs, key=lambda r: r.doc.created):
        if run.step is None:
            continue
        tags = run.doc.tags
        name = run.doc.model["name"] + (f" [{', '.join(tags)}]" if tags else "")
        if run.step in out.setdefault(name, {}):
            log.warning("Two runs of %s at step %g: the newer (%s) is drawn in the series.", name, run.step, run.label)
        out[name][run.step] = run
    return {name: [steps[s] for s in sorted(steps)] for name, steps in out.items()}


def _shift_panel(ax, cross: CrossRun, name: str, reference: Reference | None) -> None:
    result = next(s for s in cross.reference_report.shifts if s.shift.name == name)
    base = cross.spec.points[name]
    mine = [next(s for s in r.report.shifts if s.shift.name == name) for r in cross.runs]
    ref = reference.points.get(name) if reference is not None else None
    own = [base["id"], base["shift"], *[[*m.in_distribution.ci, *m.shift.ci] for m in mine]]
    limits = _panel_limits(own, ref)
    grid = np.linspace(*limits, 200)
    ax.plot(grid, grid, ls="--", color="0.75", lw=1, label="y = x", zorder=0)
    label = f"supervised baselines: {cross.spec.baselines_label}"
    _line(ax, base, result.fit, result.fits, grid, BASELINE_COLOR, label)
    if ref is not None and len(ref) >= 2:
        hollow = cross.class_subset(name) and not reference.paired[name]
        fit = fit_baselines(ref["id"].to_numpy(), ref["shift"].to_numpy(), list(ref.index))
        _line(ax, ref, fit, None, grid, REFERENCE_COLOR, _reference_label(reference), hollow=hollow)
        _out_of_view(ax, ref, limits, reference.label)
        if hollow:
            note_below(ax, textwrap.fill(reference.x_note(name), 70), "x-note", REFERENCE_COLOR)
    by_run = dict(zip((id(r) for r in cross.runs), mine, strict=True))
    _runs(ax, cross, lambda r: ((by_run[id(r)].in_distribution.top1, by_run[id(r)].in_distribution.ci),
                                (by_run[id(r)].shift.top1, by_run[id(r)].shift.ci)))  # fmt: skip
    logit_axes(ax, limits)
    ax.set_title(name)
    ident = result.in_distribution
    ax.set_xlabel(f"in-distribution top-1 ({', '.join(ident.datasets)})", fontsize=8)
    ax.set_ylabel(f"{name} top-1", fontsize=8)


def _reference_label(reference: Reference) -> str:
    return f"{reference.label} (x: {reference.in_distribution})"


def _average_panel(ax, cross: CrossRun, reference: Reference | None) -> None:
    """The runs' mean top-1 over the shifts against their in-distribution top-1 (the CLIP paper's Figure 13, left),
    with the baselines' average line and, when the table maps every shift, the published models' one."""
    avg = cross.reference_report.average
    ax.set_title(AVERAGE_TITLE)
    if avg is None:
        ax.text(0.5, 0.5, "the baselines give no average over shifts", transform=ax.transAxes, ha="center", fontsize=8)
        ax.set_axis_off()
        return
    by_run = {id(r): r.report.average for r in cross.runs}
    ref = reference.average_points(cross.shifts) if reference is not None else None
    own = [
        avg.baselines["id"],
        avg.baselines["shift"],
        *[[*a.in_distribution.ci, *a.mean_top1_ci] for a in by_run.values()],
    ]
    limits = _panel_limits(own, ref)
    grid = np.linspace(*limits, 200)
    ax.plot(grid, grid, ls="--", color="0.75", lw=1, label="y = x", zorder=0)
    label = f"supervised baselines: {cross.spec.baselines_label}"
    _line(ax, avg.baselines, avg.fit, avg.fits, grid, BASELINE_COLOR, label)
    if ref is not None and len(ref) >= 2:
        fit = fit_baselines(ref["id"].to_numpy(), ref["shift"].to_numpy(), list(ref.index))
        _line(ax, ref, fit, None, grid, REFERENCE_COLOR, _reference_label(reference))
        _out_of_view(ax, ref, limits, reference.label)
    elif reference is not None:
        note = f"{reference.label}: not drawn (the table maps only {sorted(reference.y_columns)} of the shifts)"
        note_below(ax, textwrap.fill(note, 70), "reference-note", REFERENCE_COLOR)
    _runs(ax, cross, lambda r: ((by_run[id(r)].id_top1, by_run[id(r)].in_distribution.ci),
                                (by_run[id(r)].mean_top1, by_run[id(r)].mean_top1_ci)))  # fmt: skip
    logit_axes(ax, limits)
    ax.set_xlabel(f"in-distribution top-1 ({', '.join(avg.in_distribution.datasets)})", fontsize=8)
    ax.set_ylabel(f"mean top-1 over {len(avg.shifts)} shifts", fontsize=8)


def cross_run_figure(cross: CrossRun, reference: Reference | None = None):
    """One panel per shift and the average-over-shifts panel, every run of ``cross`` on each; returns the Figure.

    Panels are titled by shift name (the last one :data:`AVERAGE_TITLE`); one legend for the figure."""
    if reference is not None and not set(reference.points) & set(cross.shifts):
        log.warning("The published table maps none of the shifts %s: its line is not drawn.", cross.shifts)
        reference = None
    n = len(cross.shifts) + 1
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 4.5 * rows + 1.6), squeeze=False)
    for ax, name in zip(axes.flat, cross.shifts, strict=False):
        _shift_panel(ax, cross, name, reference)
    _average_panel(axes.flat[n - 1], cross, reference)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles: dict[str, Any] = {}
    for ax in list(axes.flat)[:n]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    labels = [fitted(label, fig.get_figwidth() / 3, 7) for label in handles]  # run labels name weights: can be long
    fig.legend(list(handles.values()), labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    against = f"the supervised baselines ({cross.spec.baselines_label})"
    against += f" and {reference.label}" if reference is not None else ""
    title = f"{len(cross.runs)} stored run(s) against {against}; logit axes, 95% intervals"
    fig.suptitle(fitted(title, fig.get_figwidth(), 10), fontsize=10)
    legend_rows = math.ceil(len(handles) / 3)
    fig.tight_layout(rect=(0, min(0.4, 0.028 * legend_rows + 0.02), 1, 0.97))
    return fig


# ---------------------------------------------------------------- checkpoint series


def step_values(report: RobustnessReport) -> dict[str, tuple[float, tuple[float, float], str]]:
    """What a checkpoint series figure plots, by panel title: (value, interval, unit 'fraction'|'difference')."""
    out = {f"in-distribution top-1 ({', '.join(report.in_distribution.datasets)})":
           (report.in_distribution.top1, report.in_distribution.ci, "fraction")}  # fmt: skip
    out |= {f"{s.shift.name} top-1": (s.shift.top1, s.shift.ci, "fraction") for s in report.shifts}
    label, value, ci = report.headline
    out[f"effective robustness, {label}"] = (value, ci, "difference")
    return out


def step_figure(cross: CrossRun):
    """Each checkpoint series (runs with a ``step``, one line per model name) against the step: in-distribution
    top-1, each shift's top-1 and the headline effective robustness. Raises ClipevalError without a series."""
    series = _series(cross.runs)
    if not series:
        raise ClipevalError(
            "None of the selected runs has a step: evaluate checkpoints with step=<training step> to draw a series."
        )
    titles = list(step_values(cross.reference_report))
    cols = min(3, len(titles))
    rows = math.ceil(len(titles) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows + 0.8), squeeze=False)
    for ax, title in zip(axes.flat, titles, strict=False):
        for name, runs in series.items():
            i = cross.runs.index(runs[0])
            values = [step_values(r.report)[title] for r in runs]
            scale = 100
            y = np.array([v[0] for v in values]) * scale
            err = np.array([[v[0] - v[1][0], v[1][1] - v[0]] for v in values]).T * scale
            ax.errorbar([r.step for r in runs], y, yerr=err, marker="o", ms=4, capsize=2, color=_style(i)["color"],
                        label=name)  # fmt: skip
        unit = values[0][2]
        if unit == "difference":
            ax.axhline(0, color="0.6", lw=0.8, ls="--")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("training step")
        ax.set_ylabel("percentage points" if unit == "difference" else "top-1 (%)")
        if unit != "difference":
            cap_percent(ax)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(titles) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, [fitted(f"{label} (95% intervals)", fig.get_figwidth() / 3, 7) for label in labels],
               loc="lower center", ncol=3, fontsize=7, frameon=False)  # fmt: skip
    title = f"Checkpoint series: {', '.join(f'{n} ({len(r)} steps)' for n, r in series.items())}"
    fig.suptitle(fitted(title, fig.get_figwidth(), 10), fontsize=10)
    fig.tight_layout(rect=(0, (0.2 + 0.15 * math.ceil(len(labels) / 3)) / fig.get_figheight(), 1, 1))
    return fig


# ---------------------------------------------------------------- the printed table


def cross_run_table(cross: CrossRun) -> str:
    """Per run: store entry, in-distribution top-1 (%), each shift's effective robustness and the headline (pp)."""
    label = cross.reference_report.headline[0]
    head = ["run", "store entry", "ID top-1 (%)", *(f"ER {s}" for s in cross.shifts), f"ER {label}"]
    rows = [
        [r.label, r.doc.path.name if r.doc.path else "", f"{100 * r.report.in_distribution.top1:.1f}",
         *(f"{100 * s.effective_robustness:+.1f}" for s in r.report.shifts),
         f"{100 * r.report.headline[1]:+.1f} [{100 * r.report.headline[2][0]:+.1f}, {100 * r.report.headline[2][1]:+.1f}]"]
        for r in cross.runs
    ]  # fmt: skip
    return f"Effective robustness (pp) against {cross.spec.baselines_label}:\n" + text_table(head, rows)
