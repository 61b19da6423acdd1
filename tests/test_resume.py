"""Encoding in cached chunks (a killed run resumes inside a dataset), one encode for concurrent runs, Ctrl-C."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import CLASSES, make_image_folder, run_in_process
from fault_models import FaultyColour, chunk_files

import clipeval.cache
from clipeval.cache import TensorCache
from clipeval.config.runtime import Runtime
from clipeval.data.folder import ImageFolderSource
from clipeval.features.encode import CHUNK_KIND, chunk_images, feature_key, image_features

TESTS = Path(__file__).resolve().parent
MODEL = ["model=custom", "model._target_=fault_models.FaultyColour"]
CHUNKED = ["runtime.batch_size=4", "runtime.chunk_size=8"]  # 42 images: 6 chunks of 2 batches, the last of 2 images


@pytest.fixture
def images(tmp_path) -> Path:
    return make_image_folder(tmp_path / "images", per_class=14)  # 42 images


def runtime(**options) -> Runtime:
    return Runtime.create(**{"device": "cpu", "workers": 0, "progress": False, **options})


def spawn(args: list[str], tmp_path: Path, name: str, **env: str) -> tuple[subprocess.Popen, Path]:
    """``python -m clipeval ARGS`` with this checkout and tests/ importable; stderr goes to a file read as it grows.
    It leads a process group of its own (``os.killpg`` signals it and its loader workers, as a terminal's Ctrl-C
    or Slurm does), and its temporary files go to ``tmp_path/tmp`` (:func:`left_in_tmp`)."""
    stderr = tmp_path / f"{name}.stderr"
    (tmp_path / "tmp").mkdir(exist_ok=True)
    flags = [a for a in args if a == "-m"]  # Hydra takes its flags before the overrides
    args = [a for a in args if a != "-m"]
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "CLIPEVAL_CACHE": str(tmp_path / "cache"),
        "CLIPEVAL_STORE": str(tmp_path / "store"),
        "OMP_NUM_THREADS": "1",
        "TMPDIR": str(tmp_path / "tmp"),
        **env,
    }
    with open(stderr, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "clipeval", *flags, "runtime.workers=0", "runtime.progress=false", *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=environ,
            cwd=tmp_path,
            start_new_session=True,
        )
    return proc, stderr


def left_in_tmp(tmp_path: Path) -> list[str]:
    """What a process started by :func:`spawn` left in its temporary folder: multiprocessing's ``pymp-*``
    folders (torch's compile cache folder, made on import, is not a leftover)."""
    return sorted(p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith("pymp-"))


def group_alive(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that still run (zombies left to a container's init are not running)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def one_line(stderr: Path) -> str:
    """The one line clipeval printed besides its log lines (which start with the time); no traceback."""
    text = stderr.read_text()
    assert "Traceback" not in text and "Exception ignored" not in text, text
    lines = [line for line in text.splitlines() if not line.startswith("[")]
    assert len(lines) == 1, text
    return lines[0]


def wait_until(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def full_entry(cache: Path) -> dict:
    (path,) = (cache / "features").rglob("*.pt")
    return torch.load(path, weights_only=True)


# --- resume inside a dataset ----------------------------------------------------------------------


def test_chunks_are_whole_batches():
    assert chunk_images(runtime(batch_size=4, chunk_size=8)) == 8
    assert chunk_images(runtime(batch_size=4, chunk_size=10)) == 12
    assert chunk_images(runtime(batch_size=64, chunk_size=1)) == 64


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_chunks_and_matches_an_uninterrupted_run(images, tmp_path, caplog, monkeypatch):
    task = ["task=folder", f"task.root={images}"]
    chunks = tmp_path / "cache" / CHUNK_KIND
    proc, stderr = spawn(
        [*MODEL, *task, *CHUNKED, f"hydra.run.dir={tmp_path / 'killed'}"],
        tmp_path,
        "killed",
        FAULT_KILL_AFTER_CHUNKS="2",
        FAULT_CHUNK_DIR=str(chunks),
    )
    assert proc.wait(timeout=300) == -signal.SIGKILL, stderr.read_text()
    assert len(chunk_files(chunks)) == 2 and not (tmp_path / "cache" / "features").exists()

    caplog.set_level(logging.INFO, logger="clipeval")
    resumed = run_in_process([*MODEL, *task, *CHUNKED], tmp_path / "rerun")
    assert "resumed from 16 images (2 of 6 chunks)" in caplog.text
    assert "Encoded 26 images" in caplog.text
    assert chunk_files(chunks) == []  # the whole entry holds them now
    monkeypatch.setenv("CLIPEVAL_CACHE", str(tmp_path / "cache2"))
    whole = run_in_process([*MODEL, *task, *CHUNKED], tmp_path / "whole")
    a, b = full_entry(tmp_path / "cache"), full_entry(tmp_path / "cache2")
    assert torch.equal(a["features"], b["features"]) and torch.equal(a["labels"], b["labels"])
    assert a["ids"] == b["ids"] and len(a["ids"]) == 42
    assert resumed["records"] == whole["records"]


class Crashing(FaultyColour):
    """Raises in the middle of the dataset (a run that died) once ``crash_after`` chunk files exist."""

    def __init__(self, chunk_dir: Path, crash_after: int | None = None):
        super().__init__()
        self.chunk_dir, self.crash_after, self.images = chunk_dir, crash_after, 0

    def encode_image(self, images):
        if self.crash_after is not None and len(chunk_files(self.chunk_dir)) >= self.crash_after:
            raise RuntimeError("died")
        self.images += len(images)
        return super().encode_image(images)


def crash_after_three_chunks(images: Path, tmp_path: Path) -> Crashing:
    chunks = tmp_path / "c" / CHUNK_KIND
    model = Crashing(chunks, crash_after=3)
    with pytest.raises(RuntimeError, match="died"):
        image_features(
            model, ImageFolderSource(images), runtime(batch_size=4, chunk_size=8), TensorCache(chunks.parent)
        )
    assert len(chunk_files(chunks)) == 3
    model.crash_after, model.images = None, 0
    return model


def uncached(images: Path) -> torch.Tensor:
    off = TensorCache(Path("unused"), enabled=False)
    return image_features(FaultyColour(), ImageFolderSource(images), runtime(batch_size=4), off).features


def test_a_damaged_chunk_is_encoded_again(images, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="clipeval")
    model = crash_after_three_chunks(images, tmp_path)
    damaged = chunk_files(tmp_path / "c" / CHUNK_KIND)[0]
    damaged.write_bytes(damaged.read_bytes()[:-50])
    fs = image_features(
        model, ImageFolderSource(images), runtime(batch_size=4, chunk_size=8), TensorCache(tmp_path / "c")
    )
    assert "Ignoring unreadable cache entry" in caplog.text
    assert "resumed from 16 images (2 of 6 chunks)" in caplog.text and model.images == 42 - 16
    assert torch.equal(fs.features, uncached(images))


def test_chunks_of_images_that_changed_are_not_used(images, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="clipeval")
    model = crash_after_three_chunks(images, tmp_path)
    (images / CLASSES[0] / "img00.png").write_bytes((images / CLASSES[1] / "img00.png").read_bytes())
    fs = image_features(
        model, ImageFolderSource(images), runtime(batch_size=4, chunk_size=8), TensorCache(tmp_path / "c")
    )
    assert "resumed" not in caplog.text and model.images == 42
    assert torch.equal(fs.features, uncached(images))


# --- a cache that fills up while a source is encoded ----------------------------------------------


def fill_cache_at(monkeypatch, first_failing) -> None:
    """The cache's writes fail with ENOSPC from the first path ``first_failing`` picks on (a full disk stays full)."""
    real, full = clipeval.cache.atomic_write, []

    def write(path, fill):
        if full or first_failing(Path(path)):
            full.append(path)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, fill)

    monkeypatch.setattr(clipeval.cache, "atomic_write", write)


def cache_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("fills_at", ["the fourth chunk", "the whole entry"])
def test_a_cache_that_fills_up_keeps_none_of_the_chunks_this_run_cached(
    images, tmp_path, caplog, monkeypatch, fills_at
):
    caplog.set_level(logging.INFO, logger="clipeval")
    cache, chunks = tmp_path / "c", tmp_path / "c" / CHUNK_KIND
    if fills_at == "the whole entry":  # all six chunks fit, the entry that holds them all does not
        fill_cache_at(monkeypatch, lambda path: path.is_relative_to(cache / "features"))
    else:
        fill_cache_at(monkeypatch, lambda path: path.is_relative_to(chunks) and len(chunk_files(chunks)) == 3)
    fs = image_features(
        FaultyColour(), ImageFolderSource(images), runtime(batch_size=4, chunk_size=8), TensorCache(cache)
    )
    assert torch.equal(fs.features, uncached(images))
    (warning,) = cache_warnings(caplog)
    assert warning.startswith(f"Cannot write to the cache folder {cache} ([Errno 28] No space left on device")
    assert chunk_files(chunks) == [] and chunk_files(cache / "features") == []
    assert f"Removed the {6 if fills_at == 'the whole entry' else 3} chunk(s)" in caplog.text


def test_the_chunks_a_killed_run_left_stay_when_the_cache_fills_up(images, tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="clipeval")
    model = crash_after_three_chunks(images, tmp_path)
    chunks = tmp_path / "c" / CHUNK_KIND
    left = chunk_files(chunks)
    fill_cache_at(monkeypatch, lambda path: path.is_relative_to(chunks) and len(chunk_files(chunks)) == 4)
    fs = image_features(
        model, ImageFolderSource(images), runtime(batch_size=4, chunk_size=8), TensorCache(chunks.parent)
    )
    assert torch.equal(fs.features, uncached(images))
    assert "resumed from 24 images (3 of 6 chunks)" in caplog.text and len(cache_warnings(caplog)) == 1
    assert chunk_files(chunks) == left  # the fourth, cached by this run, is gone; a later run resumes from these


# --- two runs, one encode -------------------------------------------------------------------------


class Counting(FaultyColour):
    """Counts the images it encodes (shared by every instance) and signals when it starts encoding."""

    encoded = 0
    started = threading.Event()

    def encode_image(self, images):
        type(self).started.set()
        type(self).encoded += len(images)
        time.sleep(0.1)  # 11 batches: the second run asks while the first still encodes
        return super().encode_image(images)


def test_two_runs_needing_the_same_cold_entry_encode_it_once(images, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="clipeval")
    Counting.encoded, Counting.started = 0, threading.Event()
    results: dict[str, object] = {}

    def run(name: str) -> None:  # each run has its own cache object, as two processes would
        cache = TensorCache(tmp_path / "shared")
        results[name] = image_features(Counting(), ImageFolderSource(images), runtime(batch_size=4), cache)

    first = threading.Thread(target=run, args=("first",))
    first.start()
    assert Counting.started.wait(60)
    second = threading.Thread(target=run, args=("second",))
    second.start()
    first.join(120)
    second.join(120)
    assert Counting.encoded == 42
    assert not results["first"].from_cache and results["second"].from_cache
    assert torch.equal(results["first"].features, results["second"].features)
    assert "Another run is computing the image features of image folder" in caplog.text


def test_a_run_that_dies_holding_the_lock_does_not_block_the_next(images, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="clipeval")
    cache, source, options = TensorCache(tmp_path / "shared"), ImageFolderSource(images), runtime(batch_size=4)
    lock = cache.lock_path("features", feature_key(FaultyColour(), source, options))
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import filelock,time; held = filelock.FileLock({str(lock)!r}); held.acquire(); print(1); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == b"1"  # it holds the lock
        done: list = []
        waiter = threading.Thread(target=lambda: done.append(image_features(FaultyColour(), source, options, cache)))
        waiter.start()
        wait_until(lambda: "Another run is computing" in caplog.text, timeout=60)
        assert waiter.is_alive()
        holder.kill()  # SIGKILL: no chance to release anything; the OS drops its lock
        waiter.join(60)
        assert not waiter.is_alive() and len(done[0]) == 42 and not done[0].from_cache
    finally:
        holder.kill()
        holder.wait()


# --- Ctrl-C and SIGTERM ---------------------------------------------------------------------------


def stop(proc: subprocess.Popen) -> None:
    """Kill what is left of a process started by :func:`spawn` (a test that failed midway)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_ctrl_c_while_encoding_is_one_line_and_exit_130(images, tmp_path):
    chunks = tmp_path / "cache" / CHUNK_KIND
    proc, stderr = spawn(
        [*MODEL, "task=folder", f"task.root={images}", *CHUNKED, f"hydra.run.dir={tmp_path / 'run'}"],
        tmp_path,
        "interrupted",
        FAULT_SLEEP="0.3",
    )
    try:
        wait_until(lambda: len(chunk_files(chunks)) >= 1 or proc.poll() is not None)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    finally:
        stop(proc)
    line = one_line(stderr)
    assert line.startswith("clipeval: interrupted while encoding the image features of image folder")
    assert (
        "images are cached and a rerun resumes from there; no results were written; nothing half-written remains."
        in line
    )
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.slow
@pytest.mark.parametrize("when", ["the loader starts its workers", "a chunk is cached"])
def test_ctrl_c_pressed_four_times_is_still_one_line(images, tmp_path, when):
    """Users press Ctrl-C again while the first press unwinds, and the terminal sends each press to the loader's
    workers too. A press landing in a DataLoader's clean-up printed ``Exception ignored in ...`` lines; one
    landing in a fork hook was swallowed and the run went on (exit 0); one landing while Python shut down
    killed it with SIGINT (exit -2); one landing in a worker printed its traceback; one landing while the main
    process put work in a worker's queue left the queue's lock taken, and the process hung at exit; a worker
    ended before its clean-up left its ``/tmp/pymp-*`` folder."""
    chunks = tmp_path / "cache" / CHUNK_KIND
    args = [*MODEL, "task=folder", f"task.root={images}", *CHUNKED, "runtime.workers=2"]
    proc, stderr = spawn([*args, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, "twice", FAULT_SLEEP="0.3")
    started = {
        "the loader starts its workers": lambda: "cache miss, encoding" in stderr.read_text(),
        "a chunk is cached": lambda: len(chunk_files(chunks)) >= 1,
    }[when]
    try:
        wait_until(lambda: started() or proc.poll() is not None)
        for _ in range(4):
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.02)
        assert proc.wait(timeout=120) == 130
        wait_until(lambda: not group_alive(proc.pid), timeout=60)  # the workers stopped too
    finally:
        stop(proc)
    assert one_line(stderr).startswith("clipeval: interrupted while encoding")
    assert left_in_tmp(tmp_path) == []


@pytest.mark.slow
def test_sigterm_to_the_process_group_stops_like_ctrl_c_with_exit_143(images, tmp_path):
    """``kill``, timeout(1), CI cancellers and Slurm send SIGTERM (Slurm to every process of the job, the
    loader's workers too): it ended the run with no word and exit -15, the workers' ``/tmp/pymp-*`` folders
    left behind. It stops as Ctrl-C does: one line, the finished chunks kept, nothing half-written."""
    chunks = tmp_path / "cache" / CHUNK_KIND
    args = [*MODEL, "task=folder", f"task.root={images}", *CHUNKED, "runtime.workers=2"]
    proc, stderr = spawn([*args, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, "terminated", FAULT_SLEEP="0.3")
    try:
        wait_until(lambda: len(chunk_files(chunks)) >= 1 or proc.poll() is not None)
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=120) == 143
        wait_until(lambda: not group_alive(proc.pid), timeout=60)
    finally:
        stop(proc)
    line = one_line(stderr)
    assert line.startswith("clipeval: terminated (SIGTERM) while encoding the image features of image folder")
    assert line.endswith(
        "images are cached and a rerun resumes from there; no results were written; nothing half-written remains."
    )
    assert left_in_tmp(tmp_path) == []
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_ctrl_c_between_the_jobs_of_a_sweep_says_which_finished_and_where(images, tmp_path):
    """Ctrl-C in Hydra's code between two jobs printed only "clipeval: interrupted"."""
    sweep = tmp_path / "sweep"
    pause = "+hydra.callbacks.pause._target_=fault_models.PauseAfterJob"  # says "job #N ended", then waits
    args = ["-m", *MODEL, "+model.name=a,b,c", "task=folder", f"task.root={images}", pause, f"hydra.sweep.dir={sweep}"]
    proc, stderr = spawn(args, tmp_path, "sweep")
    try:
        wait_until(lambda: "job #0 ended" in stderr.read_text() or proc.poll() is not None)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    finally:
        stop(proc)
    assert one_line(stderr) == (
        f"clipeval: interrupted after sweep job #0 of 3 finished (results in {sweep / '0_folder'}); "
        "jobs #1-#2 did not start; nothing half-written remains."
    )
    assert (sweep / "0_folder" / "results.json").exists()


def test_ctrl_c_after_the_results_are_written_says_where_they_are(tmp_path, monkeypatch, capsys):
    import clipeval.report.run_summary as run_summary
    from clipeval.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_summary, "draw_run_figures", interrupted)
    monkeypatch.setenv("CLIPEVAL_STORE", str(tmp_path / "store"))
    with pytest.raises(SystemExit) as exit:
        main(["task=digits", "runtime.limit=40", "runtime.progress=false", f"hydra.run.dir={tmp_path / 'run'}"])
    assert exit.value.code == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("clipeval: interrupted while drawing the run's figures; the results are already in ")
    assert str(tmp_path / "run" / "results.json") in line and (tmp_path / "run" / "results.json").exists()
    assert len(list((tmp_path / "store").glob("*.json"))) == 1


def test_ctrl_c_while_evaluating_says_which_task_and_that_nothing_was_written(tmp_path, monkeypatch, capsys):
    from clipeval.cli import main
    from clipeval.run.context import RunContext

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(RunContext, "evaluate", interrupted)
    monkeypatch.setenv("CLIPEVAL_STORE", str(tmp_path / "store"))
    with pytest.raises(SystemExit) as exit:
        main(["runtime.limit=40", "runtime.progress=false", f"hydra.run.dir={tmp_path / 'run'}"])
    assert exit.value.code == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == (
        "clipeval: interrupted while evaluating task 'digits' (1 of 7); no results were written; "
        "nothing half-written remains."
    )
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").glob("*.json"))


def test_ctrl_c_after_some_tasks_finished_writes_their_records(tmp_path, monkeypatch, capsys):
    """Finished tasks (an adversarial evaluation is not cached) were thrown away by Ctrl-C."""
    from clipeval.cli import main
    from clipeval.results.store import ResultsDocument
    from clipeval.run.context import RunContext

    real = RunContext.evaluate

    def second_task_interrupted(self):
        if self.task == "digits_renditions":
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(RunContext, "evaluate", second_task_interrupted)
    monkeypatch.setenv("CLIPEVAL_STORE", str(tmp_path / "store"))
    with pytest.raises(SystemExit) as exit:
        main(["runtime.limit=40", "runtime.progress=false", f"hydra.run.dir={tmp_path / 'run'}"])
    assert exit.value.code == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(
        "clipeval: interrupted while evaluating task 'digits_renditions' (2 of 7); the records of the 1 finished "
        f"task(s) are written to {tmp_path / 'run' / 'results.json'} and "
    )
    doc = ResultsDocument.load(tmp_path / "run" / "results.json")
    assert {r.task for r in doc.records} == {"digits"}
    assert doc.raw["interrupted"].endswith("1 of 7 tasks finished")
    assert doc.raw["effective_robustness_error"] == "not computed: the run was interrupted"
    assert len(list((tmp_path / "store").glob("*.json"))) == 1


def sweep(images: Path, tmp_path: Path, *extra: str) -> list[str]:
    """A sweep over three names of the same test model on the image folder, in ``tmp_path/sweep``."""
    return ["-m", *MODEL, "+model.name=a,b,c", "task=folder", f"task.root={images}", "runtime.workers=0",
            "runtime.progress=false", f"hydra.sweep.dir={tmp_path / 'sweep'}", *extra]  # fmt: skip


def test_ctrl_c_in_a_sweep_job_says_which_job_and_which_finished(images, tmp_path, monkeypatch, capsys):
    from clipeval.cli import main
    from clipeval.run.context import RunContext

    real = RunContext.evaluate

    def second_job_interrupted(self):
        if self.bank.model.name == "b":
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(RunContext, "evaluate", second_job_interrupted)
    monkeypatch.setenv("CLIPEVAL_STORE", str(tmp_path / "store"))
    with pytest.raises(SystemExit) as exit:
        main(sweep(images, tmp_path))
    assert exit.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "clipeval: interrupted in sweep job #1 of 3 (+model.name=b) while evaluating task 'folder' (1 of 1); "
        f"no results were written; job #0 finished (results in {tmp_path / 'sweep' / '0_folder'}); "
        "nothing half-written remains."
    )


@pytest.mark.parametrize("where", ["after a run's results were written", "after the last job of a sweep"])
def test_ctrl_c_after_the_work_is_done_says_where_the_results_are(where, images, tmp_path, monkeypatch, capsys):
    """Ctrl-C once the results were written (Hydra's code after the job, the cache summary, the exit) printed
    only "clipeval: interrupted"."""
    from clipeval.cli import main

    monkeypatch.setenv("CLIPEVAL_STORE", str(tmp_path / "store"))
    if where == "after a run's results were written":
        argv = [*MODEL, "task=folder", f"task.root={images}", "runtime.workers=0", "runtime.progress=false",
                f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
        last = 0
    else:
        argv, last = sweep(images, tmp_path), 2
    stop_after = ["+hydra.callbacks.stop._target_=fault_models.InterruptAfterJob", f"+hydra.callbacks.stop.job={last}"]
    with pytest.raises(SystemExit) as exit:
        main([*argv, *stop_after])
    assert exit.value.code == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]
    if where == "after a run's results were written":
        (entry,) = (tmp_path / "store").glob("*.json")
        assert line == (
            f"clipeval: interrupted after the results were written to {tmp_path / 'run' / 'results.json'} and "
            f"{entry}; nothing half-written remains."
        )
    else:
        assert line == (
            f"clipeval: interrupted after all 3 sweep jobs finished (results under {tmp_path / 'sweep'}); "
            "nothing half-written remains."
        )
