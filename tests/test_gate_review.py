"""The gate's review fixes: a drop on too few samples to decide is inconclusive (not ok); the golden file
records which data were scored and refuses other data under the same names; golden files with nothing to
check, impossible sample counts or no per-sample data are caught; failed runs are marked in the store report."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder, open_clip_overrides, run_in_process
from test_gate import check, degraded_pair, predictions, write_run

from clipeval.check.cli import main
from clipeval.check.stats import discordant_needed, mcnemar_exact, paired_permutation_test, smallest_p
from clipeval.report.cli import main as report_main


def small_pair(tmp_path: Path, n: int, lost: int, gained: int = 0) -> Path:
    """Record a reference of ``n`` samples (all right), and a candidate that lost and gained that many."""
    labels = np.arange(n) % 10
    ref = np.ones(n, bool)
    ref[:gained] = False
    cand = ref.copy()
    cand[:gained] = True
    cand[gained : gained + lost] = False
    write_run(tmp_path / "ref", labels, predictions(labels, ref))
    write_run(tmp_path / "cand", labels, predictions(labels, cand))
    main(["record", str(tmp_path / "ref"), "--out", str(tmp_path / "golden.json")])
    return tmp_path / "golden.json"


# ---------------------------------------------------------------- 1. too few samples to decide


def test_smallest_attainable_p_is_what_both_tests_give_when_every_discordant_sample_is_lost():
    for m in range(1, 9):
        ref, cand = np.ones(m, bool), np.zeros(m, bool)
        assert mcnemar_exact(ref, cand)[2] == pytest.approx(smallest_p(m))
        p, _, how = paired_permutation_test(ref, cand, np.full(m, 1 / m))
        assert how == "exact" and p == pytest.approx(smallest_p(m))
    need = discordant_needed(0.05)
    assert smallest_p(need) < 0.05 <= smallest_p(need - 1) and need == 6


def test_a_33_point_drop_on_12_samples_is_inconclusive_not_ok(tmp_path, capsys):
    golden = small_pair(tmp_path, n=12, lost=4)  # 4 lost, 0 gained: McNemar p = 0.125, the smallest possible
    assert check("compare", "--golden", str(golden), str(tmp_path / "cand")) == 0
    out = capsys.readouterr().out
    top1 = next(line for line in out.splitlines() if line.startswith("t/d ") and " top1 " in line)
    assert "INCONCLUSIVE" in top1 and "too few data to decide" in top1 and "at least 6 discordant" in top1
    assert "about 18 samples" in top1  # 6 discordant at this run's rate of 4 in 12
    recall = next(line for line in out.splitlines() if " mean_per_class_recall " in line)
    assert "INCONCLUSIVE" in recall  # the permutation test can no more decide on 4 discordant samples
    assert "0 regressed, 2 inconclusive" in out  # top-5 did not change
    assert "Inconclusive (a drop on too few samples to decide" in out
    assert check("compare", "--golden", str(golden), str(tmp_path / "cand"), "--fail-inconclusive") == 1


def test_a_drop_the_test_could_have_found_stays_ok_and_a_big_enough_sample_regresses(tmp_path, capsys):
    labels, ref, cand = degraded_pair(lost=8, gained=4)  # 12 discordant: p ~ 0.39, but p could go to 5e-4
    write_run(tmp_path / "ref", labels, predictions(labels, ref))
    write_run(tmp_path / "cand", labels, predictions(labels, cand))
    main(["record", str(tmp_path / "ref"), "--out", str(tmp_path / "golden.json")])
    assert (
        check("compare", "--golden", str(tmp_path / "golden.json"), str(tmp_path / "cand"), "--min-effect", "0.001")
        == 0
    )
    out = capsys.readouterr().out
    assert "INCONCLUSIVE" not in out and "0 inconclusive" in out
    golden = small_pair(tmp_path / "big", n=12, lost=6)  # 6 lost: p = 0.031 < 0.05
    assert check("compare", "--golden", str(golden), str(tmp_path / "big" / "cand")) == 1
    assert "REGRESSED" in capsys.readouterr().out


def test_random_swaps_are_inconclusive_when_alpha_is_below_their_resolution(tmp_path, capsys):
    labels, ref, cand = degraded_pair(lost=60, gained=0)  # 60 discordant: McNemar p ~ 1e-18
    write_run(tmp_path / "ref", labels, predictions(labels, ref))
    write_run(tmp_path / "cand", labels, predictions(labels, cand))
    main(["record", str(tmp_path / "ref"), "--out", str(tmp_path / "golden.json")])
    argv = ["compare", "--golden", str(tmp_path / "golden.json"), str(tmp_path / "cand"), "--alpha", "0.0005"]
    assert check(*argv, "--resamples", "1000") == 1  # top-1 regressed
    out = capsys.readouterr().out
    recall = next(line for line in out.splitlines() if " mean_per_class_recall " in line)
    assert "INCONCLUSIVE" in recall and "cannot fall below 0.000999" in recall  # 1 / 1001 random swaps


def test_a_small_drop_below_min_effect_is_ok_even_on_few_samples(tmp_path, capsys):
    golden = small_pair(tmp_path, n=1000, lost=2)  # 0.2 points, below --min-effect 0.005
    assert check("compare", "--golden", str(golden), str(tmp_path / "cand")) == 0
    assert "INCONCLUSIVE" not in capsys.readouterr().out


# ---------------------------------------------------------------- 3. golden-file oddities


def golden_doc(tmp_path: Path, **changes) -> Path:
    golden = small_pair(tmp_path, n=40, lost=0)
    doc = json.loads(golden.read_text()) | changes
    golden.write_text(json.dumps(doc))
    return golden


def test_a_golden_file_without_records_is_exit_2(tmp_path, capsys):
    golden = golden_doc(tmp_path, records=[])
    assert check("compare", "--golden", str(golden), str(tmp_path / "cand")) == 2
    assert f"The golden file {golden} has no records, so there is nothing to check" in capsys.readouterr().err


@pytest.mark.parametrize("n", [-5, 0, 2.5, "40", True])
def test_a_record_or_samples_n_that_is_not_a_positive_integer_is_exit_2(tmp_path, capsys, n):
    golden = small_pair(tmp_path, n=40, lost=0)
    doc = json.loads(golden.read_text())
    doc["records"][0]["n"] = n
    golden.write_text(json.dumps(doc))
    assert check("compare", "--golden", str(golden), str(tmp_path / "cand")) == 2
    err = capsys.readouterr().err  # a whole number, and (in a golden file) at least 1
    assert (
        f"{golden}: records[0] (t/d top1): 'n' must be a " in err and f"(got {json.dumps(n)})" in err
    )  # as in the file
    doc = json.loads(small_pair(tmp_path / "s", n=40, lost=0).read_text())
    doc["samples"]["t/d"]["n"] = n
    (tmp_path / "s" / "golden.json").write_text(json.dumps(doc))
    assert check("compare", "--golden", str(tmp_path / "s" / "golden.json"), str(tmp_path / "s" / "cand")) == 2
    err = capsys.readouterr().err
    at = f"{tmp_path / 's' / 'golden.json'}: records[0] (t/d top1): samples.t/d: n is {json.dumps(n)}"  # named once
    assert at in err and "positive integer" in err


def test_a_golden_file_without_samples_warns_that_it_falls_back_to_the_tolerance(tmp_path, capsys, caplog):
    golden = small_pair(tmp_path, n=40, lost=0)
    doc = json.loads(golden.read_text())
    del doc["samples"]
    for record in doc["records"]:
        del record["samples"]
    golden.write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING):
        assert check("compare", "--golden", str(golden), str(tmp_path / "cand")) == 0
    assert "tolerance" in capsys.readouterr().out
    assert any("no per-sample data ('samples')" in r.getMessage() for r in caplog.records)


def _drop(doc: dict, *path) -> None:
    for key in path[:-1]:
        doc = doc[key]
    del doc[path[-1]]


def _set(doc: dict, value, *path) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


MALFORMED = {  # what is wrong -> (change to the document's text or JSON, what the error says after the file name)
    "a list": (lambda text: "[1, 2]", " holds a list, not a clipeval results document (a JSON object)"),
    "truncated": (lambda text: text[: len(text) // 2], " is truncated: its JSON ends early ("),
    "binary": (lambda text: bytes(range(256)), " is not a JSON text file (byte 128 is not UTF-8): is it binary, or"),
    "selection.kind neither": (
        lambda doc: _set(doc, "run", "selection", "kind"),
        ": 'selection.kind' must be 'task' or 'suite' (what the document's selection is), not \"run\".",
    ),
    "no selection.kind": (lambda doc: _drop(doc, "selection", "kind"), ": 'selection.kind' is required: 'task' or"),
    "selection.kind a list": (
        lambda doc: _set(doc, ["task"], "selection", "kind"),
        ": 'selection.kind' must be 'task' or",
    ),
    "selection.version a list": (
        lambda doc: _set(doc, [1], "selection", "version"),
        ": 'selection.version' must be a string or a whole number, not [1].",
    ),
    "no records": (lambda doc: _drop(doc, "records"), ": 'records' must be a list"),
    "records not a list": (lambda doc: _set(doc, {"a": 1}, "records"), ": 'records' must be a list"),
    "a record not an object": (lambda doc: _set(doc, "top1", "records", 0), ": records[0] is a string, not an object"),
    "no value": (lambda doc: _drop(doc, "records", 0, "value"), ": records[0] (t/d top1): value is null"),
    "a value string": (lambda doc: _set(doc, "0.8", "records", 0, "value"), ': records[0] (t/d top1): value is "0.8"'),
    "no metric": (lambda doc: _drop(doc, "records", 0, "metric"), ": records[0]: 'metric' must be a non-empty string"),
    "ci not a pair": (lambda doc: _set(doc, 0.1, "records", 0, "ci"), ": records[0] (t/d top1): 'ci' must be a pair"),
    "bad base64": (
        lambda doc: _set(doc, "not base64!", "samples", "t/d", "topk", "zlib_base64"),
        ": records[0] (t/d top1): samples.t/d: topk: zlib_base64 is not base64 text.",  # the file named once
    ),
    "not zlib": (
        lambda doc: _set(doc, "AAAA", "samples", "t/d", "labels", "zlib_base64"),
        ": records[0] (t/d top1): samples.t/d: labels: zlib_base64 does not decompress (zlib): the data are damaged",
    ),
    "dtype not an integer type": (  # numpy's own words were "cannot create an OBJECT array from memory buffer"
        lambda doc: _set(doc, "object", "samples", "t/d", "topk", "dtype"),
        ': records[0] (t/d top1): samples.t/d: topk: dtype is "object", not an integer type such as "<u2" or "<i8".',
    ),
    "shape not a list": (
        lambda doc: _set(doc, "x", "samples", "t/d", "topk", "shape"),
        ': records[0] (t/d top1): samples.t/d: topk: shape is "x", not a list of whole numbers.',
    ),
    "fewer values than the shape": (
        lambda doc: _set(doc, [40, 99], "samples", "t/d", "labels", "shape"),
        ': records[0] (t/d top1): samples.t/d: labels holds 40 values of dtype "<u2", and its shape [40, 99] needs',
    ),
    "short bits": (
        lambda doc: _set(doc, {"top1": "AAAA"}, "samples", "t/d", "correct"),
        ": records[0] (t/d top1): samples.t/d: correct.top1 holds 24 bits, fewer than its n = 40 samples",
    ),
    "samples without labels": (
        lambda doc: _drop(doc, "samples", "t/d", "labels"),
        ": records[0] (t/d top1): samples.t/d: labels is missing; ranked predictions ('topk') need the labels they",
    ),
    "samples without topk": (
        lambda doc: _drop(doc, "samples", "t/d", "topk"),
        ": records[0] (t/d top1): samples.t/d: topk is missing;",
    ),
    "samples without any data": (
        lambda doc: [_drop(doc, "samples", "t/d", k) for k in ("labels", "topk")],
        ": records[0] (t/d top1): samples.t/d: labels and topk are missing;",
    ),
    "nested too deeply": (lambda text: "[" * 100_000, " is JSON nested too deeply to read"),
    "samples not held": (
        lambda doc: _set(doc, "t/other", "records", 0, "samples"),
        ": records point at per-sample data ['t/other'] that it does not hold",
    ),
    "no selection": (lambda doc: _drop(doc, "selection"), ": 'selection' must be an object with a 'name'"),
    "data not keyed": (
        lambda doc: _set(doc, "folder:0123", "data", "t", "d"),
        ": data.t.d must be an object with a content 'key'",
    ),
    "a negative limit": (lambda doc: _set(doc, -3, "data", "t", "d", "limit"), ": data.t.d: limit is -3"),
    "the old format": (
        lambda doc: _set(doc, "clipeval-golden", "kind"),
        " is a golden file of an older clipeval (kind 'clipeval-golden')",
    ),
}


def _spoil(path: Path, change) -> None:
    text = path.read_text()
    try:
        changed = change(text)
    except TypeError:  # a change of the parsed JSON
        doc = json.loads(text)
        change(doc)
        changed = json.dumps(doc)
    path.write_bytes(changed if isinstance(changed, bytes) else changed.encode())


@pytest.mark.parametrize("what", MALFORMED)
def test_a_malformed_golden_file_is_exit_2_naming_the_file_and_field(tmp_path, capsys, what):
    change, expected = MALFORMED[what]
    golden = small_pair(tmp_path, n=40, lost=0)
    _spoil(golden, change)
    assert check("compare", "--golden", str(golden), str(tmp_path / "cand")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{golden}{expected}" in err, err


@pytest.mark.parametrize("what", [w for w in MALFORMED if w != "the old format"])
def test_a_malformed_candidate_is_exit_2_naming_the_file_and_field(tmp_path, capsys, what):
    change, expected = MALFORMED[what]
    golden = small_pair(tmp_path, n=40, lost=0)
    results = tmp_path / "cand" / "results.json"
    _spoil(results, change)
    assert check("compare", "--golden", str(golden), str(tmp_path / "cand")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{results}{expected}" in err, err


def test_a_failed_run_is_neither_a_golden_file_nor_a_candidate(tmp_path, capsys):
    golden = small_pair(tmp_path, n=40, lost=0)
    results = tmp_path / "cand" / "results.json"
    doc = json.loads(results.read_text())
    doc["failures"] = [{"task": "t", "evaluator": "zero_shot", "type": "RuntimeError", "error": "out of memory"}]
    results.write_text(json.dumps(doc))
    assert check("compare", "--golden", str(golden), str(tmp_path / "cand")) == 2
    assert f"The run at {results} did not finish: t/zero_shot: out of memory" in capsys.readouterr().err
    assert check("record", str(tmp_path / "cand"), "--out", str(tmp_path / "again.json")) == 2
    assert "did not finish" in capsys.readouterr().err and not (tmp_path / "again.json").exists()


# ---------------------------------------------------------------- 2. which data were scored


@pytest.fixture
def folder_golden(tiny_open_clip, tmp_path):
    """A reference run of the tiny model on an image folder, and its golden file."""
    images = make_image_folder(tmp_path / "images")
    overrides = open_clip_overrides(tiny_open_clip, task="folder", **{"task.root": str(images)})
    doc = run_in_process(overrides, tmp_path / "ref")
    main(["record", str(tmp_path / "ref"), "--out", str(tmp_path / "golden.json")])
    return images, overrides, doc, tmp_path / "golden.json"


def test_the_run_and_golden_file_record_the_data_and_other_images_under_the_same_names_are_refused(
    folder_golden, tmp_path, capsys
):
    images, overrides, doc, golden = folder_golden
    (task, datasets), *more = doc["data"].items()
    assert not more and task == doc["selection"]["name"] and list(datasets) == ["test"]
    assert datasets["test"]["key"].startswith("folder:") and datasets["test"]["limit"] is None  # the content key
    assert json.loads(golden.read_text())["data"] == doc["data"]
    first, second = sorted(p for p in images.iterdir() if p.is_dir())[:2]
    for image in first.iterdir():  # one class's images overwritten with another's, same file names
        shutil.copy(second / image.name, image)
    run_in_process(overrides, tmp_path / "swapped")
    assert check("compare", "--golden", str(golden), str(tmp_path / "swapped")) == 2
    err = capsys.readouterr().err
    assert "The data changed" in err and "record the golden file again" in err


def test_a_runtime_limit_is_part_of_the_scored_data_and_old_files_without_keys_warn(
    folder_golden, tmp_path, capsys, caplog
):
    images, overrides, doc, golden = folder_golden
    limited = run_in_process([*overrides, "runtime.limit=8"], tmp_path / "limited")
    assert limited["data"]["folder"]["test"] == doc["data"]["folder"]["test"] | {"limit": 8}
    assert check("compare", "--golden", str(golden), str(tmp_path / "limited")) == 2
    assert (
        "different set of samples (folder/test: every sample in the golden file, the first 8" in capsys.readouterr().err
    )
    old = json.loads(golden.read_text())
    del old["data"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    with caplog.at_level(logging.WARNING):
        assert check("compare", "--golden", str(tmp_path / "old.json"), str(tmp_path / "ref")) == 0
    assert any("records no content keys" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- 4. failed runs in the store report


def test_the_store_report_marks_a_failed_run_and_shows_its_notes(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    run = {"kind": "clipeval-results", "schema_version": 3, "model": {"name": "m", "fingerprint": "f" * 64},
           "selection": {"name": "t", "version": "1", "kind": "task", "tasks": {"t": "1"}},
           "created": "2026-01-01T00:00:00+00:00", "clipeval_version": "test",
           "records": [{"task": "t", "dataset": "d", "metric": "top1", "value": 0.5, "n": 10, "ci": [0.2, 0.8]}],
           "failures": [{"task": "t", "evaluator": "linear_probe", "type": "RuntimeError", "error": "out of memory"}],
           "notes": [{"task": "t", "evaluator": "zero_shot", "message": "3 classes have no test images"}]}  # fmt: skip
    (store / "run.json").write_text(json.dumps(run))
    report_main(["store", "--store", str(store), "--out", str(tmp_path / "out")])
    md = (tmp_path / "out" / "report.md").read_text()
    page = (tmp_path / "out" / "report.html").read_text()
    for text in (md, page):
        assert "INCOMPLETE" in text
        assert "Incomplete: evaluator linear_probe of task t failed (RuntimeError): out of memory" in text
        assert "Note: t/zero_shot: 3 classes have no test images" in text
