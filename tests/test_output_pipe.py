"""A command whose output's reader goes away (``clipeval report testbed ... | head -1``) ends quietly, as Unix
tools do: no message, no traceback, exit code 141 (128 + SIGPIPE, what a shell reports for them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_cross_run import accuracies, document, natural_spec, records_of

from clipeval.cli import BROKEN_PIPE_EXIT_CODE
from clipeval.report.cli import COMMANDS
from clipeval.report.cli import main as report_main
from clipeval.results.store import add_to_store


def test_a_closed_pipe_ends_a_report_quietly_with_exit_code_141(tmp_path):
    store = tmp_path / "store"
    add_to_store(store, document("good", records_of(accuracies(0.6, 0.5)), natural_spec(), run_id="1" * 32))
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[1]), "CLIPEVAL_CACHE": str(tmp_path / "cache")}
    argv = [sys.executable, "-m", "clipeval", "report", "store", "--store", str(store), "--out", str(tmp_path / "o")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    proc.stdout.close()  # the reader is gone before the report prints a line (its imports take a while)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == BROKEN_PIPE_EXIT_CODE == 141, err
    assert err == ""
    assert (tmp_path / "o" / "report.md").is_file()  # what it was asked to write is written


@pytest.mark.parametrize("cli", ["report", "check"])
def test_a_broken_pipe_is_not_reported_as_a_file_error(tmp_path, monkeypatch, cli):
    """``report`` and ``check`` say "error" for an OSError reading or writing files; a broken pipe is not one,
    so they let it through to :func:`clipeval.cli.main`, which ends quietly."""
    if cli == "report":
        monkeypatch.setitem(COMMANDS, "store", lambda args: print("x", file=_Closed()))
        call = lambda: report_main(["store", "--store", str(tmp_path / "s"), "--out", str(tmp_path / "o")])  # noqa: E731
    else:
        import clipeval.check.cli as check_cli

        monkeypatch.setattr(check_cli, "load_golden", lambda path: print("x", file=_Closed()))
        call = lambda: check_cli.main(["compare", "--golden", "g.json", "run"])  # noqa: E731
    with pytest.raises(BrokenPipeError):
        call()


class _Closed:
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")
