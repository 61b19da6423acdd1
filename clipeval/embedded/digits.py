"""The in-distribution data and the generated distribution shifts of the embedded suite.

In-distribution: the UCI handwritten digits that scikit-learn ships (1,797 images, 8x8,
ink counted 0..16 per 4x4 block of a 32x32 bitmap), split 60/20/20 stratified with a fixed
seed. Every shift is made the way the originals were: draw a 32x32 binary bitmap, count
the ink in 4x4 blocks. So a shift changes what is drawn, not the image format.

- renditions (ImageNet-R): the digits typeset in the fonts that ship with matplotlib;
- sketch (ImageNet-Sketch): outlines of the test digits' strokes;
- corruptions (ImageNet-C): noise, blur, low contrast and occlusion at five severities;
- rotated (ObjectNet's unusual poses): test digits turned 20-40 degrees either way.

Everything is a pure function of the seed, takes well under a second per shift, and is
memoised in-process.
"""

from __future__ import annotations

import functools
import typing
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

SEED = 0
CLASSNAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
Split = Literal["train", "val", "test"]
Corruption = Literal["gaussian_noise", "blur", "contrast", "occlusion"]
Shift = Literal["renditions", "sketch", "rotated", "gaussian_noise", "blur", "contrast", "occlusion"]
Severity = Literal[1, 2, 3, 4, 5]
SPLITS = typing.get_args(Split)
CORRUPTIONS = typing.get_args(Corruption)
SEVERITIES = typing.get_args(Severity)
MAX_INK = 16  # the originals count on-pixels in 4x4 blocks


@functools.lru_cache(maxsize=1)
def splits(seed: int = SEED) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (images [N, 8, 8] float 0..16, labels [N])}, stratified 60/20/20."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x, y = digits.images.astype(np.float32), digits.target.astype(np.int64)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, train_size=0.6, stratify=y, random_state=seed)
    x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, train_size=0.5, stratify=y_rest, random_state=seed)
    return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}


def block_count(bitmap: np.ndarray) -> np.ndarray:
    """32x32 binary bitmap -> 8x8 ink counts, as the UCI preprocessing did."""
    return bitmap.reshape(8, 4, 8, 4).sum(axis=(1, 3)).astype(np.float32)


def fit_to_box(mask: np.ndarray, size: int = 32, margin: int = 2) -> np.ndarray:
    """Crop to the ink, scale the longer side to fill the box (keeping aspect), centre, binarise."""
    rows, cols = np.nonzero(mask)
    crop = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].astype(np.float32)
    scale = (size - 2 * margin) / max(crop.shape)
    h, w = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    resized = np.asarray(Image.fromarray((crop * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)) > 127
    out = np.zeros((size, size), dtype=bool)
    top, left = (size - h) // 2, (size - w) // 2
    out[top : top + h, left : left + w] = resized
    return out


def upsample_bitmap(image8: np.ndarray) -> np.ndarray:
    """An 8x8 ink-count image back to a plausible 32x32 stroke bitmap."""
    return ndimage.zoom(image8 / MAX_INK, 4, order=1) > 0.4


def font_files() -> list[Path]:
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    names = [
        f"DejaVu{family}{style}.ttf"
        for family in ("Sans", "Serif", "SansMono")
        for style in ("", "-Bold", "-Oblique" if family != "Serif" else "-Italic")
    ]
    names += [
        "STIXGeneral.ttf",
        "STIXGeneralBol.ttf",
        "STIXGeneralItalic.ttf",
        "cmr10.ttf",
        "cmss10.ttf",
        "cmtt10.ttf",
        "cmb10.ttf",
        "cmti10.ttf",
    ]
    return [folder / n for n in names if (folder / n).is_file()]


@functools.lru_cache(maxsize=1)
def renditions(seed: int = SEED, per_font: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Each digit in each font, ``per_font`` times with a small random rotation, shear and size."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for path in font_files():
        font = ImageFont.truetype(str(path), 96)
        for digit in range(10):
            for _ in range(per_font):
                canvas = Image.new("L", (160, 160), 0)
                ImageDraw.Draw(canvas).text((80, 80), str(digit), fill=255, font=font, anchor="mm")
                angle, shear = rng.uniform(-12, 12), rng.uniform(-0.2, 0.2)
                canvas = canvas.transform(canvas.size, Image.AFFINE, (1, shear, -shear * 80, 0, 1, 0), Image.BILINEAR)
                canvas = canvas.rotate(angle, Image.BILINEAR)
                bitmap = fit_to_box(np.asarray(canvas) > 127, margin=int(rng.integers(1, 4)))
                images.append(block_count(bitmap))
                labels.append(digit)
    return np.stack(images), np.array(labels, dtype=np.int64)


@functools.lru_cache(maxsize=1)
def sketches(seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """The outline of each test digit's strokes: the stroke minus its two-pixel erosion."""
    x, y = splits(seed)["test"]
    out = []
    for image in x:
        strokes = upsample_bitmap(image)
        outline = strokes & ~ndimage.binary_erosion(strokes, iterations=2)
        out.append(block_count(outline))
    return np.stack(out), y


@functools.lru_cache(maxsize=1)
def rotated(seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    x, y = splits(seed)["test"]
    rng = np.random.default_rng(seed + 1)
    out = []
    for image in x:
        angle = rng.uniform(20, 40) * rng.choice([-1, 1])
        turned = ndimage.rotate(upsample_bitmap(image).astype(np.float32), angle, reshape=False, order=1) > 0.5
        out.append(block_count(turned))
    return np.stack(out), y


@functools.cache
def corrupted(kind: str, severity: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    if kind not in CORRUPTIONS or severity not in SEVERITIES:
        raise ValueError(f"corruption must be one of {CORRUPTIONS} at severity 1..5, not {kind}@{severity}")
    x, y = splits(seed)["test"]
    rng = np.random.default_rng([seed, CORRUPTIONS.index(kind), severity])
    s = severity - 1
    if kind == "gaussian_noise":
        out = x + rng.normal(0, (1.5, 2.5, 3.5, 5.0, 7.0)[s], x.shape)
    elif kind == "blur":
        out = np.stack([ndimage.gaussian_filter(im, (0.5, 0.7, 0.9, 1.1, 1.4)[s]) for im in x])
    elif kind == "contrast":
        c = (0.5, 0.35, 0.25, 0.17, 0.1)[s]
        out = (x - x.mean(axis=(1, 2), keepdims=True)) * c + x.mean(axis=(1, 2), keepdims=True)
    else:
        side = (2, 3, 4, 5, 6)[s]
        out = x.copy()
        for im in out:
            r, c = rng.integers(0, 9 - side, size=2)
            im[r : r + side, c : c + side] = 0
    return np.clip(out, 0, MAX_INK).astype(np.float32), y


def load(shift: str | None, split: str = "test", severity: int | None = None, seed: int = SEED):
    """One named dataset of the suite: (images [N, 8, 8] in 0..16, labels [N])."""
    if shift is None:
        return splits(seed)[split]
    if shift == "renditions":
        return renditions(seed)
    if shift == "sketch":
        return sketches(seed)
    if shift == "rotated":
        return rotated(seed)
    return corrupted(shift, severity, seed)


def to_pil(image: np.ndarray) -> Image.Image:
    """0..16 ink counts -> an 8-bit grey image (ink bright, as the originals are stored)."""
    return Image.fromarray(np.round(image * (255 / MAX_INK)).astype(np.uint8), mode="L")
