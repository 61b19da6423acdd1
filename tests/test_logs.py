"""What a run logs (clipeval.logs): per-entry details at DEBUG, the libraries' output through logging once,
the summary tables in the run's log file, paths in one form (absolute), and prediction files with plain names.
Runs are in-process on tiny folders (a subprocess run with Hydra's log file is in test_cli.py)."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_image_folder, open_clip_overrides, run_in_process

from clipeval.errors import ClipevalError
from clipeval.logs import route_library_output, shown, to_log_files
from clipeval.run.runner import prediction_file

MODEL = ["model=custom", "model._target_=user_model.MeanColourEncoder"]


def folder_task(tmp_path: Path, *extra: str) -> list[str]:
    root = make_image_folder(tmp_path / "images")
    return [*MODEL, "task=folder", f"task.root={root}", *extra]


def messages(caplog, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


# ---------------------------------------------------------------- levels


def test_cache_paths_are_debug_details_and_info_says_once_what_the_cache_did(tmp_path, caplog):
    cache = Path(shown(tmp_path / "cache"))
    caplog.set_level(logging.DEBUG, logger="clipeval")
    run_in_process(folder_task(tmp_path, f"cache_dir={cache}"), tmp_path / "cold")
    run_in_process(folder_task(tmp_path, f"cache_dir={cache}"), tmp_path / "warm")
    info = messages(caplog, logging.INFO)
    with_path = [m for m in info if str(cache) in m]
    assert with_path == [
        f"Cache {cache}: 0 entries read, 3 written (features 1, model_cards 1, text_prototypes 1)",
        f"Cache {cache}: 3 entries read (features 1, model_cards 1, text_prototypes 1), 0 written",
    ]
    debug = messages(caplog, logging.DEBUG)
    assert any(m.startswith(f"Cached image features at {cache}/features/") for m in debug)
    assert any(m.startswith("Image features of ") and "cache hit" in m for m in debug)  # a warm run's per-entry hits
    assert not any("cache hit (" in m and "Image features" in m for m in info)


# ---------------------------------------------------------------- the libraries' output


def test_open_clips_skeleton_build_says_nothing_and_its_other_messages_come_once_named(
    tiny_open_clip, tmp_path, caplog, monkeypatch
):
    """Checking a checkpoint's shapes builds a weightless skeleton: open_clip's "No pretrained weights loaded" is
    not news then (the run loads the weights next). A model really left without weights is logged once, as
    open_clip's."""
    import open_clip

    from clipeval import logs

    monkeypatch.setattr(logs._FILTER, "seen", set())  # what this process logged before (building the fixture)
    caplog.set_level(logging.INFO)
    root = make_image_folder(tmp_path / "images")
    run_in_process([*open_clip_overrides(tiny_open_clip), "task=folder", f"task.root={root}"], tmp_path / "run")
    assert not [r for r in caplog.records if "No pretrained weights loaded" in r.getMessage()]

    caplog.clear()
    route_library_output()
    for _ in range(2):
        open_clip.create_model(tiny_open_clip["arch"], device="meta")
    said = [r for r in caplog.records if "No pretrained weights loaded" in r.getMessage()]
    assert [(r.name, r.levelname) for r in said] == [("open_clip", "WARNING")]


def test_python_warnings_go_to_the_log(caplog):
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        try:
            route_library_output()
            warnings.warn("a library's deprecation", FutureWarning, stacklevel=1)
        finally:
            logging.captureWarnings(False)
    assert [(r.name, "a library's deprecation" in r.getMessage()) for r in caplog.records] == [("py.warnings", True)]


def test_transformers_records_reach_the_runs_handlers_and_its_progress_bars_are_off(caplog):
    from transformers.utils import logging as hf_logging

    caplog.set_level(logging.WARNING)
    try:
        route_library_output()
        hf_logging.get_logger("transformers.modeling_utils").warning("some weights were not used")
        assert [r.name for r in caplog.records] == ["transformers.modeling_utils"]
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_default_handler()
        hf_logging.disable_propagation()
        hf_logging.enable_progress_bar()


# ---------------------------------------------------------------- the log file


def test_the_summary_tables_are_also_in_the_runs_log_file_and_printed_once(tmp_path, capsys):
    log_file = tmp_path / "clipeval.log"
    handler = logging.FileHandler(log_file)
    logging.getLogger().addHandler(handler)
    try:
        run_in_process(folder_task(tmp_path), tmp_path / "run")
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    printed = capsys.readouterr()
    table = [line for line in printed.out.splitlines() if line.startswith("folder/test ")]
    assert table and all(line in log_file.read_text() for line in table)
    assert "Summary:" not in printed.err and "Summary:" not in printed.out


def test_to_log_files_writes_to_file_handlers_only(tmp_path, capsys):
    file_handler = logging.FileHandler(tmp_path / "f.log")
    console = logging.StreamHandler()
    root = logging.getLogger()
    root.addHandler(file_handler)
    root.addHandler(console)
    try:
        to_log_files("a table\nof two lines")
    finally:
        root.removeHandler(file_handler)
        root.removeHandler(console)
        file_handler.close()
    assert (tmp_path / "f.log").read_text() == "a table\nof two lines\n" and capsys.readouterr().err == ""


# ---------------------------------------------------------------- paths


def test_paths_in_messages_are_absolute_when_given_relative(tmp_path, monkeypatch, caplog, capsys):
    from clipeval.report.cli import main as report_main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLIPEVAL_STORE", "st")
    monkeypatch.setenv("CLIPEVAL_CACHE", "sub/../ca")
    caplog.set_level(logging.INFO, logger="clipeval")
    run_in_process(folder_task(tmp_path), Path("run"))
    (wrote,) = [m for m in messages(caplog, logging.INFO) if m.startswith("Wrote ")]
    entry = next((tmp_path / "st").glob("*.json"))
    assert wrote == f"Wrote {tmp_path / 'run' / 'results.json'} and {entry}"
    assert any(m.startswith(f"Cache {tmp_path / 'ca'}: ") for m in messages(caplog, logging.INFO))
    capsys.readouterr()
    report_main(["store", "--store", "st", "--out", "rep"])
    assert capsys.readouterr().out.splitlines() == [f"wrote {tmp_path / 'rep' / 'report.md'}",
                                                     f"wrote {tmp_path / 'rep' / 'report.html'}"]  # fmt: skip


# ---------------------------------------------------------------- prediction file names


class KeepsUnderAPunctuatedName:
    """Keeps the zero-shot predictions again under names with ':' and '@' (or two that would share a file)."""

    def __init__(self, names=("test@1:a",)):
        self.names = list(names)

    def evaluate(self, ctx):
        fs = ctx.features("test")
        topk = ctx.zero_shot_logits("test").topk(1, dim=1).indices
        for name in self.names:
            ctx.keep_predictions("test", fs.ids, fs.labels, topk, name=name)
        return []


def test_prediction_files_have_no_colon_or_at_and_results_keep_the_names(tmp_path):
    overrides = folder_task(tmp_path, f"+task.evaluators.again={{_target_:{__name__}.KeepsUnderAPunctuatedName}}")
    document = run_in_process(overrides, tmp_path / "run")
    assert "folder/test@1:a" in document["samples"]
    files = sorted(p.relative_to(tmp_path / "run").as_posix() for p in (tmp_path / "run").rglob("*.parquet"))
    assert files == ["predictions/folder/test-1-a.parquet", "predictions/folder/test.parquet"]
    assert not any(c in name for name in files for c in ":@")
    assert len(pd.read_parquet(tmp_path / "run" / files[0])) == 12
    assert json.loads((tmp_path / "run" / "results.json").read_text())["samples"].keys() == document["samples"].keys()


def test_two_names_that_would_share_a_prediction_file_fail_their_evaluator(tmp_path):
    target = f"{{_target_:{__name__}.KeepsUnderAPunctuatedName,names:['a:b','a@b']}}"
    with pytest.raises(ClipevalError, match=r"'a@b' and 'a:b', which would share the file predictions/folder/a-b"):
        run_in_process(folder_task(tmp_path, f"+task.evaluators.again={target}"), tmp_path / "run")


def test_prediction_file_names_each_part_plainly():
    assert prediction_file(Path("/r"), "imagenet-c:blur@3/val@1") == Path(
        "/r/predictions/imagenet-c-blur-3/val-1.parquet"
    )
