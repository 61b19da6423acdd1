"""Sweeps (``-m``) on any Hydra launcher: jobs that fail alone, one summary at the end.

A sweep's jobs run in this process one after another (Hydra's basic launcher, the default), in parallel
processes on this machine (``hydra/launcher=joblib``, ``hydra/launcher=submitit_local``) or as a SLURM job
array (``hydra/launcher=submitit_slurm``); the launchers' configs are clipeval's own, in conf/hydra/launcher/.
Whatever the launcher:

- every job's config is checked before any job runs (:func:`clipeval.cli.check_configs`, in this process);
- a job that fails on something the user can fix ends alone (:class:`JobFailed`, raised out of the job rather
  than exiting, which under a parallel launcher would take the jobs running beside it down too): it logs its
  message (its clipeval.log, and the console where the job has one) and the other jobs run to their end;
- a job that finishes writes its run directory and its own store entry (each file whole or not at all, so no
  lock is needed), and the jobs share the cache: an entry that several need at once is computed by one of
  them while the others wait for it and read it (:meth:`clipeval.cache.TensorCache.lock`);
- the sweep ends with one line per job (its run directory, or why it failed), printed by the process that
  launched the jobs (:func:`finish`), then: exit 2 with each failed job's message when jobs failed on something
  the user can fix; the first job's traceback when a job met a bug (its whole traceback is also in that job's
  clipeval.log: a traceback does not travel back from another process); exit 0 otherwise;
- Ctrl-C: a job in this process says what it interrupted; jobs in other processes on this machine are stopped
  by their launcher (each one that finished has written its results), SLURM jobs go on, and the message says
  which jobs were running and which of these it is.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import importlib.util
import logging
import shutil
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from clipeval.errors import ClipevalError
from clipeval.interrupt import during
from clipeval.logs import shown, to_log_files

log = logging.getLogger(__name__)

#: the launchers clipeval ships a config for (conf/hydra/launcher/), and the package each needs
LAUNCHER_PACKAGES = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
}


class JobFailed(ClipevalError):
    """A sweep job's user error: raised out of the job, so that the launcher (in this process or another) carries
    it back to the sweep, which goes on with the other jobs."""


_JOB: contextvars.ContextVar[int | None] = contextvars.ContextVar("clipeval_sweep_job", default=None)
_BESIDE_OTHERS: contextvars.ContextVar[bool] = contextvars.ContextVar("clipeval_sweep_parallel", default=False)


def current_job() -> int | None:
    """The number of the sweep job running here (None outside a sweep's job)."""
    return _JOB.get()


def beside_other_jobs() -> bool:
    """Whether this is a sweep's job that a launcher runs beside others (any launcher but Hydra's basic one): its
    console is shared, so a progress bar would be drawn over the other jobs' (:mod:`clipeval.progress` logs lines
    instead), and its log lines name the job."""
    return _BESIDE_OTHERS.get()


def _name_the_job_in_log_lines(number: int) -> None:
    """``[job #N]`` after the time of each log line of this job (on the console and in its clipeval.log)."""
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter
        fmt = getattr(formatter, "_fmt", None) or ""
        if formatter is not None and "[%(name)s]" in fmt:
            handler.setFormatter(
                logging.Formatter(fmt.replace("[%(name)s]", f"[job #{number}][%(name)s]"), formatter.datefmt)
            )


class sweep_job:  # noqa: N801 (a decorator)
    """The Hydra task function ``app`` as a sweep's job, when Hydra runs it as one (``-m``): inside it,
    :func:`current_job` is the job's number (``clipeval.cli.fail`` then raises :class:`JobFailed`), its user error
    is logged, and a bug's traceback is written to the job's log files before it is raised.

    An object rather than a closure: a launcher that runs jobs in other processes pickles the task function."""

    def __init__(self, app: Callable[[Any], Any]):
        self.app = app
        functools.update_wrapper(self, app)

    def __call__(self, cfg: Any) -> Any:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra = HydraConfig.get()
        if hydra.mode != RunMode.MULTIRUN:
            return self.app(cfg)
        number = int(hydra.job.num)
        beside_others = hydra.runtime.choices.get("hydra/launcher") not in (None, "basic")
        if beside_others:
            _name_the_job_in_log_lines(number)
        token, parallel = _JOB.set(number), _BESIDE_OTHERS.set(beside_others)
        try:
            return self.app(cfg)
        except JobFailed as exc:
            log.error("Sweep job #%d failed: %s", number, exc)
            raise
        except Exception:
            to_log_files(traceback.format_exc().rstrip(), name=__name__)
            raise
        finally:
            _JOB.reset(token)
            _BESIDE_OTHERS.reset(parallel)


def check_launcher(overrides: Sequence[str]) -> None:
    """ClipevalError for ``hydra/launcher=<name>`` when the package the launcher needs is not installed, or when
    ``submitit_slurm`` has no ``sbatch`` or ``srun`` (not a SLURM login node); nothing else is looked at."""
    for arg in overrides:
        key, _, name = arg.partition("=")
        if key.lstrip("+") != "hydra/launcher" or name not in LAUNCHER_PACKAGES:
            continue
        module, package = LAUNCHER_PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise ClipevalError(
                f"hydra/launcher={name} needs the {package} package, which is not installed: "
                f"pip install 'clipeval[launchers]' (or pip install {package})."
            )
        missing = [command for command in ("sbatch", "srun") if shutil.which(command) is None]
        if name == "submitit_slurm" and missing:
            raise ClipevalError(
                "hydra/launcher=submitit_slurm submits the sweep's jobs with SLURM's sbatch and srun, and "
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not on this machine's PATH: run the "
                "command on the cluster's login node, or try the sweep on this machine with "
                "hydra/launcher=submitit_local or hydra/launcher=joblib."
            )


# ---------------------------------------------------------------- the sweeper (hydra_plugins/clipeval_sweeps)


class Recorder:
    """Stands in for a sweeper's launcher: launches each batch through it, keeps every job's return, and hands the
    sweeper returns that do not raise (Hydra's basic sweeper raises the first failed job's error once a batch is
    done, which would leave the sweep's other jobs out of its summary)."""

    def __init__(self, launcher: Any, name: str):
        self.launcher, self.name = launcher, name
        self.returns: list[Any] = []

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[Any]:
        from hydra.core.utils import JobStatus

        count = len(job_overrides)
        numbers = f"#{initial_job_idx}" if count == 1 else f"#{initial_job_idx}-#{initial_job_idx + count - 1}"
        what = (
            None  # the basic launcher's jobs run in this process: the command line names the job, or the last one done
        )
        if self.name == "submitit_slurm":
            what = (
                f"waiting for sweep job(s) {numbers} on SLURM; the jobs go on (squeue lists them, scancel stops them), "
                "and each adds its results to the store"
            )
        elif self.name != "basic":
            what = (
                f"running sweep job(s) {numbers} in other processes (hydra/launcher={self.name}); the launcher stopped "
                "those still running, and each that had finished wrote its results"
            )
        with during(what) if what else contextlib.nullcontext():
            returned = list(self.launcher.launch(job_overrides, initial_job_idx=initial_job_idx))
        self.returns += returned
        return [dataclasses.replace(r, status=JobStatus.COMPLETED, _return_value=None) for r in returned]


def run_sweep(sweeper: Any, arguments: list[str], sweep: Callable[[list[str]], Any]) -> Any:
    """``sweep(arguments)`` (Hydra's basic sweep) with ``sweeper.launcher`` recorded, then :func:`finish`."""
    choices = sweeper.config.hydra.runtime.choices
    recorder = Recorder(sweeper.launcher, str(choices.get("hydra/launcher") or "basic"))
    sweeper.launcher = recorder
    try:
        sweep(arguments)
    finally:
        sweeper.launcher = recorder.launcher
    finish(recorder.returns, shown(str(sweeper.config.hydra.sweep.dir)), recorder.name)
    return recorder.returns


@dataclasses.dataclass
class Outcome:
    number: int
    overrides: str  # the job's swept values
    run_dir: str
    store: str | None
    error: BaseException | None

    @property
    def user_error(self) -> bool:
        return isinstance(self.error, ClipevalError)


def outcomes(returns: Sequence[Any]) -> list[Outcome]:
    from hydra.core.utils import JobStatus
    from omegaconf import OmegaConf

    swept = _swept([list(r.overrides or []) for r in returns])
    found = []
    for r, overrides in zip(returns, swept, strict=True):
        hydra = r.hydra_cfg.hydra
        store = OmegaConf.select(r.cfg, "store", default=None) if r.cfg is not None else None
        failed = r.status == JobStatus.FAILED
        error = r._return_value if failed else None
        if failed and not isinstance(error, BaseException):
            error = RuntimeError(repr(error))
        found.append(
            Outcome(int(hydra.job.num), overrides, str(hydra.runtime.output_dir), store and shown(store), error)
        )
    return sorted(found, key=lambda o: o.number)


def _swept(overrides: list[list[str]]) -> list[str]:
    """Each job's overrides whose value is not the same in every job (none when there is one job)."""
    values: dict[str, list[str]] = {}
    for job in overrides:
        for arg in job:
            key, _, value = arg.partition("=")
            values.setdefault(key, []).append(value)
    varying = {k for k, v in values.items() if len(set(v)) > 1 or len(v) < len(overrides)}
    return [" ".join(a for a in job if a.partition("=")[0] in varying) for job in overrides]


def _jobs(count: int) -> str:
    return "1 job" if count == 1 else f"{count} jobs"


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def finish(returns: Sequence[Any], sweep_dir: str, launcher: str) -> None:
    """Print one line per job; raise when jobs failed: ClipevalError naming each job that failed on something the
    user can fix (exit 2), or the first job's error that is a bug (its traceback)."""
    if not returns:
        return
    done = outcomes(returns)
    finished = [o for o in done if o.error is None]
    lines = [f"Sweep of {_jobs(len(done))} (hydra/launcher={launcher}) in {sweep_dir}:"]
    for o in done:
        label = f"  #{o.number}" + (f" {o.overrides}" if o.overrides else "")
        if o.error is None:
            lines.append(f"{label}: finished, {o.run_dir}")
        elif o.user_error:
            lines.append(f"{label}: failed: {_first_line(o.error)}")
        else:
            lines.append(
                f"{label}: failed on an unexpected error (a bug), {type(o.error).__name__}: {_first_line(o.error)} "
                f"(its traceback is in {o.run_dir}/clipeval.log)"
            )
    for store in sorted({o.store for o in finished if o.store}):
        lines.append(
            f"Each finished job added its results to the store {store} (clipeval report store --store {store})."
        )
    print("\n".join(lines), flush=True)
    bugs = [o for o in done if o.error is not None and not o.user_error]
    if bugs:
        raise bugs[0].error
    failed = [o for o in done if o.error is not None]
    if not failed:
        return
    messages = [
        f"Sweep job #{o.number}" + (f" ({o.overrides})" if o.overrides else "") + f": {o.error}" for o in failed
    ]
    if not finished:
        end = f"All {_jobs(len(done))} of the sweep failed." if len(done) > 1 else ""
    elif len(finished) == 1:
        end = (
            f"{len(failed)} of {_jobs(len(done))} failed; the other one finished and wrote its results (listed above)."
        )
    else:
        end = (
            f"{len(failed)} of {_jobs(len(done))} failed; the {len(finished)} others finished and wrote their results "
            "(listed above)."
        )
    raise ClipevalError("\n".join(messages + ([end] if end else [])))
