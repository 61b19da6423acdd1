"""Ctrl-C and SIGTERM: the step that was interrupted names itself, and no signal is lost or noisy."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from clipeval.interrupt import calm_signals, during, stopped


@pytest.fixture
def handlers():
    """The process's handlers of the signals clipeval handles, as they were before the test: after a signal,
    :func:`calm_signals` leaves SIGINT and SIGTERM ignored and SIGCHLD quiet, for the process is exiting."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_the_innermost_step_names_the_interrupt():
    encoding = during(lambda: "encoding the image features of digits; 8 of 42 images are cached")
    with pytest.raises(KeyboardInterrupt) as caught, during("evaluating task 'digits'"), encoding:
        raise KeyboardInterrupt
    assert str(caught.value) == "encoding the image features of digits; 8 of 42 images are cached"


def test_other_exceptions_pass_unlabelled():
    with pytest.raises(ValueError, match="^bad$"), during("anything"):
        raise ValueError("bad")


def test_the_previous_handlers_come_back_when_nothing_was_pressed():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with calm_signals():
        assert all(signal.getsignal(s) is not before[s] for s in before)
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_press_swallowed_by_a_finaliser_is_delivered_again(capsys, handlers):
    """Python ignores an exception raised inside ``__del__`` (printing ``Exception ignored in``); the first
    Ctrl-C landing there would be lost and the run would go on."""

    class PressedDuringCleanUp:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)  # the handler raises here, inside the finaliser

    with pytest.raises(KeyboardInterrupt):
        deadline = time.monotonic() + 10
        with calm_signals():
            PressedDuringCleanUp()
            gc.collect()
            while time.monotonic() < deadline:  # the run going on
                time.sleep(0.01)
    assert time.monotonic() < deadline
    assert "Exception ignored" not in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # later presses cannot kill the exit


def test_sigterm_unwinds_like_ctrl_c_and_says_terminated_with_exit_143(handlers):
    """SIGTERM (``kill``, timeout(1), CI cancellers, Slurm) killed the process with no word and exit -15."""
    with pytest.raises(KeyboardInterrupt) as caught, calm_signals(), during("encoding the image features of digits"):
        signal.raise_signal(signal.SIGTERM)
    assert stopped(caught.value) == (
        "clipeval: terminated (SIGTERM) while encoding the image features of digits; nothing half-written remains.",
        143,
    )
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN


def test_a_signal_that_lands_in_threading_code_is_delivered_once_out_of_it(handlers):
    """Raised inside the standard library's threading or multiprocessing code (``Condition.__enter__`` when
    ``multiprocessing.Queue.put`` hands a DataLoader worker its next batch), ``KeyboardInterrupt`` left the
    queue's lock taken: the process printed its line, then hung at exit. It is delivered a moment later."""
    handler = []
    in_threading = []
    condition = threading.Condition()
    with condition:  # wait_for calls the predicate from threading.py: its caller's frame is threading code
        condition.wait_for(lambda: in_threading.append(sys._getframe(1)) or True)
    with pytest.raises(KeyboardInterrupt) as caught, calm_signals(), during("encoding"):
        handler.append(signal.getsignal(signal.SIGINT))
        handler[0](signal.SIGINT, in_threading[0])  # the signal arrives while threading code runs: no raise here
        handler.append("not raised inside threading code")
        time.sleep(10)  # out of it: delivered again within a moment
    assert handler[1] == "not raised inside threading code"
    assert str(caught.value) == "encoding"


def test_an_error_after_a_stop_signal_leaves_as_the_interrupt(handlers):
    """SIGTERM sent to the process group ends the DataLoader's workers too; the loader then raised "DataLoader
    worker exited unexpectedly", which was recorded as the evaluator's failure."""
    with pytest.raises(KeyboardInterrupt) as caught, calm_signals():
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
        with during("encoding the image features of digits"):
            raise RuntimeError("DataLoader worker (pid(s) 4242) exited unexpectedly")
    assert stopped(caught.value)[0].startswith("clipeval: terminated (SIGTERM) while encoding the image features")


def test_a_forked_worker_leaves_ctrl_c_to_the_main_process(handlers):
    """The terminal sends Ctrl-C to the loader's workers too; a worker that inherited the handler raised
    ``KeyboardInterrupt`` wherever it was (its start-up printed a traceback). The main process stops them."""
    with calm_signals():
        pid = os.fork()
        if pid == 0:  # the worker
            try:
                signal.raise_signal(signal.SIGINT)
                signal.raise_signal(signal.SIGINT)
            except BaseException:
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize(
    "signum, line",
    [(signal.SIGINT, "clipeval: interrupted"), (signal.SIGTERM, "clipeval: terminated (SIGTERM)")],
    ids=["SIGINT", "SIGTERM"],
)
@pytest.mark.parametrize("command", ["report", "check"])
def test_report_and_check_stop_on_a_signal_with_one_line(
    command, signum, line, tmp_path, monkeypatch, capsys, handlers
):
    import clipeval.check.cli
    import clipeval.report.pages
    from clipeval.cli import main

    def signalled(*args, **kwargs):
        signal.raise_signal(signum)

    if command == "report":
        monkeypatch.setattr(clipeval.report.pages, "write_store_report", signalled)
        argv = ["report", "store", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "out")]
    else:
        monkeypatch.setattr(clipeval.check.cli, "load_golden", signalled)
        argv = ["check", "compare", str(tmp_path / "run"), "--golden", str(tmp_path / "golden.json")]
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum]
    what = "report store" if command == "report" else "check compare"
    assert capsys.readouterr().err == f"{line} while running `clipeval {what}`; nothing half-written remains.\n"


@pytest.mark.parametrize("command", ["report", "check"])
def test_a_signal_while_report_or_check_loads_its_modules_names_the_command(command, monkeypatch, capsys, handlers):
    """Most of a short command's time is its imports: a signal there gave the line without the command."""
    import types

    from clipeval.cli import main

    class Importing(types.ModuleType):
        def __getattr__(self, name):
            raise KeyboardInterrupt  # Ctrl-C while the module's own imports run

    monkeypatch.setitem(sys.modules, f"clipeval.{command}.cli", Importing(f"clipeval.{command}.cli"))
    with pytest.raises(SystemExit) as exit:
        main([command, "store" if command == "report" else "compare"])
    assert exit.value.code == 130
    what = "report store" if command == "report" else "check compare"
    assert (
        capsys.readouterr().err
        == f"clipeval: interrupted while running `clipeval {what}`; nothing half-written remains.\n"
    )


def test_a_signal_after_the_command_ended_does_not_kill_the_exiting_interpreter():
    """Ctrl-C in the last moments of `clipeval check` ended it killed by SIGINT, with no line and no exit code."""
    code = (
        "import os, signal, clipeval.cli as cli\n"
        "cli.main = lambda: print('the command ended')\n"
        "cli.entry_point()\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "print('and the interpreter exits')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (0, "the command ended\nand the interpreter exits\n"), done.stderr
