"""``clipeval check`` (or ``python -m clipeval.check``): a regression gate for checkpoints in CI.

    clipeval check record RUN --out golden.json       # the run's results document, validated
    clipeval check compare --golden golden.json RUN [RUN ...] [--alpha 0.05]
                           [--min-effect 0.005] [--tolerance 0.01] [--resamples 20000]

RUN: a run directory, its results.json, or a store entry (a store copied to another machine is
enough). The golden file is a results document too (schema 3): recorded from a run, or written
by hand from published numbers (records with a ``tolerance``). Decision rule:
:mod:`clipeval.check.compare`.

Exit codes: 0 nothing regressed, 1 something regressed (or, with ``--fail-inconclusive``, a
drop was too large to call ok on too few samples to decide), 2 a usage or data error (a missing
or malformed file, naming the file and field; a run that did not finish; a golden file with no
records or a record whose ``n`` is not a positive integer; a record the candidate lacks; a
different sample set; other data under the same sample ids; a value, tolerance or option that
is NaN or infinite; per-sample data that disagree with their record).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable

from clipeval.atomic import output_folder
from clipeval.check.compare import Options, compare
from clipeval.check.documents import load_golden, load_run
from clipeval.check.record import record_golden
from clipeval.check.table import format_rows
from clipeval.config.paths import path_argument
from clipeval.errors import USAGE_EXIT_CODE, ClipevalError, printable
from clipeval.logs import shown


def _finite_float(low: float, high: float, low_open: bool) -> Callable[[str], float]:
    """An argparse type: a finite float in the range (argparse turns a ValueError into exit 2)."""

    def parse(text: str) -> float:
        value = float(text)
        if not math.isfinite(value) or value < low or (low_open and value == low) or value >= high:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a finite number in {'(' if low_open else '['}{low}, {high})"
            )
        return value

    return parse


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipeval check", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="write a golden file: a finished run's results document")
    rec.add_argument("run", type=path_argument, help="a run directory, its results.json or a store entry")
    rec.add_argument("--out", type=path_argument, required=True)
    cmp = sub.add_parser("compare", help="check candidate run(s) against a golden file")
    cmp.add_argument("runs", type=path_argument, nargs="+", help="run directories, results.json files or store entries")
    cmp.add_argument("--golden", type=path_argument, required=True)
    cmp.add_argument(
        "--alpha", type=_finite_float(0, 1, True), default=0.05, help="significance level of the paired tests"
    )
    cmp.add_argument("--min-effect", type=_finite_float(0, 1, False), default=0.005,
                     help="smallest significant drop that counts as a regression (fraction)")  # fmt: skip
    cmp.add_argument("--tolerance", type=_finite_float(0, math.inf, False), default=0.01,
                     help="allowed drop for records without per-sample data on both sides")  # fmt: skip
    cmp.add_argument("--resamples", type=int, default=20000, help="random swaps of the permutation test")
    cmp.add_argument("--present-only", action="store_true",
                     help="compare only the golden records the candidate has; list the others as absent")  # fmt: skip
    cmp.add_argument("--fail-inconclusive", action="store_true",
                     help="exit 1 also when a drop of at least --min-effect is on too few samples to decide")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        if args.command == "record":
            with output_folder(args.out.parent, "folder of the golden file", "--out FILE"):
                print("wrote", shown(record_golden(args.run, args.out)))
            return
        golden = load_golden(args.golden)
        candidates = [load_run(path) for path in args.runs]
        rows = compare(
            golden, candidates, Options(args.alpha, args.min_effect, args.tolerance, args.resamples, args.present_only)
        )
    except BrokenPipeError:  # the reader of our output is gone (| head): clipeval.cli.main ends quietly
        raise
    except (ClipevalError, OSError) as exc:
        print(f"clipeval check: error: {printable(str(exc))}", file=sys.stderr)
        raise SystemExit(USAGE_EXIT_CODE) from None
    print(format_rows(rows))
    failing = {"regressed", "inconclusive"} if args.fail_inconclusive else {"regressed"}
    raise SystemExit(1 if any(r.verdict in failing for r in rows) else 0)


if __name__ == "__main__":
    main()
