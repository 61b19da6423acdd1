"""``clipeval check`` (or ``python -m clipeval.check``): a regression gate for checkpoints in CI.

    clipeval check record RUN_DIR --out golden.json      # a run's results + per-sample outcomes
    clipeval check compare --golden golden.json RUN_DIR [RUN_DIR ...] [--alpha 0.05]
                           [--min-effect 0.005] [--tolerance 0.01]

Exit codes: 0 nothing regressed, 1 something regressed, 2 a usage or data error (a missing
file, a dataset the candidate did not evaluate, a different sample set).

Decision rule, per (task/dataset, metric):
- top-1 where both sides have per-sample outcomes on the same samples: McNemar's exact test
  (two-sided binomial test on the discordant pairs). A regression is a drop of at least
  ``min_effect`` with p < ``alpha``; a significant gain is reported as an improvement.
- otherwise (other metrics, or published numbers without samples): a drop larger than the
  record's own ``tolerance`` (else the golden file's, else ``--tolerance``) is a regression;
  the candidate's 95% interval is shown. Metrics where lower is better are compared the
  other way round.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from clipeval.atomic import atomic_write
from clipeval.errors import USAGE_EXIT_CODE, ClipevalError

LOWER_IS_BETTER = {"k_matching_zero_shot"}
GOLDEN_KIND = "clipeval-golden"


def mcnemar_exact(ref_correct: np.ndarray, cand_correct: np.ndarray) -> tuple[int, int, float]:
    """(b, c, p): b = right before and wrong now, c = the reverse; p of the exact two-sided test."""
    b = int(np.sum(ref_correct & ~cand_correct))
    c = int(np.sum(~ref_correct & cand_correct))
    p = 1.0 if b + c == 0 else float(binomtest(min(b, c), b + c, 0.5).pvalue)
    return b, c, p


@dataclass
class Outcomes:
    """Top-1 correctness per sample, in sorted-sample-id order, with a hash of the ids."""

    ids_sha256: str
    correct: np.ndarray  # bool

    def to_json(self) -> dict[str, Any]:
        bits = np.packbits(self.correct.astype(np.uint8))
        return {
            "ids_sha256": self.ids_sha256,
            "n": int(len(self.correct)),
            "top1_correct": base64.b64encode(bits.tobytes()).decode(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcomes:
        bits = np.frombuffer(base64.b64decode(data["top1_correct"]), dtype=np.uint8)
        return cls(data["ids_sha256"], np.unpackbits(bits)[: data["n"]].astype(bool))

    @classmethod
    def from_predictions(cls, path: Path) -> Outcomes:
        frame = pd.read_parquet(path).sort_values("sample_id")
        ids = "\n".join(frame.sample_id).encode()
        correct = np.array([int(t[0]) == int(lab) for t, lab in zip(frame.topk, frame.label, strict=True)])
        return cls(hashlib.sha256(ids).hexdigest(), correct)


def _key(task: str, dataset: str) -> str:
    return dataset if "/" in dataset else f"{task}/{dataset}"


def load_run(path: Path) -> tuple[dict[str, Any], Path | None]:
    path = Path(path)
    doc_path = path / "results.json" if path.is_dir() else path
    if not doc_path.is_file():
        raise ClipevalError(f"No results at {doc_path}: give a run directory or its results.json.")
    return json.loads(doc_path.read_text()), doc_path.parent


def run_records(doc: dict[str, Any], run_dir: Path | None) -> dict[tuple[str, str], dict[str, Any]]:
    """{(task/dataset, metric): record + its per-sample outcomes when the run saved them}."""
    task = doc["task"]["name"]
    out = {}
    for r in doc["records"]:
        key = _key(task, r["dataset"])
        entry = dict(r)
        if r["metric"] == "top1" and run_dir is not None:
            pred = run_dir / "predictions" / f"{r['dataset']}.parquet"
            if pred.is_file():
                entry["outcomes"] = Outcomes.from_predictions(pred)
        out[(key, r["metric"])] = entry
    return out


def record_golden(run: Path, out: Path) -> Path:
    doc, run_dir = load_run(run)
    records = []
    samples = {}
    for (key, metric), r in run_records(doc, run_dir).items():
        records.append({"key": key, "metric": metric, "value": r["value"], "n": r["n"], "ci": r["ci"]})
        if "outcomes" in r:
            samples[key] = r["outcomes"].to_json()
    golden = {"kind": GOLDEN_KIND, "model": doc["model"], "task": doc["task"], "source": f"clipeval run {doc['created']}",
              "clipeval_version": doc["clipeval_version"], "records": records, "samples": samples}  # fmt: skip
    return atomic_write(Path(out), lambda f: f.write((json.dumps(golden, indent=1) + "\n").encode()))


@dataclass
class Row:
    key: str
    metric: str
    reference: float
    candidate: float
    evidence: str
    verdict: str  # ok | regressed | improved


def compare(
    golden: dict[str, Any], candidates: list[Path], alpha: float, min_effect: float, tolerance: float
) -> list[Row]:
    if golden.get("kind") != GOLDEN_KIND:
        raise ClipevalError("Not a clipeval golden file (its 'kind' is not clipeval-golden).")
    cand: dict[tuple[str, str], dict[str, Any]] = {}
    for path in candidates:
        cand |= run_records(*load_run(path))
    samples = {k: Outcomes.from_json(v) for k, v in golden.get("samples", {}).items()}
    rows = []
    for ref in golden["records"]:
        key = ref.get("key") or _key(ref["task"], ref["dataset"])
        metric = ref["metric"]
        if (key, metric) not in cand:
            have = sorted({k for k, _ in cand})
            raise ClipevalError(
                f"The candidate run(s) have no {metric} on '{key}' (they have: {', '.join(have[:12])})."
            )
        got = cand[(key, metric)]
        sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
        change = sign * (got["value"] - ref["value"])
        if metric == "top1" and key in samples and "outcomes" in got:
            rows.append(_paired(key, ref["value"], got, samples[key], alpha, min_effect))
            continue
        tol = ref.get("tolerance", golden.get("tolerance", tolerance))
        lo, hi = got.get("ci", [got["value"], got["value"]])
        verdict = "regressed" if change < -tol else ("improved" if change > tol else "ok")
        rows.append(
            Row(key, metric, ref["value"], got["value"], f"tolerance {tol:g}, 95% [{lo:.4f}, {hi:.4f}]", verdict)
        )
    return rows


def _paired(key: str, reference: float, got: dict[str, Any], ref: Outcomes, alpha: float, min_effect: float) -> Row:
    outcomes: Outcomes = got["outcomes"]
    if outcomes.ids_sha256 != ref.ids_sha256 or len(outcomes.correct) != len(ref.correct):
        raise ClipevalError(
            f"'{key}' was evaluated on a different set of samples than the golden file "
            f"({len(outcomes.correct)} vs {len(ref.correct)} samples, or other ids): compare like with like "
            "(same data, same runtime.limit)."
        )
    b, c, p = mcnemar_exact(ref.correct, outcomes.correct)
    change = got["value"] - reference
    significant = p < alpha and abs(change) >= min_effect
    verdict = ("regressed" if change < 0 else "improved") if significant else "ok"
    return Row(key, "top1", reference, got["value"], f"McNemar p={p:.3g} ({b} lost, {c} gained)", verdict)


def format_rows(rows: list[Row]) -> str:
    width = max([12, *(len(r.key) for r in rows)])
    lines = [
        f"{'task/dataset':<{width}} {'metric':<22} {'reference':>9} {'candidate':>9} {'change':>8}  {'verdict':<9} evidence"
    ]
    for r in rows:
        mark = {"regressed": "REGRESSED", "improved": "improved", "ok": "ok"}[r.verdict]
        lines.append(
            f"{r.key:<{width}} {r.metric:<22} {r.reference:9.4f} {r.candidate:9.4f} {r.candidate - r.reference:+8.4f}  {mark:<9} {r.evidence}"
        )
    bad = [r for r in rows if r.verdict == "regressed"]
    lines.append(f"{len(rows)} checked: {len(bad)} regressed, {sum(r.verdict == 'improved' for r in rows)} improved.")
    if bad:
        lines.append("Regressed: " + ", ".join(f"{r.key} {r.metric}" for r in bad))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="clipeval check", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="write a golden file from a run")
    rec.add_argument("run", type=Path)
    rec.add_argument("--out", type=Path, required=True)
    cmp = sub.add_parser("compare", help="check candidate run(s) against a golden file")
    cmp.add_argument("runs", type=Path, nargs="+")
    cmp.add_argument("--golden", type=Path, required=True)
    cmp.add_argument("--alpha", type=float, default=0.05, help="significance level of McNemar's test")
    cmp.add_argument("--min-effect", type=float, default=0.005, help="smallest drop in top-1 that counts (fraction)")
    cmp.add_argument("--tolerance", type=float, default=0.01, help="allowed drop without per-sample data (fraction)")
    args = parser.parse_args(argv)
    try:
        if args.command == "record":
            print("wrote", record_golden(args.run, args.out))
            return
        if not args.golden.is_file():
            raise ClipevalError(
                f"Golden file {args.golden} does not exist. Make one with: clipeval check record RUN --out FILE"
            )
        rows = compare(json.loads(args.golden.read_text()), args.runs, args.alpha, args.min_effect, args.tolerance)
    except (ClipevalError, OSError, json.JSONDecodeError) as exc:
        print(f"clipeval check: error: {exc}", file=sys.stderr)
        raise SystemExit(USAGE_EXIT_CODE) from None
    print(format_rows(rows))
    raise SystemExit(1 if any(r.verdict == "regressed" for r in rows) else 0)


if __name__ == "__main__":
    main()
