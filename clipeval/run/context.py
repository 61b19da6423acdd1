"""The evaluation context of one task: what its evaluators may use and keep (clipeval.contracts.EvaluationContext)."""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from clipeval.atomic import safe_file_name
from clipeval.config.lists import read_strings
from clipeval.data.captions import no_captions
from clipeval.distributed import world
from clipeval.errors import ClipevalError, PartialRecords
from clipeval.features.bank import FeatureBank
from clipeval.features.encode import AssociationSet, CaptionSet, FeatureSet
from clipeval.results.record import Record, metric_info
from clipeval.results.samples import Samples
from clipeval.results.validate import check_records
from clipeval.run.task import DEFAULT_TEMPLATES, Task

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Kept:
    """Per-sample data an evaluator kept: its arrays by key (for the results document) and the run directory's
    copy with the sample ids (``predictions/<task>/<name>.parquet``, each part a safe file name:
    :func:`clipeval.run.runner.prediction_file`)."""

    samples: dict[str, Samples] = dataclasses.field(default_factory=dict)
    frames: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


class RunContext:
    """The :class:`clipeval.contracts.EvaluationContext` of one task in a run."""

    def __init__(self, bank: FeatureBank, task: Task):
        self.bank, self._task = bank, task
        self.task = task.name
        self.model, self.runtime = bank.model, bank.runtime
        self.skipped: dict[str, list[tuple[str, str]]] = {}
        #: what an evaluator left out or changed, and why (results.json's "notes")
        self.notes: list[dict[str, Any]] = []
        self.kept = Kept()
        self._evaluator: str | None = None
        self._defaulted: set[str] = set()  # datasets noted as prompted with the default template
        self._read: dict[str, FeatureSet] = {}  # the features last handed out, by dataset

    # ---------------------------------------------------------------- reading

    def datasets(self) -> list[str]:
        """The task's datasets whose data is present (an absent optional one is left out; the task said so)."""
        return [d for d in self._task.sources if d not in self._task.missing]

    def features(self, dataset: str) -> FeatureSet:
        fs = self.bank.features(self._task.source(dataset))
        if fs.skipped:
            self.skipped[dataset] = fs.skipped
        self._read[dataset] = fs
        return fs

    def classnames(self, dataset: str) -> list[str]:
        return self._task.classnames(dataset)

    def captions(self, dataset: str) -> CaptionSet:
        """The captions of the images of ``features(dataset)``, in the order of its rows, with their text features
        (encoded in batches once per run and cached). Images that could not be read take their captions with
        them; ClipevalError when the data carries no captions."""
        source = self._task.source(dataset)
        by_image = source.captions() if callable(getattr(source, "captions", None)) else None
        if by_image is None:
            raise no_captions(source, dataset)
        fs = self._read[dataset] if dataset in self._read else self.features(dataset)
        absent = [sid for sid in fs.ids if sid not in by_image]
        if absent:
            raise ClipevalError(
                f"Dataset '{dataset}': image '{absent[0]}' (and {len(absent) - 1} more) has no captions."
            )
        texts, image, ids = [], [], []
        for row, sid in enumerate(fs.ids):
            for j, caption in enumerate(by_image[sid]):
                texts.append(caption)
                image.append(row)
                ids.append(f"{sid}#{j}")
        if fs.skipped:
            self.note(
                f"{len(fs.skipped)} image(s) of '{dataset}' could not be read: they and their captions are left out",
                dataset=dataset,
            )
        return CaptionSet(self.bank.texts(texts), torch.tensor(image, dtype=torch.int64), ids, texts)

    def associations(self, dataset: str, prompt: Callable[[str], str]) -> AssociationSet:
        """The association instances of ``dataset`` (a source with ``instances()``: :mod:`clipeval.data.associations`),
        each cue encoded as ``prompt(cue)`` (in batches, once per run, and cached), each candidate as its row in
        ``features(dataset)``. An instance with a candidate image that was not encoded (unreadable, or beyond
        ``runtime.limit``) is left out, with a note; ClipevalError when the data holds no instances, or none is left."""
        source = self._task.source(dataset)
        instances = source.instances() if callable(getattr(source, "instances", None)) else None
        if not instances:
            raise ClipevalError(
                f"Dataset '{dataset}' ({source.describe()}) holds no association instances (a cue with candidate "
                "images), which this evaluation needs: use task=winogavil or a source with instances()."
            )
        fs = self._read[dataset] if dataset in self._read else self.features(dataset)
        row = {sid: i for i, sid in enumerate(fs.ids)}
        kept = [inst for inst in instances if all(c in row for c in inst.candidates)]
        if len(kept) < len(instances):
            why = (
                f"{len(fs.skipped)} image(s) could not be read" if fs.skipped else "runtime.limit encoded fewer images"
            )
            self.note(
                f"{len(instances) - len(kept)} of the {len(instances)} instances of '{dataset}' are left out: {why}, "
                "and each of these instances has such a candidate",
                dataset=dataset,
                left_out=len(instances) - len(kept),
            )
        if not kept:
            raise ClipevalError(
                f"Dataset '{dataset}': none of its {len(instances)} instances has all its images encoded."
            )
        prompts = [prompt(inst.cue) for inst in kept]
        return AssociationSet(
            self.bank.texts(prompts),
            [torch.tensor([row[c] for c in inst.candidates], dtype=torch.int64) for inst in kept],
            [torch.tensor([c in inst.associations for c in inst.candidates]) for inst in kept],
            [inst.id for inst in kept],
            prompts,
        )

    def templates(self, dataset: str) -> list[str]:
        templates = self._task.templates(dataset)
        source = self._task.source(dataset)
        shipped = getattr(source, "ships_templates", False)
        if shipped and self._task.templates_option is None and not source.templates and dataset not in self._defaulted:
            self._defaulted.add(dataset)
            self.note(
                f"dataset '{dataset}' ({source.describe()}) has no prompt templates "
                "(zeroshot_classification_templates.txt is absent or empty), so its classes are prompted with the "
                f"default template {DEFAULT_TEMPLATES[0]!r} alone; published results used the mirror's templates, so "
                "its scores are not comparable with them. Download the file again or set task.templates.",
                dataset=dataset,
                templates=list(templates),
            )
        return templates

    def classifier(self, dataset: str, classes: Sequence[int] | None = None) -> torch.Tensor:
        """[C, D] prototypes of the dataset's classes; with ``classes`` (indices of its class names), of those
        alone, in that order: the others are not built."""
        names = self.classnames(dataset)
        if classes is not None:
            outside = [i for i in classes if not 0 <= i < len(names)]
            if outside:
                raise ClipevalError(
                    f"Dataset '{dataset}': class indices {outside[:5]} are outside its {len(names)} class names "
                    "(indices count from 0)."
                )
            names = [names[i] for i in classes]
        return self.bank.classifier(names, self.templates(dataset))

    def zero_shot_logits(self, dataset: str, classes: Sequence[int] | None = None) -> torch.Tensor:
        """[N, C] cosine similarities of the dataset's image features with its class prototypes (of ``classes``
        alone, in that order, when given).

        Evaluators ask for a dataset's features (labels, ids) and its logits together: the logits take the
        features already read, so that the pair counts as one read (clipeval.bench counts reads).
        """
        fs = self._read[dataset] if dataset in self._read else self.features(dataset)
        return fs.features @ self.classifier(dataset, classes).T

    def class_groups(self, dataset: str) -> list[list[int]] | None:
        return getattr(self._task.source(dataset), "class_groups", None)

    def sample_metadata(self, dataset: str) -> Mapping[str, Any] | None:
        """Each sample's metadata array by sample id (a source with ``sample_metadata()``), else None."""
        read = getattr(self._task.source(dataset), "sample_metadata", None)
        return None if read is None else read()

    def task_file(self, path: str, what: str = "a task file") -> list[str]:
        """The lines of ``path`` (relative to the task's folder): class subsets, name lists. ``what`` names it in errors."""
        return read_strings(path, what, self._task.dir)

    def images(self, dataset: str, transform: Callable) -> torch.utils.data.Dataset:
        """The raw samples of ``dataset`` through ``transform`` (random access; ClipevalError for a stream)."""
        data = self._task.source(dataset).dataset(transform, None)
        if not hasattr(data, "__len__"):
            raise ClipevalError(f"Dataset '{dataset}' streams; this evaluation needs random access to its samples.")
        return data

    def check_labels(self, dataset: str, labels: torch.Tensor, num_classes: int) -> None:
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ClipevalError(
                f"Dataset '{dataset}' has labels up to {int(labels.max())} but the classifier has {num_classes} classes. "
                "Check task.classnames (one per class, in label order) or task.class_subset."
            )

    # ---------------------------------------------------------------- keeping

    def keep_predictions(
        self,
        dataset: str,
        ids: Sequence[str],
        labels: torch.Tensor,
        topk: torch.Tensor,
        name: str | None = None,
        scores: Mapping[str, torch.Tensor] | None = None,
    ) -> str:
        """Keep ranked predictions ([N, k] class indices) of ``dataset``, with named per-sample ``scores`` ([N] float
        each: the top prediction's confidence); returns the key records name."""
        floats = {k: v.float().numpy() for k, v in (scores or {}).items()}
        frame = {"sample_id": list(ids), "label": labels.numpy(), "topk": topk.numpy().tolist(), **floats}
        return self._keep(name or dataset, Samples.from_arrays(ids, labels.numpy(), topk.numpy(), scores=floats), frame)

    def keep_outcomes(
        self, dataset: str, ids: Sequence[str], labels: torch.Tensor, outcomes: Mapping[str, torch.Tensor], name: str
    ) -> str:
        """Keep named per-sample outcomes of ``dataset``: [N] bool (right or wrong) or [N] float (a score, such as an
        anomaly score) each; returns the key records name."""
        arrays = {k: v.numpy() for k, v in outcomes.items()}
        correct = {k: v for k, v in arrays.items() if v.dtype == bool}
        scores = {k: v.astype("float32") for k, v in arrays.items() if v.dtype != bool}
        samples = Samples.from_arrays(ids, labels.numpy(), correct=correct, scores=scores)
        return self._keep(name, samples, {"sample_id": list(ids), "label": labels.numpy(), **arrays})

    def _keep(self, name: str, samples: Samples, frame: dict[str, Any]) -> str:
        if not name or name.startswith(".") or re.search(r"[/\\\x00-\x1f]", name):
            raise ClipevalError(
                f"Per-sample data need a plain file name (no '/' or '\\', not starting with '.'), not {name!r}: it "
                f"names predictions/{self.task}/<name>.parquet in the run directory (characters other than letters, "
                "digits, '.', '-' and '_' are written as '-')."
            )
        key = f"{self.task}/{name}"
        if key in self.kept.samples:
            raise ClipevalError(f"Task '{self.task}' keeps per-sample data under '{name}' twice; name them apart.")
        same_file = [k for k in self.kept.samples if k.startswith(f"{self.task}/")
                     and safe_file_name(k.partition("/")[2]) == safe_file_name(name)]  # fmt: skip
        if same_file:
            raise ClipevalError(
                f"Task '{self.task}' keeps per-sample data under '{name}' and '{same_file[0].partition('/')[2]}', which "
                f"would share the file predictions/{safe_file_name(self.task)}/{safe_file_name(name)}.parquet; "
                "name them apart by more than ':', '@' or spaces."
            )
        self.kept.samples[key], self.kept.frames[key] = samples, frame
        return key

    def note(self, message: str, **details: Any) -> None:
        """Log a warning and keep it, with the task, the evaluator and ``details``, for results.json."""
        log.warning("Task %s, evaluator %s: %s", self.task, self._evaluator, message)
        self.notes.append({"task": self.task, "evaluator": self._evaluator, "message": message, **details})

    # ---------------------------------------------------------------- running

    def evaluate(self) -> tuple[list[Record], Failure | None]:
        """The records of each evaluator in turn (``task`` filled in), up to the first that raises.

        Each evaluator's records are checked as they come back (a list of Records obeying
        clipeval.results.validate, no identity already taken), so an invalid one fails its evaluator,
        not the results document. The failing evaluator's exception is returned as a :class:`Failure`
        (not raised), with the per-sample data it kept dropped, so that the records of the evaluators
        that finished can still be written; the runner ends the run with it.
        """
        records: list[Record] = []
        for name, evaluator in self._task.evaluators.items():
            # a task whose data is all absent runs its evaluators on nothing: not worth a line each
            log.log(
                logging.INFO if self.datasets() else logging.DEBUG, "Task %s: running evaluator %s", self.task, name
            )
            self._evaluator = name
            kept_before = set(self.kept.samples)
            try:
                # under torchrun every rank finishes the evaluator, or every rank fails it (clipeval.distributed)
                run = functools.partial(self._run_evaluator, evaluator, records)
                records += world().agree(run, f"running evaluator {name} of {self.task}")
            except Exception as exc:  # kept, and raised again by the runner once the results are written
                log.error("Task %s: evaluator %s failed: %s", self.task, name, exc)
                finished = getattr(exc, "records", None) if isinstance(exc, PartialRecords) else None
                if finished:  # the records it finished before failing are kept (when they are valid themselves)
                    try:
                        records += self._accept(records, finished)
                    except ClipevalError as also:
                        log.error(
                            "Task %s: evaluator %s: its finished records are invalid too: %s", self.task, name, also
                        )
                used = {r.samples for r in records}
                for key in set(self.kept.samples) - kept_before - used:
                    del self.kept.samples[key], self.kept.frames[key]
                return records, Failure(self.task, name, exc)
            finally:
                self._evaluator = None
        return records, None

    def _run_evaluator(self, evaluator: Any, done: list[Record]) -> list[Record]:
        returned = evaluator.evaluate(self)
        try:
            return self._accept(done, returned)
        except ClipevalError as exc:  # one invalid record: the evaluator fails, its valid records are kept
            if not isinstance(returned, list | tuple) or not all(isinstance(r, Record) for r in returned):
                raise
            good: list[Record] = []
            for record in returned:
                try:
                    good += self._accept([*done, *good], [record])
                except ClipevalError:
                    continue
            raise PartialRecords(str(exc), good) from exc

    def _accept(self, done: list[Record], returned: Any) -> list[Record]:
        """``returned`` as records of this task; ClipevalError saying what the evaluator must return instead."""
        if not isinstance(returned, list | tuple) or not all(isinstance(r, Record) for r in returned):
            got = type(returned).__name__ if not isinstance(returned, list | tuple) else "a list holding " + ", ".join(
                sorted({type(r).__name__ for r in returned if not isinstance(r, Record)}))  # fmt: skip
            raise ClipevalError(f"evaluate() must return a list of clipeval.results.record.Record (got {got}).")
        new = [r.with_task(self.task) for r in returned]
        check_records([*done, *new], self.kept.samples.get, metric_info, lambda i, r: f"record {r.label} {r.metric}")
        return new


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
