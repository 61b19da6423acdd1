"""``python -m clipeval``: the Hydra app, with errors a user can act on.

Group choices (task=, model=, runtime=) are checked before Hydra composes anything, so a
typo gets the list of options and a suggestion with exit code 2 rather than Hydra's
generic failure. Errors raised as :class:`ClipevalError` inside a run end the same way.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from clipeval.config.overrides import check_group_choices, selection_overrides
from clipeval.config.paths import conf_dir
from clipeval.errors import USAGE_EXIT_CODE, ClipevalError


def fail(message: str) -> None:
    print(f"clipeval: error: {message}", file=sys.stderr)
    raise SystemExit(USAGE_EXIT_CODE)


def missing_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Keys set to ``???`` in the config itself (not interpolations that point at them)."""
    found = []
    for key in cfg:
        full = f"{prefix}{key}"
        if OmegaConf.is_missing(cfg, key):
            found.append(full)
        elif not OmegaConf.is_interpolation(cfg, key) and isinstance(cfg._get_node(key), DictConfig):
            found += missing_keys(cfg[key], f"{full}.")
    return found


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def _app(cfg: DictConfig) -> None:
    from clipeval.run.runner import run  # heavy imports (torch, open_clip) only once a run starts

    missing = missing_keys(cfg)
    if missing:
        fail(
            "Missing required value(s): "
            + " ".join(f"{k}=<value>" for k in missing)
            + "\nSee the comments in the task or model config, or --help."
        )
    try:
        run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except ClipevalError as exc:
        fail(str(exc))
    except MissingMandatoryValue as exc:
        fail(f"{exc.full_key} is required: pass {exc.full_key}=<value> on the command line.")


def main(argv: list[str] | None = None) -> None:
    """The command line; Ctrl-C ends it with one line saying what was interrupted, and exit code 130."""
    try:
        _main(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt as exc:
        what = f" while {exc}" if str(exc) else ""  # encode.py and the cache say what they were doing
        print(f"clipeval: interrupted{what}; nothing half-written remains.", file=sys.stderr)
        raise SystemExit(INTERRUPTED_EXIT_CODE) from None


INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, as shells report a command ended by Ctrl-C
#: Hydra's flags that print something and run nothing
_INFO_FLAGS = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc", "--version"}


def _check_output_dir(argv: list[str]) -> None:
    """Exit 2 when the folder Hydra will create for the run (``hydra.run.dir``, or ``hydra.sweep.dir`` with
    ``-m``) cannot be written, rather than with Hydra's traceback before the run starts."""
    from clipeval.atomic import write_error

    if _INFO_FLAGS.intersection(argv):
        return
    sweep = "-m" in argv or "--multirun" in argv
    key = "hydra.sweep.dir=" if sweep else "hydra.run.dir="
    given = next((a.removeprefix(key) for a in reversed(argv) if a.startswith(key)), None)
    folder = Path((given or ("outputs/multirun" if sweep else "outputs/runs")).split("$", 1)[0] or ".")
    error = write_error(folder)
    if error is not None:
        fail(
            f"Cannot write the run directory {given or folder} ({error}); nothing was run. "
            f"Pass {key}DIR with a writable folder, or free space or fix the permissions."
        )


def _main(argv: list[str]) -> None:
    if argv[:1] == ["report"]:
        from clipeval.report.cli import main as report_main

        return report_main(argv[1:])
    if argv[:1] == ["check"]:
        from clipeval.check.cli import main as check_main

        return check_main(argv[1:])
    try:
        check_group_choices(argv)
        argv = selection_overrides(argv)
    except ClipevalError as exc:
        fail(str(exc))
    _check_output_dir(argv)
    sys.argv = [sys.argv[0], *argv]
    try:
        _app()
    finally:
        # Everything is written by now. Interpreter shutdown would run one last garbage
        # collection over torch's millions of objects (about 1 s here); frozen objects are skipped.
        gc.freeze()
