"""What the benchmarks run on: a random-initialised checkpoint file and a folder of JPEGs (generated, or cut
from real photographs)."""

from __future__ import annotations

import json
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


PHOTOGRAPHS = ("china.jpg", "flower.jpg")  # scikit-learn's sample images (sklearn.datasets.load_sample_images)


def photo_folder(folder: Path, count: int, size: tuple[int, int] = (500, 375), seed: int = 0) -> Path:
    """``count`` JPEGs of real photographic content (``size``, ImageNet's typical 500x375), spread over the class
    folders as :func:`jpeg_folder` does.

    No image dataset can be downloaded here; scikit-learn ships two real 640x427 photographs. Each JPEG is a
    random crop of one of them (a quarter to all of its area, at the output's aspect ratio), resized (mostly
    upscaled), flipped at random and saved at quality 90. They are closer to real data than noise fields, but
    smoother than real ImageNet photographs: about 48 KiB per file against about 110 KiB, decoded and resized
    slightly faster (109 against 100 images/s per process, measured once here).
    """
    from sklearn.datasets import load_sample_image

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(load_sample_image(name)) for name in PHOTOGRAPHS]
    width, height = size
    for i in range(count):
        target = folder / CLASSNAMES[i % len(CLASSNAMES)]
        target.mkdir(parents=True, exist_ok=True)
        photo = photos[rng.integers(len(photos))]
        crop_h = min(photo.height, photo.width * height / width) * np.sqrt(rng.uniform(0.25, 1.0))
        crop_w = crop_h * width / height
        left, top = rng.uniform(0, photo.width - crop_w), rng.uniform(0, photo.height - crop_h)
        image = photo.resize(size, Image.Resampling.BICUBIC, box=(left, top, left + crop_w, top + crop_h))
        if rng.integers(2):
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image.save(target / f"{i:06d}.jpg", quality=90)
    return folder


def _small_jpegs(folder: Path, count: int, rng: np.random.Generator, size: tuple[int, int] = (64, 48)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=80)


def imagenet_family(root: Path, per_class: int = 1, seed: int = 0) -> Path:
    """A data root with each ImageNet-family task's official layout and ``per_class`` small JPEGs per folder.

    ImageNet-R and -A: all 200 class folders each (the headline task's shape). ObjectNet: 113
    classes with a synthetic mapping onto 313 ImageNet classes (the real mapping's counts: 87
    classes of 3 and 26 of 2), in its real file formats. ImageNet val, V2 and Sketch: a few
    classes each, among them classes of R, A and ObjectNet, so that the paired settings
    (val-on-<shift>-classes) have images.
    """
    from clipeval.config.paths import builtin_tasks_dir

    tasks = builtin_tasks_dir()
    wnids = (tasks / "imagenet" / "wnids.txt").read_text().split()
    rng = np.random.default_rng(seed)
    shifts = {name: (tasks / task / "wnids.txt").read_text().split() for name, task in
              (("imagenet-r", "imagenet_r"), ("imagenet-a", "imagenet_a"))}  # fmt: skip
    for name, classes in shifts.items():
        for wnid in classes:
            _small_jpegs(root / name / wnid, per_class, rng)
    order = [(7 * i + 3) % 1000 for i in range(1000)]  # a spread of ImageNet classes (7 is prime to 1000)
    sizes = [3] * 87 + [2] * 26
    starts = np.cumsum([0, *sizes])
    groups = [sorted(order[a:b]) for a, b in zip(starts[:-1], starts[1:], strict=True)]
    onet = root / "objectnet-1.0"
    labels = {f"object_{k:03d}": f"Object {k}" for k in range(len(groups))}
    for folder in labels:
        _small_jpegs(onet / "images" / folder, per_class, rng)
    mappings = onet / "mappings"
    mappings.mkdir(parents=True, exist_ok=True)
    (mappings / "folder_to_objectnet_label.json").write_text(json.dumps(labels))
    (mappings / "objectnet_to_imagenet_1k.json").write_text(
        json.dumps(
            {
                label: "; ".join(f"imagenet label {i}" for i in g)
                for label, g in zip(labels.values(), groups, strict=True)
            }
        )
    )
    (mappings / "pytorch_to_imagenet_2012_id.json").write_text(json.dumps({str(i): i for i in range(1000)}))
    (mappings / "imagenet_to_label_2012_v2").write_text("".join(f"imagenet label {i}\n" for i in range(1000)))
    val = sorted({0, 1, *(wnids.index(w) for c in shifts.values() for w in c[:2]), *groups[0], *groups[1]})
    for k in val:
        _small_jpegs(root / "imagenet" / "val" / wnids[k], per_class, rng)
    for k in (0, 1, 2, 10, 999):
        _small_jpegs(root / "imagenetv2-matched-frequency-format-val" / str(k), per_class, rng)
    for k in (0, 5, 999):
        _small_jpegs(root / "sketch" / wnids[k], per_class, rng)
    return root
