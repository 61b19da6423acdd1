"""``clipeval check`` (or ``python -m clipeval.check``): a regression gate for checkpoints in CI.

    clipeval check record RUN_DIR --out golden.json      # a run's results + per-sample outcomes
    clipeval check compare --golden golden.json RUN_DIR [RUN_DIR ...] [--alpha 0.05]
                           [--min-effect 0.005] [--tolerance 0.01] [--resamples 20000]

Exit codes: 0 nothing regressed, 1 something regressed (or, with ``--fail-inconclusive``, a
drop was too large to call ok on too few samples to decide), 2 a usage or data error (a missing
file, a golden file with no records or a record whose ``n`` is not a positive integer, a dataset
the candidate did not evaluate, a different sample set, other data under the same sample ids
(a dataset's content key differs from the golden file's), a value, tolerance or option that is
NaN or infinite, per-sample data that disagree with their record).

Decision rule, per (task/dataset, metric):
- Paired test, whenever both sides have per-sample outcomes for the metric on the same
  samples (same sorted sample ids, same labels):
  - top-1 and top-5 (and an attack's clean/robust top-1): McNemar's exact test, the
    two-sided binomial test on the discordant samples;
  - mean per-class recall (and any class-weighted mean of per-sample outcomes): a paired
    permutation test over samples, stratified by class: each sample's pair of outcomes
    (reference, candidate) is swapped with probability 1/2, which keeps every sample in its
    class; the statistic is the change of the metric, p the two-sided share of swaps with a
    change at least as large. Exact (every swap) with at most 16 discordant samples, else
    ``--resamples`` random swaps drawn with a fixed seed (0), so the verdict is
    deterministic; p = (1 + hits) / (1 + resamples).
  A regression is a drop of at least ``--min-effect`` with p < ``--alpha``; a significant
  gain of that size is reported as an improvement.
  A drop of at least ``--min-effect`` that the test could not have found significant is
  ``inconclusive``: with m discordant samples the smallest p either test can give is
  2 * 0.5**m (every discordant sample in the same direction; random swaps cannot go below
  1 / (1 + ``--resamples``) either), so when that is >= ``--alpha``
  (m < 6 at alpha 0.05) no drop, however large, could fail. Such a row says how many
  discordant samples (and, at the observed discordance rate, roughly how many samples) a
  decision needs. It exits 0 and is counted in the summary line, unless ``--fail-inconclusive``
  (then exit 1). Anything else is ok: a drop below ``--min-effect``, or one the test had the
  power to find significant and did not.
- Derived records (effective robustness) of a golden file recorded from a run are shown with
  the verdict ``derived`` and never fail: the top-1 records they are computed from are gated by
  the paired tests above, and a fixed tolerance would fail a noise-level change those pass.
- Fixed tolerance, only for records that have no per-sample outcomes on one side (published
  golden numbers, few-shot means over seeds, derived records with their own tolerance): a drop larger than the
  record's own ``tolerance`` (else the golden file's, else ``--tolerance``) is a regression;
  the candidate's 95% interval is shown. A golden file of format 1 holds top-1 outcomes only:
  its other metrics use the tolerance, with a warning to record the golden file again.
Metrics where lower is better are compared the other way round. Before any comparison the
per-sample data are checked against their record (the metric recomputed from them must equal
the recorded value), and every number is checked to be finite.

Which data were scored: a run's results.json holds ``data``, {dataset (named as its records):
content key}; the content key is the source's ``key`` (a hash of the data's content: every
file of an image folder, every shard, the Hugging Face dataset's fingerprint and files), followed
by ``|limit=N`` when ``runtime.limit`` scored only the first N samples. Two runs scored the same
data when their keys are equal: same content (not merely the same file names) and the same
samples of it. ``check record`` copies ``data`` into the golden file (keyed like its records);
``check compare`` refuses (exit 2) a candidate whose key of any dataset the golden file also
holds differs. A golden file or run without ``data`` (older clipeval) is compared as before,
with a warning.

Golden files (``kind: clipeval-golden``). Format 2 (``format_version: 2``): ``records`` (key,
metric, value, n, ci), ``data`` (key: content key) and ``samples``: per key, ``ids_sha256``, ``n``, and where the run saved
them ``labels`` and ``topk`` (ranked predictions, base64 of zlib-compressed little-endian
integers, ``topk_shape``) and ``correct`` (per metric, base64 of packed bits, for outcomes
that are not predictions, such as an attack's). Format 1 (no ``format_version``) stored
``top1_correct`` bits only; it is still read.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import json
import logging
import math
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from clipeval.atomic import atomic_write
from clipeval.errors import USAGE_EXIT_CODE, ClipevalError

log = logging.getLogger(__name__)

LOWER_IS_BETTER = {"k_matching_zero_shot"}
#: functions of other records (effective robustness: a shift's and its in-distribution top-1 against fixed
#: baselines). In a golden file recorded from a run they are shown but not gated: the top-1 records they are
#: computed from are gated by paired tests, and a fixed tolerance on the derived value would fail a
#: noise-level change that those tests pass. A record with its own ``tolerance`` (a published number) is gated.
DERIVED = {"effective_robustness"}
DERIVED_EVIDENCE = "computed from the top-1 rows of its settings (gated there by paired tests); not gated"
GOLDEN_KIND = "clipeval-golden"
GOLDEN_FORMAT = 2
CLASS_WEIGHTED = {"mean_per_class_recall"}  # paired permutation test; top-k and attack outcomes use McNemar
PERMUTATION_SEED = 0
EXACT_UP_TO = 16  # discordant samples; beyond this the permutation test draws random swaps
VALUE_TOLERANCE = 1e-9  # recorded value vs the value recomputed from the per-sample data


# ---------------------------------------------------------------- paired tests


def mcnemar_exact(ref_correct: np.ndarray, cand_correct: np.ndarray) -> tuple[int, int, float]:
    """(b, c, p): b = right before and wrong now, c = the reverse; p of the exact two-sided test."""
    b = int(np.sum(ref_correct & ~cand_correct))
    c = int(np.sum(~ref_correct & cand_correct))
    p = 1.0 if b + c == 0 else float(binomtest(min(b, c), b + c, 0.5).pvalue)
    return b, c, p


def class_weights(labels: np.ndarray) -> np.ndarray:
    """[n] weight 1 / (C * n_c) of each sample, so that sum(w * correct) is the mean per-class recall."""
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return 1.0 / (len(classes) * counts[inverse])


def paired_permutation_test(
    ref: np.ndarray, cand: np.ndarray, weights: np.ndarray, resamples: int = 20000, seed: int = PERMUTATION_SEED
) -> tuple[float, int, str]:
    """Two-sided paired permutation (sign-flip) test of T = sum(weights * (cand - ref)).

    ``ref``, ``cand``: [n] per-sample outcomes (0/1 or real); ``weights``: [n]. Under the null
    hypothesis the two outcomes of a sample are exchangeable, so T* = sum(w * s * (cand - ref))
    with independent signs s = ±1. Returns (p, discordant samples, "exact" or "random").
    Exact over all 2**m sign patterns when m <= EXACT_UP_TO; otherwise ``resamples`` draws
    with ``seed``: samples with equal |w * d| are pooled, so a draw is one binomial per pool.
    """
    contrib = np.asarray(weights, float) * (np.asarray(cand, float) - np.asarray(ref, float))
    contrib = contrib[contrib != 0]
    observed = abs(float(contrib.sum()))
    slack = 1e-9 * max(observed, float(np.abs(contrib).sum()), 1e-300)  # float sums of equal values differ in ulps
    m = len(contrib)
    if m == 0:
        return 1.0, 0, "exact"
    if m <= EXACT_UP_TO:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=m)))
        stats = np.abs(signs @ contrib)
        return float(np.mean(stats >= observed - slack)), m, "exact"
    values, counts = np.unique(np.abs(contrib), return_counts=True)
    rng = np.random.default_rng(seed)
    hits, done = 0, 0
    while done < resamples:
        size = min(resamples - done, max(1, 2_000_000 // len(values)))
        heads = rng.binomial(counts[None, :], 0.5, size=(size, len(values)))
        stats = np.abs((2 * heads - counts[None, :]) @ values)
        hits += int(np.sum(stats >= observed - slack))
        done += size
    return (1 + hits) / (1 + resamples), m, "random"


# ---------------------------------------------------------------- per-sample data


def _pack_ints(array: np.ndarray) -> dict[str, Any]:
    dtype = "<u2" if array.size == 0 or (array.min() >= 0 and array.max() < 2**16) else "<i8"
    data = zlib.compress(np.ascontiguousarray(array, dtype=dtype).tobytes(), 6)
    return {"dtype": dtype, "shape": list(array.shape), "zlib_base64": base64.b64encode(data).decode()}


def _unpack_ints(packed: dict[str, Any]) -> np.ndarray:
    data = zlib.decompress(base64.b64decode(packed["zlib_base64"]))
    return np.frombuffer(data, dtype=np.dtype(packed["dtype"])).reshape(packed["shape"]).astype(np.int64)


def _pack_bits(bits: np.ndarray) -> str:
    return base64.b64encode(np.packbits(bits.astype(np.uint8)).tobytes()).decode()


def _unpack_bits(text: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n].astype(bool)


@dataclass
class Samples:
    """Per-sample data of one dataset in sorted-sample-id order, with a hash of the ids.

    ``labels``: [n] int and ``topk``: [n, k] ranked class ids, when predictions were saved;
    ``correct``: {metric: [n] bool} for outcomes that are not predictions (an attack's).
    """

    ids_sha256: str
    n: int
    labels: np.ndarray | None = None
    topk: np.ndarray | None = None
    correct: dict[str, np.ndarray] | None = None

    def outcome(self, metric: str) -> np.ndarray | None:
        """[n] bool: is each sample right under ``metric`` (top-k or a stored outcome); None if unknown."""
        if self.correct and metric in self.correct:
            return self.correct[metric]
        if self.topk is not None and self.labels is not None and metric in ("top1", "top5"):
            k = int(metric[3:])
            if self.topk.shape[1] < k:
                return None
            return (self.topk[:, :k] == self.labels[:, None]).any(axis=1)
        return None

    def weights(self, metric: str) -> np.ndarray | None:
        """[n] per-sample weights w with metric = sum(w * top-1 correct), for class-weighted metrics."""
        if metric in CLASS_WEIGHTED and self.labels is not None and self.outcome("top1") is not None:
            return class_weights(self.labels)
        return None

    def has(self, metric: str) -> bool:
        return (self.weights(metric) if metric in CLASS_WEIGHTED else self.outcome(metric)) is not None

    def value(self, metric: str) -> float:
        """The metric recomputed from the samples (its definition in clipeval.results.metrics)."""
        if metric in CLASS_WEIGHTED:
            return float(np.sum(self.weights(metric) * self.outcome("top1")))
        return float(np.mean(self.outcome(metric)))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ids_sha256": self.ids_sha256, "n": self.n}
        if self.labels is not None:
            out["labels"] = _pack_ints(self.labels)
        if self.topk is not None:
            out["topk"] = _pack_ints(self.topk)
        if self.correct:
            out["correct"] = {metric: _pack_bits(bits) for metric, bits in self.correct.items()}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Samples:
        """Format 2 (labels, topk, correct) or format 1 (``top1_correct`` bits only)."""
        n = _check_count(data.get("n"), f"golden file: samples of {data.get('ids_sha256', '?')[:12]}: n")
        if "top1_correct" in data:  # format 1
            return cls(data["ids_sha256"], n, correct={"top1": _unpack_bits(data["top1_correct"], n)})
        labels = _unpack_ints(data["labels"]) if "labels" in data else None
        topk = _unpack_ints(data["topk"]) if "topk" in data else None
        correct = {m: _unpack_bits(v, n) for m, v in data.get("correct", {}).items()} or None
        for name, array in (("labels", labels), ("topk", topk), *(correct or {}).items()):
            if array is not None and len(array) != n:
                raise ClipevalError(f"Golden samples: '{name}' has {len(array)} entries, not n = {n}.")
        return cls(data["ids_sha256"], n, labels, topk, correct)

    @classmethod
    def from_predictions(cls, path: Path) -> Samples:
        """From a run's predictions parquet (sample_id, label, topk)."""
        frame = pd.read_parquet(path).sort_values("sample_id", kind="stable")
        labels = frame["label"].to_numpy().astype(np.int64)
        topk = np.array(frame["topk"].tolist(), dtype=np.int64).reshape(len(frame), -1)
        return cls(_ids_hash(frame["sample_id"]), len(frame), labels, topk)

    @classmethod
    def from_outcomes(cls, path: Path, column: str, metric: str) -> Samples | None:
        """From an attack's outcomes parquet (sample_id, label, one bool column per outcome)."""
        frame = pd.read_parquet(path)
        if column not in frame.columns:
            return None
        frame = frame.sort_values("sample_id", kind="stable")
        labels = frame["label"].to_numpy().astype(np.int64) if "label" in frame.columns else None
        correct = {metric: frame[column].to_numpy().astype(bool)}
        return cls(_ids_hash(frame["sample_id"]), len(frame), labels, correct=correct)


def _ids_hash(ids: pd.Series) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def _key(task: str, dataset: str) -> str:
    return dataset if "/" in dataset else f"{task}/{dataset}"


def load_run(path: Path) -> tuple[dict[str, Any], Path | None]:
    path = Path(path)
    doc_path = path / "results.json" if path.is_dir() else path
    if not doc_path.is_file():
        raise ClipevalError(f"No results at {doc_path}: give a run directory or its results.json.")
    doc = json.loads(doc_path.read_text())
    failed = doc.get("failures") if isinstance(doc, dict) else None
    if failed:
        what = "; ".join(f"{f.get('task')}/{f.get('evaluator')}: {f.get('error')}" for f in failed)
        raise ClipevalError(
            f"The run at {doc_path} did not finish: {what}. Its records are incomplete; fix the failure and run again."
        )
    return doc, doc_path.parent


def _attack_source(run_dir: Path, dataset: str, metric: str) -> tuple[Path, str] | None:
    """(parquet, column) of an adversarial record's per-sample outcomes (clipeval.evaluators.adversarial)."""
    if metric == "clean_top1":
        base, column = dataset, "clean"
    elif metric.startswith("robust_top1:") and "@" in dataset:
        base, _, setting = dataset.rpartition("@")
        eps = setting.partition("=")[2].split("/")[0]  # "linf=4/255" -> "4"
        column = f"{metric.partition(':')[2]}@{eps}"
    else:
        return None
    folder, _, name = base.rpartition("/")
    return run_dir / "predictions" / folder / f"adversarial_{name}.parquet", column


def _samples_for(run_dir: Path, record: dict[str, Any], cache: dict[Any, Samples | None]) -> Samples | None:
    dataset, metric = record["dataset"], record["metric"]
    pred = run_dir / "predictions" / f"{dataset}.parquet"
    if metric in ("top1", "top5", *CLASS_WEIGHTED) and pred.is_file():
        if pred not in cache:
            cache[pred] = Samples.from_predictions(pred)
        return cache[pred]
    source = _attack_source(run_dir, dataset, metric)
    if source is not None and source[0].is_file():
        return Samples.from_outcomes(source[0], source[1], metric)
    return None


def _check_finite(value: Any, what: str) -> float:
    """``value`` as a float; a ClipevalError naming ``what`` if it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ClipevalError(
            f"{what} is {value!r}, not a finite number: a NaN or infinite value would make every comparison "
            "pass or fail silently. Fix the file (or rerun the evaluation that produced it)."
        )
    return float(value)


def _check_numbers(obj: Any, where: str, path: str = "") -> None:
    """Every float anywhere in ``obj`` (a parsed JSON document) is finite; errors name its JSON path."""
    if isinstance(obj, float):
        _check_finite(obj, f"{where}: {path.lstrip('.')}" if path else where)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_numbers(v, where, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_numbers(v, where, f"{path}[{i}]")


def run_records(
    doc: dict[str, Any], run_dir: Path | None, origin: str = "run"
) -> dict[tuple[str, str], dict[str, Any]]:
    """{(task/dataset, metric): record + its per-sample data ("samples") when the run saved them}.

    Raises ClipevalError when a record's value or interval is not finite, or when the per-sample
    data give another value than the record's.
    """
    task = doc["task"]["name"]
    out = {}
    cache: dict[Any, Samples | None] = {}
    for r in doc["records"]:
        key = _key(task, r["dataset"])
        what = f"{origin}: record {key} {r['metric']}"
        _check_finite(r.get("value"), f"{what}: value")
        _check_numbers(r, what)
        entry = dict(r)
        samples = _samples_for(run_dir, r, cache) if run_dir is not None else None
        if samples is not None and samples.has(r["metric"]):
            _check_value(samples, r["metric"], r["value"], what)
            entry["samples"] = samples
        out[(key, r["metric"])] = entry
    return out


def run_data(doc: dict[str, Any]) -> dict[str, str] | None:
    """{task/dataset (golden key): content key of the data scored} of a run document; None if it has none."""
    data = doc.get("data")
    if data is None:
        return None
    return {_key(doc["task"]["name"], name): str(key) for name, key in data.items()}


def check_same_data(golden: dict[str, str] | None, candidate: dict[str, str] | None, compared: set[str]) -> None:
    """Refuse (ClipevalError) when a dataset has another content key in the candidate than in the golden file.

    ``compared``: the golden record keys being compared; a key ``dataset@setting`` (an attack) is the
    dataset's. Every dataset both sides hold a key for is checked (a probe's training split too).
    Without keys on one side (older clipeval) it warns and compares as before.
    """
    if golden is None or candidate is None:
        log.warning(
            "The %s records no content keys of its data ('data'), so a candidate scored on other data under the "
            "same file names would not be noticed: record the golden file again from a run of this clipeval.",
            "golden file" if golden is None else "candidate run",
        )
        return
    bases = {key.split("@")[0] for key in compared}
    missing = sorted(b for b in bases if b in golden and b not in candidate)
    changed = sorted(k for k in golden.keys() & candidate.keys() if golden[k] != candidate[k])
    content = lambda key: key.partition("|limit=")[0]  # noqa: E731
    limited = [k for k in changed if content(golden[k]) == content(candidate[k])]
    if limited:
        limits = "; ".join(f"{k}: {_limit(golden[k])} in the golden file, {_limit(candidate[k])} now" for k in limited)
        raise ClipevalError(
            f"The same data were scored on a different set of samples ({limits}): compare like with like "
            "(the same runtime.limit), or record the golden file again."
        )
    if changed:
        raise ClipevalError(
            f"The data changed: {', '.join(changed)} scored other content than the golden file's (its content key "
            "differs: other images or labels, even under the same file names). The "
            "comparison would be meaningless. If the new data are intended, record the golden file again from a "
            "run of the reference model on them (clipeval check record RUN --out FILE); else restore the data."
        )
    if missing:
        log.warning("The candidate run(s) record no content key for %s: not checked for changed data.", missing)


def _limit(data_key: str) -> str:
    limit = data_key.partition("|limit=")[2]
    return f"the first {limit} samples" if limit else "every sample"


def _check_value(samples: Samples, metric: str, value: float, what: str) -> None:
    recomputed = samples.value(metric)
    if abs(recomputed - value) > VALUE_TOLERANCE:
        raise ClipevalError(
            f"{what}: the per-sample data give {recomputed:.6f}, the record says {value:.6f}. "
            "The predictions and the results do not belong together: rerun the evaluation into an empty folder."
        )


def _samples_key(key: str, metric: str, samples: Samples) -> str:
    """Golden ``samples`` key: the record key for predictions; ``key|metric`` for one outcome (an attack's),
    whose samples may be a subset of the dataset's (an attack's ``limit``)."""
    return f"{key}|{metric}" if samples.topk is None and samples.correct else key


def record_golden(run: Path, out: Path) -> Path:
    """Write a golden file (format 2) of a run's records and the per-sample data behind them."""
    doc, run_dir = load_run(run)
    records = []
    samples: dict[str, dict[str, Any]] = {}
    data = run_data(doc)
    for (key, metric), r in run_records(doc, run_dir).items():
        records.append({"key": key, "metric": metric, "value": r["value"], "n": r["n"], "ci": r["ci"]})
        if "samples" in r:
            samples[_samples_key(key, metric, r["samples"])] = r["samples"].to_json()
    golden = {"kind": GOLDEN_KIND, "format_version": GOLDEN_FORMAT, "model": doc["model"], "task": doc["task"],
              "source": f"clipeval run {doc['created']}", "clipeval_version": doc["clipeval_version"],
              "records": records, "samples": samples}  # fmt: skip
    if data is not None:
        golden["data"] = data
    return atomic_write(Path(out), lambda f: f.write((json.dumps(golden, indent=1) + "\n").encode()))


# ---------------------------------------------------------------- comparison


@dataclass
class Row:
    key: str
    metric: str
    reference: float
    candidate: float
    evidence: str
    verdict: str  # ok | regressed | improved | inconclusive (a drop too few samples can decide) | derived (not gated)


@dataclass(frozen=True)
class Options:
    """The decision rule's parameters (see the module docstring)."""

    alpha: float = 0.05
    min_effect: float = 0.005
    tolerance: float = 0.01
    resamples: int = 20000


def _golden_records(golden: dict[str, Any]) -> list[dict[str, Any]]:
    if golden.get("kind") != GOLDEN_KIND:
        raise ClipevalError("Not a clipeval golden file (its 'kind' is not clipeval-golden).")
    version = golden.get("format_version", 1)
    if version not in (1, GOLDEN_FORMAT):
        raise ClipevalError(f"Golden file format {version!r} is not one this clipeval reads (1 or {GOLDEN_FORMAT}).")
    _check_numbers({k: v for k, v in golden.items() if k != "records"}, "golden file")
    if not isinstance(golden.get("records"), list) or not golden["records"]:
        raise ClipevalError(
            "The golden file has no records, so there is nothing to check: record it from a finished run "
            "(clipeval check record RUN --out FILE)."
        )
    if version == GOLDEN_FORMAT and not golden.get("samples"):
        log.warning(
            "The golden file (format 2) has no per-sample data ('samples'), so every record uses the fixed "
            "tolerance instead of a paired test: record the golden file again from a run that kept its predictions/."
        )
    out = []
    for i, ref in enumerate(golden["records"]):
        if not isinstance(ref, dict) or "metric" not in ref or not ("key" in ref or {"task", "dataset"} <= set(ref)):
            raise ClipevalError(f"golden file: records[{i}] needs 'metric' and 'key' (or 'task' and 'dataset').")
        key = ref.get("key") or _key(ref["task"], ref["dataset"])
        what = f"golden file: record {key} {ref.get('metric')}"
        _check_finite(ref.get("value"), f"{what}: value")
        if "tolerance" in ref:
            _check_tolerance(ref["tolerance"], f"{what}: tolerance")
        _check_numbers(ref, what)
        if "n" in ref and ref["n"] is not None:
            _check_count(ref["n"], f"{what}: n")
        out.append(ref | {"key": key})
    if "tolerance" in golden:
        _check_tolerance(golden["tolerance"], "golden file: tolerance")
    return out


def _check_count(value: Any, what: str) -> int:
    """``value`` as an int; a ClipevalError naming ``what`` unless it is a positive integer (a number of samples)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ClipevalError(f"{what} is {value!r}: a number of samples is a positive integer. Fix the golden file.")
    return value


def _check_tolerance(value: Any, what: str) -> float:
    value = _check_finite(value, what)
    if value < 0:
        raise ClipevalError(f"{what} is {value}: a tolerance is an allowed drop, at least 0.")
    return value


def compare(
    golden: dict[str, Any],
    candidates: list[Path],
    alpha: float = 0.05,
    min_effect: float = 0.005,
    tolerance: float = 0.01,
    resamples: int = 20000,
) -> list[Row]:
    """One Row per golden record, by the decision rule of the module docstring.

    Raises ClipevalError (exit 2) for anything that would make a verdict meaningless.
    """
    opts = Options(alpha, min_effect, tolerance, resamples)
    _check_options(opts)
    refs = _golden_records(golden)
    cand: dict[tuple[str, str], dict[str, Any]] = {}
    cand_data: dict[str, str] | None = {}
    for path in candidates:
        doc, run_dir = load_run(path)
        cand |= run_records(doc, run_dir, origin=f"candidate {path}")
        data = run_data(doc)
        cand_data = None if cand_data is None or data is None else cand_data | data
    golden_data = golden.get("data")
    if golden_data is not None and not isinstance(golden_data, dict):
        raise ClipevalError("golden file: 'data' is not a mapping of task/dataset to content key.")
    check_same_data(golden_data, cand_data, {ref["key"] for ref in refs})
    samples = {k: Samples.from_json(v) for k, v in golden.get("samples", {}).items()}
    unpaired: dict[str, list[str]] = {"golden file": [], "candidate": []}
    rows = []
    for ref in refs:
        key, metric = ref["key"], ref["metric"]
        if (key, metric) not in cand:
            have = sorted({k for k, _ in cand})
            hint = (
                " The old 'average' effective robustness was the mean of the per-shift values; it is now "
                "'mean_of_per_shift_er', and the headline is 'average_over_shifts' (the CLIP paper's method): "
                "record the golden file again."
                if metric == "effective_robustness" and key.endswith("/average")
                else ""
            )
            raise ClipevalError(
                f"The candidate run(s) have no {metric} on '{key}' (they have: {', '.join(have[:12])}).{hint}"
            )
        got = cand[(key, metric)]
        ref_samples = samples.get(f"{key}|{metric}", samples.get(key))
        ref_has = ref_samples is not None and ref_samples.has(metric)
        if ref_has:
            _check_value(ref_samples, metric, ref["value"], f"golden file: record {key} {metric}")
        if ref_has and "samples" in got:
            rows.append(_paired(key, metric, ref["value"], got, ref_samples, opts))
            continue
        if ref_has or (ref_samples is not None and "samples" in got):  # one side has per-sample data
            unpaired["candidate" if ref_has else "golden file"].append(f"{key} {metric}")
        rows.append(_by_tolerance(key, metric, ref, got, golden, opts))
    for side, which in unpaired.items():
        if which:
            log.warning(
                "The %s has no per-sample data for %s, so these use the fixed tolerance instead of a paired test: %s.",
                side,
                ", ".join(which),
                "record the golden file again (clipeval check record; format 1 stored top-1 only)"
                if side == "golden file"
                else "keep the candidate run's predictions/ folder",
            )
    return rows


def _check_options(opts: Options) -> None:
    _check_finite(opts.alpha, "--alpha")
    _check_finite(opts.min_effect, "--min-effect")
    _check_tolerance(opts.tolerance, "--tolerance")
    if not 0 < opts.alpha < 1:
        raise ClipevalError(f"--alpha is {opts.alpha}: a significance level lies strictly between 0 and 1.")
    if not 0 <= opts.min_effect < 1:
        raise ClipevalError(f"--min-effect is {opts.min_effect}: a drop in a fraction, from 0 up to (not) 1.")
    if opts.resamples < 1000:
        raise ClipevalError(f"--resamples is {opts.resamples}: use at least 1000 for a stable p-value.")


def _by_tolerance(
    key: str, metric: str, ref: dict[str, Any], got: dict[str, Any], golden: dict[str, Any], opts: Options
) -> Row:
    if ref.get("n") is not None and got.get("n") is not None and int(ref["n"]) != int(got["n"]):
        raise ClipevalError(
            f"'{key}' {metric}: the golden value is on n = {ref['n']} samples, the candidate's on n = {got['n']}: "
            "compare like with like (same data, no runtime.limit)."
        )
    if metric in DERIVED and "tolerance" not in ref and golden.get("samples"):
        return Row(key, metric, ref["value"], got["value"], DERIVED_EVIDENCE, "derived")
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    change = sign * (got["value"] - ref["value"])
    tol = ref.get("tolerance", golden.get("tolerance", opts.tolerance))
    lo, hi = got.get("ci", [got["value"], got["value"]])
    verdict = "regressed" if change < -tol else ("improved" if change > tol else "ok")
    return Row(key, metric, ref["value"], got["value"], f"tolerance {tol:g}, 95% [{lo:.4f}, {hi:.4f}]", verdict)


def _paired(key: str, metric: str, reference: float, got: dict[str, Any], ref: Samples, opts: Options) -> Row:
    cand: Samples = got["samples"]
    if cand.ids_sha256 != ref.ids_sha256 or cand.n != ref.n:
        raise ClipevalError(
            f"'{key}' was evaluated on a different set of samples than the golden file "
            f"({cand.n} vs {ref.n} samples, or other ids): compare like with like "
            "(same data, same runtime.limit)."
        )
    if ref.labels is not None and cand.labels is not None and not np.array_equal(ref.labels, cand.labels):
        changed = int(np.sum(ref.labels != cand.labels))
        raise ClipevalError(
            f"'{key}': {changed} of the same samples have other labels than in the golden file: "
            "the data (or its class list) changed; compare like with like."
        )
    p, m, p_min, evidence = _paired_test(metric, ref, cand, opts)
    change = got["value"] - reference
    large = abs(change) >= opts.min_effect
    if p < opts.alpha and large:
        return Row(key, metric, reference, got["value"], evidence, "regressed" if change < 0 else "improved")
    if large and change < 0 and p_min >= opts.alpha:
        evidence = _too_few(evidence, m, p_min, ref.n, opts.alpha)
        return Row(key, metric, reference, got["value"], evidence, "inconclusive")
    return Row(key, metric, reference, got["value"], evidence, "ok")


def smallest_p(discordant: int) -> float:
    """The smallest two-sided p McNemar's exact test, or the exact paired permutation test, can give with
    ``discordant`` samples: every one in the same direction, 2 * 0.5**m (1 with none)."""
    return min(1.0, 2.0 * 0.5**discordant)


def discordant_needed(alpha: float) -> int:
    """The fewest discordant samples whose most extreme split has p < ``alpha``."""
    return max(1, math.floor(math.log2(2.0 / alpha)) + 1)


def _too_few(evidence: str, m: int, p_min: float, n: int, alpha: float) -> str:
    need = discordant_needed(alpha)
    rate = f"; at this run's rate of {m} in {n}, about {math.ceil(n * need / m)} samples" if m else ""
    return (
        f"{evidence}; too few data to decide: with {m} discordant samples p cannot fall below "
        f"{p_min:.3g} >= alpha {alpha:g}, so no drop could fail. A decision needs at least {need} "
        f"discordant samples{rate}"
    )


def _paired_test(metric: str, ref: Samples, cand: Samples, opts: Options) -> tuple[float, int, float, str]:
    """(p, discordant samples m, the smallest p the test could give with m, evidence) of the metric's paired test.

    Random swaps cannot give less than 1 / (1 + resamples), whatever m."""
    if metric in CLASS_WEIGHTED:
        weights = ref.weights(metric) if ref.labels is not None else cand.weights(metric)
        p, m, how = paired_permutation_test(ref.outcome("top1"), cand.outcome("top1"), weights, opts.resamples)
        draws = "all swaps" if how == "exact" else f"{opts.resamples} random swaps, seed {PERMUTATION_SEED}"
        p_min = smallest_p(m) if how == "exact" else max(smallest_p(m), 1 / (1 + opts.resamples))
        return p, m, p_min, f"paired permutation p={p:.3g} ({m} discordant samples, by class; {draws})"
    b, c, p = mcnemar_exact(ref.outcome(metric), cand.outcome(metric))
    return p, b + c, smallest_p(b + c), f"McNemar p={p:.3g} ({b} lost, {c} gained)"


def format_rows(rows: list[Row]) -> str:
    width = max([12, *(len(r.key) for r in rows)])
    lines = [
        f"{'task/dataset':<{width}} {'metric':<22} {'reference':>9} {'candidate':>9} {'change':>8}  {'verdict':<12} evidence"
    ]
    for r in rows:
        mark = {"regressed": "REGRESSED", "inconclusive": "INCONCLUSIVE"}.get(r.verdict, r.verdict)
        lines.append(
            f"{r.key:<{width}} {r.metric:<22} {r.reference:9.4f} {r.candidate:9.4f} {r.candidate - r.reference:+8.4f}  {mark:<12} {r.evidence}"
        )
    bad = [r for r in rows if r.verdict == "regressed"]
    unsure = [r for r in rows if r.verdict == "inconclusive"]
    lines.append(
        f"{len(rows)} checked: {len(bad)} regressed, {len(unsure)} inconclusive, "
        f"{sum(r.verdict == 'improved' for r in rows)} improved."
    )
    if bad:
        lines.append("Regressed: " + ", ".join(f"{r.key} {r.metric}" for r in bad))
    if unsure:
        lines.append(
            "Inconclusive (a drop on too few samples to decide; evaluate more data): "
            + ", ".join(f"{r.key} {r.metric}" for r in unsure)
        )
    return "\n".join(lines)


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="clipeval check", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="write a golden file from a run")
    rec.add_argument("run", type=Path)
    rec.add_argument("--out", type=Path, required=True)
    cmp = sub.add_parser("compare", help="check candidate run(s) against a golden file")
    cmp.add_argument("runs", type=Path, nargs="+")
    cmp.add_argument("--golden", type=Path, required=True)
    cmp.add_argument(
        "--alpha", type=_finite_float(0, 1, True), default=0.05, help="significance level of the paired tests"
    )
    cmp.add_argument("--min-effect", type=_finite_float(0, 1, False), default=0.005,
                     help="smallest significant drop that counts as a regression (fraction)")  # fmt: skip
    cmp.add_argument("--tolerance", type=_finite_float(0, math.inf, False), default=0.01,
                     help="allowed drop for records without per-sample data on both sides")  # fmt: skip
    cmp.add_argument("--resamples", type=int, default=20000, help="random swaps of the permutation test")
    cmp.add_argument("--fail-inconclusive", action="store_true",
                     help="exit 1 also when a drop of at least --min-effect is on too few samples to decide")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        if args.command == "record":
            print("wrote", record_golden(args.run, args.out))
            return
        if not args.golden.is_file():
            raise ClipevalError(
                f"Golden file {args.golden} does not exist. Make one with: clipeval check record RUN --out FILE"
            )
        golden = json.loads(args.golden.read_text())
        rows = compare(golden, args.runs, args.alpha, args.min_effect, args.tolerance, args.resamples)
    except (ClipevalError, OSError, json.JSONDecodeError) as exc:
        print(f"clipeval check: error: {exc}", file=sys.stderr)
        raise SystemExit(USAGE_EXIT_CODE) from None
    print(format_rows(rows))
    failing = {"regressed", "inconclusive"} if args.fail_inconclusive else {"regressed"}
    raise SystemExit(1 if any(r.verdict in failing for r in rows) else 0)


if __name__ == "__main__":
    main()
