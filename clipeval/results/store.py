"""Results documents and the results store: one self-contained JSON file per run.

A results document (``kind: clipeval-results``, ``schema_version`` :data:`SCHEMA_VERSION`)
holds everything later steps need, so that ``clipeval report`` and ``clipeval check`` work from
the document alone, on any machine, without the run directory:

- ``model`` (name, fingerprint), ``selection`` (the task or suite: name, version, kind, and its
  tasks with their versions), ``created``, ``clipeval_version``, ``git_sha``, ``run_id``,
  ``tags`` and ``step`` (a checkpoint's training step, for series figures);
- ``records``: :class:`~clipeval.results.record.Record` JSON, obeying clipeval.results.validate
  (checked when the document is written and whenever it is read);
- ``metrics``: the definition of every metric the records use (direction, unit, derived,
  class-weighted), so a reader needs no plugin to know how to read them;
- ``samples``: per-sample outcomes by key (:class:`~clipeval.results.samples.Samples`);
- ``data``: ``{task: {dataset: {key, limit}}}``, the content key of every scored dataset and
  the number of samples ``runtime.limit`` kept (null: all);
- ``robustness`` (suites): the settings the run's effective robustness is computed on and the
  baseline points it was fitted against, so it can be recomputed or re-fitted from the document;
- ``config`` (the composed config), ``notes``, ``failures``, ``skipped``, ``run_dir``.

The run writes it as ``results.json`` in its run directory and as one file of the store. A
golden file for ``clipeval check`` is such a document too (one format): recorded from a run, or
written by hand from published numbers (records with a ``tolerance``, no samples).

The store is a folder of these files. Parallel runs (a Hydra multirun on several processes
or nodes) each write their own file through an atomic rename, so no run can lose or corrupt
another's and no lock is needed.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import logging
import subprocess
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import clipeval
from clipeval.atomic import atomic_write, safe_file_name
from clipeval.errors import ClipevalError, kind_of, quoted, without_file
from clipeval.results.files import read_json
from clipeval.results.record import METRICS, Metric, Record, metric_info
from clipeval.results.robustness import RobustnessSpec, check_settings
from clipeval.results.samples import Samples
from clipeval.results.validate import check_records

log = logging.getLogger(__name__)

KIND = "clipeval-results"
SCHEMA_VERSION = 3
#: ``selection.kind``: what a run evaluated, one task or a suite of tasks (written and checked here)
TASK, SUITE = "task", "suite"
SELECTION_KINDS = (TASK, SUITE)


@dataclass
class ResultsDocument:
    """A parsed, validated results document (see the module docstring); ``raw`` is its JSON."""

    raw: dict[str, Any]
    records: list[Record]
    path: Path | None = None
    _samples: dict[str, Samples] = field(default_factory=dict)
    _metrics: dict[str, Metric] = field(default_factory=dict)

    @property
    def model(self) -> dict[str, Any]:
        return self.raw["model"]

    @property
    def model_label(self) -> str:
        return model_label(self.model)

    @property
    def selection(self) -> dict[str, Any]:
        return self.raw["selection"]

    @property
    def created(self) -> str:
        return str(self.raw.get("created", ""))

    @property
    def tags(self) -> list[str]:
        return [str(t) for t in self.raw.get("tags") or []]

    @property
    def step(self) -> float | None:
        return self.raw.get("step")

    @property
    def data(self) -> dict[str, dict[str, dict[str, Any]]] | None:
        return self.raw.get("data")

    @property
    def failures(self) -> list[dict[str, Any]]:
        return list(self.raw.get("failures") or [])

    @property
    def where(self) -> str:
        return str(self.path) if self.path else "results document"

    def samples(self, key: str | None) -> Samples | None:
        """The per-sample data stored under ``key`` (None for None or an absent key)."""
        if key is None or key not in (self.raw.get("samples") or {}):
            return None
        if key not in self._samples:
            self._samples[key] = Samples.from_json(self.raw["samples"][key], f"{self.where}: samples.{key}")
        return self._samples[key]

    @classmethod
    def parse(cls, raw: Any, path: Path | None = None) -> ResultsDocument:
        """Validate ``raw``; ClipevalError naming the file and the field that is wrong."""
        where = str(path) if path else "results document"
        if not isinstance(raw, dict):
            raise ClipevalError(f"{where} holds {kind_of(raw)}, not a clipeval results document (a JSON object).")
        if raw.get("kind") != KIND:
            raise ClipevalError(
                f"{where} is not a clipeval results document (kind {quoted(raw.get('kind'))}, not {quoted(KIND)}); "
                "documents written before clipeval's schema 3 (no 'kind') are not read: run the evaluation again."
            )
        if raw.get("schema_version") != SCHEMA_VERSION:
            raise ClipevalError(
                f"{where} has schema_version {quoted(raw.get('schema_version'))}; this clipeval reads {SCHEMA_VERSION}."
            )
        for name in ("model", "selection"):
            if not isinstance(raw.get(name), dict) or not isinstance(raw[name].get("name"), str):
                raise ClipevalError(f"{where}: '{name}' must be an object with a 'name'.")
        if not isinstance(raw["model"].get("weights"), str | None):
            raise ClipevalError(
                f"{where}: 'model.weights' must be a string or null (got {quoted(raw['model']['weights'])})."
            )
        _check_selection(raw["selection"], where)
        tags = raw.get("tags")
        if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str | int | float) for t in tags)):
            raise ClipevalError(f"{where}: 'tags' must be a list of strings, not {quoted(tags)}.")
        for name in ("failures", "notes"):
            value = raw.get(name)
            if value is not None and not (isinstance(value, list) and all(isinstance(v, dict) for v in value)):
                raise ClipevalError(f"{where}: '{name}' must be a list of objects, not {quoted(value)}.")
        if not isinstance(raw.get("records"), list):
            raise ClipevalError(f"{where}: 'records' must be a list.")
        records = [Record.from_json(r, f"{where}: records[{i}]") for i, r in enumerate(raw["records"])]
        samples = raw.get("samples") or {}
        if not isinstance(samples, dict):
            raise ClipevalError(f"{where}: 'samples' must be an object of per-sample data by key.")
        dangling = sorted({r.samples for r in records if r.samples is not None and r.samples not in samples})
        if dangling:
            raise ClipevalError(f"{where}: records point at per-sample data {dangling[:3]} that it does not hold.")
        doc = cls(raw, records, path)
        doc._metrics = _metric_definitions(raw.get("metrics"), where)
        check_records(records, doc.samples, doc.metric, lambda i, r: f"{where}: records[{i}] ({r.label} {r.metric})")
        _check_run_info(raw, where)
        parse_data(raw.get("data"), where)
        if raw.get("robustness") and not raw.get("failures") and not raw.get("effective_robustness_error"):
            spec = RobustnessSpec.from_json(raw["robustness"], f"{where}: robustness")
            check_settings(spec, records, where)
        return doc

    def metric(self, name: str) -> Metric:
        """The document's own definition of a metric (it keeps the definitions of the metrics it uses, so a reader
        needs no plugin); else the registry's (published golden files written by hand)."""
        if name in self._metrics:
            return self._metrics[name]
        try:
            return metric_info(name)
        except ClipevalError as exc:
            raise ClipevalError(f"{self.where}: {exc} (or define it in the document's 'metrics').") from None

    def info(self, name: str) -> Metric:
        """How to show a metric: the registry's definition when this process knows it (with its summary settings),
        else the document's own (a plugin's metric, shown without the plugin)."""
        return METRICS[name] if name in METRICS else self.metric(name)

    @classmethod
    def load(cls, path: Path, what: str = "") -> ResultsDocument:
        """From a results file, or a run directory (its results.json); ``what`` names its kind in messages."""
        path = Path(path)
        file = path / "results.json" if path.is_dir() else path
        if not file.is_file():
            raise ClipevalError(f"No results at {file}: give a run directory, its results.json or a store entry.")
        _, raw = read_json(file, what)
        return cls.parse(raw, file)


Where = tuple[str, str]  # (task, dataset)


@dataclass(frozen=True)
class Scored:
    """One scored dataset: its content key, and how many of its samples were kept (None: all)."""

    key: str
    limit: int | None

    def samples(self) -> str:
        return "every sample" if self.limit is None else f"the first {self.limit} samples"


def parse_data(data: Any, where: str) -> dict[Where, Scored] | None:
    """{(task, dataset): Scored} of a document's ``data`` (``where``: the file); None when it has none.
    ClipevalError naming the file and field when it is malformed."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise ClipevalError(f"{where}: 'data' must be an object {{task: {{dataset: {{key, limit}}}}}}.")
    out = {}
    for task, datasets in data.items():
        if not isinstance(datasets, Mapping):
            raise ClipevalError(f"{where}: data.{task} must be an object {{dataset: {{key, limit}}}}.")
        for dataset, entry in datasets.items():
            out[(task, dataset)] = _scored(entry, f"{where}: data.{task}.{dataset}")
    return out


def _scored(entry: object, where: str) -> Scored:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("key"), str) or not entry["key"]:
        raise ClipevalError(f"{where} must be an object with a content 'key' (a non-empty string) and a 'limit'.")
    limit = entry.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ClipevalError(f"{where}: limit is {quoted(limit)}: a number of samples, or null for all of them.")
    return Scored(entry["key"], limit)


def model_label(model: Mapping[str, Any]) -> str:
    """A document's model name, with its weights when they say more (``tiny_digits (ckpt_2000)``): how summaries,
    reports and store file names tell apart runs of one model config with different weights."""
    name, weights = model["name"], model.get("weights")
    return f"{name} ({weights})" if isinstance(weights, str) and weights and weights != name else name


def results_document(
    *,
    model: Any,
    selection: Any,
    records: list[Record],
    samples: Mapping[str, Samples],
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
    weights: str | None = None,
) -> dict[str, Any]:
    """The JSON of a run (see the module docstring). ``selection``: name, version, is_suite, tasks;
    ``weights``: a short name for the checkpoint (:func:`clipeval.models.base.weights_label`)."""
    return {
        "kind": KIND,
        "schema_version": SCHEMA_VERSION,
        "run_id": uuid.uuid4().hex,
        "clipeval_version": clipeval.__version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        "model": {"name": model.name, "fingerprint": model.fingerprint, "weights": weights},
        "selection": {
            "name": selection.name,
            "version": selection.version,
            "kind": SUITE if selection.is_suite else TASK,
            "tasks": selection.task_versions,
        },
        "tags": [str(t) for t in config.get("tags") or []],
        "step": config.get("step"),
        "records": [r.to_json() for r in records],
        "metrics": {name: metric_info(name).to_json() for name in sorted({r.metric for r in records})},
        "samples": {key: s.to_json() for key, s in samples.items()},
        "config": config,
        **(extra or {}),
    }


def _check_selection(selection: dict[str, Any], where: str) -> None:
    """``selection`` as :func:`results_document` writes it: ``name`` (checked by the caller), ``kind`` one of
    :data:`SELECTION_KINDS`, ``version`` a string or a whole number, ``tasks`` {task: version} (ClipevalError
    naming the file and the field otherwise)."""
    kind = selection.get("kind")
    if "kind" not in selection:
        raise ClipevalError(f"{where}: 'selection.kind' is required: {' or '.join(map(repr, SELECTION_KINDS))}.")
    if not isinstance(kind, str) or kind not in SELECTION_KINDS:
        raise ClipevalError(
            f"{where}: 'selection.kind' must be {' or '.join(map(repr, SELECTION_KINDS))} (what the document's "
            f"selection is), not {quoted(kind)}."
        )
    version = selection.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, str | int)):
        raise ClipevalError(f"{where}: 'selection.version' must be a string or a whole number, not {quoted(version)}.")
    tasks = selection.get("tasks")
    if tasks is not None and not isinstance(tasks, dict):
        raise ClipevalError(f"{where}: 'selection.tasks' must be an object {{task: version}}, not {quoted(tasks)}.")


def _check_run_info(raw: dict[str, Any], where: str) -> None:
    """``tags``: a list of strings; ``step``: a number or null (ClipevalError naming the file otherwise)."""
    tags = raw.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ClipevalError(f"{where}: 'tags' must be a list of strings (got {quoted(tags)}).")
    step = raw.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int | float) or step != step):
        raise ClipevalError(f"{where}: 'step' must be a number (the training step) or null (got {quoted(step)}).")


def _metric_definitions(data: Any, where: str) -> dict[str, Metric]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ClipevalError(f"{where}: 'metrics' must be an object of metric definitions by name.")
    return {str(k): Metric.from_json(str(k), v, f"{where}: metrics") for k, v in data.items()}


def write_json(path: Path, obj: Any) -> Path:
    text = json.dumps(obj, indent=1) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def add_to_store(store: Path, document: dict[str, Any]) -> Path:
    stamp = document["created"].replace(":", "").replace("-", "").replace("+0000", "Z")
    name = f"{stamp}_{document['selection']['name']}_{model_label(document['model'])}_{document['run_id'][:8]}.json"
    return write_json(Path(store) / safe_file_name(name), document)


def skipped(path: Path, problem: Any) -> str:
    """The one line that says a store entry is skipped, and why: ``Skipped <entry>: <problem>``, the entry (the
    store's file) named once."""
    return f"Skipped {path.name}: {without_file(without_file(str(problem), str(path)), path.name)}"


def load_store(store: Path) -> list[ResultsDocument]:
    """Every readable run in the store, oldest first; a file that is not one is skipped with a warning."""
    store = Path(store)
    if store.exists() and not store.is_dir():
        raise ClipevalError(f"The results store {store} is a file, not a folder: pass --store DIR (a folder of runs).")
    if not store.is_dir():
        raise ClipevalError(f"No results store at {store}: run an evaluation first, or pass --store DIR.")
    runs = []
    for path in sorted(store.glob("*.json")):
        try:
            runs.append(ResultsDocument.load(path))
        except ClipevalError as exc:
            log.warning("%s", skipped(path, exc))
    return sorted(runs, key=lambda r: r.created)


@dataclass(frozen=True)
class Selector:
    """Which stored runs to use: each given criterion must hold (shell-style globs, case-sensitive)."""

    model: str | None = None
    task: str | None = None
    tag: str | None = None
    glob: str | None = None  # over the store file's name

    def matches(self, run: ResultsDocument) -> bool:
        tasks = [run.selection["name"], *(run.selection.get("tasks") or {})]
        return all(
            (
                self.model is None
                or any(fnmatch.fnmatchcase(name, self.model) for name in (run.model["name"], run.model_label)),
                self.task is None or any(fnmatch.fnmatchcase(t, self.task) for t in tasks),
                self.tag is None or any(fnmatch.fnmatchcase(t, self.tag) for t in run.tags),
                self.glob is None or (run.path is not None and fnmatch.fnmatchcase(run.path.name, self.glob)),
            )
        )

    def select(self, runs: Iterable[ResultsDocument]) -> list[ResultsDocument]:
        return [r for r in runs if self.matches(r)]

    def describe(self) -> str:
        """The criteria as command-line options (``--model 'ViT*' --tag series``), or 'all runs' when none."""
        given = [f"--{name} {value!r}" for name, value in vars(self).items() if value is not None]
        return " ".join(given) or "all runs"


def git_sha() -> str | None:
    """The commit of the clipeval source tree, when it runs from a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(clipeval.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
