"""Long steps say what they will do and how big it is, and their progress reaches the log.

On a terminal tqdm draws its bars; anywhere else (stderr piped or redirected, a scheduler's log
file) nobody sees a bar, so the same progress becomes a log line every ``runtime.log_every``
seconds with done/total, the rate and the time left.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import types

import numpy as np
from array_context import ArrayContext
from conftest import open_clip_overrides, run_in_process

import clipeval.cache
from clipeval import progress as progress_module
from clipeval.cache import FileDigests
from clipeval.evaluators.linear_probe import FewShot, LinearProbe
from clipeval.progress import LogProgress, progress, progress_line

IMAGE_LINE = re.compile(
    r"encode images: (\d+)/12 images \(\d+%\), [\d.,]+ images/s, \d\d:\d\d elapsed(, \d\d:\d\d left)?$"
)
PROMPT_LINE = re.compile(
    r"encode prompts: (\d+)/3 prompts \(\d+%\), [\d.,]+ prompts/s, \d\d:\d\d elapsed(, \d\d:\d\d left)?$"
)


def test_a_progress_line_says_done_of_total_the_rate_and_the_time_left():
    meter = {"prefix": "encode images", "n": 1280, "total": 30000, "elapsed": 60.0, "unit": "image"}
    assert progress_line(meter) == "encode images: 1,280/30,000 images (4%), 21.3 images/s, 01:00 elapsed, 22:26 left"
    assert progress_line(meter | {"n": 30000, "elapsed": 1408.0}) == (
        "encode images: 30,000/30,000 images (100%), 21.3 images/s, 23:28 elapsed"
    )
    assert progress_line(meter | {"total": None}) == "encode images: 1,280 images, 21.3 images/s, 01:00 elapsed"


def folder_run(tiny_open_clip, image_folder, *extra: str) -> list[str]:
    return [
        *open_clip_overrides(tiny_open_clip, task="folder", **{"task.root": str(image_folder)}),
        "runtime.batch_size=4",
        *extra,
    ]


def test_without_a_terminal_progress_reaches_the_log_with_rate_and_time_left(
    tiny_open_clip, image_folder, tmp_path, caplog
):
    """Under pytest stderr is not a terminal. With runtime.log_every=0 every batch is a line; the
    steps announce their size first."""
    caplog.set_level(logging.INFO, logger="clipeval")
    run_in_process(folder_run(tiny_open_clip, image_folder, "runtime.log_every=0"), tmp_path / "run")
    messages = caplog.messages
    images = [int(m.group(1)) for m in map(IMAGE_LINE.match, messages) if m]
    prompts = [int(m.group(1)) for m in map(PROMPT_LINE.match, messages) if m]
    assert images == [4, 8, 12] and prompts == [1, 2, 3]
    assert any(m.endswith("left") for m in messages if IMAGE_LINE.match(m))
    announced = [i for i, m in enumerate(messages) if "cache miss, encoding 12 images" in m]
    first_line = next(i for i, m in enumerate(messages) if IMAGE_LINE.match(m))
    assert announced and announced[0] < first_line
    assert "Text prototypes of 3 classes x 1 templates: 0 already built, encoding 3 prompts" in caplog.text


def test_attacks_log_their_progress_in_batches_too(tmp_path, caplog):
    """A 50 s APGD-T step wrote no line while it ran: the attacks' batches are counted like images and prompts."""
    caplog.set_level(logging.INFO, logger="clipeval")
    adversarial = "task.evaluators.adversarial"
    small = [f"{adversarial}.{k}={v}" for k, v in (("steps", 2), ("limit", 24), ("eps", "[8]"), ("batch_size", 8))]
    overrides = ["task=digits_adversarial", f"{adversarial}.attacks=[pgd,apgd-ce]", *small, "runtime.log_every=0"]
    run_in_process(overrides, tmp_path / "run")
    lines = [m for m in caplog.messages if m.startswith("attack: ")]
    assert lines and re.fullmatch(r"attack: (\d+)/\1 batches \(100%\), .*", lines[-1])  # every batch, 2 attacks
    assert int(lines[-1].split()[1].split("/")[0]) % 2 == 0


def test_a_step_shorter_than_log_every_writes_no_progress_lines(tiny_open_clip, image_folder, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="clipeval")
    run_in_process(folder_run(tiny_open_clip, image_folder), tmp_path / "run")  # log_every: 30 s
    assert not [m for m in caplog.messages if m.startswith(("encode images:", "encode prompts:"))]
    assert "Encoded 12 images" in caplog.text  # what the step did is still said once


def test_bars_stay_for_terminals(monkeypatch):
    terminal = types.SimpleNamespace(isatty=lambda: True, write=lambda s: len(s), flush=lambda: None)
    monkeypatch.setattr(progress_module.sys, "stderr", terminal)
    log = logging.getLogger("clipeval.test")
    with progress(3, "encode images", "image", types.SimpleNamespace(progress=True, log_every=30), log) as bar:
        assert not isinstance(bar, LogProgress)
    quiet = types.SimpleNamespace(progress=False, log_every=30)  # no bar wanted: the log has the progress
    with progress(3, "encode images", "image", quiet, log) as bar:
        assert isinstance(bar, LogProgress)


class _Terminal:
    """A stderr that is a terminal, keeping what was drawn on it."""

    def __init__(self):
        self.drawn: list[str] = []

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.drawn.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def _steps_under_a_bar(monkeypatch, tmp_path, log_every: float) -> tuple[str, str]:
    """Three steps of an 'encode images' bar on a terminal, with a log file on the root logger: (log file, screen)."""
    terminal = _Terminal()
    monkeypatch.setattr(progress_module.sys, "stderr", terminal)
    log_file = logging.FileHandler(tmp_path / "clipeval.log")
    logging.getLogger().addHandler(log_file)
    try:
        runtime = types.SimpleNamespace(progress=True, log_every=log_every)
        with progress(3, "encode images", "image", runtime, logging.getLogger("clipeval.test")) as bar:
            for _ in range(3):
                bar.update(1)
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()
    return (tmp_path / "clipeval.log").read_text(), "".join(terminal.drawn)


def test_under_a_terminal_bar_the_log_file_still_gets_the_progress_lines(monkeypatch, tmp_path):
    """A log is read later, when the bar is gone: it gets the same lines as a piped run, the screen only the bar."""
    log_text, screen = _steps_under_a_bar(monkeypatch, tmp_path, log_every=0)
    assert re.search(r"encode images: 3/3 images \(100%\), [\d.,]+ images/s, \d\d:\d\d elapsed$", log_text, re.M)
    assert "\r" not in log_text
    assert "3/3 images (100%)" not in screen and "3/3" in screen  # tqdm's own bar, not the log line


def test_under_a_terminal_bar_a_short_step_writes_no_progress_lines_to_the_log_file(monkeypatch, tmp_path):
    log_text, screen = _steps_under_a_bar(monkeypatch, tmp_path, log_every=30)
    assert "encode images" not in log_text and "3/3" in screen


def test_a_piped_run_writes_progress_lines_to_its_log_file_and_stderr(tiny_open_clip, image_folder, tmp_path):
    """The real thing: `python -m clipeval ... 2>&1 | tee`, stderr a pipe, Hydra's log file."""
    env = {**os.environ, "CLIPEVAL_CACHE": str(tmp_path / "cache"), "CLIPEVAL_STORE": str(tmp_path / "store")}
    args = [*folder_run(tiny_open_clip, image_folder, "runtime.log_every=0"), f"hydra.run.dir={tmp_path / 'run'}"]
    done = subprocess.run(
        [sys.executable, "-m", "clipeval", *args, "runtime.workers=0"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    log_file = (tmp_path / "run" / "clipeval.log").read_text()
    for text in (log_file, done.stderr):
        assert re.search(r"\] - encode images: 12/12 images \(100%\), [\d.,]+ images/s", text)
        assert re.search(
            r"\] - encode images: 4/12 images \(33%\), [\d.,]+ images/s, \d\d:\d\d elapsed, \d\d:\d\d left", text
        )
        assert re.search(r"\] - encode prompts: 3/3 prompts \(100%\)", text)
        assert "\r" not in text  # no bar redraws


def test_a_run_on_a_terminal_draws_bars_and_logs_progress_lines_to_its_file(tiny_open_clip, image_folder, tmp_path):
    """The real thing on a pseudo-terminal: bars on the screen, progress lines in ``clipeval.log`` only."""
    env = {**os.environ, "CLIPEVAL_CACHE": str(tmp_path / "cache"), "CLIPEVAL_STORE": str(tmp_path / "store")}
    args = [*folder_run(tiny_open_clip, image_folder, "runtime.log_every=0"), f"hydra.run.dir={tmp_path / 'run'}"]
    screen, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 0 columns: tqdm draws nothing
    try:
        done = subprocess.run(
            [sys.executable, "-m", "clipeval", *args, "runtime.workers=0"],
            stdout=subprocess.DEVNULL, stderr=terminal, env=env, cwd=tmp_path, timeout=300,
        )  # fmt: skip
        os.close(terminal)
        drawn = _read_all(screen)
    finally:
        os.close(screen)
    assert done.returncode == 0, drawn[-2000:]
    log_file = (tmp_path / "run" / "clipeval.log").read_text()
    assert re.search(r"\] - encode images: 12/12 images \(100%\), [\d.,]+ images/s", log_file)
    assert re.search(r"\] - encode prompts: 3/3 prompts \(100%\)", log_file)
    assert re.search(r"encode images: 100%.*12/12", drawn)  # tqdm's bars on the screen
    assert "12/12 images (100%)" not in drawn  # the log lines are not


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side is closed and everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def test_long_steps_first_say_what_they_do_and_how_big_it_is(
    tiny_open_clip, image_folder, tmp_path, caplog, monkeypatch
):
    caplog.set_level(logging.DEBUG, logger="clipeval")
    run_in_process(folder_run(tiny_open_clip, image_folder), tmp_path / "run")
    said = caplog.messages
    assert said.index("Loading model clipeval-test-tiny on cpu (its first run: no model card yet)") < next(
        i for i, m in enumerate(said) if m.startswith("Loaded model clipeval-test-tiny")
    )
    assert any(m.endswith("cache miss, encoding 12 images") for m in said)
    assert (
        "Text prototypes of 3 classes x 1 templates: 0 already built, encoding 3 prompts for the other 3 classes"
        in said
    )

    caplog.clear()  # reading files to key them: at INFO from HASH_LOG_FILES files (or HASH_LOG_BYTES) on
    monkeypatch.setattr(clipeval.cache, "HASH_LOG_FILES", 12)
    files = sorted(image_folder.rglob("*.png"))
    FileDigests(tmp_path / "memo").digests(files)
    (line,) = [r for r in caplog.records if r.getMessage().startswith("Reading 12 files")]
    assert line.levelno == logging.INFO and f"under {image_folder} to key them for the cache" in line.getMessage()
    FileDigests(tmp_path / "other_memo").digests(files[:11])
    assert [r.levelno for r in caplog.records if r.getMessage().startswith("Reading 11 files")] == [logging.DEBUG]

    caplog.clear()
    rng = np.random.default_rng(0)
    data = {name: (rng.normal(size=(40, 8)), np.arange(40) % 4) for name in ("train", "test")}
    LinearProbe("train", ["test"]).evaluate(ArrayContext(data))
    FewShot("train", "test", ks=[1, 2], seeds=2).evaluate(ArrayContext(data, prototypes_from="train"))
    assert "Linear probe on train: training on 40 examples of 8-dim features" in caplog.text
    assert "Few-shot probes on train: k = 1, 2, 2 seeds each (4 probes), scored on 40 examples of test" in caplog.text
