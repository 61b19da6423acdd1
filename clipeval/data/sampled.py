"""A seeded per-class sample of another source: few-shot pools without encoding a whole training set."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any

import numpy as np
from PIL import Image
from pydantic import Field

from clipeval.data.base import MapSource, content_key


class SampledSource(MapSource):
    """``per_class`` examples of each class of ``source`` (all of a class that has fewer), drawn by ``seed``.

    Few-shot probes draw their k shots from this pool, so ImageNet's 1.28 million training
    images need only ``per_class`` x 1,000 encodings. A k-subset of a uniformly drawn pool is
    itself a uniform k-subset of the class; different seeds' subsets share the pool.
    """

    def __init__(
        self, source: MapSource, per_class: Annotated[int, Field(ge=1)], seed: Annotated[int, Field(ge=0)] = 0
    ):
        self.source = source
        by_class: dict[int, list[int]] = defaultdict(list)
        for i in range(len(source)):
            by_class[source.label(i)].append(i)
        rng = np.random.default_rng(seed)
        picks = []
        for label in sorted(by_class):
            members = by_class[label]
            picks += sorted(rng.choice(members, size=min(per_class, len(members)), replace=False).tolist())
        self.indices = picks
        self.classnames, self.templates = source.classnames, source.templates
        self.key = content_key("sampled", [source.key, per_class, seed])

    @property
    def num_classes(self) -> int | None:
        return self.source.num_classes

    def describe(self) -> str:
        return f"{len(self)} sampled from {self.source.describe()}"

    def __len__(self) -> int:
        return len(self.indices)

    def sample_id(self, index: int) -> str:
        return self.source.sample_id(self.indices[index])

    def label(self, index: int) -> int:
        return self.source.label(self.indices[index])

    def open_image(self, index: int) -> Image.Image:
        return self.source.open_image(self.indices[index])

    def __getattr__(self, name: str) -> Any:  # class_groups and the like pass through
        if name == "source":
            raise AttributeError(name)
        return getattr(self.source, name)
