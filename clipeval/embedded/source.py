"""The embedded digits datasets as a clipeval source."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from PIL import Image
from pydantic import Field

from clipeval.data.base import MapSource, content_key
from clipeval.embedded import digits
from clipeval.errors import OptionError


class DigitsSource(MapSource):
    """One dataset of the embedded suite: a split of the real digits, or a generated shift."""

    def __init__(
        self,
        shift: digits.Shift | None = None,
        split: digits.Split = "test",
        severity: digits.Severity | None = None,
        seed: Annotated[int, Field(ge=0)] = digits.SEED,
    ):
        if shift in digits.CORRUPTIONS and severity is None:
            raise OptionError("severity", severity, f"one of 1, 2, 3, 4, 5 with the corruption shift '{shift}'")
        if shift not in digits.CORRUPTIONS and severity is not None:
            raise OptionError("severity", severity, f"left out (null): only {', '.join(digits.CORRUPTIONS)} have one")
        self.images, self.labels = digits.load(shift, split, severity, seed)
        self.name = shift or split
        if severity is not None:
            self.name += f"@{severity}"
        self.classnames = list(digits.CLASSNAMES)
        data = hashlib.sha256(self.images.tobytes() + self.labels.tobytes()).hexdigest()
        self.key = content_key("digits", [data])

    def loader_options(self, limit: int | None) -> dict[str, Any]:
        # 8x8 images already in memory: a worker process costs more (fork, pickling) than it saves.
        # The default job took 30 s instead of 21 s for the corruption task with one worker.
        return {"max_workers": 0}

    def describe(self) -> str:
        return f"digits '{self.name}' ({len(self)} images)"

    def __len__(self) -> int:
        return len(self.labels)

    def sample_id(self, index: int) -> str:
        return f"{self.name}/{index}"

    def label(self, index: int) -> int:
        return int(self.labels[index])

    def open_image(self, index: int) -> Image.Image:
        return digits.to_pil(self.images[index])
