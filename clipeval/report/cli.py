"""``clipeval report`` (or ``python -m clipeval.report``): reports computed from results documents and
published numbers alone; no model runs.

    clipeval report store  [--store DIR] [--out DIR] [selection]     report.md + report.html of stored runs
    clipeval report figure [--store DIR] [selection] [--published openclip_results.csv [--published-map YAML]]
                           [--out DIR] [--format png|pdf|svg]        every selected run on the ER panels
    clipeval report refit  RUN --table robustness_top1s.csv [--model-types model_types.csv]
                           [--protocol YAML] [--shift NAME=X:Y[:MIN_X] ...] [--in-distribution COL] [--out DIR]
    clipeval report testbed --table robustness_top1s.csv --model-types model_types.csv \\
        --sizes eval_setting_sizes.json --model vit_b_32_clip_zeroshot [--out DIR]
    clipeval report figure13 --table ... --model-types ... --published clip_paper_fig13_table16.csv [--out DIR]

selection: ``--model GLOB --task GLOB --tag GLOB --glob GLOB`` (each given one must match; shell-style,
case-sensitive; ``--glob`` matches the store file's name). ``store`` and ``figure`` read only the
results store; ``refit`` reads one results document (a run directory, its results.json or a store
entry). ``testbed`` reads a model's row of the imagenet-testbed table and computes its effective
robustness on each natural shift against the table's standard models, with the same code a run
uses. ``figure13`` redraws the CLIP paper's Figure 13 (Radford et al. 2021).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from clipeval.atomic import output_folder, safe_file_name
from clipeval.config.paths import path_argument
from clipeval.errors import USAGE_EXIT_CODE, ClipevalError, printable
from clipeval.logs import shown
from clipeval.report.robustness import format_report
from clipeval.report.testbed import PAPER_TO_TESTBED, figure13, testbed_baselines, testbed_inputs, testbed_report
from clipeval.results.store import Selector

__all__ = ["PAPER_TO_TESTBED", "figure13", "main", "testbed_baselines", "testbed_inputs", "testbed_report"]


def _store_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store",
        type=path_argument,
        default=Path(os.environ.get("CLIPEVAL_STORE", "outputs/store")),
        help="the results store (default: $CLIPEVAL_STORE, else outputs/store, as the runs use)",
    )


def _selection_options(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("selection (each given criterion must match; shell-style globs)")
    group.add_argument("--model", help="model name, e.g. 'ViT-B-32*'")
    group.add_argument("--task", help="the task or suite name, or one of the suite's tasks")
    group.add_argument("--tag", help="one of the run's tags (config key tags=[...])")
    group.add_argument("--glob", help="the store file's name, e.g. '2026*natural_shifts*'")


def _selector(args: argparse.Namespace) -> Selector:
    return Selector(model=args.model, task=args.task, tag=args.tag, glob=args.glob)


def _baseline_options(p: argparse.ArgumentParser, required: bool) -> None:
    what = "re-fit against" if required else "re-fit every selected run against (default: their stored baselines)"
    group = p.add_argument_group(f"baselines to {what}")
    group.add_argument("--table", required=required, type=path_argument, help="baselines' accuracies: wide or long CSV")
    group.add_argument("--model-types", type=path_argument, help="model,model_type CSV: keep STANDARD models only")
    group.add_argument(
        "--protocol", type=path_argument, help="YAML as conf/baselines/testbed.yaml (the default protocol)"
    )
    group.add_argument(
        "--shift",
        action="append",
        default=[],
        metavar="NAME=X:Y[:MIN_X]",
        help="fit the run's shift NAME on table columns X (baselines' in-distribution) and Y (shift),\n"
        "models with X >= MIN_X (a fraction); repeat per shift; replaces the protocol's shifts",
    )
    group.add_argument("--in-distribution", help="the table's column the average over shifts uses (default val)")
    group.add_argument("--label", help="how the report names these baselines")


def _baselines(args: argparse.Namespace, run_shifts=None):
    """The table baselines the options describe (None: no --table); ``run_shifts``: the shifts they must define."""
    from clipeval.report.refit import table_baselines

    if args.table is None:
        if args.shift or args.protocol or args.model_types or args.in_distribution or args.label:
            raise ClipevalError("--shift, --protocol, --model-types, --in-distribution and --label need --table.")
        return None
    return table_baselines(
        args.table, args.model_types, args.protocol, args.shift, args.label, args.in_distribution, run_shifts
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipeval report", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    store = sub.add_parser("store", help="Markdown and HTML report of the stored runs (figures drawn from them)")
    _store_option(store)
    _selection_options(store)
    store.add_argument("--out", type=path_argument, default=Path("reports/out"))

    figure = sub.add_parser("figure", help="every selected stored run on the effective-robustness panels")
    _store_option(figure)
    _selection_options(figure)
    figure.add_argument("--published", type=path_argument, help="published results table, e.g. openclip_results.csv")
    figure.add_argument(
        "--published-map",
        type=path_argument,
        help="YAML mapping the table's columns to the suite's shifts (default conf/published/openclip.yaml)",
    )
    _baseline_options(figure, required=False)
    figure.add_argument(
        "--out", type=path_argument, default=Path("reports/out"), help="folder for cross_run.<format>, steps.<format>"
    )
    figure.add_argument("--format", default="png", choices=["png", "pdf", "svg"])

    refit = sub.add_parser("refit", help="a stored run's effective robustness against another baseline table")
    refit.add_argument(
        "run", type=path_argument, help="a run directory, its results.json, or a store entry (or its name)"
    )
    _store_option(refit)
    _baseline_options(refit, required=True)
    refit.add_argument("--out", type=path_argument, default=Path("reports/out"))

    for name in ("testbed", "figure13"):
        p = sub.add_parser(name)
        p.add_argument("--table", required=True, type=path_argument, help="imagenet-testbed robustness_top1s.csv")
        p.add_argument(
            "--model-types",
            required=True,
            type=path_argument,
            help="model_types.csv (model,model_type) or plotting/model_types.py",
        )
        p.add_argument("--out", type=path_argument, default=Path("reports/out"))
    sub.choices["testbed"].add_argument(
        "--model", required=True, help="a row of the table, e.g. vit_b_32_clip_zeroshot"
    )
    sub.choices["testbed"].add_argument(
        "--sizes", required=True, type=path_argument, help="eval_setting_sizes.json (n per setting)"
    )
    sub.choices["figure13"].add_argument(
        "--published", required=True, type=path_argument, help="clip_paper_fig13_table16.csv"
    )
    sub.choices["figure13"].add_argument("--format", default="png", choices=["png", "pdf", "svg"])
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    for option in ("store", "out"):  # messages and printed lines show paths absolute
        if getattr(args, option, None) is not None:
            setattr(args, option, Path(shown(getattr(args, option))))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        with output_folder(args.out):  # every command writes its figures or pages there
            COMMANDS[args.command](args)
    except BrokenPipeError:  # the reader of our output is gone (| head): clipeval.cli.main ends quietly
        raise
    except (ClipevalError, OSError) as exc:
        print(f"clipeval report: error: {printable(str(exc))}", file=sys.stderr)
        raise SystemExit(USAGE_EXIT_CODE) from None


def _store(args: argparse.Namespace) -> None:
    from clipeval.report.pages import write_store_report

    for path in write_store_report(args.store, args.out, _selector(args)):
        print("wrote", shown(path))


def _figure(args: argparse.Namespace) -> None:
    from clipeval.report.cross_run import collect_runs, cross_run_figure, cross_run_table, load_reference, step_figure
    from clipeval.report.figures import save
    from clipeval.report.selection import select_runs

    if args.published_map is not None and args.published is None:
        raise ClipevalError("--published-map maps a published table: give the table too (--published FILE).")
    reference = load_reference(args.published, args.published_map) if args.published is not None else None
    cross = collect_runs(select_runs(args.store, _selector(args)), _baselines(args))
    print(cross_run_table(cross))
    print("figure:", shown(save(cross_run_figure(cross, reference), args.out / f"cross_run.{args.format}")))
    stepped = [r for r in cross.runs if r.step is not None]
    if len(stepped) >= 2:
        print("figure:", shown(save(step_figure(cross), args.out / f"steps.{args.format}")))
    else:
        print(f"no checkpoint-series figure: {len(stepped)} selected run(s) have a step (it needs two or more).")


def _refit(args: argparse.Namespace) -> None:
    from clipeval.report.figures import average_panel, paired_bars, scatter_grid
    from clipeval.report.refit import refit
    from clipeval.report.run_summary import stored_spec
    from clipeval.results.store import ResultsDocument

    path = args.run
    if not path.exists() and (args.store / path).is_file():
        path = args.store / path
    doc = ResultsDocument.load(path)
    spec = stored_spec(doc)
    report = refit(doc, _baselines(args, spec.shifts if spec is not None else None))
    model = doc.model_label
    title = f"{doc.selection['name']} (v{doc.selection.get('version')}) re-fitted"
    print(format_report(report, model, title))
    out, name = args.out, safe_file_name(model)  # a model may be org/name
    print("figure:", shown(scatter_grid(report, model, out / f"effective_robustness_refit_{name}.png")))
    print("figure:", shown(paired_bars(report, model, out / f"effective_robustness_bars_refit_{name}.png")))
    if report.average is not None:
        print("figure:", shown(average_panel(report, model, out / f"average_over_shifts_refit_{name}.png")))


def _testbed(args: argparse.Namespace) -> None:
    from clipeval.report.figures import average_panel, scatter_grid
    from clipeval.report.inputs import read_sizes

    sizes = read_sizes(args.sizes)
    baselines = testbed_baselines(args.table, args.model_types)
    report = testbed_report(baselines, args.model, sizes)
    print(format_report(report, args.model, "imagenet-testbed"))
    for s in report.shifts:
        print(
            f"fit {s.shift.name:<16} slope {s.fit.slope:.6f}  intercept {s.fit.intercept:.6f}  ({s.fit.n_models} models)"
        )
    avg = report.average
    print(f"fit {'average over shifts':<16} slope {avg.fit.slope:.6f}  intercept {avg.fit.intercept:.6f}  "
          f"({avg.fit.n_models} models)")  # fmt: skip
    name = safe_file_name(args.model)
    print("figure:", shown(scatter_grid(report, args.model, args.out / f"effective_robustness_{name}.png")))
    print("figure:", shown(average_panel(report, args.model, args.out / f"average_over_shifts_{name}.png")))


def _figure13(args: argparse.Namespace) -> None:
    baselines = testbed_baselines(args.table, args.model_types)
    print("figure:", shown(figure13(baselines, args.published, args.out / f"clip_figure13.{args.format}")))


COMMANDS = {"store": _store, "figure": _figure, "refit": _refit, "testbed": _testbed, "figure13": _figure13}


if __name__ == "__main__":
    main()
