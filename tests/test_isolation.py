"""The tests' own guarantee (tests/isolation.py): nothing a test runs writes outside pytest's temporary
directories: not the user's outputs/store, ~/.cache/clipeval, reports/out or anywhere else."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from isolation import REPO, SANDBOXED

from clipeval.config.paths import cache_dir


def inside(path: str | Path, root: Path) -> bool:
    return Path(path).resolve().is_relative_to(root.resolve())


@pytest.fixture(scope="module")
def seen_by_a_module_fixture() -> dict[str, str]:
    """What a module-scoped fixture sees: it runs before any test's own cache and store are set."""
    return {"store": os.environ["CLIPEVAL_STORE"], "cache": str(cache_dir()), "cwd": os.getcwd()}


def test_module_fixtures_already_see_the_sandbox(seen_by_a_module_fixture, tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    for name, path in seen_by_a_module_fixture.items():
        assert inside(path, base), (name, path)


def test_every_default_place_points_into_the_sandbox(sandbox, tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    assert inside(sandbox, base) and inside(os.getcwd(), sandbox) and not inside(os.getcwd(), REPO)
    for name in SANDBOXED:
        if name not in ("CLIPEVAL_CACHE", "CLIPEVAL_STORE"):  # those are the test's own (isolated_dirs)
            assert inside(os.environ[name], sandbox), name
    assert inside(Path.home(), sandbox) and inside(Path("~/.cache/clipeval").expanduser(), sandbox)
    assert "CLIPEVAL_TASKS" not in os.environ


def test_a_subprocess_inherits_the_sandbox(sandbox):
    code = "import os, pathlib, tempfile; print(pathlib.Path.home()); print(os.getcwd()); print(tempfile.gettempdir())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert all(inside(line, sandbox) for line in out[:3]), out


def test_a_reports_default_out_folder_lands_in_the_sandbox(sandbox, tmp_path):
    """``clipeval report`` without --out writes reports/out relative to the working directory."""
    from test_cross_run import write_store

    from clipeval.report.cli import main

    write_store(tmp_path / "store")
    main(["figure", "--store", str(tmp_path / "store"), "--model", "RN50"])
    assert (Path.cwd() / "reports" / "out" / "cross_run.png").is_file() and inside(Path.cwd(), sandbox)
    assert not (REPO / "reports" / "out" / "cross_run.png").exists()


def test_the_guard_sees_a_write_outside_the_temporary_directories(request):
    """The audit hook records the attempt (before the operating system refuses it), naming the path and the test."""
    from conftest import GUARD

    outside = Path("/nonexistent-clipeval-guard-probe/results.json")
    with pytest.raises(OSError):
        outside.write_text("{}")
    with pytest.raises(OSError):
        os.replace(__file__ + ".absent", outside)
    assert GUARD.take(request.node.nodeid) == [f"open {outside}", f"os.rename {outside}"]  # taken: no failure
    Path("relative.txt").write_text("the working directory is the sandbox's")
    assert GUARD.take(request.node.nodeid) == []


def test_pytest_keeps_no_cache_and_no_benchmark_folder_in_the_checkout(request):
    """pytest's cache (``.pytest_cache``) and pytest-benchmark's storage (``.benchmarks``) were created in the
    repository by every run; both plugins are off for the test suite (``benchmarks/`` turns them back on)."""
    assert not request.config.pluginmanager.has_plugin("cacheprovider")
    assert not request.config.pluginmanager.has_plugin("benchmark")
