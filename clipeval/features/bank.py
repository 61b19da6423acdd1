"""The features and text classifiers of one model, shared by every task of a run."""

from __future__ import annotations

import torch

from clipeval.cache import TensorCache
from clipeval.config.runtime import Runtime
from clipeval.contracts import DualEncoder
from clipeval.data.base import Source
from clipeval.errors import ClipevalError
from clipeval.features.classifier import text_embeddings, zeroshot_classifier
from clipeval.features.encode import FeatureSet, feature_key, image_features


class FeatureBank:
    """Features and classifiers of one model, shared by every task of a run.

    In memory it keeps each source's features and each class's text prototype once per run (a
    suite that scores ImageNet val in several tasks encodes it once, and ImageNet's class names
    once, even with the disk cache off); on disk the cache keeps them across runs. Every image
    feature and text prototype it hands out has the same width, whether it came from the cache
    or the model (else a ClipevalError naming the model).
    """

    def __init__(self, model: DualEncoder, runtime: Runtime, cache: TensorCache):
        self.model, self.runtime, self.cache = model, runtime, cache
        self._features: dict[str, FeatureSet] = {}
        self._prototypes: dict[tuple[str, ...], dict[str, torch.Tensor]] = {}  # templates -> class name -> row
        self._texts: dict[str, torch.Tensor] = {}  # caption -> row (text_embeddings)
        self._widths: dict[str, int] = {}  # tower -> embedding width seen

    def features(self, source: Source) -> FeatureSet:
        key = feature_key(self.model, source, self.runtime)
        if key not in self._features:
            fs = image_features(self.model, source, self.runtime, self.cache)
            self._check_width("image", fs.features.shape[1])
            self._features[key] = fs
        return self._features[key]

    def classifier(self, classnames: list[str], templates: list[str]) -> torch.Tensor:
        """[C, D] prototypes of ``classnames``: each class's built once per run (and cached across runs),
        whichever task asks for it and with which other classes."""
        known = self._prototypes.setdefault(tuple(templates), {})
        weights = zeroshot_classifier(self.model, classnames, templates, self.runtime, self.cache, known)
        self._check_width("text", weights.shape[1])
        return weights

    def texts(self, texts: list[str]) -> torch.Tensor:
        """[T, D] embeddings of ``texts`` (captions), each encoded once per run and cached across runs
        (:func:`clipeval.features.classifier.text_embeddings`)."""
        rows = text_embeddings(self.model, texts, self.runtime, self.cache, self._texts)
        self._check_width("text", rows.shape[1])
        return rows

    def _check_width(self, tower: str, width: int) -> None:
        other = [f"{t} embeddings have width {w}" for t, w in self._widths.items() if w != width]
        if other:
            raise ClipevalError(
                f"Model '{self.model.name}': its {tower} embeddings have width {width} but its {', '.join(other)}; "
                "zero-shot scores need both towers in one space of one width."
            )
        self._widths.setdefault(tower, width)
