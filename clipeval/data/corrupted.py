"""Any source under one ImageNet-C corruption at one severity, made on the fly (clipeval.data.corruptions).

Each image is prepared as ImageNet-C's were (``make_imagenet_c.py``: torchvision ``Resize(256)`` then
``CenterCrop(224)`` on the PIL image), corrupted at that size, by default saved and read back as a
JPEG of quality 85 as the released files were (``save_quality``; null skips it), and only then given
to the model's own preprocessing. The randomness of a sample is seeded by ``seed``, the corruption,
the severity and the sample's own 224 x 224 pixels, so the same data gives the same pixels in any order,
batch or worker. The key changes with the wrapped source's key, every option and the corruptions'
implementation version (:data:`clipeval.data.corruptions.VERSION`), so cached features are never reused
for other pixels.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from pydantic import Field
from torchvision import transforms

from clipeval.data import corruptions
from clipeval.data.base import Source, content_key
from clipeval.errors import ClipevalError

Corruption = Literal[
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
]  # fmt: skip
Severity = Literal[1, 2, 3, 4, 5]

#: sources built from a config by :class:`CorruptedSource` in this process, by their config: the 75 datasets of
#: a generated ImageNet-C task share one listing of ImageNet val
_BUILT: dict[str, Source] = {}


class CorruptedSource(Source):
    """``source``'s images under ``corruption`` at ``severity`` (1..5).

    ``source``: a built source, or its config (a node with ``_target_``, under ``_recursive_: false``), which is
    built once per process and shared by every CorruptedSource given the same config. ``resize``/``crop``: the
    preparation before corrupting (ImageNet-C: 256 then 224; ``resize: null`` skips resizing). ``save_quality``:
    the JPEG quality the corrupted image is saved with (the released ImageNet-C: 85), null for none.
    """

    def __init__(
        self,
        source: Any,
        corruption: Corruption,
        severity: Severity,
        seed: Annotated[int, Field(ge=0)] = 0,
        resize: Annotated[int, Field(ge=1)] | None = 256,
        crop: Annotated[int, Field(ge=32)] = 224,
        save_quality: Annotated[int, Field(ge=1, le=95)] | None = 85,
    ):
        self.source = _shared(source) if isinstance(source, Mapping | DictConfig) else source
        self.corruption, self.severity, self.seed = corruption, int(severity), int(seed)
        self.resize, self.crop, self.save_quality = resize, int(crop), save_quality
        if resize is not None and int(crop) > int(resize):
            raise ClipevalError(
                f"crop={crop} is larger than resize={resize}: the center crop would pad the resized image with black "
                "borders before corrupting it. Take crop <= resize (ImageNet-C: resize 256, crop 224)."
            )
        if corruption == "frost":
            corruptions.frost_dir()  # the textures' absence is said now, before any image is encoded
        self.classnames, self.templates = self.source.classnames, self.source.templates
        options = [corruption, self.severity, self.seed, resize, self.crop, save_quality]
        self.key = content_key("corrupted", [self.source.key, options, corruptions.VERSION])

    @property
    def num_classes(self) -> int | None:
        return self.source.num_classes

    def label_range(self) -> tuple[int, int] | None:
        return self.source.label_range()

    def describe(self) -> str:
        return f"{self.source.describe()} under {self.corruption} at severity {self.severity}"

    def dataset(self, transform: Callable, limit: int | None) -> torch.utils.data.Dataset:
        return self.source.dataset(Corrupt(self, transform), limit)

    def loader_options(self, limit: int | None) -> dict[str, Any]:
        return self.source.loader_options(limit)

    def __getattr__(self, name: str) -> Any:  # class_groups and the like pass through
        if name == "source" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.source, name)


class Corrupt:
    """The transform of a corrupted source: prepare, corrupt, (save as JPEG), then the model's ``transform``."""

    def __init__(self, source: CorruptedSource, transform: Callable):
        steps = [transforms.Resize(source.resize)] if source.resize is not None else []
        self.prepare = transforms.Compose([*steps, transforms.CenterCrop(source.crop)])
        self.corruption, self.severity, self.seed = source.corruption, source.severity, source.seed
        self.save_quality, self.transform = source.save_quality, transform

    def pixels(self, image: Image.Image) -> np.ndarray:
        """The corrupted 224 x 224 (``crop``) pixels of ``image``, H x W x 3 uint8."""
        prepared = np.asarray(self.prepare(image.convert("RGB")), dtype=np.uint8)
        rng = corruptions.sample_rng(prepared, self.corruption, self.severity, self.seed)
        out = corruptions.corrupt(prepared, self.corruption, self.severity, rng)
        return corruptions.jpeg_round_trip(out, self.save_quality) if self.save_quality else out

    def __call__(self, image: Image.Image) -> Any:
        return self.transform(Image.fromarray(self.pixels(image)))


def _shared(spec: Mapping | DictConfig) -> Source:
    """The source ``spec`` configures, built once per process."""
    from clipeval.config.construct import build

    if isinstance(spec, DictConfig):
        spec = OmegaConf.to_container(spec, resolve=True)
    name = json.dumps(spec, sort_keys=True, default=str)
    if name not in _BUILT:
        _BUILT[name] = build(dict(spec), "the source of a corrupted dataset")
    return _BUILT[name]
