"""Image side: bare forward (the ceiling) against end to end. Text side: full against trimmed context."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from clipeval.cache import TensorCache
from clipeval.config.paths import builtin_tasks_dir
from clipeval.config.runtime import Runtime
from clipeval.data.base import Source
from clipeval.features.classifier import prompts
from clipeval.features.encode import image_features
from clipeval.models.base import normalize
from clipeval.models.open_clip import OpenClipEncoder, encode_text_trimmed


def rate(fn: Callable[[], object], items: int, repeats: int = 1) -> float:
    """Items per second of ``fn`` after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return items * repeats / (time.perf_counter() - start)


def input_size(model: OpenClipEncoder) -> int:
    """The side of the square images the model's preprocessing makes (its first step's size)."""
    size = model.preprocess.transforms[0].size
    return size if isinstance(size, int) else size[0]


def image_side(model: OpenClipEncoder, source: Source, batch: int, workers: int, scratch: Path) -> dict[str, float]:
    size = input_size(model)
    x = torch.randn(batch, 3, size, size)
    with torch.inference_mode():
        ceiling = rate(lambda: model.encode_image(x), batch, repeats=3)
    runtime = Runtime.create(device="cpu", batch_size=batch, workers=workers, cache=False, progress=False)
    start = time.perf_counter()
    image_features(model, source, runtime, TensorCache(scratch, enabled=False))
    return {"ceiling": ceiling, "end_to_end": len(source) / (time.perf_counter() - start)}


def imagenet_prompts(classes: int) -> tuple[list[str], list[str]]:
    """The first ``classes`` ImageNet class names and the 80 templates of the CLIP paper."""
    task = builtin_tasks_dir() / "imagenet"
    names = (task / "classnames.txt").read_text().splitlines()[:classes]
    return names, (task / "templates.txt").read_text().splitlines()


def text_side(model: OpenClipEncoder, classes: int) -> dict[str, float]:
    names, templates = imagenet_prompts(classes)
    tokens = model.tokenize(prompts(names, templates))
    with torch.inference_mode():
        full = rate(lambda: model.model.encode_text(tokens), len(tokens))
        trimmed = rate(lambda: encode_text_trimmed(model.model, tokens), len(tokens))
        diff = normalize(model.model.encode_text(tokens)) - normalize(encode_text_trimmed(model.model, tokens))
    return {"full": full, "trimmed": trimmed, "diff": float(diff.abs().max()), "prompts": len(tokens)}
