"""pytest-benchmark suite of clipeval's hot paths: ``nox -s bench`` (not part of ``python -m pytest``).

Models have random weights and data are generated, so the numbers are speeds only. Results are saved
under ``.benchmarks/``; compare two commits with ``pytest benchmarks --benchmark-compare``.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def vit_b32():
    """open_clip's ViT-B-32 with random weights (the architecture the README's timings use)."""
    from clipeval.bench.fixtures import random_checkpoint
    from clipeval.models.open_clip import OpenClipEncoder

    return lambda folder: OpenClipEncoder("ViT-B-32", pretrained=str(random_checkpoint("ViT-B-32", folder)))


@pytest.fixture
def seeded():
    torch.manual_seed(0)
