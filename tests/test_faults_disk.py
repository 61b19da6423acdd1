"""Folders that cannot be written: the cache is a warning; the run directory and the store are exit 2 saying
which folder failed and where the results that could be written are."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import QUIET, exit_2, run_in_process

import clipeval.cache
import clipeval.run.runner as runner
from clipeval.atomic import atomic_write
from clipeval.errors import ClipevalError

TESTS = Path(__file__).resolve().parent
MODEL = ["model=custom", "model._target_=user_model.MeanColourEncoder"]


@pytest.fixture
def folder_run(image_folder, caplog):
    caplog.set_level(logging.INFO, logger="clipeval")

    def run(run_dir: Path, *extra: str) -> dict:
        return run_in_process([*MODEL, "task=folder", f"task.root={image_folder}", *extra], run_dir)

    return run


def failing_write(code: int, after: int | None = None):
    """``atomic_write`` that fails with OSError(code) at once, or (``after``) once that many bytes are written."""

    def write(path, fill):
        if after is None:
            raise OSError(code, os.strerror(code), str(path))

        class Filling:
            def __init__(self, f):
                self.f, self.n = f, 0

            def write(self, data):
                self.n += len(data)
                if self.n > after:
                    raise OSError(code, os.strerror(code))
                return self.f.write(data)

            def flush(self):
                self.f.flush()

        return atomic_write(path, lambda f: fill(Filling(f)))

    return write


# --- the cache ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, after",
    [(errno.EROFS, None), (errno.ENOSPC, None), (errno.ENOSPC, 200)],
    ids=["read-only", "full", "fills-during-a-write"],
)
def test_a_cache_that_cannot_be_written_is_one_warning_and_the_run_finishes(
    folder_run, tmp_path, caplog, monkeypatch, code, after
):
    expected = folder_run(tmp_path / "reference", "runtime.cache=false")
    caplog.clear()
    monkeypatch.setattr(clipeval.cache, "atomic_write", failing_write(code, after))
    document = folder_run(tmp_path / "run")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"Cannot write to the cache folder {tmp_path / 'cache'} ([Errno {code}] {os.strerror(code)}" in warnings[0]
    assert "The run goes on without saving to the cache" in warnings[0]
    assert document["records"] == expected["records"]
    assert (tmp_path / "run" / "results.json").is_file()
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.suffix != ".lock"]


def test_a_read_only_cache_folder_is_one_warning(folder_run, tmp_path, caplog):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache").chmod(0o555)
    try:
        (tmp_path / "cache" / "probe").touch()
    except PermissionError:
        pass
    else:  # root (with CAP_DAC_OVERRIDE) writes anyway
        (tmp_path / "cache").chmod(0o755)
        pytest.skip("chmod does not stop this user writing; the monkeypatched tests cover it")
    try:
        document = folder_run(tmp_path / "run")
    finally:
        (tmp_path / "cache").chmod(0o755)
    assert caplog.text.count("Cannot write to the cache folder") == 1
    assert len(document["records"]) == 2


def test_a_cache_folder_that_is_a_file_is_one_warning_and_the_run_finishes(folder_run, tmp_path, caplog):
    expected = folder_run(tmp_path / "reference", "runtime.cache=false")
    caplog.clear()
    (tmp_path / "a_file").write_text("")
    document = folder_run(tmp_path / "run", f"cache_dir={tmp_path / 'a_file'}")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        f"Cannot write to the cache folder {tmp_path / 'a_file'} ([Errno 20] {tmp_path / 'a_file'} is a file, not a "
        "folder). The run goes on without saving to the cache: its results are the same, but the next run computes "
        "again what this one computes. Free space or fix its permissions, or set cache_dir= to a writable folder "
        "(runtime.cache=false turns the cache off)."
    ]
    assert document["records"] == expected["records"]
    assert (tmp_path / "a_file").read_text() == ""


def test_every_part_of_a_run_that_caches_shares_the_one_warning(tmp_path, caplog, image_folder):
    """Features, their chunks, text classifiers, model cards, file digests, locks, the digits zoo's baselines and
    the downloaded imagenet-testbed table all go through the run's one cache (clipeval.cache.use_cache)."""
    from clipeval.cache import TensorCache, use_cache
    from clipeval.embedded.zoo import DigitsZoo

    (tmp_path / "a_file").write_text("")
    with use_cache(TensorCache(tmp_path / "a_file" / "cache")) as cache:
        zoo = DigitsZoo(cache=True, cache_dir=str(tmp_path / "a_file" / "cache"))
        assert zoo.cache is cache
        for kind in ("features", "feature_chunks", "text_prototypes", "model_cards", "baselines"):
            assert cache.save(kind, "0" * 64, {"x": 1}) is None and cache.load(kind, "0" * 64) is None
            with cache.lock(kind, "0" * 64, "it") as waited:
                assert not waited
        assert len(cache.digests.digests([next(image_folder.rglob("*.png"))])) == 1
    assert caplog.text.count("Cannot write to the cache folder") == 1
    assert (
        [r for r in caplog.records if r.levelno >= logging.WARNING][0]
        .getMessage()
        .startswith(
            f"Cannot write to the cache folder {tmp_path / 'a_file' / 'cache'} ([Errno 20] {tmp_path / 'a_file'} is a file"
        )
    )


def test_a_downloaded_baseline_table_the_cache_cannot_keep_is_used_with_the_one_warning(tmp_path, caplog, monkeypatch):
    import hashlib
    import io

    from clipeval.cache import TensorCache, use_cache
    from clipeval.report import baselines

    files = {
        "robustness_top1s.csv": b"model,val,shift\na,70,50\nb,75,55\nc,80,62\n",
        "model_types.py": b"    'a': ModelTypes.STANDARD,\n    'b': ModelTypes.STANDARD,\n    'c': ModelTypes.STANDARD,\n",
    }
    monkeypatch.setattr(baselines.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(files[url.split("/")[-1]]))
    monkeypatch.setattr(baselines, "TESTBED_TABLE_SHA256", hashlib.sha256(files["robustness_top1s.csv"]).hexdigest())
    (tmp_path / "a_file").write_text("")
    with use_cache(TensorCache(tmp_path / "a_file")):
        table = baselines.TableBaselines({"shift": {"x": "val", "y": "shift", "min_x": 0}}, download=True)
    assert list(table.models()) == ["a", "b", "c"]
    assert table.path.read_bytes() == files["robustness_top1s.csv"]  # kept in a temporary folder
    assert caplog.text.count("Cannot write to the cache folder") == 1


# --- the store and the run directory, before anything runs ---------------------------------------


def test_a_store_that_cannot_be_written_stops_the_run_before_encoding(folder_run, tmp_path, caplog):
    (tmp_path / "not_a_folder").write_text("")  # a file in the way: fails for root too
    with pytest.raises(ClipevalError, match=r"Cannot write to the results store .*not_a_folder/store \(\[Errno 20\]"):
        folder_run(tmp_path / "run", f"store={tmp_path / 'not_a_folder' / 'store'}")
    assert "Encoded" not in caplog.text


def test_a_run_directory_that_cannot_be_written_stops_the_run_before_encoding(folder_run, tmp_path, caplog):
    (tmp_path / "not_a_folder").write_text("")
    with pytest.raises(ClipevalError, match=r"Cannot write to the run directory .*not_a_folder/run \(\[Errno 20\]"):
        folder_run(tmp_path / "not_a_folder" / "run")
    assert "Encoded" not in caplog.text


@pytest.mark.slow
def test_the_command_line_names_a_run_directory_hydra_cannot_create(tmp_path, image_folder):
    (tmp_path / "not_a_folder").write_text("")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    proc = subprocess.run(
        [sys.executable, "-m", "clipeval", *MODEL, "task=folder", f"task.root={image_folder}"]
        + [f"hydra.run.dir={tmp_path / 'not_a_folder' / 'run'}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"clipeval: error: Cannot write the run directory {tmp_path / 'not_a_folder'}/run")
    assert "Traceback" not in proc.stderr


# --- a disk with room for clipeval's probe but not for Hydra's own files ----------------------------


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(name, size)``: a real file system of ``size`` (tmpfs, 8 KB by default) mounted at tmp_path/name,
    unmounted after the test. A few kilobytes fit (the run directory's probe does), then writes fail with ENOSPC."""
    mounted = []

    def mount(name: str = "disk", size: str = "8k", options: str = "") -> Path:
        folder = tmp_path / name
        folder.mkdir()
        options = f"size={size}" + (f",{options}" if options else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        for handler in logging.getLogger().handlers:  # the log file a Hydra run in this process opened there
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).is_relative_to(folder):
                handler.close()
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode:
            subprocess.run(["umount", "--lazy", str(folder)], check=False)


def fill_up(folder: Path) -> None:
    """Write a file in ``folder`` until its disk is full."""
    with contextlib.suppress(OSError), open(folder / "filler", "wb") as f:
        while True:
            f.write(bytes(4096))
            f.flush()


def no_half_written_yaml(folder: Path) -> bool:
    """Every YAML file Hydra left under ``folder`` is whole (a file cut off by a full disk is removed)."""
    from omegaconf import OmegaConf

    return all(isinstance(OmegaConf.to_container(OmegaConf.load(f)), dict | list) for f in folder.rglob("*.yaml"))


@pytest.mark.parametrize("where", ["hydra.run.dir", "the default outputs folder"])
def test_a_run_directory_too_full_for_hydras_own_files_is_exit_2_naming_it(
    small_disk, image_folder, tmp_path, monkeypatch, capsys, where
):
    if where == "hydra.run.dir":
        run_dir = small_disk() / "run"
        extra = [f"hydra.run.dir={run_dir}"]
    else:
        monkeypatch.chdir(tmp_path)
        run_dir, extra = small_disk("outputs") / "runs", []
    err = exit_2([*MODEL, "task=folder", f"task.root={image_folder}", *extra], capsys)
    assert err.startswith(f"clipeval: error: Cannot write the run directory {run_dir}")
    assert "No space left on device); nothing was run. Pass hydra.run.dir=DIR with a writable folder" in err
    assert len(err.splitlines()) == 1
    assert no_half_written_yaml(run_dir.parent)
    assert not (tmp_path / "store").exists()


def test_a_sweep_directory_too_full_for_hydras_own_files_is_exit_2_naming_it(small_disk, image_folder, capsys):
    sweep = small_disk() / "sweep"
    err = exit_2(["-m", *MODEL, "task=folder", f"task.root={image_folder}", f"hydra.sweep.dir={sweep}"], capsys)
    assert err.startswith(f"clipeval: error: Cannot write the sweep directory {sweep}")
    assert "No space left on device); nothing was run. Pass hydra.sweep.dir=DIR with a writable folder" in err
    assert no_half_written_yaml(sweep)


def test_a_sweep_whose_disk_fills_during_a_job_says_which_jobs_finished(
    small_disk, image_folder, tmp_path, monkeypatch, capsys
):
    sweep = small_disk(size="1m") / "sweep"
    real_run = runner.run

    def run_then_fill_the_disk(cfg, run_dir):
        document = real_run(cfg, run_dir)
        fill_up(sweep)
        return document

    monkeypatch.setattr(runner, "run", run_then_fill_the_disk)
    argv = ["-m", *MODEL, "task=folder", f"task.root={image_folder}", "runtime.seed=1,2", f"hydra.sweep.dir={sweep}"]
    err = exit_2([*argv, *QUIET], capsys)
    assert f"clipeval: error: Cannot write the sweep directory {sweep}/1_folder (" in err
    assert "job #0 finished, job #1 and the later ones did not run. Pass hydra.sweep.dir=DIR" in err
    assert (sweep / "0_folder" / "results.json").is_file()
    assert len(list((tmp_path / "store").glob("*.json"))) == 1
    assert no_half_written_yaml(sweep)


@pytest.mark.parametrize("job", [0, 1])
def test_a_sweep_job_whose_results_cannot_be_written_ends_alone_and_the_summary_says_so(
    image_folder, tmp_path, monkeypatch, capsys, job
):
    sweep = tmp_path / "sweep"
    failing = sweep / f"{job}_folder"
    monkeypatch.setattr(runner, "write_json", fail_under(failing, runner.write_json))
    monkeypatch.setattr(runner, "atomic_write", fail_under(failing, runner.atomic_write))
    argv = ["-m", *MODEL, "task=folder", f"task.root={image_folder}", "runtime.seed=1,2,3", f"hydra.sweep.dir={sweep}"]
    err = exit_2([*argv, *QUIET], capsys)
    expected = (
        f"clipeval: error: Sweep job #{job} (runtime.seed={job + 1}): Could not write to the run directory {failing} ("
    )
    assert expected in err
    assert "1 of 3 jobs failed; the 2 others finished and wrote their results" in err
    others = [n for n in range(3) if n != job]
    assert all((sweep / f"{n}_folder" / "results.json").is_file() for n in others)


def test_a_run_directory_whose_path_is_too_long_is_exit_2_with_a_short_message(tmp_path, capsys):
    """The system's ENAMETOOLONG was a traceback of some 17 KB, the path in it three times."""
    long = tmp_path.joinpath(*["d" * 200] * 80)
    err = exit_2(["task=digits", f"hydra.run.dir={long}"], capsys)
    assert err.startswith(f"clipeval: error: Cannot write the run directory {str(tmp_path)[:40]}")
    assert "characters left out) ..." in err and "File name too long: the path has 16," in err
    assert len(err) < 600


# --- ... and while the results are written --------------------------------------------------------


def fail_under(folder: Path, real, code: int = errno.ENOSPC):
    def write(path, *args):
        if Path(path).is_relative_to(folder):
            raise OSError(code, os.strerror(code), str(path))
        return real(path, *args)

    return write


def test_a_store_that_fills_up_keeps_results_json_and_says_where_it_is(folder_run, tmp_path, monkeypatch):
    store = tmp_path / "store"
    monkeypatch.setattr(runner, "add_to_store", lambda folder, doc: fail_under(store, None)(folder / "x.json"))
    with pytest.raises(ClipevalError) as raised:
        folder_run(tmp_path / "run")
    message = str(raised.value)
    assert message.startswith(f"Could not write to the results store {store} ([Errno 28] No space left on device")
    assert f"The results document is in {tmp_path / 'run' / 'results.json'}; copy it into the store" in message
    assert len(json.loads((tmp_path / "run" / "results.json").read_text())["records"]) == 2
    assert (tmp_path / "run" / "predictions" / "folder" / "test.parquet").is_file()


def test_a_run_directory_that_fills_up_says_where_the_store_entry_is(folder_run, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    monkeypatch.setattr(runner, "write_json", fail_under(run_dir, runner.write_json))
    monkeypatch.setattr(runner, "atomic_write", fail_under(run_dir, runner.atomic_write))
    with pytest.raises(ClipevalError) as raised:
        folder_run(run_dir)
    message = str(raised.value)
    assert message.startswith(f"Could not write to the run directory {run_dir} ([Errno 28] No space left on device")
    (stored,) = (tmp_path / "store").glob("*.json")
    assert message.endswith(f"The results document is in {stored}.")
    assert len(json.loads(stored.read_text())["records"]) == 2


def test_when_neither_can_be_written_the_document_goes_to_the_temporary_folder(folder_run, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(runner, "write_json", fail_under(tmp_path / "run", runner.write_json))
    monkeypatch.setattr(runner, "atomic_write", fail_under(tmp_path / "run", runner.atomic_write))
    monkeypatch.setattr(runner, "add_to_store", lambda folder, doc: fail_under(folder, None)(folder / "x.json"))
    with pytest.raises(ClipevalError) as raised:
        folder_run(tmp_path / "run")
    (fallback,) = (tmp_path / "tmp").glob("clipeval-results-*.json")
    assert f"nor to the results store {tmp_path / 'store'}" in str(raised.value)
    assert f"The results document is in {fallback}; copy it into the store" in str(raised.value)
    assert len(json.loads(fallback.read_text())["records"]) == 2


def test_a_log_file_that_cannot_be_written_is_one_warning(folder_run, tmp_path, capsys, monkeypatch):
    class Full:
        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def flush(self):
            pass

    handler = logging.FileHandler(tmp_path / "run.log")
    handler.stream.close()
    handler.stream = Full()
    # the root logger's handlers as a Hydra run has them: (console and) the file; not those other tests left
    monkeypatch.setattr(logging.getLogger(), "handlers", [handler])
    folder_run(tmp_path / "run")
    err = capsys.readouterr().err
    assert err.count(f"clipeval: warning: cannot write the log file {tmp_path / 'run.log'}") == 1, err
    assert "Logging error" not in err and "Traceback" not in err


# --- commands that write where --out says ----------------------------------------------------------


@pytest.fixture
def stored_run(folder_run, tmp_path) -> Path:
    """A store holding one finished run; returns the store entry."""
    folder_run(tmp_path / "run")
    (entry,) = (tmp_path / "store").glob("*.json")
    return entry


def out_folder(kind: str, small_disk, tmp_path) -> Path:
    if kind == "a file in the way":
        (tmp_path / "a_file").write_text("")
        return tmp_path / "a_file" / "out"
    if kind == "read-only":
        return small_disk(options="ro") / "out"
    disk = small_disk()
    fill_up(disk)
    return disk / "out"


COMMANDS = {  # each command that writes files: its arguments, and what its message calls the folder and the option
    "report store": (["report", "store", "--store", "{store}", "--out", "{out}"], "output folder", "--out DIR"),
    "report figure": (["report", "figure", "--store", "{store}", "--out", "{out}"], "output folder", "--out DIR"),
    "check record": (
        ["check", "record", "{entry}", "--out", "{out}/golden.json"],
        "folder of the golden file",
        "--out FILE",
    ),
}


def command_line(command: str, entry: Path, out: Path) -> list[str]:
    return [a.format(store=entry.parent, entry=entry, out=out) for a in COMMANDS[command][0]]


@pytest.mark.parametrize(
    "kind, error",
    [
        ("a file in the way", "[Errno 20] "),
        ("read-only", "[Errno 30] Read-only file system"),
        ("full", "[Errno 28] No space left on device"),
    ],
)
@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_folder_that_cannot_be_written_is_exit_2_before_the_work(
    stored_run, small_disk, tmp_path, capsys, monkeypatch, command, kind, error
):
    import clipeval.check.cli
    import clipeval.report.selection
    from clipeval.cli import main

    out = out_folder(kind, small_disk, tmp_path)
    for module, work in ((clipeval.report.selection, "select_runs"), (clipeval.check.cli, "record_golden")):
        monkeypatch.setattr(module, work, lambda *a: pytest.fail("the work started before the folder was checked"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(command_line(command, stored_run, out))
    captured = capsys.readouterr()
    assert exit_info.value.code == 2
    _, what, how = COMMANDS[command]
    assert captured.err.startswith(f"clipeval {command.split()[0]}: error: Cannot write to the {what} {out} ({error}")
    assert f"nothing was written. Free space or fix its permissions, or pass {how} to write elsewhere." in captured.err
    assert "wrote" not in captured.out


def test_a_disk_that_fills_during_a_report_says_which_files_were_written_and_which_not(
    stored_run, small_disk, capsys, monkeypatch
):
    from clipeval.cli import main
    from clipeval.report import pages

    out = small_disk() / "out"  # 8 KB: report.md fits, a 64 KB report.html does not
    monkeypatch.setattr(pages, "to_html", lambda title, sections: "x" * 65536)
    with pytest.raises(SystemExit) as exit_info:
        main(command_line("report store", stored_run, out))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.splitlines() == [
        f"clipeval report: error: Could not write {out / 'report.html'} ([Errno 28] No space left on device): it and "
        "the files after it were not written. Free space or fix the permissions and run again, or pass --out DIR to "
        "write elsewhere.",
        f"Written before it, in {out}:",
        "  report.md",
    ]
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]  # and no temporary file


def test_an_error_other_than_a_write_keeps_its_own_message(tmp_path, capsys):
    from clipeval.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["report", "store", "--store", str(tmp_path / "no_store"), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "Could not write" not in capsys.readouterr().err
