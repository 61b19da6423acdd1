"""``runtime.decode=torchvision``: JPEGs decoded by torchvision.io on the run's device.

On a GPU the dataloader workers then only read file bytes; ``decode_jpeg`` decodes a whole
batch on the device (nvJPEG) and the model's own Resize / CenterCrop / Normalize run there
on tensors. Pixels differ slightly from the default PIL path (another JPEG decoder and
tensor resampling), so features are cached separately and the default stays ``pil``, the
path published numbers were made with. Files that are not JPEGs are decoded by PIL on the
CPU, as on the default path; unreadable ones are reported like any other.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torchvision import transforms
from torchvision.io import ImageReadMode, decode_jpeg

from clipeval.data.base import IMAGE_ERRORS, Item, MapSource, to_rgb
from clipeval.errors import ClipevalError

JPEG_MAGIC = b"\xff\xd8\xff"
# steps whose job the decoder already does (RGB, CHW, scaled to [0, 1]); open_clip's names included
_DONE_BY_DECODER = {"ToTensor", "PILToTensor", "MaybeToTensor", "MaybeConvertMode", "_convert_to_rgb"}
_TENSOR_READY = (transforms.Resize, transforms.CenterCrop, transforms.Normalize)


def tensor_transform(preprocess: Callable) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's PIL preprocessing as operations on a float CHW tensor in [0, 1]."""
    steps = list(preprocess.transforms) if isinstance(preprocess, transforms.Compose) else [preprocess]
    kept = []
    for step in steps:
        if isinstance(step, _TENSOR_READY):
            kept.append(step)
        elif getattr(step, "__name__", type(step).__name__) in _DONE_BY_DECODER:
            continue
        else:
            raise ClipevalError(
                f"runtime.decode=torchvision needs a preprocess made of Resize, CenterCrop, ToTensor and "
                f"Normalize; this model's has {step!r}. Use runtime.decode=pil."
            )

    def apply(image: torch.Tensor) -> torch.Tensor:
        x = image.float().div_(255)
        for step in kept:
            x = step(x)
            if isinstance(step, transforms.Resize):
                x = x.clamp_(0, 1)  # as PIL, which resamples in 8 bits
        return x

    return apply


class BytesDataset(torch.utils.data.Dataset):
    """File bytes of a map source, read in the workers."""

    def __init__(self, source: MapSource, size: int):
        self.source, self.size = source, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Item:
        src = self.source
        try:
            raw = src.read_bytes(index)
            if not raw:
                raise ValueError("empty file")
            data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        except IMAGE_ERRORS as exc:
            return Item(None, src.label(index), src.sample_id(index), f"{type(exc).__name__}: {exc}")
        return Item(data, src.label(index), src.sample_id(index))


def decode_batch(
    data: list[torch.Tensor], ids: list[str], transform: Callable, device: torch.device
) -> tuple[torch.Tensor | None, list[int], list[tuple[str, str]]]:
    """Decoded, transformed images; the indices of those that decoded, and (id, why) for the rest."""
    images: list[torch.Tensor | None] = [None] * len(data)
    errors: dict[int, str] = {}
    jpegs = [i for i, d in enumerate(data) if _is_jpeg(d)]
    try:
        decoded = decode_jpeg([data[i] for i in jpegs], mode=ImageReadMode.RGB, device=device) if jpegs else []
        for i, img in zip(jpegs, decoded, strict=True):
            images[i] = img
    except RuntimeError:  # one bad file fails the batch: decode one by one to find it
        for i in jpegs:
            images[i] = _decode_one(data[i], device, errors, i)
    for i in set(range(len(data))) - set(jpegs):
        images[i] = _decode_one(data[i], torch.device("cpu"), errors, i)
    kept = [i for i, img in enumerate(images) if img is not None]
    skipped = [(ids[i], why) for i, why in sorted(errors.items())]
    if not kept:
        return None, kept, skipped
    return _transform_by_size([images[i].to(device) for i in kept], transform), kept, skipped


def _transform_by_size(images: list[torch.Tensor], transform: Callable) -> torch.Tensor:
    """``transform`` of each image, stacked in order; images of one size go through it as one batch (one
    resize kernel instead of one per image: on a GPU, a Python loop over the images held the whole path
    to the per-image launch rate). Each image is resampled on its own either way, so the result is the
    same as transforming them one by one."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(i)
    out: list[torch.Tensor | None] = [None] * len(images)
    for members in groups.values():
        for i, x in zip(members, transform(torch.stack([images[i] for i in members])), strict=True):
            out[i] = x
    return torch.stack(out)  # type: ignore[arg-type]


def _decode_one(data: torch.Tensor, device: torch.device, errors: dict[int, str], i: int) -> torch.Tensor | None:
    try:
        if _is_jpeg(data):
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        with Image.open(io.BytesIO(data.numpy().tobytes())) as image:  # PNG, BMP, TIFF, ...: as the PIL path
            return torch.from_numpy(np.array(to_rgb(image))).permute(2, 0, 1)
    except (RuntimeError, *IMAGE_ERRORS) as exc:
        errors[i] = f"{type(exc).__name__}: {exc}"
        return None


def _is_jpeg(data: torch.Tensor) -> bool:
    return bytes(data[:3].tolist()) == JPEG_MAGIC
