"""Developer sessions: `nox -s tests`, `nox -s lint` (or plain `nox` for both), `nox -s bench`, `nox -s regression`."""

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
    """Speed, never pass/fail on it: the hot paths under pytest-benchmark (``benchmarks/``, saved as JSON in
    ``.benchmarks/`` for ``--benchmark-compare`` across commits), then ``python -m clipeval.bench``.

    nox -s bench                     # both
    nox -s bench -- --compare        # the hot paths, compared with the last saved run
    """
    session.install(".[test]")
    compare = "--compare" in session.posargs
    args = [a for a in session.posargs if a != "--compare"]
    session.run(
        "python", "-m", "pytest", "benchmarks", "-o", "addopts=", "--benchmark-autosave",
        "--benchmark-columns=min,median,max,rounds", *(["--benchmark-compare"] if compare else []),
    )  # fmt: skip
    if not compare:
        session.run("python", "-m", "clipeval.bench", *args)
