"""The dual-encoder protocol every evaluator talks to.

An adapter owns everything model-specific: its preprocessing (it travels with the weights,
as in timm), its tokenizer, and a fingerprint of both, which keys every cache entry.
Embeddings come out L2-normalised and float32 whatever precision the forward ran in, so
evaluators never have to know.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from clipeval.contracts import DualEncoder
from clipeval.errors import ClipevalError

#: model-config keys that name the weights, most specific first (open_clip's checkpoint file before its tag)
WEIGHTS_KEYS = ("checkpoint", "pretrained", "name_or_path", "weights", "path")
_WEIGHT_SUFFIXES = {".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".pkl"}


#: folders that hold a training run's checkpoints: a file in one is named with the run's folder too
CHECKPOINT_FOLDERS = {"checkpoints", "checkpoint", "ckpts"}


def weights_label(config: dict) -> str | None:
    """A short name for the weights a model config points at: a file's stem or a folder's name, else the value
    itself (an open_clip tag such as ``openai``, a hub id); None when the config names none.

    It tells apart runs of one model config with different weights (``model.pretrained=a.pt,b.pt``). A file in a
    folder named ``checkpoints`` (open_clip's and most trainers' ``logs/<run>/checkpoints/epoch_N.pt``) is named
    with its run's folder too (``runA/epoch_32``): the same epoch of two training runs differs."""
    for key in WEIGHTS_KEYS:
        value = config.get(key)
        if not isinstance(value, str) or not value:
            continue
        path = Path(value).expanduser()
        if path.suffix in _WEIGHT_SUFFIXES or path.is_file():
            if path.parent.name in CHECKPOINT_FOLDERS and path.parent.parent.name:
                return f"{path.parent.parent.name}/{path.stem}"
            return path.stem
        return path.name if path.is_dir() else value
    return None


def check_dual_encoder(obj: object, origin: str) -> DualEncoder:
    """Fail early, and clearly, when a user's ``_target_`` class misses part of the protocol."""
    needed = [
        "name",
        "fingerprint",
        "preprocess",
        "logit_scale",
        "tokenize",
        "encode_image",
        "encode_text",
        "to",
    ]
    missing = [attr for attr in needed if not hasattr(obj, attr)]
    if missing:
        raise ClipevalError(
            f"Model {origin} ({type(obj).__name__}) does not implement the DualEncoder protocol: "
            f"missing {', '.join(missing)}. See clipeval.contracts.DualEncoder."
        )
    return obj  # type: ignore[return-value]


def weights_digest(module: torch.nn.Module) -> hashlib._Hash:
    """sha256 over parameter and buffer names, shapes, dtypes and bytes.

    Each tensor is hashed in a thread pool (hashlib releases the GIL on large buffers), so a
    ViT-B/32's 600 MB take about half the time of one sequential pass.
    """
    items = sorted(module.state_dict().items())
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        parts = list(pool.map(lambda item: _tensor_digest(*item), items))
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest


def _tensor_digest(name: str, tensor: torch.Tensor) -> bytes:
    t = tensor.detach().to("cpu").contiguous().reshape(-1)
    digest = hashlib.sha256(f"{name}|{tuple(tensor.shape)}|{t.dtype}|".encode())
    if t.numel():
        digest.update(t.view(torch.uint8).numpy())
    return digest.digest()


@contextlib.contextmanager
def skip_weight_init() -> Iterator[None]:
    """Build a module without running ``torch.nn.init``: only for weights a strict load overwrites.

    Random initialisation of a ViT-B/32 costs about 0.8 s on two cores and is thrown away
    when the checkpoint loads; transformers skips it the same way.
    """
    names = [n for n in vars(torch.nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(torch.nn.init, n) for n in names}
    try:
        for n in names:
            setattr(torch.nn.init, n, _leave_as_is)
        yield
    finally:
        for n, fn in saved.items():
            setattr(torch.nn.init, n, fn)


def _leave_as_is(tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return tensor


def stable_repr(obj: object) -> str:
    """``repr`` without memory addresses, so a transform's description is the same in every run."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(obj))


def fingerprint(module: torch.nn.Module, *parts: object) -> str:
    digest = weights_digest(module)
    for part in parts:
        digest.update(stable_repr(part).encode())
    return digest.hexdigest()[:32]


#: how far from 1 an embedding's L2 norm may be: float32 normalisation is exact to about 1e-6; a tower that
#: normalises in half precision gets four of its dtype's epsilons (fp16 0.004, bf16 0.031)
UNIT_NORM_TOLERANCE = 1e-3
#: what cached features must meet: the loosest tolerance any accepted encoder output had (bf16)
LOOSEST_NORM_TOLERANCE = 4 * torch.finfo(torch.bfloat16).eps


def norm_tolerance(dtype: torch.dtype) -> float:
    return max(UNIT_NORM_TOLERANCE, 4 * torch.finfo(dtype).eps) if dtype.is_floating_point else UNIT_NORM_TOLERANCE


def embedding_fault(embeddings: object, batch: int | None = None, tolerance: float | None = None) -> str | None:
    """What is wrong with ``embeddings`` as a [batch, D] tensor of finite unit vectors; None when nothing is.

    ``batch=None`` accepts any number of rows; ``tolerance=None`` is :func:`norm_tolerance` of their dtype.
    Costs one pass over the tensor, on its device.
    """
    if not isinstance(embeddings, torch.Tensor):
        return f"returned a {type(embeddings).__name__}, not a tensor"
    if embeddings.dim() != 2 or embeddings.shape[1] == 0:
        return f"returned shape {list(embeddings.shape)}, expected [batch, D]"
    if batch is not None and embeddings.shape[0] != batch:
        return f"returned {embeddings.shape[0]} embeddings for a batch of {batch}"
    x = embeddings.detach().float()
    tolerance = norm_tolerance(embeddings.dtype) if tolerance is None else tolerance
    finite = torch.isfinite(x).all(dim=1)
    if not bool(finite.all()):
        return f"returned non-finite values (NaN or Inf) in {int((~finite).sum())} of {len(x)} embeddings"
    norms = x.norm(dim=1)
    if len(norms) and float((norms - 1).abs().max()) > tolerance:
        return (
            f"returned embeddings that are not unit norm (L2 norms {float(norms.min()):.4g} to {float(norms.max()):.4g}, "
            f"expected 1 within {tolerance:g})"
        )
    return None


def check_embeddings(embeddings: torch.Tensor, batch: int, model: str, tower: str) -> torch.Tensor:
    """``embeddings`` (as the tower returned them: before any ``.float()``) when they are [batch, D], finite and
    unit norm within :func:`norm_tolerance`; else ClipevalError naming ``model`` and ``tower``."""
    fault = embedding_fault(embeddings, batch)
    if fault is not None:
        raise ClipevalError(
            f"Model '{model}': its {tower} tower {fault}. encode_image and encode_text must return one finite, "
            "L2-normalised row per input (clipeval.models.base.normalize); nothing was cached or scored."
        )
    return embeddings


PROBE_TEXTS = ("a photo of a dog.", "a drawing of a red circle.")


def check_outputs(model: DualEncoder, device: torch.device | str = "cpu") -> DualEncoder:
    """Encode two noise images and two prompts; ClipevalError unless both towers give [2, D] finite unit
    vectors of the same width D, and ``logit_scale`` (the multiplier of cosine similarities: exp of the
    stored parameter for open_clip and transformers) is finite and > 0. Run on every model build, before
    anything it encodes is cached or scored."""
    check_logit_scale(model)
    rng = torch.Generator().manual_seed(0)
    pixels = (torch.rand((2, 64, 64, 3), generator=rng) * 255).to(torch.uint8).numpy()
    from PIL import Image

    with torch.inference_mode():
        images = torch.stack([model.preprocess(Image.fromarray(p)) for p in pixels])
        image = check_embeddings(model.encode_image(images.to(device)), 2, model.name, "image")
        text = check_embeddings(model.encode_text(model.tokenize(list(PROBE_TEXTS)).to(device)), 2, model.name, "text")
    if image.shape[1] != text.shape[1]:
        raise ClipevalError(
            f"Model '{model.name}': its image embeddings have width {image.shape[1]} but its text embeddings "
            f"{text.shape[1]}; zero-shot scores need both towers in one space of one width."
        )
    return model


def check_logit_scale(model: DualEncoder) -> float:
    """``model.logit_scale`` as a float when finite and > 0; else ClipevalError naming the model and the value.

    Every score that uses it (adversarial attacks' losses, calibrated probabilities) would mean nothing:
    NaN gives NaN gradients, 0 or a negative scale flattens or inverts every class probability.
    """
    try:
        scale = float(model.logit_scale)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ClipevalError(
            f"Model '{model.name}': logit_scale must be one number, got {type(model.logit_scale).__name__} ({exc})."
        ) from exc
    if not math.isfinite(scale) or scale <= 0:
        raise ClipevalError(
            f"Model '{model.name}': logit_scale is {scale}, but it multiplies cosine similarities into logits and "
            "must be finite and > 0 (CLIP's is about 100). The checkpoint's logit_scale tensor is broken, or a "
            "custom adapter returns the stored log-scale instead of its exp()."
        )
    return scale


def normalize(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class WrappedModule:
    """Shared plumbing of adapters that wrap one ``torch.nn.Module`` with a ``logit_scale`` parameter."""

    model: torch.nn.Module

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str):
        self.model.to(device)
        return self
