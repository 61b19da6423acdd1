"""The contracts between clipeval's layers, in one place, for plugin authors.

    config -> DualEncoder + Task(Sources, Evaluators) -> FeatureBank -> Evaluator.evaluate(ctx)
           -> records -> results document / store -> report (BaselineProvider) and check

- :class:`DualEncoder` (clipeval.models): a model with both towers. Adapters for open_clip and
  transformers ship; any class with these members can be named as ``model._target_``.
- :class:`Source` (clipeval.data): a dataset with a content key; subclass
  :class:`clipeval.data.base.Source` (or ``MapSource`` for random access) to add one.
- :class:`Evaluator` (clipeval.evaluators): ``evaluate(ctx) -> records`` and nothing else: no
  files, no figures, no printing. What it may read and keep goes through the
  :class:`EvaluationContext`; what it measured is its list of
  :class:`~clipeval.results.record.Record`. Figures and tables are drawn later, from the records.
- :class:`BaselineProvider` (clipeval.report.baselines, clipeval.embedded.zoo): the supervised
  models that define the effective-robustness line, as (in-distribution, shift) accuracy points.

``tests/test_contracts.py`` states each contract as tests a plugin can copy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    import pandas as pd

    from clipeval.config.runtime import Runtime
    from clipeval.features.encode import AssociationSet, CaptionSet, FeatureSet
    from clipeval.results.record import Record

#: What ``tokenize`` returns and ``encode_text`` takes: a (B, L) id tensor, or tensors by name (a
#: transformers ``BatchEncoding``: input_ids, attention_mask, ...). Callers only move it with ``.to(device)``.
Tokens = torch.Tensor | Mapping[str, torch.Tensor]


@runtime_checkable
class DualEncoder(Protocol):
    """An image tower and a text tower embedding into one space.

    ``encode_image``: [B, 3, H, W] float images as ``preprocess`` makes them -> [B, D] float32,
    L2-normalised; ``encode_text``: tokens of B texts -> [B, D] float32, L2-normalised (the
    runner checks shape, finiteness and norm on the first batch). ``encode_image`` must be
    differentiable with respect to its input for adversarial evaluation. ``parameters()``: the
    weights (an ``nn.Module``'s); an attack turns their gradients off while it runs.
    """

    name: str
    #: hash of weights + preprocessing + tokenizer; equal fingerprints give equal features
    fingerprint: str
    #: PIL image -> CHW float tensor, exactly as the model was trained to see it (for an attack: a torchvision
    #: Compose ending in Normalize, so the attack can work in [0, 1] pixels)
    preprocess: Callable

    @property
    def logit_scale(self) -> float: ...

    def tokenize(self, texts: Sequence[str]) -> Tokens: ...

    def encode_image(self, images: torch.Tensor) -> torch.Tensor: ...

    def encode_text(self, tokens: Tokens) -> torch.Tensor: ...

    def to(self, device: torch.device) -> DualEncoder: ...


@runtime_checkable
class Source(Protocol):
    """A dataset of (image, label, sample id) with a key that changes whenever its content does.

    ``key``: part of every cache key and of the results' ``data``; ``classnames`` and
    ``templates``: what the data carries (None if nothing); an optional ``captions()``: each sample id's
    captions, for retrieval (:mod:`clipeval.data.captions`; None or absent: none); ``num_classes`` and ``label_range()``
    let a task refuse class lists that do not fit before anything is encoded; ``dataset(transform,
    limit)`` yields :class:`clipeval.data.base.Item`; ``describe()`` names it in messages.
    """

    key: str
    classnames: list[str] | None
    templates: list[str] | None

    @property
    def num_classes(self) -> int | None: ...

    def label_range(self) -> tuple[int, int] | None: ...

    def describe(self) -> str: ...

    def dataset(self, transform: Callable, limit: int | None) -> torch.utils.data.Dataset: ...

    def loader_options(self, limit: int | None) -> dict[str, Any]: ...


@runtime_checkable
class EvaluationContext(Protocol):
    """What an evaluator may use while it evaluates one task with one model.

    Datasets are named as in the task's ``datasets``. ``features``: the dataset's image
    features ([N, D] float32, unit norm; labels [N]; sample ids), encoded once per run and
    cached. ``classifier``: the zero-shot classifier of the dataset's class names and prompt
    templates ([C, D], unit-norm rows); with ``classes`` (indices of the class names), the rows
    of those classes alone, in that order (only they are built: ImageNet-R scores 200 of
    ImageNet's 1,000). ``zero_shot_logits``: features @ classifier.T, the one place zero-shot
    scores are computed, with the same ``classes``. ``captions``: for retrieval, the captions of the
    images of ``features`` (a :class:`~clipeval.features.encode.CaptionSet`: text features [T, D],
    unit norm, encoded in batches and cached by caption, model and precision; ``image`` [T], the
    features row of each caption's image; ids ``<image id>#<j>``). ``associations``: for association tasks
    (WinoGAViL), each instance's cue encoded as ``prompt(cue)`` ([I, D], unit norm) with its candidates' rows in
    ``features`` and which of them go with the cue (an :class:`~clipeval.features.encode.AssociationSet`).
    ``sample_metadata``: each sample's metadata
    array by sample id, when the source ships one (the webdataset mirrors of the WILDS and fairness sets: group
    fields in ``.npy``), else None. ``images``: a random-access dataset of the raw samples
    through ``transform`` (for evaluators that run the model themselves, as an attack does).
    ``keep_predictions`` / ``keep_outcomes``: per-sample data behind the records, returned as the
    key a record names in ``samples``: ranked predictions with named per-sample ``scores`` (a
    confidence), or named outcomes, each [N] bool (right or wrong) or [N] float (a score). ``note``: something left out or changed, and why (logged,
    and kept in the results' ``notes``).
    """

    task: str
    model: DualEncoder
    runtime: Runtime

    def datasets(self) -> list[str]: ...

    def features(self, dataset: str) -> FeatureSet: ...

    def classnames(self, dataset: str) -> list[str]: ...

    def templates(self, dataset: str) -> list[str]: ...

    def captions(self, dataset: str) -> CaptionSet: ...

    def associations(self, dataset: str, prompt: Callable[[str], str]) -> AssociationSet: ...

    def classifier(self, dataset: str, classes: Sequence[int] | None = None) -> torch.Tensor: ...

    def zero_shot_logits(self, dataset: str, classes: Sequence[int] | None = None) -> torch.Tensor: ...

    def class_groups(self, dataset: str) -> list[list[int]] | None: ...

    def sample_metadata(self, dataset: str) -> Mapping[str, Any] | None: ...

    def task_file(self, path: str, what: str = ...) -> list[str]: ...

    def images(self, dataset: str, transform: Callable) -> torch.utils.data.Dataset: ...

    def check_labels(self, dataset: str, labels: torch.Tensor, num_classes: int) -> None: ...

    def keep_predictions(
        self,
        dataset: str,
        ids: Sequence[str],
        labels: torch.Tensor,
        topk: torch.Tensor,
        name: str | None = None,
        scores: Mapping[str, torch.Tensor] | None = None,
    ) -> str: ...

    def keep_outcomes(
        self, dataset: str, ids: Sequence[str], labels: torch.Tensor, outcomes: Mapping[str, torch.Tensor], name: str
    ) -> str: ...

    def note(self, message: str, **details: Any) -> None: ...


@runtime_checkable
class Evaluator(Protocol):
    """One protocol of evaluation (zero-shot, linear probe, few-shot, adversarial, ...).

    ``evaluate(ctx)`` returns records and has no other effect (``task`` is filled in by the
    runner). An optional ``check(task)`` runs when the task loads, before any model loads, to
    refuse inputs that cannot fit the data (raise ClipevalError). An optional static
    ``zero_shot_top1(options, datasets)`` says, from its config options and the task's dataset
    names, which zero-shot top-1 records it writes (the datasets, or the names, that a suite's
    robustness settings may name): a suite naming others is refused before the run.
    """

    def evaluate(self, ctx: EvaluationContext) -> list[Record]: ...


@runtime_checkable
class BaselineProvider(Protocol):
    """The supervised models that define the effective-robustness line.

    ``points(settings)``: {shift: DataFrame(index=model, columns=[id, shift])} of accuracies as
    fractions, where ``settings`` maps each setting name to its sources (a provider that
    evaluates models itself, like the digits zoo, needs them; a table ignores them).
    ``label`` names the baselines in tables and figures. A provider may also have
    ``average_points(settings)``: DataFrame(index=model, columns=[id, shift]) with x the
    in-distribution accuracy and y the mean over the shifts (the CLIP paper's Figure 13).
    """

    label: str

    def points(self, settings: Mapping[str, Any] | None = None) -> dict[str, pd.DataFrame]: ...
