"""Developer sessions: `nox -s tests`, `nox -s lint` (or plain `nox` for both)."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite; pass `-- -m "not slow"` to skip the subprocess end-to-end tests."""
    session.install(".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def regression(session: nox.Session) -> None:
    """Evaluate a checkpoint and gate it on a golden file (the CI regression check).

    nox -s regression -- <golden.json> [hydra overrides...]
    e.g. nox -s regression -- golden/digits.json task=digits model.pretrained=ckpt.safetensors
    """
    if not session.posargs:
        session.error("usage: nox -s regression -- GOLDEN.json [overrides...]")
    golden, *overrides = session.posargs
    session.install(".")
    run_dir = f"{session.create_tmp()}/candidate"
    session.run("python", "-m", "clipeval", *overrides, f"hydra.run.dir={run_dir}")
    session.run("python", "-m", "clipeval", "check", "compare", "--golden", golden, run_dir)


@nox.session
def bench(session: nox.Session) -> None:
    """Throughput of the hot paths (a benchmark: it prints numbers and never fails on speed)."""
    session.install(".")
    session.run("python", "-m", "clipeval.bench", *session.posargs)
