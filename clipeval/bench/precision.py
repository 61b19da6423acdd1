"""CPU bf16 autocast against fp32: speed of the image tower, and what it changes in top-1 on real images.

This machine's CPU has avx512_bf16, and CLIP_benchmark runs under autocast by default; clipeval keeps fp32
as its default (the precision published numbers were made with) and offers ``runtime.precision=bf16``.
The top-1 side uses the only real images that ship: scikit-learn's handwritten digits, with the embedded
tiny CLIP, on the test split and the four generated shifts (every prediction compared).
"""

from __future__ import annotations

from pathlib import Path

import torch

from clipeval.bench.throughput import input_size, rate
from clipeval.cache import TensorCache
from clipeval.config.paths import asset, builtin_tasks_dir
from clipeval.config.runtime import PRECISIONS, Runtime
from clipeval.embedded.source import DigitsSource
from clipeval.features.classifier import zeroshot_classifier
from clipeval.features.encode import image_features
from clipeval.models.open_clip import OpenClipEncoder


def digits_sources() -> dict[str, DigitsSource]:
    return {
        "test": DigitsSource(split="test"),
        "renditions": DigitsSource("renditions"),
        "sketch": DigitsSource("sketch"),
        "rotated": DigitsSource("rotated"),
        "gaussian_noise_3": DigitsSource("gaussian_noise", severity=3),
    }


def forward_rates(model: OpenClipEncoder, batch: int) -> dict[str, float]:
    """Images/s of the bare image forward on a random batch, per precision (fp32, bf16)."""
    side = input_size(model)
    x = torch.randn(batch, 3, side, side)
    out = {}
    for precision in ("fp32", "bf16"):
        dtype = PRECISIONS[precision]
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            out[precision] = rate(lambda: model.encode_image(x), batch, repeats=2)
    return out


def digits_top1(scratch: Path) -> dict[str, dict[str, float]]:
    """{dataset: {n, fp32, bf16 (top-1), changed (predictions that differ)}} for the tiny digits CLIP."""
    model = OpenClipEncoder(
        "tiny-digits-vit", pretrained=asset("tiny_digits.safetensors"), model_config=asset("tiny-digits-vit.json")
    )
    templates = (builtin_tasks_dir() / "digits" / "templates.txt").read_text().splitlines()
    cache = TensorCache(scratch, enabled=False)
    out: dict[str, dict[str, float]] = {}
    for name, source in digits_sources().items():
        predictions = {}
        for precision in ("fp32", "bf16"):
            runtime = Runtime.create(device="cpu", precision=precision, workers=0, progress=False, cache=False)
            weights = zeroshot_classifier(model, source.classnames, templates, runtime, cache)
            fs = image_features(model, source, runtime, cache)
            predictions[precision] = (fs.features @ weights.T).argmax(1)
            labels = fs.labels
        row = {p: float((predictions[p] == labels).float().mean()) for p in predictions}
        row["n"] = len(labels)
        row["changed"] = int((predictions["fp32"] != predictions["bf16"]).sum())
        out[name] = row
    return out
