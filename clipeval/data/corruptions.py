"""The 15 ImageNet-C corruptions at 5 severities (Hendrycks & Dietterich, ICLR 2019), in numpy/scipy/PIL.

Written here from the published definitions: the parameters of every corruption and severity, and the
order of the steps, are those of ``ImageNet-C/create_c/make_imagenet_c.py`` in hendrycks/robustness
(Apache-2.0; the script that made the released ImageNet-C), cited per function. Where that script used
a library this project does not depend on, the step is done another way and the difference is said:

- scikit-image's ``gaussian`` is ``scipy.ndimage.gaussian_filter`` (its defaults: mode ``nearest``,
  truncate 4); its ``random_noise(mode="s&p")`` is drawn here (each value flipped with probability
  ``amount``, to 1 or 0 with probability one half); its RGB<->HSV round trip (brightness) is the exact
  identity it amounts to (a pixel scaled by V'/V; black becomes grey V').
- OpenCV's ``filter2D`` and ``GaussianBlur`` (defocus blur's disk kernel) are ``scipy.ndimage.correlate``
  with mode ``mirror`` (OpenCV's default border, BORDER_REFLECT_101); ``warpAffine`` (elastic transform)
  is ``scipy.ndimage.affine_transform`` (exact bilinear weights, where OpenCV rounds them to 1/32).
- ImageMagick's motion blur (motion blur, snow) is the sum of shifted copies weighted by a one-sided
  Gaussian, as the ``imagecorruptions`` package (bethgelab, Apache-2.0) re-implemented it: copy i
  (0 <= i <= 2*radius) is shifted by round(i*sin a), round(i*cos a) pixels (edges repeated) and weighted
  by exp(-i^2 / (2 sigma^2)), normalised.
- glass blur's "swap" in the published code assigns numpy views, so that pixel (h, w) takes the value
  of (h', w') and (h', w') keeps its own: that is what is done here (a pull, not a swap), in the same
  order, so the released data's statistics are met.

Randomness comes only from the ``numpy.random.Generator`` passed in (the published code drew from
numpy's global state, unseeded), so the same image, corruption, severity and generator state give the
same pixels. The output is ``uint8`` by truncation (``np.uint8`` of the float image, as the script did
before saving). Frost blends one of the texture photographs the originals ship; see :func:`frost_dir`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from clipeval.errors import ClipevalError

#: the 15 corruptions of the benchmark, in the paper's order (noise, blur, weather, digital)
CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
SEVERITIES = (1, 2, 3, 4, 5)
#: the version of these implementations: part of every cache key of corrupted data (raise it when pixels change)
VERSION = "1"

#: parameters per severity 1..5, as in make_imagenet_c.py (hendrycks/robustness @ 8190fe3)
PARAMS: dict[str, list] = {
    "gaussian_noise": [0.08, 0.12, 0.18, 0.26, 0.38],  # std of N(0, c) added to [0, 1] pixels
    "shot_noise": [60, 25, 12, 5, 3],  # Poisson(x * c) / c
    "impulse_noise": [0.03, 0.06, 0.09, 0.17, 0.27],  # salt-and-pepper amount
    "defocus_blur": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],  # disk radius, alias blur
    "glass_blur": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],  # sigma, max delta, iterations
    "motion_blur": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],  # radius, sigma
    "zoom_blur": [
        np.arange(1, 1.11, 0.01),
        np.arange(1, 1.16, 0.01),
        np.arange(1, 1.21, 0.02),
        np.arange(1, 1.26, 0.02),
        np.arange(1, 1.31, 0.03),
    ],  # zoom factors averaged
    # loc, scale, zoom, threshold, blur radius, blur sigma, blend
    "snow": [
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ],
    "frost": [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],  # image weight, frost weight
    "fog": [(1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)],  # fog weight, wibble decay
    "brightness": [0.1, 0.2, 0.3, 0.4, 0.5],  # added to HSV value
    "contrast": [0.4, 0.3, 0.2, 0.1, 0.05],  # (x - mean) * c + mean
    # alpha, sigma, affine amount: the script's 244 "should have been 224, but ultimately nothing is incorrect"
    "elastic_transform": [
        (244 * 2, 244 * 0.7, 244 * 0.1),
        (244 * 2, 244 * 0.08, 244 * 0.2),
        (244 * 0.05, 244 * 0.01, 244 * 0.02),
        (244 * 0.07, 244 * 0.01, 244 * 0.02),
        (244 * 0.12, 244 * 0.01, 244 * 0.02),
    ],
    "pixelate": [0.6, 0.5, 0.4, 0.3, 0.25],  # side scale of the box-downsampled image
    "jpeg_compression": [25, 18, 15, 10, 7],  # JPEG quality
}

#: the texture files of frost; the published code draws among the first five (``randint(5)``)
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
FROST_HOW = (
    "Frost blends texture photographs that ImageNet-C's authors ship (frost1.png ... frost6.jpg, Apache-2.0): "
    "pip install imagecorruptions (its frost/ folder is found without importing it), or download them from "
    "https://github.com/hendrycks/robustness/tree/master/ImageNet-C/create_c and set CLIPEVAL_FROST_DIR=DIR."
)


def corrupt(image: np.ndarray, corruption: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``image`` (H x W x 3 uint8) under ``corruption`` at ``severity`` (1..5): H x W x 3 uint8."""
    if corruption not in CORRUPTIONS:
        raise ClipevalError(f"Unknown corruption '{corruption}': one of {', '.join(CORRUPTIONS)}.")
    if severity not in SEVERITIES:
        raise ClipevalError(f"Corruption severity {severity!r}: one of 1, 2, 3, 4, 5.")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {image.dtype} {image.shape}")
    out = FUNCTIONS[corruption](image, PARAMS[corruption][severity - 1], rng)
    return np.asarray(out, dtype=np.float64).clip(0, 255).astype(np.uint8)


def sample_rng(pixels: np.ndarray, corruption: str, severity: int, seed: int) -> np.random.Generator:
    """The generator of one sample: seeded by ``seed``, the corruption, the severity and the image's own pixels,
    so that a sample's corruption depends on nothing else (not its position, worker or batch)."""
    digest = hashlib.sha256(f"{seed}/{corruption}/{severity}/{pixels.shape}/".encode() + pixels.tobytes()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


# ---- noise ----


def gaussian_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(x / 255.0 + rng.normal(0.0, c, x.shape), 0, 1) * 255


def shot_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(rng.poisson(x / 255.0 * c) / c, 0, 1) * 255


def impulse_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    out = x / 255.0
    hit = rng.random(x.shape) < c
    salt = rng.random(x.shape) < 0.5
    out[hit & salt] = 1.0
    out[hit & ~salt] = 0.0
    return out * 255


# ---- blur ----


def _gaussian(x: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> np.ndarray:
    """scikit-image's ``gaussian`` on a float image: spatial axes only, its default border and truncation."""
    sigmas = (sigma, sigma) + (0,) * (x.ndim - 2)
    return ndimage.gaussian_filter(x.astype(np.float64), sigmas, mode=mode, truncate=truncate)


def disk_kernel(radius: int, alias_blur: float) -> np.ndarray:
    """The defocus kernel: a normalised disk (on a 17 x 17 grid up to radius 8), antialiased by a 3 x 3 Gaussian
    of ``alias_blur`` (5 x 5 above radius 8), as the script's ``disk`` made it."""
    half, ksize = (8, 3) if radius <= 8 else (radius, 5)
    grid = np.arange(-half, half + 1)
    disk = (grid[:, None] ** 2 + grid[None, :] ** 2 <= radius**2).astype(np.float64)
    disk /= disk.sum()
    taps = np.exp(-((np.arange(ksize) - (ksize - 1) / 2) ** 2) / (2 * alias_blur**2))
    taps /= taps.sum()
    return ndimage.correlate(disk, np.outer(taps, taps), mode="mirror")


def defocus_blur(x: np.ndarray, c: tuple, rng: np.random.Generator) -> np.ndarray:
    kernel = disk_kernel(*c)
    x = x / 255.0
    out = np.stack([ndimage.correlate(x[..., k], kernel, mode="mirror") for k in range(3)], axis=-1)
    return np.clip(out, 0, 1) * 255


def glass_blur(x: np.ndarray, c: tuple, rng: np.random.Generator) -> np.ndarray:
    sigma, delta, iterations = c
    blurred = (_gaussian(x / 255.0, sigma) * 255).astype(np.uint8)
    height, width = x.shape[:2]
    rows = range(height - delta, delta, -1)
    cols = range(width - delta, delta, -1)
    # where each pixel's value comes from, as flat indices; the published loop, h and w descending
    source = list(range(height * width))
    for _ in range(iterations):
        steps = rng.integers(-delta, delta, size=(len(rows), len(cols), 2)).tolist()
        for i, h in enumerate(rows):
            row_steps = steps[i]
            base = h * width
            for j, w in enumerate(cols):
                dx, dy = row_steps[j]
                source[base + w] = source[(h + dy) * width + w + dx]
    shuffled = blurred.reshape(-1, 3)[np.asarray(source)].reshape(x.shape)
    return np.clip(_gaussian(shuffled / 255.0, sigma), 0, 1) * 255


def motion_kernel_blur(x: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """``x`` (H x W or H x W x C) blurred along ``angle`` degrees: 2*radius + 1 shifted copies, edges repeated,
    weighted by a one-sided Gaussian of ``sigma``."""
    width = 2 * radius + 1
    weights = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    weights /= weights.sum()
    sin, cos = math.sin(math.radians(angle)), math.cos(math.radians(angle))
    height, wide = x.shape[:2]
    out = np.zeros(x.shape, dtype=np.float64)
    for i in range(width):
        dy, dx = -math.ceil(i * sin - 0.5), -math.ceil(i * cos - 0.5)
        if abs(dy) >= height or abs(dx) >= wide:
            break
        rows = np.clip(np.arange(height) - dy, 0, height - 1)
        cols = np.clip(np.arange(wide) - dx, 0, wide - 1)
        out += weights[i] * x[rows][:, cols]
    return out


def motion_blur(x: np.ndarray, c: tuple, rng: np.random.Generator) -> np.ndarray:
    return np.clip(motion_kernel_blur(x.astype(np.float64), c[0], c[1], rng.uniform(-45, 45)), 0, 255)


def clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """The centre of ``x`` zoomed by ``factor`` (bilinear) and trimmed back to ``x``'s size, centred."""
    height, width = x.shape[:2]
    ch, cw = math.ceil(height / factor), math.ceil(width / factor)
    top, left = (height - ch) // 2, (width - cw) // 2
    zoomed = ndimage.zoom(x[top : top + ch, left : left + cw], (factor, factor) + (1,) * (x.ndim - 2), order=1)
    t, s = (zoomed.shape[0] - height) // 2, (zoomed.shape[1] - width) // 2
    return zoomed[t : t + height, s : s + width]


def zoom_blur(x: np.ndarray, c: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = (x / 255.0).astype(np.float32)
    total = x.copy()
    for factor in c:
        total += clipped_zoom(x, factor)
    return np.clip(total / (len(c) + 1), 0, 1) * 255


# ---- weather ----


def _gray(x: np.ndarray) -> np.ndarray:
    """Luma as OpenCV's RGB2GRAY weighs it."""
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def snow(x: np.ndarray, c: tuple, rng: np.random.Generator) -> np.ndarray:
    loc, scale, zoom, threshold, radius, sigma, blend = c
    x = x.astype(np.float32) / 255.0
    flakes = clipped_zoom(rng.normal(loc, scale, x.shape[:2])[..., None], zoom)[..., 0]
    flakes[flakes < threshold] = 0
    flakes = (np.clip(flakes, 0, 1) * 255).astype(np.uint8)  # the script went through an 8-bit image here
    flakes = np.round(motion_kernel_blur(flakes.astype(np.float64), radius, sigma, rng.uniform(-135, -45)))
    flakes = (flakes / 255.0)[..., None]
    x = blend * x + (1 - blend) * np.maximum(x, _gray(x)[..., None] * 1.5 + 0.5)
    return np.clip(x + flakes + np.rot90(flakes, k=2), 0, 1) * 255


def frost_dir() -> Path:
    """The folder of the frost textures: ``CLIPEVAL_FROST_DIR``, else the ``frost/`` folder of an installed
    ``imagecorruptions`` or ``imagenet_c`` package (found without importing it); ClipevalError if none."""
    looked = []
    folder = os.environ.get("CLIPEVAL_FROST_DIR")
    if folder:
        looked.append(f"CLIPEVAL_FROST_DIR={folder}")
        if all((Path(folder) / f).is_file() for f in FROST_FILES[:5]):
            return Path(folder)
    for package in ("imagecorruptions", "imagenet_c"):
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        for location in (spec.submodule_search_locations or []) if spec else []:
            candidate = Path(location) / "frost"
            looked.append(str(candidate))
            if all((candidate / f).is_file() for f in FROST_FILES[:5]):
                return candidate
    where = "; ".join(looked) if looked else "no CLIPEVAL_FROST_DIR, no imagecorruptions or imagenet_c package"
    raise ClipevalError(f"The frost texture images were not found (looked: {where}).\n{FROST_HOW}")


@functools.lru_cache(maxsize=8)
def _texture(path: str) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float64)


def frost(x: np.ndarray, c: tuple, rng: np.random.Generator) -> np.ndarray:
    texture = _texture(str(frost_dir() / FROST_FILES[rng.integers(5)]))
    height, width = x.shape[:2]
    if texture.shape[0] <= height or texture.shape[1] <= width:  # only for images larger than ImageNet-C's 224
        scale = 1.1 * max(height / texture.shape[0], width / texture.shape[1])
        size = (math.ceil(texture.shape[1] * scale), math.ceil(texture.shape[0] * scale))
        resized = Image.fromarray(texture.astype(np.uint8)).resize(size, Image.BICUBIC)
        texture = np.asarray(resized, dtype=np.float64)
    top, left = rng.integers(0, texture.shape[0] - height), rng.integers(0, texture.shape[1] - width)
    return np.clip(c[0] * x + c[1] * texture[top : top + height, left : left + width], 0, 255)


def plasma_fractal(size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """A size x size (a power of two) diamond-square height map in [0, 1]: the midpoints of each square, then of
    each diamond, are the mean of their four neighbours (wrapping around) plus uniform noise of amplitude
    ``wibble``^2, ``wibble`` starting at 100 and divided by ``decay`` at each halving of the step."""
    grid = np.zeros((size, size))
    step, wibble = size, 100.0

    def noisy(total: np.ndarray) -> np.ndarray:
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = grid[0:size:step, 0:size:step]
        around = corners + np.roll(corners, -1, axis=0)
        grid[half:size:step, half:size:step] = noisy(around + np.roll(around, -1, axis=1))
        centres = grid[half:size:step, half:size:step]
        corners = grid[0:size:step, 0:size:step]
        across = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        grid[0:size:step, half:size:step] = noisy(across)
        down = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        grid[half:size:step, 0:size:step] = noisy(down)
        step //= 2
        wibble /= decay
    grid -= grid.min()
    return grid / grid.max()


def fog(x: np.ndarray, c: tuple, rng: np.random.Generator) -> np.ndarray:
    height, width = x.shape[:2]
    size = 1 << (max(height, width) - 1).bit_length()  # the next power of two (256 for ImageNet-C's 224)
    x = x / 255.0
    peak = x.max()
    x = x + c[0] * plasma_fractal(size, c[1], rng)[:height, :width, None]
    return np.clip(x * peak / (peak + c[0]), 0, 1) * 255


# ---- digital ----


def brightness(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    # HSV value V = max(R, G, B) raised by c (clipped to 1) at the same hue and saturation: every channel scales
    # by V'/V; a black pixel (V = 0, saturation 0) becomes grey V'
    x = x / 255.0
    value = x.max(axis=-1, keepdims=True)
    raised = np.minimum(value + c, 1.0)
    scale = np.divide(raised, value, out=np.zeros_like(value), where=value > 0)
    return np.clip(np.where(value > 0, x * scale, raised), 0, 1) * 255


def contrast(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    x = x / 255.0
    means = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def elastic_transform(x: np.ndarray, c: tuple, rng: np.random.Generator) -> np.ndarray:
    alpha, sigma, amount = c
    image = x.astype(np.float32) / 255.0
    height, width = x.shape[:2]
    # a random affine map moving three points (x, y) around the centre by up to `amount` pixels each
    centre = np.array([height // 2, width // 2], dtype=np.float64)
    side = min(height, width) // 3
    points = np.array([centre + side, [centre[0] + side, centre[1] - side], centre - side])
    moved = points + rng.uniform(-amount, amount, size=points.shape).astype(np.float32)
    forward = np.linalg.solve(np.c_[points, np.ones(3)], moved).T  # 2 x 3: moved = forward @ [p, 1]
    inverse = np.linalg.inv(forward[:, :2])
    swap = np.array([[0, 1], [1, 0]])  # (x, y) <-> (row, col)
    matrix = swap @ inverse @ swap
    offset = -(swap @ inverse @ forward[:, 2])
    image = np.stack(
        [ndimage.affine_transform(image[..., k], matrix, offset, order=1, mode="mirror") for k in range(3)], -1
    )
    dx = (_gaussian(rng.uniform(-1, 1, (height, width)), sigma, "reflect", 3) * alpha).astype(np.float32)
    dy = (_gaussian(rng.uniform(-1, 1, (height, width)), sigma, "reflect", 3) * alpha).astype(np.float32)
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    coords = [(rows + dy).ravel(), (cols + dx).ravel()]
    out = np.stack(
        [ndimage.map_coordinates(image[..., k], coords, order=1, mode="reflect") for k in range(3)], -1
    ).reshape(x.shape)
    return np.clip(out, 0, 1) * 255


def pixelate(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    height, width = x.shape[:2]
    small = Image.fromarray(x).resize((int(width * c), int(height * c)), Image.BOX)
    return np.asarray(small.resize((width, height), Image.BOX))


def jpeg_compression(x: np.ndarray, c: int, rng: np.random.Generator) -> np.ndarray:
    return jpeg_round_trip(x, c)


def jpeg_round_trip(x: np.ndarray, quality: int) -> np.ndarray:
    """``x`` saved as a JPEG of ``quality`` by PIL and decoded again."""
    buffer = io.BytesIO()
    Image.fromarray(x).save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as img:
        return np.asarray(img.convert("RGB"))


FUNCTIONS: dict[str, Callable[[np.ndarray, object, np.random.Generator], np.ndarray]] = {
    name: globals()[name] for name in CORRUPTIONS
}
