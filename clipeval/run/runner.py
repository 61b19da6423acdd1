"""One evaluation run: config in, a results document (results.json and a store entry) out.

    config -> model + task(s) -> sources -> features (cached) -> evaluators -> records
           -> [suite: baseline points, effective robustness from the records] -> results document
           -> figures and the printed summary, drawn from the document by clipeval.report

``task=`` runs one task; otherwise ``suite=`` runs each of its tasks with the same model
and cache, and then its robustness report.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from clipeval.atomic import atomic_write, require_writable, safe_file_name
from clipeval.cache import TensorCache, use_cache
from clipeval.config.construct import build, check_targets
from clipeval.config.paths import cache_dir
from clipeval.config.runtime import Runtime
from clipeval.config.schema import validate_config
from clipeval.contracts import DualEncoder
from clipeval.distributed import World, in_step, joined, world
from clipeval.errors import ClipevalError
from clipeval.features.bank import FeatureBank
from clipeval.features.encode import CHUNK_KIND
from clipeval.interrupt import during, milestone
from clipeval.logs import route_library_output, shown, to_log_files
from clipeval.models.base import check_dual_encoder, weights_label
from clipeval.models.deferred import load_deferred
from clipeval.results.record import Record
from clipeval.results.samples import Samples
from clipeval.results.store import ResultsDocument, add_to_store, results_document, write_json
from clipeval.run.context import Failure, RunContext
from clipeval.run.task import Task, load_task

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Evaluation:
    """What the tasks of a run produced, up to the first failure."""

    records: list[Record] = dataclasses.field(default_factory=list)
    samples: dict[str, Samples] = dataclasses.field(default_factory=dict)
    frames: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    skipped: dict[str, dict[str, list[list[str]]]] = dataclasses.field(default_factory=dict)
    notes: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    failure: Failure | None = None
    #: Ctrl-C during a task: what was interrupted (the tasks before it finished, and are written)
    interrupted: str | None = None
    finished: int = 0


@dataclasses.dataclass
class Selection:
    """What a run evaluates: one task, or a suite's tasks and its robustness report."""

    name: str
    version: str
    tasks: list[DictConfig]
    robustness: DictConfig | None = None
    benchmark: DictConfig | None = None

    @property
    def is_suite(self) -> bool:
        return self.robustness is not None or len(self.tasks) > 1

    @property
    def task_versions(self) -> dict[str, str]:
        return {str(t.name): str(t.get("version", "1")) for t in self.tasks}

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Selection:
        if cfg.get("task"):
            return cls(str(cfg.task.name), str(cfg.task.get("version", "1")), [cfg.task])
        if cfg.get("suite"):
            suite = cfg.suite
            return cls(
                str(suite.name),
                str(suite.get("version", "1")),
                list(suite.tasks.values()),
                suite.get("robustness"),
                suite.get("benchmark"),
            )
        raise ClipevalError("Nothing to evaluate: choose a task (task=<name>) or a suite (suite=<name>). See --help.")


def load_model(cfg: DictConfig, runtime: Runtime, cache: TensorCache) -> DualEncoder:
    """The model of ``cfg``; its weights load only once something has to be encoded (see models.deferred)."""

    def construct() -> DualEncoder:
        return check_dual_encoder(
            build(cfg, f"model '{cfg.get('name', cfg.get('_target_'))}'"), str(cfg.get("_target_"))
        )

    return load_deferred(OmegaConf.to_container(cfg, resolve=True), construct, runtime.device, cache)


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Evaluate ``cfg.model`` on the selected task or suite; returns the results document it wrote.

    Everything that can fail on the user's input (data, baselines, weights) is checked before
    the first image is encoded. Once evaluation has started, results.json and the store entry
    are always written: when an evaluator raises, the run stops there, writes the records of
    the evaluators that finished with the failure (``failures``: task, evaluator, type,
    error), and then raises: a ClipevalError naming the evaluator (exit 2), or the original
    exception with its traceback (a bug). The same holds when the robustness report fails.
    Evaluators' notes (what they left out, and why) go to ``notes`` and after the summary.
    Data sources key their files with the digest memo of this run's cache.

    A run directory or store that cannot be written (read-only, full, a file in the way) is a
    ClipevalError before anything is encoded; when one fails while the results are written, the
    others are still written and the ClipevalError says which folder failed and where the results
    are. A cache folder that cannot be written is a warning (see :class:`TensorCache`).
    """
    settings = validate_config(cfg)
    _record_normalised_runtime(cfg, settings.runtime.model_dump())
    check_targets(cfg)  # every object's options, before anything is built (the model's construction is deferred)
    _guard_log_files()
    route_library_output()
    with joined(settings.runtime.device) as ranks:
        return _run_in(cfg, Path(run_dir), settings, ranks)


def _run_in(cfg: DictConfig, run_dir: Path, settings: Any, ranks: World) -> dict[str, Any]:
    """The run, in this process's rank (rank 0 of 1 outside torchrun): rank 0 alone writes results."""
    run_dir, store = Path(shown(run_dir)), Path(shown(cfg.store))  # messages show paths absolute
    folders = [
        (run_dir, "run directory", f"{_run_dir_key()}=DIR"),
        (store, "results store", "store=DIR (or CLIPEVAL_STORE)"),
    ]
    for folder, what, how in folders if ranks.is_main else []:
        require_writable(folder, what, how, "nothing was run")
    writes = None if ranks.is_main else [CHUNK_KIND]  # the other ranks save their chunks of features only
    cache = TensorCache(cache_dir(settings.cache_dir), enabled=settings.runtime.cache, writes=writes)
    with use_cache(cache):
        try:
            return _run(cfg, run_dir, cache)
        finally:
            if ranks.is_main and (cache.read or cache.written):
                log.info("%s", cache.summary())
            if ranks.distributed and in_step() and not isinstance(sys.exc_info()[1], KeyboardInterrupt):
                # the other ranks leave (and may exit non-zero, which makes torchrun stop every rank) only once
                # rank 0 has written what finished; Ctrl-C reaches every rank from torchrun, so no one waits then
                ranks.agree(lambda: None, "finishing the run")


def _run_dir_key() -> str:
    """The option that chooses where the run directory is: ``hydra.sweep.dir`` in a sweep (``-m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    return "hydra.sweep.dir" if multirun else "hydra.run.dir"


def _record_normalised_runtime(cfg: DictConfig, runtime: dict[str, Any]) -> None:
    """Put the checked runtime values back (``cache: "no"`` becomes false) so results.json, and whatever
    interpolates ``${runtime.*}``, holds what runs."""
    for key, value in runtime.items():
        given = OmegaConf.select(cfg.runtime, key)
        if key in cfg.runtime and (type(given), given) != (type(value), value):  # 1 == True, yet not a flag
            cfg.runtime[key] = value


def _run(cfg: DictConfig, run_dir: Path, cache: TensorCache) -> dict[str, Any]:
    store = Path(shown(cfg.store))
    runtime = Runtime.create(**OmegaConf.to_container(cfg.runtime, resolve=True))
    runtime.seed_everything()
    selection = Selection.from_config(cfg)
    tasks = {t.name: t for t in map(load_task, selection.tasks)}
    benchmark = None
    if selection.benchmark is not None:  # each dataset's record, checked before anything is encoded
        from clipeval.results.benchmark import benchmark_spec

        benchmark = benchmark_spec(OmegaConf.to_container(selection.benchmark, resolve=True), tasks)
        absent = [e for e in benchmark.entries if e.missing and e.task in tasks]
        if absent and all(e.missing for e in benchmark.entries):
            raise ClipevalError(
                f"Suite '{selection.name}': the data of none of its {len(benchmark.entries)} datasets is present "
                f"({absent[0].name}: {absent[0].missing}; the others alike). Download the webdataset mirrors under the "
                "data root (each task's README says how), or set data_root=DIR (or CLIPEVAL_DATA) to where they are."
            )
    baselines = None
    if selection.robustness is not None:
        from clipeval.run.robustness import load_baselines

        baselines = load_baselines(selection.robustness)
    with during("loading the model; no results were written"):
        model = load_model(cfg.model, runtime, cache)
    evaluation = _evaluate(tasks, FeatureBank(model, runtime, cache))
    if not world().is_main:  # rank 0 has the same records, and writes them
        return _other_rank_ends(evaluation)
    interrupted = evaluation.interrupted
    if interrupted is not None and not evaluation.records:
        raise KeyboardInterrupt(f"{interrupted}; no results were written")
    extra: dict[str, Any] = {"run_dir": str(run_dir.resolve()), "skipped": evaluation.skipped}
    extra["data"] = {  # which data were scored: task -> dataset -> content key and limit
        task.name: {name: {"key": source.key, "limit": runtime.limit} for name, source in task.sources.items()}
        for task in tasks.values()
    }
    extra["notes"] = evaluation.notes
    failure = evaluation.failure
    if failure is not None:
        extra["failures"] = [failure.to_json()]
    report_error: Exception | None = None
    if interrupted is not None:
        extra["interrupted"] = f"{interrupted}: {evaluation.finished} of {len(tasks)} tasks finished"
    if baselines is not None and failure is not None:
        extra["effective_robustness_error"] = (
            f"not computed: evaluator '{failure.evaluator}' of '{failure.task}' failed"
        )
    elif baselines is not None and interrupted is not None:
        extra["effective_robustness_error"] = "not computed: the run was interrupted"
    elif baselines is not None:
        try:
            evaluation.records += _add_robustness(extra, selection, tasks, baselines, evaluation.records)
        except KeyboardInterrupt:  # the tasks' records are kept; the report can be made later (`report refit`)
            interrupted = "computing the effective-robustness report"
            extra["interrupted"] = f"{interrupted}: all {len(tasks)} tasks finished"
            extra["effective_robustness_error"] = "not computed: the run was interrupted"
        except Exception as exc:  # raised again once the results are written
            report_error, extra["effective_robustness_error"] = exc, str(exc)
    if benchmark is not None:
        evaluation.records += _add_benchmark(extra, selection.name, benchmark, evaluation.records)
    config = OmegaConf.to_container(cfg, resolve=True)
    document = results_document(
        model=model,
        selection=selection,
        records=evaluation.records,
        samples=evaluation.samples,
        config=config,
        extra=extra,
        weights=weights_label(config["model"]),
    )
    with during("writing the results (each file is written whole or not at all)"):
        results, stored, problem = _write_results(evaluation, document, run_dir, store)
    if problem is not None:
        if failure is not None:
            log.error(problem)
            failure.raise_again(results or stored or run_dir / "results.json")
        raise ClipevalError(problem)
    log.info("Wrote %s and %s", results, stored)
    milestone(f"the results were written to {results} and {stored}")  # what Ctrl-C says from here on
    if interrupted is not None:
        finished = f"the {evaluation.finished} finished task(s)" if evaluation.interrupted else "all tasks"
        raise KeyboardInterrupt(f"{interrupted}; the records of {finished} are written to {results} and {stored}")
    if failure is not None:
        failure.raise_again(run_dir / "results.json")
    if report_error is not None:
        raise report_error
    from clipeval.report.run_summary import draw_run_figures, summary

    parsed = ResultsDocument.parse(document, run_dir / "results.json")
    try:
        with during(f"drawing the run's figures; the results are already in {results} and {stored}"):
            for path in draw_run_figures(parsed, run_dir, figures=_figure_specs(selection)):
                log.info("Wrote figure %s", path)
    except OSError as exc:
        _show_summary(summary(parsed))
        raise ClipevalError(
            f"Could not write the figures to the run directory {run_dir} ({exc}). "
            f"The results are in {results} and {stored}."
        ) from exc
    _show_summary(summary(parsed))
    return document


def _other_rank_ends(evaluation: Evaluation) -> dict[str, Any]:
    """A rank other than 0 under torchrun: it writes nothing; it fails as rank 0 does, or ends with no document."""
    if evaluation.failure is not None:
        raise evaluation.failure.error
    if evaluation.interrupted is not None:
        raise KeyboardInterrupt(evaluation.interrupted)
    return {}


def _show_summary(text: str) -> None:
    """The run's summary tables: printed, and written to the run's log file (clipeval.log) too."""
    print(text)
    to_log_files(f"Summary:\n{text}")


def _write_results(
    evaluation: Evaluation, document: dict[str, Any], run_dir: Path, store: Path
) -> tuple[Path | None, Path | None, str | None]:
    """(results.json, the store entry, what failed): each folder is written even when the other fails.

    When neither results.json nor the store entry could be written, the document goes to a new file in
    the system's temporary folder, which the message names."""
    results = stored = None
    failed = {}
    try:
        _write_predictions(evaluation, run_dir)
    except OSError as exc:
        failed["predictions"] = exc
    try:
        results = write_json(run_dir / "results.json", document)
    except OSError as exc:
        failed["run"] = exc
    try:
        stored = add_to_store(store, document)
    except OSError as exc:
        failed["store"] = exc
    if not failed:
        return results, stored, None
    what = []
    if "run" in failed:
        what.append(f"to the run directory {run_dir} ({failed['run']})")
    elif "predictions" in failed:
        what.append(f"the per-sample predictions to {run_dir / 'predictions'} ({failed['predictions']})")
    if "store" in failed:
        what.append(f"to the results store {store} ({failed['store']})")
    message = f"Could not write {' nor '.join(what)}."
    if results is None and stored is None:
        try:
            name = f"clipeval-results-{document['run_id']}.json"
            results = write_json(Path(tempfile.gettempdir()) / name, document)
        except OSError as exc:
            return None, None, f"{message} The results could not be written anywhere ({exc})."
    message += f" The results document is in {' and '.join(str(p) for p in (results, stored) if p is not None)}"
    if stored is None:
        message += "; copy it into the store to use it with `clipeval report` and `clipeval check`"
    return results, stored, message + "."


def _guard_log_files() -> None:
    """A log file that cannot be written (its disk filled up) is one warning, then the console alone,
    rather than a traceback on every log line."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handleError = functools.partial(_log_file_failed, handler)  # type: ignore[method-assign]


def _log_file_failed(handler: logging.FileHandler, record: logging.LogRecord) -> None:
    logging.getLogger().removeHandler(handler)
    print(
        f"clipeval: warning: cannot write the log file {handler.baseFilename} ({sys.exc_info()[1]}); "
        "logging to the console only",
        file=sys.stderr,
    )


def _evaluate(tasks: dict[str, Task], bank: FeatureBank) -> Evaluation:
    """Every task's records, kept per-sample data, skipped images and notes.

    The first evaluator that fails ends the evaluation: the tasks after it are not run.
    """
    done = Evaluation()
    for number, task in enumerate(tasks.values(), 1):
        ctx = RunContext(bank, task)
        try:
            with during(f"evaluating task '{task.name}' ({number} of {len(tasks)})"):
                records, failure = ctx.evaluate()
        except KeyboardInterrupt as exc:
            done.interrupted = str(exc)
            break
        done.finished += 1
        done.records += records
        done.samples |= ctx.kept.samples
        done.frames |= ctx.kept.frames
        if ctx.skipped:
            done.skipped[task.name] = {d: [list(s) for s in v] for d, v in ctx.skipped.items()}
        done.notes += ctx.notes
        if failure is not None:
            done.failure = failure
            break
    return done


def prediction_file(run_dir: Path, key: str) -> Path:
    """Where the per-sample data of ``key`` (``<task>/<name>``) are copied: ``predictions/<task>/<name>.parquet``,
    each part a safe file name (:func:`clipeval.atomic.safe_file_name`: no ``:``, ``@`` or other character
    that some file systems or shells refuse). Sample keys in results.json keep their names."""
    task, _, name = key.partition("/")
    return Path(run_dir) / "predictions" / safe_file_name(task) / f"{safe_file_name(name)}.parquet"


def _write_predictions(evaluation: Evaluation, run_dir: Path) -> None:
    """The run directory's copy of the per-sample data, with sample ids (:func:`prediction_file`)."""
    import pyarrow as pa  # not pandas: pyarrow alone imports in a third of the time
    import pyarrow.parquet as pq

    for key, frame in evaluation.frames.items():
        table = pa.table({k: (v if isinstance(v, list) else list(v)) for k, v in frame.items()})
        atomic_write(prediction_file(run_dir, key), lambda f, t=table: pq.write_table(t, f))


def _add_robustness(
    extra: dict[str, Any], selection: Selection, tasks: dict[str, Task], baselines: Any, records: list[Record]
) -> list[Record]:
    """Store the suite's robustness settings and baseline points (``robustness``) and the report computed from
    them and the records (``effective_robustness``); returns its records (task: the suite)."""
    from clipeval.report.robustness import build_report
    from clipeval.run.robustness import robustness_spec

    spec = robustness_spec(selection.robustness, tasks, baselines)
    extra["robustness"] = spec.to_json()
    report = build_report(spec, records)
    extra["effective_robustness"] = report.to_json()
    return [r.with_task(selection.name) for r in report.records()]


def _add_benchmark(extra: dict[str, Any], suite: str, spec: Any, records: list[Record]) -> list[Record]:
    """Store the suite's benchmark settings (``benchmark``: each dataset's record, or why it is missing); returns
    the average's record (task: the suite) when every dataset has its record, else nothing."""
    from clipeval.results.benchmark import benchmark_result

    extra["benchmark"] = spec.to_json()
    average = benchmark_result(spec, records).record(suite)
    return [] if average is None else [average]


def _figure_specs(selection: Selection) -> list[dict[str, Any]]:
    if selection.robustness is None:
        return []
    return [dict(spec) for spec in OmegaConf.to_container(selection.robustness.get("figures") or [], resolve=True)]
