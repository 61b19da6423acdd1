"""One evaluation run: config in, results.json and store entry out.

    config -> model + task(s) -> sources -> features (cached) -> evaluators -> records
           -> [suite: effective robustness against baselines, figure] -> results

``task=`` runs one task; otherwise ``suite=`` runs each of its tasks with the same model
and cache, and then its robustness report. A chosen task takes precedence over the suite.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from clipeval.atomic import atomic_write
from clipeval.config.construct import build
from clipeval.config.paths import cache_dir
from clipeval.config.runtime import Runtime
from clipeval.errors import ClipevalError
from clipeval.features.bank import FeatureBank
from clipeval.features.cache import TensorCache, use_file_digests
from clipeval.features.encode import FeatureSet
from clipeval.models.base import DualEncoder, check_dual_encoder
from clipeval.models.deferred import load_deferred
from clipeval.results.record import Record, add_to_store, results_document, scored_data_key, write_json
from clipeval.run.task import Task, load_task

log = logging.getLogger(__name__)

# what a suite prints for the tasks its robustness table does not cover (probes, attacks)
SUMMARY_METRICS = ("top1", "k_matching_zero_shot", "clean_top1", "robust_top1:worst")


class RunContext:
    """What an evaluator may use: the model, its task, the shared features and classifiers."""

    def __init__(self, bank: FeatureBank, task: Task, run_dir: Path, predictions_dir: Path):
        self.bank, self.task, self.run_dir, self.predictions_dir = bank, task, run_dir, predictions_dir
        self.model, self.runtime = bank.model, bank.runtime
        self.skipped: dict[str, list[tuple[str, str]]] = {}
        #: what an evaluator left out or changed, and why (results.json's "notes")
        self.notes: list[dict[str, Any]] = []
        #: the evaluator that failed, which ended the task
        self.failure: Failure | None = None
        self._evaluator: str | None = None

    def features(self, dataset: str) -> FeatureSet:
        if dataset not in self.task.sources:
            raise ClipevalError(f"Task '{self.task.name}' has no dataset '{dataset}' (has: {list(self.task.sources)}).")
        fs = self.bank.features(self.task.sources[dataset])
        if fs.skipped:
            self.skipped[dataset] = fs.skipped
        return fs

    def classifier(self, classnames: list[str], templates: list[str]) -> torch.Tensor:
        return self.bank.classifier(classnames, templates)

    def check_labels(self, dataset: str, labels: torch.Tensor, num_classes: int) -> None:
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ClipevalError(
                f"Dataset '{dataset}' has labels up to {int(labels.max())} but the classifier has {num_classes} classes. "
                "Check task.classnames (one per class, in label order) or task.class_subset."
            )

    def save_predictions(self, dataset: str, ids: list[str], labels: torch.Tensor, topk: torch.Tensor) -> Path:
        """Per-sample predictions, so two runs can later be compared sample by sample."""
        import pyarrow as pa  # not pandas: pyarrow alone imports in a third of the time
        import pyarrow.parquet as pq

        table = pa.table({"sample_id": ids, "label": labels.numpy(), "topk": topk.numpy().tolist()})
        return atomic_write(self.predictions_dir / f"{dataset}.parquet", lambda f: pq.write_table(table, f))

    def note(self, message: str, **details: Any) -> None:
        """Log a warning and keep it, with the task, the evaluator and ``details``, for results.json."""
        log.warning("Task %s, evaluator %s: %s", self.task.name, self._evaluator, message)
        self.notes.append({"task": self.task.name, "evaluator": self._evaluator, "message": message, **details})

    def evaluate(self) -> list[Record]:
        """The records of each evaluator in turn, up to the first that raises.

        That one's exception is kept in :attr:`failure` (not raised), so that the records of
        the evaluators that finished can still be written; :func:`run` ends the run with it.
        """
        records: list[Record] = []
        for name, evaluator in self.task.evaluators.items():
            log.info("Task %s: running evaluator %s", self.task.name, name)
            self._evaluator = name
            try:
                records += evaluator.evaluate(self)
            except Exception as exc:  # kept, and raised again by run() once the results are written
                self.failure = Failure(self.task.name, name, exc)
                log.error("Task %s: evaluator %s failed: %s", self.task.name, name, exc)
                break
            finally:
                self._evaluator = None
        return records


@dataclasses.dataclass
class Failure:
    """An evaluator that raised: recorded in results.json, then raised again once the results are written."""

    task: str
    evaluator: str
    error: Exception

    def to_json(self) -> dict[str, str]:
        return {
            "task": self.task,
            "evaluator": self.evaluator,
            "type": type(self.error).__name__,
            "error": str(self.error),
        }

    def raise_again(self, where: Path) -> None:
        """ClipevalError: a new one naming the evaluator and where the finished records are; else the bug itself."""
        if isinstance(self.error, ClipevalError):
            raise ClipevalError(
                f"Evaluator '{self.evaluator}' of task '{self.task}' failed: {self.error}\n"
                f"The records of the evaluators that finished before it are in {where} and the store."
            ) from self.error
        raise self.error


@dataclasses.dataclass
class Evaluation:
    """What the tasks of a run produced, up to the first failure."""

    records: list[Record]
    skipped: dict[str, list[list[str]]]
    notes: list[dict[str, Any]]
    failure: Failure | None = None


@dataclasses.dataclass
class Selection:
    """What a run evaluates: one task, or a suite's tasks and its robustness report."""

    name: str
    version: str
    tasks: list[DictConfig]
    robustness: DictConfig | None = None

    @property
    def is_suite(self) -> bool:
        return self.robustness is not None or len(self.tasks) > 1

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
    """
    cache = TensorCache(cache_dir(cfg.get("cache_dir")), enabled=bool(cfg.runtime.get("cache", True)))
    with use_file_digests(cache.digests):
        return _run(cfg, run_dir, cache)


def _run(cfg: DictConfig, run_dir: Path, cache: TensorCache) -> dict[str, Any]:
    runtime = Runtime.create(**OmegaConf.to_container(cfg.runtime, resolve=True))
    runtime.seed_everything()
    selection = Selection.from_config(cfg)
    tasks = {t.name: t for t in map(load_task, selection.tasks)}
    baselines = None
    if selection.robustness is not None:
        from clipeval.report.robustness import load_baselines

        baselines = load_baselines(selection.robustness)
    model = load_model(cfg.model, runtime, cache)
    evaluation = _evaluate(selection, tasks, FeatureBank(model, runtime, cache), run_dir)
    records, failure = evaluation.records, evaluation.failure
    extra: dict[str, Any] = {"run_dir": str(run_dir.resolve()), "skipped": evaluation.skipped}
    extra["data"] = {  # which data were scored: dataset (named as its records) -> content key
        (f"{task.name}/" if selection.is_suite else "") + name: scored_data_key(source.key, runtime.limit)
        for task in tasks.values()
        for name, source in task.sources.items()
    }
    if evaluation.notes:
        extra["notes"] = evaluation.notes
    if failure is not None:
        extra["failures"] = [failure.to_json()]
    report, report_error = None, None
    if baselines is not None and failure is not None:
        extra["effective_robustness_error"] = (
            f"not computed: evaluator '{failure.evaluator}' of '{failure.task}' failed"
        )
    elif baselines is not None:
        try:
            report = _robustness(selection, records, tasks, baselines, model, run_dir)
        except Exception as exc:  # raised again once the results are written
            report_error, extra["effective_robustness_error"] = exc, str(exc)
        else:
            records += report.records()
            extra["effective_robustness"] = report.to_json()
    config = OmegaConf.to_container(cfg, resolve=True)
    document = results_document(model=model, task=selection, records=records, config=config, extra=extra)
    write_json(run_dir / "results.json", document)
    stored = add_to_store(Path(cfg.store), document)
    log.info("Wrote %s and %s", run_dir / "results.json", stored)
    if failure is not None:
        failure.raise_again(run_dir / "results.json")
    if report_error is not None:
        raise report_error
    print(_summary(document, selection, report, model) + format_notes(document))
    return document


def _evaluate(selection: Selection, tasks: dict[str, Task], bank: FeatureBank, run_dir: Path) -> Evaluation:
    """Every task's records (dataset names prefixed by the task in a suite), skipped images and notes.

    The first evaluator that fails ends the evaluation: the tasks after it are not run.
    """
    done = Evaluation([], {}, [])
    for task in tasks.values():
        ctx = RunContext(bank, task, run_dir, run_dir / "predictions" / (task.name if selection.is_suite else ""))
        task_records = ctx.evaluate()
        prefix = f"{task.name}/" if selection.is_suite else ""  # datasets of different tasks may share a name
        done.records += [dataclasses.replace(r, dataset=prefix + r.dataset) for r in task_records]
        done.skipped |= {prefix + d: [list(s) for s in v] for d, v in ctx.skipped.items()}
        done.notes += ctx.notes
        if ctx.failure is not None:
            done.failure = ctx.failure
            break
    return done


def _robustness(
    selection: Selection,
    records: list[Record],
    tasks: dict[str, Task],
    baselines: Any,
    model: DualEncoder,
    run_dir: Path,
):
    from clipeval.report.robustness import build_report

    report = build_report(selection.robustness, records, tasks, baselines)
    for spec in selection.robustness.get("figures") or []:
        draw = build({k: v for k, v in spec.items() if k != "file"} | {"_partial_": True}, f"figure {spec.get('file')}")
        log.info("Wrote figure %s", draw(report, model.name, run_dir / spec.file))
    return report


def _summary(document: dict[str, Any], selection: Selection, report, model: DualEncoder) -> str:
    """A task's records; for a suite, its robustness table and then the tasks it does not cover (probes, attacks)."""
    if report is None:
        return format_records(document)
    from clipeval.report.robustness import format_report

    table = format_report(report, model.name, f"{selection.name} (v{selection.version})")
    covered = {d.split("/")[0] for s in report.shifts for d in s.shift.datasets + s.in_distribution.datasets}
    covered |= {d.split("/")[0] for d in report.in_distribution.datasets}
    rest = [
        r for r in document["records"] if r["dataset"].split("/")[0] not in covered and r["metric"] in SUMMARY_METRICS
    ]
    return table + ("\n\n" + format_records({**document, "records": rest}) if rest else "")


def format_notes(document: dict[str, Any]) -> str:
    """The run's notes (what an evaluator left out, and why), one line each after a blank line; '' if none."""
    lines = [f"note: {n['task']}/{n['evaluator']}: {n['message']}" for n in document.get("notes") or []]
    return "\n\n" + "\n".join(lines) if lines else ""


def format_records(document: dict[str, Any]) -> str:
    head = f"{document['task']['name']} (v{document['task']['version']}) · {document['model']['name']}"
    width = max([20, *(len(r["dataset"]) for r in document["records"])])
    lines = [head, f"{'dataset':<{width}} {'metric':<22} {'value':>7}  {'95% interval':<17} {'n':>7}"]
    for r in document["records"]:
        lo, hi = r["ci"]
        spread = f"  sd {r['std']:.4f}" if r.get("std") is not None else ""
        lines.append(
            f"{r['dataset']:<{width}} {r['metric']:<22} {r['value']:>7.4f}  [{lo:.4f}, {hi:.4f}] {r['n']:>7}{spread}"
        )
    return "\n".join(lines)
