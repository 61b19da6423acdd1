"""An evaluation context over arrays in memory: test an evaluator without a model, data files or a run.

:class:`ArrayContext` implements :class:`clipeval.contracts.EvaluationContext`, every member with the
protocol's signature (``tests/test_contracts.py`` checks it against the protocol, as it checks the
runner's ``RunContext``), so an evaluator that passes its tests here meets the same contract in a run.
A plugin author can copy this file next to their own tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipeval.config.lists import read_strings
from clipeval.config.runtime import Runtime
from clipeval.contracts import DualEncoder, EvaluationContext
from clipeval.data.base import Item
from clipeval.errors import ClipevalError
from clipeval.features.encode import AssociationSet, CaptionSet, FeatureSet
from clipeval.results.samples import Samples
from clipeval.run.context import RunContext


class ArrayContext:
    """The context of one task whose datasets are feature arrays.

    ``data``: {dataset: (x [N, D] float, y [N] int)}; features are handed out L2-normalised, as a
    model's are, with sample ids ``<dataset>/<index, 5 digits>`` (sorted = index order).
    ``classnames``: the label space of every dataset (default ``class 0`` .. up to the largest
    label); ``templates``: the prompts (default ``["{c}"]``). The zero-shot ``classifier`` of a
    dataset is the unit-norm mean feature of each class in ``prototypes_from`` (default: the
    dataset itself), a zero row for a class without samples. ``images``: {dataset: [(PIL image,
    label, sample id)]} for evaluators that run the model (an attack), with the ``model``
    (default None: the probes never touch it). ``class_groups``: {dataset: groups} as ObjectNet's.
    ``captions``: {dataset: (t [T, D] float, image [T] int)} caption features (handed out L2-normalised) and
    the row of each caption's image, for retrieval.
    ``sample_metadata``: {dataset: {sample id: metadata array}} (the WILDS and fairness mirrors' ``.npy``).
    ``associations``: {dataset: [(cue feature [D], candidate rows [m], answers [m] bool)]} association instances
    (WinoGAViL's), cue features handed out L2-normalised; the prompt is not used (there is no text to encode).

    What evaluators keep is in ``kept`` ({key: Samples}) and their notes in ``notes``.
    """

    check_labels = RunContext.check_labels  # the runner's own check, so that both refuse the same labels

    def __init__(
        self,
        data: Mapping[str, tuple[np.ndarray, np.ndarray]],
        classnames: Sequence[str] | None = None,
        templates: Sequence[str] = ("{c}",),
        *,
        prototypes_from: str | None = None,
        model: DualEncoder | None = None,
        images: Mapping[str, Sequence[tuple[Any, int, str]]] | None = None,
        class_groups: Mapping[str, list[list[int]]] | None = None,
        captions: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
        sample_metadata: Mapping[str, Mapping[str, Any]] | None = None,
        associations: Mapping[str, Sequence[tuple[Any, Any, Any]]] | None = None,
        task: str = "arrays",
        task_dir: Path | None = None,
        runtime: Runtime | None = None,
    ):
        self.data = {name: (np.asarray(x, dtype=np.float64), np.asarray(y)) for name, (x, y) in data.items()}
        self.task, self.model = task, model
        self.runtime = runtime or Runtime.create(device="cpu", workers=0, progress=False)
        largest = max((int(y.max()) for _, y in self.data.values() if len(y)), default=0)
        self._classnames = list(classnames) if classnames is not None else [f"class {c}" for c in range(largest + 1)]
        self._templates = list(templates)
        self._prototypes_from, self._images = prototypes_from, dict(images or {})
        self._groups, self._dir = dict(class_groups or {}), task_dir
        self._captions = dict(captions or {})
        self._metadata = dict(sample_metadata or {})
        self._associations = dict(associations or {})
        self.kept: dict[str, Samples] = {}
        self.notes: list[dict[str, Any]] = []

    def _data(self, dataset: str) -> tuple[np.ndarray, np.ndarray]:
        if dataset not in self.data:
            raise ClipevalError(f"Task '{self.task}' has no dataset '{dataset}' (has: {list(self.data)}).")
        return self.data[dataset]

    # ---------------------------------------------------------------- reading

    def datasets(self) -> list[str]:
        return list(self.data)

    def features(self, dataset: str) -> FeatureSet:
        x, y = self._data(dataset)
        unit = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
        ids = [f"{dataset}/{i:05d}" for i in range(len(y))]
        return FeatureSet(torch.tensor(unit, dtype=torch.float32), torch.tensor(y, dtype=torch.int64), ids)

    def classnames(self, dataset: str) -> list[str]:
        self._data(dataset)
        return list(self._classnames)

    def templates(self, dataset: str) -> list[str]:
        self._data(dataset)
        return list(self._templates)

    def captions(self, dataset: str) -> CaptionSet:
        if dataset not in self._captions:
            raise ClipevalError(f"ArrayContext has no captions of '{dataset}': pass captions={{'{dataset}': ...}}.")
        t, image = (np.asarray(a) for a in self._captions[dataset])
        unit = t / np.linalg.norm(t, axis=1, keepdims=True).clip(1e-12)
        ids = [f"{dataset}/{int(i):05d}#{j}" for j, i in enumerate(image)]
        texts = [f"caption {j}" for j in range(len(image))]
        return CaptionSet(torch.tensor(unit, dtype=torch.float32), torch.tensor(image, dtype=torch.int64), ids, texts)

    def associations(self, dataset: str, prompt: Callable[[str], str]) -> AssociationSet:
        if dataset not in self._associations:
            raise ClipevalError(f"ArrayContext has no associations of '{dataset}': pass associations={{...}}.")
        instances = self._associations[dataset]
        cues = np.array([np.asarray(c, dtype=np.float64) for c, _, _ in instances])
        unit = cues / np.linalg.norm(cues, axis=1, keepdims=True).clip(1e-12)
        ids = [f"{dataset}/instance{i:05d}" for i in range(len(instances))]
        return AssociationSet(
            torch.tensor(unit, dtype=torch.float32),
            [torch.as_tensor(rows, dtype=torch.int64) for _, rows, _ in instances],
            [torch.as_tensor(answers, dtype=torch.bool) for _, _, answers in instances],
            ids,
            [prompt(f"cue {i}") for i in range(len(instances))],
        )

    def classifier(self, dataset: str, classes: Sequence[int] | None = None) -> torch.Tensor:
        fs = self.features(self._prototypes_from or dataset)
        classes = range(len(self.classnames(dataset))) if classes is None else classes
        rows = torch.zeros(len(classes), fs.features.shape[1])
        for row, c in enumerate(classes):
            members = fs.features[fs.labels == c]
            if len(members):
                rows[row] = members.mean(0) / members.mean(0).norm().clamp_min(1e-12)
        return rows

    def zero_shot_logits(self, dataset: str, classes: Sequence[int] | None = None) -> torch.Tensor:
        return self.features(dataset).features @ self.classifier(dataset, classes).T

    def class_groups(self, dataset: str) -> list[list[int]] | None:
        return self._groups.get(dataset)

    def sample_metadata(self, dataset: str) -> Mapping[str, Any] | None:
        return self._metadata.get(dataset)

    def task_file(self, path: str, what: str = "a task file") -> list[str]:
        return read_strings(path, what, self._dir)

    def images(self, dataset: str, transform: Callable) -> torch.utils.data.Dataset:
        if dataset not in self._images:
            raise ClipevalError(f"ArrayContext has no images of '{dataset}': pass images={{'{dataset}': [...]}}.")
        return [Item(transform(image), int(label), str(sid)) for image, label, sid in self._images[dataset]]

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
        floats = {k: v.numpy() for k, v in (scores or {}).items()}
        return self._keep(name or dataset, Samples.from_arrays(ids, labels.numpy(), topk.numpy(), scores=floats))

    def keep_outcomes(
        self, dataset: str, ids: Sequence[str], labels: torch.Tensor, outcomes: Mapping[str, torch.Tensor], name: str
    ) -> str:
        correct = {k: v.numpy() for k, v in outcomes.items() if v.dtype == torch.bool}
        scores = {k: v.numpy() for k, v in outcomes.items() if v.dtype != torch.bool}
        return self._keep(name, Samples.from_arrays(ids, labels.numpy(), correct=correct, scores=scores))

    def _keep(self, name: str, samples: Samples) -> str:
        key = f"{self.task}/{name}"
        if key in self.kept:
            raise ClipevalError(f"Task '{self.task}' keeps per-sample data under '{name}' twice; name them apart.")
        self.kept[key] = samples
        return key

    def note(self, message: str, **details: Any) -> None:
        self.notes.append({"task": self.task, "message": message, **details})


# a quick check on import; tests/test_contracts.py checks every member's signature against the protocol
if not isinstance(ArrayContext({"d": (np.eye(2), np.arange(2))}), EvaluationContext):
    raise TypeError("ArrayContext no longer implements clipeval.contracts.EvaluationContext")
