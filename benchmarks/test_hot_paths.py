"""The paths every evaluation runs through, timed one by one (speed only: nothing here fails on speed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipeval.cache import TensorCache
from clipeval.models.base import normalize
from clipeval.results.metrics import classification_records

pytestmark = pytest.mark.usefixtures("seeded")


@pytest.fixture(scope="module")
def model(vit_b32, tmp_path_factory):
    return vit_b32(tmp_path_factory.mktemp("weights"))


def test_image_encode_one_batch_of_32(benchmark, model):
    """ViT-B-32 fp32 forward of one batch, on the CPU (unit features out)."""
    images = torch.randn(32, 3, 224, 224)
    with torch.inference_mode():
        out = benchmark.pedantic(model.encode_image, args=(images,), rounds=3, warmup_rounds=1)
    assert out.shape == (32, 512)


def test_text_prototypes_of_5_classes_x_80_templates(benchmark, model, tmp_path):
    """The zero-shot classifier of 5 ImageNet classes (400 prompts), not cached."""
    from clipeval.bench.throughput import imagenet_prompts
    from clipeval.config.runtime import Runtime
    from clipeval.features.classifier import zeroshot_classifier

    names, templates = imagenet_prompts(5)
    runtime = Runtime.create(device="cpu", progress=False, cache=False)
    cache = TensorCache(tmp_path, enabled=False)
    weights = benchmark.pedantic(
        zeroshot_classifier, args=(model, names, templates, runtime, cache), rounds=2, warmup_rounds=0
    )
    assert weights.shape[0] == 5


def test_cache_load_of_50k_features(benchmark, tmp_path):
    """Reading one feature entry of 50,000 x 512 fp32 (100 MB), checksum checked."""
    cache = TensorCache(tmp_path)
    features = normalize(torch.randn(50_000, 512))
    cache.save("features", "bench", {"features": features, "labels": torch.zeros(50_000, dtype=torch.long)})
    entry = benchmark.pedantic(cache.load, args=("features", "bench"), rounds=5, warmup_rounds=1)
    assert torch.equal(entry["features"], features)


def test_metrics_on_50k_samples_of_1000_classes(benchmark):
    """top-1, top-5 and mean per-class recall with Clopper-Pearson intervals, ImageNet-val sized."""
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.integers(0, 1000, 50_000))
    topk = torch.from_numpy(rng.integers(0, 1000, (50_000, 5)))
    records = benchmark(classification_records, "val", topk, labels, 1000)
    assert [r.metric for r in records] == ["top1", "top5", "mean_per_class_recall"]
