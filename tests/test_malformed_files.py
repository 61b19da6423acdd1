"""Malformed input files of ``clipeval check`` and ``clipeval report``: exit 2 naming the file and the field
(column, row, key), never a traceback; a store entry that cannot be read is skipped with a warning and the
rest are reported. One kind of file per section; every file here is tiny and written by hand.

The golden files' and candidates' malformed records and samples are in test_gate_review.py."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from conftest import compose_config
from test_cross_run import accuracies, digits_document, document, natural_spec, records_of
from test_gate import check, degraded_pair, predictions, write_run

from clipeval.check.cli import main as check_main
from clipeval.errors import ClipevalError
from clipeval.report.baselines import TableBaselines, read_model_types, read_table
from clipeval.report.cli import main as report_main
from clipeval.report.inputs import read_sizes
from clipeval.report.selection import select_runs
from clipeval.report.testbed import read_paper_table
from clipeval.results.store import Selector, add_to_store

BINARY = bytes(range(256)) * 4


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def report(*argv) -> int:
    """``clipeval report`` in-process: its exit code (the caller reads stderr through capsys)."""
    try:
        report_main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code
    return 0


def error_of(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err


# ---------------------------------------------------------------- baseline tables (--table, baselines.path)

TABLE = "model,clean,rend,sk\n" + "".join(f"cnn{i},{70 + 4 * i},{30 + 6 * i},{12 + 5 * i}\n" for i in range(6))

BAD_TABLES = {  # what is wrong -> (the file, what the message says after "<file>")
    "empty": (b"", " is empty"),
    "binary": (BINARY, " is not a text file (byte 128 is not UTF-8)"),
    "a header only": ("model,clean,rend,sk\n", " has a header but no rows"),
    "ragged": ("model,clean,rend,sk\na,1,2,3\nb,1,2,3,4,5\n", ": line 3 has 6 fields, the header has 4"),
    "a row short of a field": (TABLE.replace("cnn2,78,42,22", "cnn2,78,42"), ": line 4 has 3 fields, the header has 4"),
    "a row with one field more": (TABLE.replace("cnn2,78,42,22", "cnn2,78,42,22,9"), ": line 4 has 5 fields, the"),
    "semicolons": (TABLE.replace(",", ";"), " has its columns separated by semicolons"),
    "no model column": (TABLE.replace("model,", "name,"), " has no column(s) ['model'] (one row per model)"),
    "a --shift column missing": (TABLE.replace(",sk\n", ",sketch\n"), " has no column(s) ['sk']"),
    "text for an accuracy": (
        TABLE.replace("cnn2,78", "cnn2,seventy-eight"),
        ": column 'clean', row 'cnn2': 'seventy-eight' is not a number",
    ),
    "an accuracy above 100%": (TABLE.replace("cnn2,78", "cnn2,250"), ": column 'clean', row 'cnn2': 250 is not an"),
    "a negative accuracy": (TABLE.replace("cnn2,78,42", "cnn2,78,-4"), ": column 'rend', row 'cnn2': -4 is not an"),
    "a model twice": (TABLE + "cnn2,80,40,20\n", ": model 'cnn2' has more than one row"),
    "a row without a name": (TABLE.replace("cnn3", ""), ": line 5 has no 'model'"),
    "one model left for a shift": (
        "model,clean,rend,sk\na,70,30,12\nb,75,40,\n",
        " have values in 'clean' and 'sk'; a logit-linear fit needs at least two",
    ),
}


@pytest.mark.parametrize("what", BAD_TABLES)
def test_a_malformed_baseline_table_is_exit_2_naming_the_file_column_and_row(tmp_path, capsys, what):
    content, expected = BAD_TABLES[what]
    table = write(tmp_path / "table.csv", content)
    entry = add_to_store(tmp_path / "store", digits_document()[0])
    code = report("refit", entry, "--table", table, "--shift", "renditions=clean:rend", "--shift", "sketch=clean:sk",
                  "--in-distribution", "clean", "--out", tmp_path / "out")  # fmt: skip
    err = error_of(capsys)
    assert code == 2 and str(table) in err and expected in err, err


def test_the_missing_column_message_suggests_the_nearest_one(tmp_path):
    table = write(tmp_path / "t.csv", TABLE.replace(",sk\n", ",sketch\n"))
    with pytest.raises(ClipevalError, match="Did you mean 'sketch'"):
        read_table(table, ["clean", "sk"])


def test_a_column_named_in_other_case_is_the_suggestion(tmp_path):
    table = write(tmp_path / "t.csv", TABLE.replace(",rend,", ",REND,"))
    with pytest.raises(ClipevalError, match="Did you mean 'REND'"):  # not 'clean', which is as close by spelling
        read_table(table, ["clean", "rend"])


def test_a_long_table_with_a_setting_twice_is_refused(tmp_path):
    table = write(tmp_path / "long.csv", "model,setting,accuracy\na,val,60\na,val,61\nb,val,70\n")
    with pytest.raises(ClipevalError, match="model 'a' has setting 'val' more than once"):
        read_table(table)


def test_empty_cells_are_missing_values_and_only_the_used_columns_must_be_numbers(tmp_path):
    table = write(tmp_path / "t.csv", "model,arch,val,s\na,resnet,60,30\nb,vit,70,\nc,vit,80,NA\n")
    frame = read_table(table, ["val", "s"])
    assert list(frame.columns) == ["val", "s"] and frame.loc["a", "s"] == pytest.approx(0.30)
    assert frame["s"].isna().tolist() == [False, True, True]


@pytest.mark.parametrize("content", ["", "model,val\na,50\n"])
def test_a_suites_baselines_path_is_read_before_anything_runs(tmp_path, content):
    """A suite's baselines.path gets the same reader: a bad table fails when the baselines are built (before the
    model runs), a table without the protocol's columns too (it used to fail only after the evaluation)."""
    from clipeval.run.robustness import load_baselines

    table = write(tmp_path / "t.csv", content)
    cfg = compose_config(["suite=natural_shifts", f"suite.robustness.baselines.path={table}"])
    with pytest.raises(ClipevalError, match=f"Baseline table {table} (is empty|has no column)"):
        load_baselines(cfg.suite.robustness)


# ---------------------------------------------------------------- model types (--model-types, baselines.model_types)

TYPES = "model,model_type\n" + "".join(f"cnn{i},STANDARD\n" for i in range(6))
BAD_TYPES = {
    "empty": ("types.csv", b"", " is empty"),
    "binary": ("types.csv", BINARY, " is not a text file"),
    "no model_type column": ("types.csv", TYPES.replace("model_type", "kind"), " has no column(s) ['model_type']"),
    "a type missing": ("types.csv", TYPES.replace("cnn2,STANDARD", "cnn2,"), ": line 4 has no 'model_type'"),
    "two types for a model": ("types.csv", TYPES + "cnn2,MORE_DATA\n", ": model 'cnn2' has more than one type"),
    "no STANDARD model": (
        "types.csv",
        TYPES.replace("STANDARD", "standard"),
        " has type STANDARD (its types: standard)",
    ),
    "a .py without entries": ("model_types.py", "model_types_map = {}\n", " holds no entries of the form"),
}


@pytest.mark.parametrize("what", BAD_TYPES)
def test_a_malformed_model_type_list_is_exit_2_naming_the_file(tmp_path, capsys, what):
    name, content, expected = BAD_TYPES[what]
    types = write(tmp_path / name, content)
    entry = add_to_store(tmp_path / "store", digits_document()[0])
    code = report("refit", entry, "--table", write(tmp_path / "t.csv", TABLE), "--model-types", types,
                  "--protocol", write(tmp_path / "p.yaml", PROTOCOL), "--out", tmp_path / "out")  # fmt: skip
    err = error_of(capsys)
    assert code == 2 and str(types) in err and expected in err, err


def test_model_types_from_the_testbeds_python_file_are_unique(tmp_path):
    py = write(tmp_path / "model_types.py", "m = {\n  'a': ModelTypes.STANDARD,\n  'a': ModelTypes.STANDARD,\n}\n")
    assert read_model_types(py).to_dict() == {"a": "STANDARD"}


# ---------------------------------------------------------------- the baselines protocol (--protocol, baselines config)

PROTOCOL = (
    "shifts:\n  renditions: {x: clean, y: rend}\n  sketch: {x: clean, y: sk, min_x: 0.7}\nin_distribution: clean\n"
)
BAD_PROTOCOLS = {
    "invalid YAML": ("shifts: {renditions: [x\n", " is not valid YAML"),
    "binary": (BINARY, " is not a text file"),
    "empty": ("", " is empty"),
    "a list": ("- shifts\n", " must be a mapping of keys to values, not a list"),
    "shifts a list": ("shifts: [renditions]\n", ": 'shifts' must map each shift to {x: <column>, y: <column>"),
    "min_x text": (PROTOCOL.replace("0.7", "high"), ": shifts.sketch.min_x must be a fraction from 0 to 1"),
    "min_x in percent": (PROTOCOL.replace("0.7", "70"), ": shifts.sketch.min_x must be a fraction from 0 to 1"),
    "a shift without y": (PROTOCOL.replace(", y: rend", ""), ": shifts.renditions: the key(s) ['y'] are required"),
    "include_types a string": (PROTOCOL + "include_types: STANDARD\n", ": include_types must be a list of strings"),
    "a misspelt key": (PROTOCOL + "exclude_name: [aws]\n", ": unknown key 'exclude_name'."),
}


@pytest.mark.parametrize("what", BAD_PROTOCOLS)
def test_a_malformed_protocol_is_exit_2_naming_the_file_and_key(tmp_path, capsys, what):
    content, expected = BAD_PROTOCOLS[what]
    protocol = write(tmp_path / "p.yaml", content)
    entry = add_to_store(tmp_path / "store", digits_document()[0])
    code = report("refit", entry, "--table", write(tmp_path / "t.csv", TABLE), "--protocol", protocol,
                  "--out", tmp_path / "out")  # fmt: skip
    err = error_of(capsys)
    assert code == 2 and str(protocol) in err and expected in err, err
    if what == "a misspelt key":
        assert "Did you mean 'exclude_names'?" in err


def test_the_baselines_config_is_validated_like_a_protocol(tmp_path):
    table = write(tmp_path / "t.csv", TABLE)
    with pytest.raises(ClipevalError, match=r"shifts.sketch.min_x must be a fraction from 0 to 1 .* not 55"):
        TableBaselines({"sketch": {"x": "clean", "y": "sk", "min_x": 55}}, path=str(table), in_distribution="clean")
    with pytest.raises(ClipevalError, match="include_types must be a list of strings"):
        TableBaselines({"s": {"x": "clean", "y": "sk"}}, path=str(table), include_types="STANDARD")


# ---------------------------------------------------------------- test-set sizes (report testbed --sizes)

BAD_SIZES = {
    "invalid JSON": ('{"val": }', " is not valid JSON (Expecting value at line 1, column 9)."),
    "truncated": ('{"val": 5', " is truncated: its JSON ends early (Expecting ',' delimiter at line 1, column 10)."),
    "binary": (BINARY, " is not a JSON text file (byte 128 is not UTF-8)"),
    "NUL bytes": ("{}\x00\x00", " is not a JSON text file (byte 2 is a NUL byte)"),
    "a list": ("[1, 2]", " must be a JSON object {setting: number of images}, not a list"),
    "a size as text": ('{"val": "many"}', ": 'val' is 'many'; a test-set size is a positive whole number"),
    "a size of 0": ('{"val": 0}', ": 'val' is 0;"),
    "a negative size": ('{"val": -5}', ": 'val' is -5;"),
    "a fractional size": ('{"val": 2.5}', ": 'val' is 2.5;"),
    "a boolean size": ('{"val": true}', ": 'val' is True;"),
}


@pytest.mark.parametrize("what", BAD_SIZES)
def test_a_malformed_sizes_file_is_exit_2_naming_the_file_and_key(tmp_path, capsys, what):
    content, expected = BAD_SIZES[what]
    sizes = write(tmp_path / "sizes.json", content)
    code = report("testbed", "--table", tmp_path / "absent.csv", "--model-types", tmp_path / "absent.csv",
                  "--sizes", sizes, "--model", "m", "--out", tmp_path / "out")  # fmt: skip
    err = error_of(capsys)
    assert code == 2 and str(sizes) in err and expected in err, err


def test_sizes_keep_positive_whole_numbers_and_skip_comments(tmp_path):
    sizes = write(tmp_path / "s.json", '{"_source": "the testbed", "val": 50000, "imagenet-a": 7500}')
    assert read_sizes(sizes) == {"val": 50000, "imagenet-a": 7500}


# ---------------------------------------------------------------- published tables and their mapping (report figure)

PUBLISHED = "name,pretrained,in1k,v2\n" + "".join(f"m{i},x,{0.5 + i / 50:.2f},{0.4 + i / 50:.2f}\n" for i in range(6))
MAPPING = "label: mine\nmodel: [name, pretrained]\nin_distribution: in1k\nshifts: {imagenetv2: v2}\n"
BAD_PUBLISHED = {
    "empty": (b"", MAPPING, "table", " is empty"),
    "binary": (BINARY, MAPPING, "table", " is not a text file"),
    "a header only": ("name,pretrained,in1k,v2\n", MAPPING, "table", " has a header but no rows"),
    "a mapped column missing": (PUBLISHED.replace(",v2", ",v3"), MAPPING, "table", " has no column(s) ['v2']"),
    "text for an accuracy": (PUBLISHED.replace("0.44", "?"), MAPPING, "table", ": column 'v2', row 'm2/x': '?'"),
    "an accuracy above 100%": (PUBLISHED.replace("0.44", "250"), MAPPING, "table", ": column 'v2', row 'm2/x': 250"),
    "invalid mapping YAML": (PUBLISHED, "label: x\nshifts: {a: [\n", "map", " is not valid YAML"),
    "a binary mapping": (PUBLISHED, BINARY, "map", " is not a text file"),
    "an empty mapping": (PUBLISHED, "", "map", " is empty"),
    "a mapping that is a list": (PUBLISHED, "- label\n", "map", " must be a mapping of keys to values, not a list"),
    "shifts a list": (PUBLISHED, MAPPING.replace("{imagenetv2: v2}", "[v2]"), "map", ": 'shifts' must map each shift"),
    "min_x text": (PUBLISHED, MAPPING + "min_x: high\n", "map", ": min_x must be a fraction from 0 to 1"),
    "model a number": (PUBLISHED, MAPPING.replace("[name, pretrained]", "3"), "map", ": model must be a non-empty"),
    "a column a boolean": (PUBLISHED, MAPPING.replace("v2}", "on}"), "map", ": shifts.imagenetv2 must be a non-empty"),
    "a misspelt key": (PUBLISHED, MAPPING.replace("shifts:", "shift:"), "map", ": unknown key 'shift'."),
}


@pytest.mark.parametrize("what", BAD_PUBLISHED)
def test_a_malformed_published_table_or_mapping_is_exit_2_naming_the_file_and_field(tmp_path, capsys, what):
    table_text, mapping_text, which, expected = BAD_PUBLISHED[what]
    table, mapping = write(tmp_path / "pub.csv", table_text), write(tmp_path / "pub.yaml", mapping_text)
    store = tmp_path / "store"
    add_to_store(store, document("m", records_of(accuracies(0.6, 0.5)), natural_spec()))
    code = report("figure", "--store", store, "--published", table, "--published-map", mapping, "--out", tmp_path)
    err = error_of(capsys)
    assert code == 2 and str(table if which == "table" else mapping) in err and expected in err, err
    if what == "a misspelt key":
        assert "Did you mean 'shifts'?" in err


# ---------------------------------------------------------------- the CLIP paper's table (report figure13 --published)

PAPER = (
    "model,ImageNet,ImageNetV2,ImageNet-A,ImageNet-R,ObjectNet,ImageNet-Sketch\n"
    "ImageNet ResNet101,76.2,64.3,2.7,37.7,32.6,25.2\nZero-Shot CLIP ViT-L/14@336px,76.2,70.1,77.1,88.9,72.3,60.2\n"
)
BAD_PAPER = {
    "empty": ("", " is empty"),
    "no model column": (PAPER.replace("model,", "name,"), " has no column(s) ['model']"),
    "a column missing": (PAPER.replace("ImageNet-R,", "ImageNet-Rendition,"), " has no column(s) ['ImageNet-R']"),
    "the CLIP row missing": (PAPER.replace("Zero-Shot ", ""), " has no row 'Zero-Shot CLIP ViT-L/14@336px'"),
    "the CLIP row twice": (PAPER + PAPER.splitlines()[2] + "\n", ": model 'Zero-Shot CLIP ViT-L/14@336px' has more"),
    "text for an accuracy": (PAPER.replace("88.9", "x"), ": column 'ImageNet-R', row 'Zero-Shot CLIP ViT-L/14@336px'"),
    "an accuracy above 100": (PAPER.replace("88.9", "188.9"), ": column 'ImageNet-R', row 'Zero-Shot CLIP"),
    "an empty cell": (PAPER.replace("88.9", ""), ": row 'Zero-Shot CLIP ViT-L/14@336px' has no value in column(s)"),
}


@pytest.mark.parametrize("what", BAD_PAPER)
def test_a_malformed_paper_table_is_refused_naming_the_file_row_and_column(tmp_path, what):
    content, expected = BAD_PAPER[what]
    paper = write(tmp_path / "paper.csv", content)
    with pytest.raises(ClipevalError) as info:
        read_paper_table(paper)
    assert str(info.value).startswith(str(paper)) or str(paper) in str(info.value)
    assert expected in str(info.value), str(info.value)


def test_the_paper_table_is_read_in_percent(tmp_path):
    paper = read_paper_table(write(tmp_path / "paper.csv", PAPER))
    assert paper.loc["ImageNet ResNet101", "ImageNet-A"] == pytest.approx(2.7)


# ---------------------------------------------------------------- store entries (report store, report figure)

BAD_ENTRIES = {  # what is wrong -> (the entry's text from a good one, the warning after "Skipped <entry>: ")
    "truncated": (lambda text: text[:300], "it is truncated: its JSON ends early (Expecting "),
    "binary": (lambda text: BINARY, "it is not a JSON text file (byte 128 is not UTF-8): is it binary, or compressed?"),
    "empty": (lambda text: "", "it is empty: it holds no JSON."),
    "not JSON": (lambda text: text.replace('"kind"', "kind", 1), "it is not valid JSON (Expecting property name"),
    "schema-less": (lambda text: '{"hello": 1}', "it is not a clipeval results document"),
    "selection.kind neither": (
        lambda doc: doc["selection"].update(kind="both"),
        "'selection.kind' must be 'task' or 'suite' (what the document's selection is), not \"both\".",
    ),
    "tags a number": (lambda doc: doc.update(tags=7), "'tags' must be a list of strings, not 7"),
    "selection.tasks a number": (lambda doc: doc["selection"].update(tasks=3), "'selection.tasks' must be an"),
    "failures text": (lambda doc: doc.update(failures="x"), "'failures' must be a list of objects"),
    "notes text": (lambda doc: doc.update(notes="x"), "'notes' must be a list of objects"),
    "robustness malformed": (lambda doc: doc.update(robustness={"shifts": 3}), "robustness is malformed"),
    "one baseline point": (
        lambda doc: doc["robustness"]["baselines"]["points"].update(
            imagenetv2={"model": ["a"], "id": [0.5], "shift": [0.3]}
        ),
        "robustness.baselines.points.imagenetv2: a fit needs two models strictly between 0 and 1 (1 of 1 are).",
    ),
    "data a string": (lambda doc: doc.update(data="x"), "'data' must be an object {task: {dataset: {key, limit}}}"),
    "data of a task a number": (
        lambda doc: doc.update(data={"folder": {"test": 5}}),
        "data.folder.test must be an object with a content 'key'",
    ),
    "baseline points of unequal lengths": (
        lambda doc: doc["robustness"]["baselines"]["points"]["imagenetv2"]["id"].pop(),
        "robustness.baselines.points.imagenetv2: 'model', 'id' and 'shift' must be lists of equal length",
    ),
    "nested too deeply": (lambda text: "[" * 100_000, "it is JSON nested too deeply to read"),
    "a setting without its top-1": (
        lambda doc: doc["robustness"]["in_distribution"].__setitem__(0, {"task": "imagenet", "dataset": "nope"}),
        "its robustness settings need zero-shot top-1 on ['imagenet/nope'], which it does not hold",
    ),
}


def spoiled_store(tmp_path: Path, what: str) -> tuple[Path, Path]:
    """A store of one good run and one entry spoiled as BAD_ENTRIES[what] says; returns (store, the bad entry)."""
    store = tmp_path / "store"
    good = document("good", records_of(accuracies(0.6, 0.5)), natural_spec(), run_id="1" * 32)
    add_to_store(store, good)
    bad = add_to_store(store, document("bad", records_of(accuracies(0.6, 0.5)), natural_spec(), run_id="2" * 32))
    change = BAD_ENTRIES[what][0]
    text = bad.read_text()
    try:
        spoiled = change(text)
    except (TypeError, AttributeError):  # a change of the parsed JSON
        doc = json.loads(text)
        change(doc)
        spoiled = json.dumps(doc)
    write(bad, spoiled)
    return store, bad


@pytest.mark.parametrize("what", BAD_ENTRIES)
def test_an_unreadable_store_entry_is_skipped_with_a_warning_naming_it(tmp_path, caplog, what):
    store, bad = spoiled_store(tmp_path, what)
    with caplog.at_level(logging.WARNING):
        runs = select_runs(store, Selector())
    assert [r.model["name"] for r in runs] == ["good"]
    warning = next(r.getMessage() for r in caplog.records if bad.name in r.getMessage())
    assert warning.startswith(f"Skipped {bad.name}: {BAD_ENTRIES[what][1]}"), warning
    assert warning.count(bad.name) == 1 and "Error" not in warning  # named once; no exception's type or repr


def test_report_store_reports_the_rest_and_names_the_bad_entry(tmp_path, capsys, caplog):
    store, bad = spoiled_store(tmp_path, "one baseline point")
    with caplog.at_level(logging.WARNING):
        assert report("store", "--store", store, "--out", tmp_path / "out") == 0
    error_of(capsys)
    assert f"Skipped {bad.name}: robustness.baselines.points.imagenetv2: a fit needs two models" in caplog.text
    page = (tmp_path / "out" / "report.md").read_text()
    assert "· good" in page and "· bad" not in page


@pytest.mark.parametrize("command", ["store", "figure"])
def test_a_run_whose_report_fails_unexpectedly_is_skipped_naming_it_and_the_error(tmp_path, capsys, caplog, command,
                                                                                  monkeypatch):  # fmt: skip
    """Any error computing one run's report (here a singular fit), not only a ClipevalError, skips that run with a
    warning naming it and the error's type; the other runs are reported."""
    import numpy as np

    import clipeval.report.cross_run as cross_run
    import clipeval.report.run_summary as run_summary

    store, bad = spoiled_store(tmp_path, "tags a number")
    doc = json.loads(bad.read_text()) | {"tags": []}
    real = run_summary.build_report

    def build_report(spec, records):
        if spec.baselines_label == "boom":
            raise np.linalg.LinAlgError("Singular matrix")
        return real(spec, records)

    doc["robustness"]["baselines"]["label"] = "boom"
    bad.write_text(json.dumps(doc))
    monkeypatch.setattr(run_summary, "build_report", build_report)
    monkeypatch.setattr(cross_run, "build_report", build_report)
    with caplog.at_level(logging.WARNING):
        assert report(command, "--store", store, "--out", tmp_path / "out") == 0
    error_of(capsys)
    assert f"Skipped {bad.name}: its report could not be computed (LinAlgError: Singular matrix)" in caplog.text
    if command == "store":
        page = (tmp_path / "out" / "report.md").read_text()
        assert "1 run(s)" in page and "· good" in page and "· bad" not in page


def test_a_store_of_bad_entries_only_is_exit_2(tmp_path, capsys, caplog):
    store, bad = spoiled_store(tmp_path, "truncated")
    next(p for p in store.glob("*.json") if p != bad).unlink()
    with caplog.at_level(logging.WARNING):
        assert report("figure", "--store", store, "--out", tmp_path / "out") == 2
    assert "The store holds no readable results document" in error_of(capsys)
    assert f"Skipped {bad.name}" in caplog.text


# ---------------------------------------------------------------- check: what a run directory holds

CHECK_FIELDS = {
    "tags a number": (lambda doc: doc.update(tags=5), ": 'tags' must be a list of strings, not 5"),
    "failures text": (lambda doc: doc.update(failures="boom"), ": 'failures' must be a list of objects, not \"boom\""),
    "notes a huge text": (  # quoted short: the message names the file and the field, not 16 KB of the value
        lambda doc: doc.update(notes="x" * 16_000),
        ": 'notes' must be a list of objects, not \"xxxxxxxx",
    ),
    "selection.tasks a list": (lambda doc: doc["selection"].update(tasks=["t"]), ": 'selection.tasks' must be an"),
}


@pytest.mark.parametrize("what", CHECK_FIELDS)
def test_a_candidate_with_a_malformed_field_is_exit_2(tmp_path, capsys, what):
    labels, ref, _ = degraded_pair(lost=0, gained=0, per_class=4)
    write_run(tmp_path / "ref", labels, predictions(labels, ref))
    check_main(["record", str(tmp_path / "ref"), "--out", str(tmp_path / "golden.json")])
    run = write_run(tmp_path / "cand", labels, predictions(labels, ref))
    doc = json.loads((run / "results.json").read_text())
    CHECK_FIELDS[what][0](doc)
    (run / "results.json").write_text(json.dumps(doc))
    assert check("compare", "--golden", str(tmp_path / "golden.json"), str(run)) == 2
    err = error_of(capsys)
    assert f"{run / 'results.json'}{CHECK_FIELDS[what][1]}" in err and len(err) < 600, err


def test_check_reads_only_results_json_not_the_predictions_parquet(tmp_path, capsys):
    """A run directory's predictions/*.parquet is a copy for the user; a truncated one changes nothing."""
    labels, ref, _ = degraded_pair(lost=0, gained=0, per_class=4)
    golden = tmp_path / "golden.json"
    write_run(tmp_path / "ref", labels, predictions(labels, ref))
    run = write_run(tmp_path / "cand", labels, predictions(labels, ref))
    write(run / "predictions" / "t" / "d.parquet", b"PAR1\x00truncated")
    check_main(["record", str(run), "--out", str(tmp_path / "from_cand.json")])  # the parquet is not read
    check_main(["record", str(tmp_path / "ref"), "--out", str(golden)])
    assert check("compare", "--golden", str(golden), str(run)) == 0
    assert "0 regressed" in capsys.readouterr().out


def test_a_golden_file_that_is_a_folder_says_so(tmp_path, capsys):
    labels, ref, _ = degraded_pair(lost=0, gained=0, per_class=4)
    run = write_run(tmp_path / "cand", labels, predictions(labels, ref))
    assert check("compare", "--golden", str(tmp_path), str(run)) == 2
    assert f"Golden file {tmp_path} is a folder, not a file." in error_of(capsys)


def test_a_percent_value_among_fractions_is_refused_not_rescaled(tmp_path):
    """One 84.0 in a table of fractions would have divided every accuracy by 100 (a silent wrong fit)."""
    import pandas as pd

    from clipeval.report.inputs import accuracies

    table = pd.DataFrame({"val": [0.76, 0.81, 0.70], "shift": [0.60, 84.0, 0.50]}, index=["a", "b", "c"])
    with pytest.raises(ClipevalError, match="column 'shift', row 'b': 84 is above 1, .* mixes fractions and percent"):
        accuracies(table, "t.csv")
    percent = pd.DataFrame({"val": [76.0, 81.0, 70.0], "shift": [0.8, 62.0, 1.5]}, index=["a", "b", "c"])
    assert accuracies(percent, "t.csv")["shift"].tolist() == pytest.approx([0.008, 0.62, 0.015])


# ---------------------------------------------------------------- paths on the command line


@pytest.mark.parametrize(
    ("main", "argv", "option"),
    [
        (check_main, ["record", "run", "--out", ""], "--out"),
        (check_main, ["record", " ", "--out", "g.json"], "run"),
        (check_main, ["compare", "--golden", "", "run"], "--golden"),
        (report_main, ["store", "--store", ""], "--store"),
        (report_main, ["store", "--out", ""], "--out"),
        (report_main, ["testbed", "--table", "", "--model-types", "t", "--model", "m", "--sizes", "s"], "--table"),
        (report_main, ["figure", "--published", ""], "--published"),
    ],
)
def test_an_empty_path_on_the_command_line_is_exit_2_naming_the_option(main, argv, option, capsys):
    """``--out ''`` was the current folder: "Could not write . ([Errno 16] Device or resource busy)"."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = error_of(capsys)
    assert info.value.code == 2
    assert f"error: argument {option}: an empty path (" in err and "): give a file or folder" in err
