"""``python -m clipeval``: the Hydra app, with errors a user can act on.

A first argument that is a bare word is a command (``report``, ``check``); a mistyped one is
refused with the nearest. Group choices (task=, model=, runtime=) are checked before Hydra
composes anything, so a typo gets the list of options and a suggestion with exit code 2
rather than Hydra's generic failure. Hydra's own errors (a malformed override, an unknown
key, a task file that does not load) and errors raised as :class:`ClipevalError` inside a
run end the same way; the composed config is checked against its schema
(:mod:`clipeval.config.schema`) before anything runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue

from clipeval.config.overrides import (
    check_command,
    check_group_choices,
    check_no_op_overrides,
    override_args,
    selection_overrides,
)
from clipeval.config.paths import conf_dir
from clipeval.errors import USAGE_EXIT_CODE, ClipevalError, cut, did_you_mean, nearest, printable
from clipeval.interrupt import calm_signals, during, milestone, part, stopped
from clipeval.sweep import JobFailed, check_launcher, current_job, sweep_job


def fail(message: str) -> None:
    """Print ``message`` and exit 2; in a sweep's job, end that job alone (:class:`clipeval.sweep.JobFailed`)."""
    if current_job() is not None:
        raise JobFailed(message) from None
    print(f"clipeval: error: {printable(message)}", file=sys.stderr)
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
@sweep_job
def _app(cfg: DictConfig) -> None:
    from clipeval.run.runner import run  # heavy imports (torch, open_clip) only once a run starts

    missing = missing_keys(cfg)
    if missing:
        fail(
            "Missing required value(s): "
            + " ".join(f"{k}=<value>" for k in missing)
            + "\nSee the comments in the task or model config, or --help."
        )
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        check_no_op_overrides(cfg, list(HydraConfig.get().overrides.task))
        with _sweep.job(run_dir):
            run(cfg, run_dir)
    except ClipevalError as exc:
        fail(str(exc))
    except MissingMandatoryValue as exc:
        fail(f"{exc.full_key} is required: pass {exc.full_key}=<value> on the command line.")


#: the subcommands, besides a run (``clipeval [key=value ...]``)
COMMANDS = ("report", "check")


def main(argv: list[str] | None = None) -> None:
    """The command line; Ctrl-C (SIGTERM) ends it with one line saying what was interrupted, and exit code 130
    (143)."""
    try:
        with calm_signals():
            try:
                _main(sys.argv[1:] if argv is None else argv)
            finally:
                sys.stdout.flush()  # a reader that went away shows here, not as a message at interpreter exit
    except BrokenPipeError:
        _quiet_after_broken_pipe()
    except KeyboardInterrupt as exc:  # encode.py, the cache and the runner say what they were doing
        line, code = stopped(exc)
        print(line, file=sys.stderr)
        raise SystemExit(code) from None


def entry_point() -> None:
    """``clipeval`` and ``python -m clipeval``: :func:`main`, then SIGINT and SIGTERM ignored while the interpreter
    exits (the command has ended and said how; a late Ctrl-C would otherwise kill it with a signal and no line)."""
    try:
        main()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)


#: the exit code of a command whose output's reader went away (``clipeval report testbed | head -1``): 128 + SIGPIPE,
#: what a shell reports for Unix tools ended by the signal, so ``set -o pipefail`` still tells a cut-short output
BROKEN_PIPE_EXIT_CODE = 141


def _quiet_after_broken_pipe() -> None:
    """End without a word when the output's reader is gone, as Unix tools do: the Python documentation's recipe
    (send what is still buffered for stdout to /dev/null, so the exit flush cannot fail again)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor (stdout replaced in-process)
        pass
    raise SystemExit(BROKEN_PIPE_EXIT_CODE) from None


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
        fail(_output_dir_message(given or str(folder), error, sweep))


def _output_dir_message(folder: str, error: OSError, sweep: bool, file: str | None = None, finished: int = 0) -> str:
    """The one message for a run (or sweep) directory that cannot be written, before the run (or a sweep's job
    after ``finished`` jobs) starts."""
    what = "sweep directory" if sweep else "run directory"
    key = "hydra.sweep.dir" if sweep else "hydra.run.dir"
    folder = cut(folder)  # a path the system refuses as too long is thousands of characters
    detail = f"{cut(file)}: {error.strerror}" if file and error.strerror else cut(str(error), 400)
    done = "job #0" if finished == 1 else f"jobs #0-#{finished - 1}"
    ran = f"{done} finished, job #{finished} and the later ones did not run" if finished else "nothing was run"
    return (
        f"Cannot write the {what} {folder} ({detail}); {ran}. "
        f"Pass {key}=DIR with a writable folder, or free space or fix the permissions."
    )


#: Hydra's functions that create the run or sweep directory and write its files (``.hydra/config.yaml``,
#: ``hydra.yaml``, ``overrides.yaml``, ``multirun.yaml``, the log file) before the run starts (hydra-core 1.3)
_HYDRA_WRITERS = {"_save_config", "run_job", "launch", "sweep", "configure_log"}


def _hydra_write_error(exc: OSError, argv: list[str]) -> str | None:
    """The message for an OSError Hydra raised while it created the run (or sweep) directory or wrote its own
    files into it, which a full disk can do after :func:`_check_output_dir`'s probe fitted; None for any other
    OSError. Hydra's file that was being written when it failed is removed (it holds part of a config)."""
    import hydra as hydra_package

    hydra_dir, clipeval_dir = Path(hydra_package.__file__).parent, Path(__file__).parent
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):  # innermost first: the first frame of Hydra or clipeval says who wrote
        path = Path(frame.f_code.co_filename)
        if path.is_relative_to(clipeval_dir):
            return None
        if path.is_relative_to(hydra_dir):
            break
    else:
        return None
    name = frame.f_code.co_name
    if name not in _HYDRA_WRITERS:
        return None
    local = frame.f_locals
    sweep = "-m" in argv or "--multirun" in argv
    file = exc.filename  # set when a folder or file could not be created; None when writing a file failed
    written = {"_save_config": ("output_dir", local.get("filename")), "sweep": ("sweep_dir", "multirun.yaml")}
    if file is None and name in written and written[name][0] in local:
        folder_name, file_name = written[name]
        file = str(Path(local[folder_name]) / str(file_name))
        with contextlib.suppress(OSError):  # Hydra writes in place: the file is cut off where the disk filled
            Path(file).unlink(missing_ok=True)
    job = next((f.f_locals for f in frames if f.f_code.co_name == "run_job" and "output_dir" in f.f_locals), {})
    folder = job.get("output_dir") or local.get("sweep_dir") or local.get("output_dir") or file or "."
    launcher = next((f.f_locals for f in frames if f.f_code.co_name == "launch" and "runs" in f.f_locals), {})
    finished = len(launcher.get("runs") or ())
    return _output_dir_message(os.path.abspath(folder), exc, sweep, file and os.path.abspath(file), finished)


def _command_line(command: str, args: list[str]) -> str:
    """The step that Ctrl-C interrupts in ``clipeval report`` and ``clipeval check``: the command, with its
    subcommand (``report store``)."""
    sub = next((a for a in args if not a.startswith("-")), None)
    return f"running `clipeval {command}{f' {sub}' if sub else ''}`"


@dataclasses.dataclass
class _Sweep:
    """The jobs of a sweep (``-m``) that finished so far, for the line that Ctrl-C prints: which job was
    interrupted, or after which one, and where the results of those that finished are."""

    total: int | None = None  # how many jobs the command line's sweep has (None: not known)
    swept: frozenset[str] = frozenset()  # the swept overrides' keys as given (``+model.name``)
    done: list[Path] = dataclasses.field(default_factory=list)  # the run directories of the finished jobs
    sweep: bool = False

    @classmethod
    def of(cls, argv: list[str]) -> _Sweep:
        if "-m" not in argv and "--multirun" not in argv:
            return cls()
        from hydra.core.override_parser.overrides_parser import OverridesParser

        total, swept = 1, set()
        for arg in override_args(argv):
            try:
                override = OverridesParser.create().parse_overrides([arg])[0]
            except Exception:  # Hydra explains a malformed override when it parses it itself
                return cls(sweep=True)
            if override.is_sweep_override():
                swept.add(arg.split("=", 1)[0])
                total *= len(list(override.sweep_string_iterator()))
        return cls(total, frozenset(swept), sweep=True)

    @contextlib.contextmanager
    def job(self, run_dir: Path) -> Iterator[None]:
        """Within it, the line names this job of the sweep and says which finished before it; once it finished,
        an interrupt before the next one says so."""
        if not self.sweep:
            yield
            return
        hydra_cfg = HydraConfig.get()
        number = hydra_cfg.job.get("num", len(self.done))
        name = f"in sweep job #{number}" + (f" of {self.total}" if self.total else "")
        chosen = [o for o in hydra_cfg.overrides.task if o.split("=", 1)[0] in self.swept]
        if chosen:
            name += f" ({' '.join(chosen)})"
        with part(name, self._finished()):
            yield
        self.done.append(run_dir)
        milestone(self._after())

    def _after(self) -> str:
        """What the line says of an interrupt after the last job that finished."""
        n, total = len(self.done), self.total
        if total is not None and n >= total:
            return f"all {total} sweep jobs finished {self._where()}"
        line = f"sweep {self._jobs()}{f' of {total}' if total else ''} finished {self._where()}"
        if total is not None:
            line += f"; job #{n} did not start" if total == n + 1 else f"; jobs #{n}-#{total - 1} did not start"
        return line

    def _jobs(self) -> str:
        return "job #0" if len(self.done) == 1 else f"jobs #0-#{len(self.done) - 1}"

    def _where(self) -> str:
        if len(self.done) == 1:
            return f"(results in {self.done[0]})"
        return f"(results under {os.path.commonpath([str(p) for p in self.done])})"

    def _finished(self) -> str | None:
        return f"{self._jobs()} finished {self._where()}" if self.done else None


_sweep = _Sweep()


def _main(argv: list[str]) -> None:
    global _sweep
    if argv[:1] == ["report"]:
        with during(_command_line("report", argv[1:])):  # its imports too: most of a short command's time
            from clipeval.report.cli import main as report_main

            return report_main(argv[1:])
    if argv[:1] == ["check"]:
        with during(_command_line("check", argv[1:])):
            from clipeval.check.cli import main as check_main

            return check_main(argv[1:])
    try:
        check_command(argv, COMMANDS)
        check_group_choices(argv)
        check_launcher(override_args(argv))
        argv = selection_overrides(argv)
    except ClipevalError as exc:
        fail(str(exc))
    with _as_launched_rank(argv) as argv:
        _check_output_dir(argv)
        _sweep = _Sweep.of(argv)
        _run_app(argv)


@contextlib.contextmanager
def _as_launched_rank(argv: list[str]) -> Iterator[list[str]]:
    """Under torchrun, a rank other than 0 runs with a throwaway Hydra output folder, no log file and no progress
    bars (rank 0 writes the run's folder, log and results); a sweep (``-m``) is refused on every rank."""
    from clipeval.distributed import launched_ranks

    rank, size = launched_ranks()
    if size > 1 and ("-m" in argv or "--multirun" in argv):
        fail(
            "A sweep (-m) cannot run under torchrun: start one torchrun per job, or run the sweep on a Hydra "
            "launcher (see the README's Scaling out)."
        )
    if size <= 1 or rank == 0 or _INFO_FLAGS.intersection(argv):
        yield argv
        return
    with tempfile.TemporaryDirectory(prefix=f"clipeval-rank{rank}-") as scratch:
        yield [*argv, f"hydra.run.dir={scratch}", "hydra.output_subdir=null", "hydra/job_logging=other_rank",
               "runtime.progress=false"]  # fmt: skip


def _run_app(argv: list[str]) -> None:
    sys.argv = [sys.argv[0], *argv]
    try:
        with _hydra_errors():
            try:
                check_configs(argv)
            except ClipevalError as exc:
                fail(str(exc))
            try:
                _app()
            except OSError as exc:
                message = _hydra_write_error(exc, argv)
                if message is None:
                    raise
                fail(message)
    finally:
        # Everything is written by now. Interpreter shutdown would run one last garbage
        # collection over torch's millions of objects (about 1 s here); frozen objects are skipped.
        gc.freeze()


#: a sweep with more jobs than this has its first ones checked before any runs (each is checked again as it starts)
SWEEP_CHECKED_JOBS = 64
#: Hydra's flags that print the composed config (or facts about it) instead of running
_PRINT_FLAGS = {"--cfg", "-c", "--info", "-i"}


def check_configs(argv: list[str]) -> None:
    """Compose and check, before Hydra acts, what it would otherwise print or run unchecked: the config that
    ``--cfg``/``--info`` prints (an invalid one is the run's message and exit 2, not a listing and exit 0), and
    in a sweep (``-m``) every job's config, so a bad value in a late job is refused before hours of earlier
    jobs (ClipevalError naming the job's overrides). A value left ``???`` is not an error here: ``--cfg`` shows
    it, and a run says it is required."""
    sweep = "-m" in argv or "--multirun" in argv
    prints = bool(_PRINT_FLAGS.intersection(argv))
    if not (sweep or prints) or (_INFO_FLAGS - _PRINT_FLAGS).intersection(argv):
        return
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from clipeval.config.construct import check_targets
    from clipeval.config.schema import validate_config

    fixed, swept = [], []
    for arg in override_args(argv):
        try:
            override = OverridesParser.create().parse_overrides([arg])[0]
        except Exception:  # Hydra explains a malformed override when it parses it itself
            return
        if override.key_or_group.startswith("hydra"):
            continue
        if sweep and override.is_sweep_override():
            prefix = arg.split("=", 1)[0]
            swept.append([f"{prefix}={v}" for v in override.sweep_string_iterator()])
        else:
            fixed.append(arg)
    jobs = list(itertools.islice(itertools.product(*swept), SWEEP_CHECKED_JOBS))
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        for i, job in enumerate(jobs):
            cfg = compose(config_name="config", overrides=[*fixed, *job])
            if prints:
                _check_package(cfg, _flag_value(argv, "--package", "-p"))
            if missing_keys(cfg):
                return  # a required value left out: the run says which when it starts
            try:
                check_no_op_overrides(cfg, [*fixed, *job])
                validate_config(cfg)
                check_targets(cfg)
            except MissingMandatoryValue:
                return  # a required value left out: the run says which when it starts
            except ClipevalError as exc:
                if not swept:
                    raise
                raise ClipevalError(f"Sweep job #{i} ({' '.join(job)}): {exc}\nNo job was run.") from None


def _flag_value(argv: list[str], *names: str) -> str | None:
    """The value of the last of the flags ``names`` in ``argv`` (``--package runtime``, ``--package=runtime``)."""
    value = None
    for i, arg in enumerate(argv):
        if arg in names and i + 1 < len(argv):
            value = argv[i + 1]
        elif any(arg.startswith(f"{name}=") for name in names):
            value = arg.split("=", 1)[1]
    return value


def _check_package(cfg: DictConfig, package: str | None) -> None:
    """ClipevalError for a ``--package`` the composed config does not have (Hydra prints a line and exits 1)."""
    if not package or package == "_global_" or package.split(".")[0] == "hydra":
        return
    if OmegaConf.select(cfg, package, throw_on_missing=False) is not None:
        return
    parent, _, key = package.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    keys = [str(k) for k in node] if isinstance(node, DictConfig) else []
    where = f"--package {package}: the config has no '{package}'"
    if not parent and key in ("task", "suite"):
        raise ClipevalError(f"{where}: no {key} is chosen (choose one with {key}=<name>; a run has a task or a suite).")
    raise ClipevalError(f"{where}. {did_you_mean(key, keys)}" if keys else f"{where}: {parent} holds no keys.")


@contextlib.contextmanager
def _hydra_errors() -> Iterator[None]:
    """Hydra's errors while composing (a malformed override, an unknown key, a missing config, a task file
    that does not load) as exit 2 with Hydra's explanation and, for an unknown key, the nearest one.

    Hydra prints these itself and exits 1 unless ``HYDRA_FULL_ERROR`` is set, when it raises them:
    set here, so they reach this handler. Anything else raised keeps its traceback.
    """
    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    except OverrideParseException as exc:
        fail(_malformed_override(exc))
    except ConfigCompositionException as exc:
        fail(_composition_error(exc))
    except MissingConfigException as exc:
        fail(str(exc).split("\nConfig search path:")[0])
    except ClipevalError as exc:  # raised while composing: a task.yaml that does not load
        fail(str(exc))
    except ValueError as exc:  # Hydra's own check of a group override's value (`runtime=null`, `=3`)
        if "Config group override must be" not in str(exc):
            raise
        fail(f"{exc}: choose an option of the group by name (e.g. runtime=default), or remove it with ~group.")
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


def _malformed_override(exc: OverrideParseException) -> str:
    lines = exc.message.splitlines()
    if lines and lines[0].startswith("Error parsing override"):
        lines = lines[1:]
    hint = " (an override is key=value)" if any("missing EQUAL" in line for line in lines) else ""
    first = lines[0] if lines else "cannot be parsed"
    return "\n".join([f"Malformed override '{exc.override}': {first}{hint}", *lines[1:]])


def _composition_error(exc: ConfigCompositionException) -> str:
    """Hydra's message; for a key that is not in the config, which key it is and the nearest valid one."""
    cause = exc.__cause__
    message = str(exc)
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and "not in struct" in str(cause):
        parent = cause.parent_node
        keys = [str(k) for k in parent if k != "hydra"] if isinstance(parent, DictConfig) else []
        full_key = str(cause.full_key)
        where = full_key.rpartition(".")[0] or "the top level"
        if "." not in full_key:  # a group chosen on the command line (task=, suite=) is a top-level key too
            from clipeval.config import registry

            keys += [g for g in registry.chosen_groups() if g not in keys]
        lines = message.splitlines()
        from clipeval.config.schema import PASSED_ON, unused_task_key

        if cause.key in PASSED_ON and isinstance(parent, DictConfig) and "datasets" in parent:  # a task's
            data = OmegaConf.to_container(parent, resolve=False)
            return (
                f"{lines[0].rstrip('.')}: {unused_task_key(data, str(cause.key), where)}"  # not "+ to add it": ignored
            )
        unknown = f"{where} has no key '{cause.key}'. {did_you_mean(str(cause.key), keys)}"
        if nearest(str(cause.key), keys):  # a typo: Hydra's advice to add the key with '+' would mislead
            lines = [line for line in lines if not line.startswith("To append to your config use +")]
        return "\n".join([f"{lines[0].rstrip('.')}: {unknown}", *lines[1:]])
    if cause is not None:
        message += "\n" + str(cause).split("\n    full_key:")[0]
    return message
