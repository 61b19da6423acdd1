"""The rules every record obeys, checked where records are made, written and read: one set of rules for the
runner, the store and the gate (clipeval.results.record, clipeval.results.validate)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_in_process
from test_evaluator_faults import folder_run

from clipeval.errors import ClipevalError
from clipeval.results.metrics import clopper_pearson
from clipeval.results.record import METRICS, Metric, Record, metric_info, register_metric
from clipeval.results.samples import Samples
from clipeval.results.store import ResultsDocument, load_store
from clipeval.results.validate import check_records

GOOD = {"dataset": "test", "metric": "top1", "value": 0.5, "n": 4, "ci": (0.1, 0.9)}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"params": {"eps": [2, 4]}}, "'params' must map names to strings, numbers or booleans"),
        ({"params": {"eps": None}}, "'params' must map names"),
        ({"params": {"eps": float("nan")}}, "'params' must map names"),
        ({"value": float("nan")}, "not a finite number"),
        ({"value": "0.9"}, "not a number"),
        ({"n": 0}, "'n' must be a positive whole number"),
        ({"n": 3.5}, "'n' must be a positive whole number"),
        ({"n": None}, "only a published number with its own 'tolerance'"),
        ({"ci": (0.9, 0.1)}, "low <= high"),
        ({"ci": (0.1, float("inf"))}, "pair \\[low, high\\] of finite numbers"),
        ({"std": -1.0}, "std is -1.0"),
    ],
)
def test_a_record_refuses_what_no_results_document_may_hold(change, message):
    with pytest.raises(ClipevalError, match=message):
        Record(**(GOOD | change))


def test_numpy_scalars_become_python_numbers_so_the_document_can_be_written():
    record = Record(**GOOD | {"n": np.int64(4), "value": np.float32(0.5), "params": {"seed": np.int64(0)}})
    assert type(record.n) is int and type(record.value) is float and type(record.params["seed"]) is int
    json.dumps(record.to_json())


def samples_of(correct: list[bool]) -> Samples:
    return Samples.from_arrays([f"s{i}" for i in range(len(correct))], labels=[0] * len(correct),
                               topk=[[0 if c else 1] for c in correct])  # fmt: skip


def check(records, samples=None):
    check_records(records, (samples or {}).get, metric_info, lambda i, r: f"records[{i}]")


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (Record("t", "top1", 0.5, 4, (0.0, 1.0), samples="s"), "per-sample data give 0.750000"),
        (Record("t", "top1", 0.75, 5, (0.0, 1.0), samples="s"), "n = 5, but its per-sample data 's' hold 4"),
        (Record("t", "top1", 0.75, 4, (0.0, 1.0), samples="gone"), "points at per-sample data 'gone'"),
        (Record("t", "top1", 0.75, 4, (0.0, 1.0), samples="s", outcome="pgd@2"), "have no outcome 'pgd@2'"),
        (Record("t", "top1", 1.7, 4, (0.0, 1.0)), "outside \\[0, 1\\], the range of a fraction"),
        (Record("t", "top1", 0.03, 4, (0.82, 0.89)), "outside its own interval"),
    ],
)
def test_records_must_agree_with_their_metric_and_their_per_sample_data(record, message):
    with pytest.raises(ClipevalError, match=message):
        check([record], {"s": samples_of([True, True, True, False])})


def test_one_identity_once_even_when_params_are_written_differently():
    a = Record("t", "top1", 0.5, 4, (0.1, 0.9), params={"eps": 2})
    with pytest.raises(ClipevalError, match=r"records\[1\] appears twice \(as records\[0\] too\)"):
        check([a, Record("t", "top1", 0.5, 4, (0.1, 0.9), params={"eps": 2.0})])


def test_a_metric_is_registered_once_and_an_unregistered_one_is_refused():
    with pytest.raises(ClipevalError, match="already registered"):
        register_metric(Metric("top1", "lower is better now", higher_is_better=False))
    assert METRICS["top1"].higher_is_better
    with pytest.raises(ClipevalError, match="Metric 'plugin_error' is not registered.*register_metric"):
        metric_info("plugin_error")


def test_a_document_carries_its_metrics_so_a_reader_needs_no_plugin(tmp_path):
    """A plugin's lower-is-better metric is read as such by a process that never imported the plugin."""
    record = Record("test", "plugin_error", 0.3, 4, clopper_pearson(1, 4), task="t")
    raw = {"kind": "clipeval-results", "schema_version": 3, "model": {"name": "m", "fingerprint": "f"},
           "selection": {"name": "t", "version": "1", "kind": "task", "tasks": {"t": "1"}},
           "records": [record.to_json()],
           "metrics": {"plugin_error": {"higher_is_better": False, "unit": "fraction", "derived": False}}}  # fmt: skip
    doc = ResultsDocument.parse(raw)
    assert doc.metric("plugin_error").higher_is_better is False
    with pytest.raises(ClipevalError, match="Metric 'plugin_error' is not registered"):
        ResultsDocument.parse(raw | {"metrics": {}})


class ReturnsADict:
    def evaluate(self, ctx):
        return {"top1": 0.5}


class KeepsThenReturnsABadRecord:
    """Keeps per-sample data, then returns a record whose n disagrees with them."""

    def evaluate(self, ctx):
        fs = ctx.features("test")
        logits = ctx.zero_shot_logits("test")
        topk = logits.topk(1, dim=1).indices
        key = ctx.keep_predictions("test", fs.ids, fs.labels, topk, name="test.bad")
        k = int((topk[:, 0] == fs.labels).sum())
        return [
            Record("test", "top1", k / len(fs.ids), len(fs.ids) + 1, (0.0, 1.0), params={"how": "bad"}, samples=key)
        ]


class KeepsOutsideItsFolder:
    def evaluate(self, ctx):
        fs = ctx.features("test")
        ctx.keep_predictions("test", fs.ids, fs.labels, fs.labels[:, None], name="../../escape")
        return []


@pytest.mark.parametrize(
    ("evaluator", "message"),
    [
        ("ReturnsADict", "evaluate\\(\\) must return a list of clipeval.results.record.Record \\(got dict\\)"),
        ("KeepsThenReturnsABadRecord", "n = 7, but its per-sample data 'folder/test.bad' hold 6"),
        ("KeepsOutsideItsFolder", "need a plain file name"),
    ],
)
def test_a_plugin_that_breaks_the_rules_fails_itself_and_the_document_stays_valid(tmp_path, evaluator, message):
    overrides = folder_run(tmp_path, ["red_square", "green_circle"], 3, {"bad": f"{{_target_:{__name__}.{evaluator}}}"})
    with pytest.raises(ClipevalError, match=f"Evaluator 'bad' of task 'folder' failed: .*{message}"):
        run_in_process([*overrides, f"store={tmp_path / 'store'}"], tmp_path / "run")
    (doc,) = load_store(tmp_path / "store")  # valid: the zero-shot records, none of the bad evaluator's data
    assert {r.metric for r in doc.records} >= {"top1"} and doc.failures[0]["evaluator"] == "bad"
    assert list(doc.raw["samples"]) == ["folder/test"]
    assert not (tmp_path / "escape.parquet").exists() and not list(tmp_path.glob("run/*.parquet"))


def test_every_metric_a_built_in_evaluator_writes_is_known_without_importing_it():
    """`check` and `report` never import the evaluators: a metric registered only where its evaluator is defined
    (retrieval's recall@k, ImageNet-C's mce) made them refuse the golden files and skip every such run."""
    code = (
        "import importlib, pkgutil\n"
        "from clipeval.results.record import METRICS\n"
        "import clipeval.evaluators as package\n"
        "known = set(METRICS)\n"
        "for module in pkgutil.iter_modules(package.__path__):\n"
        "    importlib.import_module(f'clipeval.evaluators.{module.name}')\n"
        "print(sorted(set(METRICS) - known))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_plugins_metric_defined_in_the_document_alone_is_shown_in_its_unit():
    """Tables read a metric's unit from the document when this process does not know the metric."""
    from clipeval.report.tables import format_records, record_rows

    record = Record("test", "plugin_ratio", 1.25, 4, (1.0, 1.5), task="t")
    raw = {"kind": "clipeval-results", "schema_version": 3, "model": {"name": "m", "fingerprint": "f"},
           "selection": {"name": "t", "version": "1", "kind": "task", "tasks": {"t": "1"}},
           "records": [record.to_json()],
           "metrics": {"plugin_ratio": {"higher_is_better": False, "unit": "count", "derived": False}}}  # fmt: skip
    doc = ResultsDocument.parse(raw)
    assert "plugin_ratio" not in METRICS
    assert record_rows(doc.records, doc.info)[0][2:] == ["1.25", "[1.00, 1.50]", "count", "4"]
    assert "plugin_ratio" in format_records("t", doc.records, doc.info) and "count" in format_records(
        "t", doc.records, doc.info
    )
