"""What the benchmarks run on: a random-initialised checkpoint file and a folder of JPEGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

# CIFAR-10's classes: few, familiar, and already in sorted order, so every tool that sorts
# class folders by name (torchvision's ImageFolder does) gives the same labels.
CLASSNAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def random_checkpoint(arch: str, folder: Path, seed: int = 0) -> Path:
    """A state dict of ``arch`` with seeded random weights, loadable as ``pretrained=<file>``."""
    import open_clip

    path = folder / f"{arch}-random-seed{seed}.pt"
    if not path.is_file():
        torch.manual_seed(seed)
        torch.save(open_clip.create_model(arch).state_dict(), path)
    return path


def jpeg_folder(folder: Path, count: int, size: tuple[int, int] = (500, 375), seed: int = 0) -> Path:
    """``count`` JPEGs (ImageNet's typical 500x375) spread over the class folders.

    Each image is a colour field with a random wave and noise, so that even a random
    model's predictions differ from image to image and equal top-1 is a real check.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(count):
        target = folder / CLASSNAMES[i % len(CLASSNAMES)]
        target.mkdir(parents=True, exist_ok=True)
        wave = np.sin(xx / rng.uniform(5, 80) + yy / rng.uniform(5, 80) + rng.uniform(0, 6))
        pixels = rng.integers(0, 256, 3) + 80 * wave[..., None] * rng.uniform(-1, 1, 3)
        pixels = pixels + rng.normal(0, rng.uniform(0, 60), (height, width, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(target / f"{i:06d}.jpg", quality=90)
    return folder
