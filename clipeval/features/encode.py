"""Image features: encode a source once per model, and keep the result in the cache.

Everything downstream (zero-shot, linear probes, few-shot, template ablations) reads the
same features, so a dataset is encoded once per (model, data, selection, transform,
precision). Images stream through a DataLoader; only the features stay in memory.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from clipeval.cache import TensorCache, cache_key
from clipeval.config.runtime import Runtime
from clipeval.contracts import DualEncoder
from clipeval.data.base import Item, MapSource, Source
from clipeval.errors import ClipevalError
from clipeval.models.base import LOOSEST_NORM_TOLERANCE, check_embeddings, embedding_fault

log = logging.getLogger(__name__)

SHOW_SKIPPED = 5


@dataclass
class FeatureSet:
    features: torch.Tensor  # [N, D] float32, L2-normalised
    labels: torch.Tensor  # [N] int64
    ids: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (sample id, why)
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.ids)


def feature_key(model: DualEncoder, source: Source, runtime: Runtime) -> str:
    return cache_key(
        kind="image_features",
        model=model.fingerprint,
        source=source.key,
        limit=runtime.limit,
        precision=runtime.precision,
        decode=runtime.decode,
    )


def image_features(model: DualEncoder, source: Source, runtime: Runtime, cache: TensorCache) -> FeatureSet:
    key = feature_key(model, source, runtime)
    what = source.describe() + (f", first {runtime.limit} used" if runtime.limit else "")
    fs = _cached(cache, key)
    if fs is not None:
        log.info(
            "Image features of %s: cache hit (%d samples), not re-encoding",
            source.describe(),
            len(fs),
        )
    else:
        log.info("Image features of %s: cache miss, encoding", what)
        fs = _encode(model, source, runtime)
        saved = cache.save(
            "features",
            key,
            {
                "features": fs.features,
                "labels": fs.labels,
                "ids": fs.ids,
                "skipped": [list(s) for s in fs.skipped],
            },
        )
        if saved:
            log.info("Cached image features at %s", saved)
    _report_skipped(fs, source)
    return fs


def _cached(cache: TensorCache, key: str) -> FeatureSet | None:
    """The cached features of ``key`` when they pass :func:`feature_set_fault`; a warning and None otherwise."""
    entry = cache.load("features", key)
    if entry is None:
        return None
    try:
        fs = FeatureSet(
            entry["features"], entry["labels"], list(entry["ids"]), [tuple(s) for s in entry["skipped"]], True
        )
    except (KeyError, TypeError) as exc:
        fault: str | None = f"missing or malformed field {exc}"
    else:
        fault = feature_set_fault(fs)
    if fault is not None:
        log.warning("Ignoring cached image features %s: %s; encoding again", cache.path("features", key), fault)
        return None
    return fs


def feature_set_fault(fs: FeatureSet) -> str | None:
    """What makes ``fs`` unusable: features not [N, D] finite unit float32 rows, labels not [N] int64, N ids."""
    if not isinstance(fs.features, torch.Tensor) or fs.features.dtype != torch.float32:
        return "features are not a float32 tensor"
    fault = embedding_fault(fs.features, tolerance=LOOSEST_NORM_TOLERANCE)
    if fault is not None:
        return "the features " + fault.removeprefix("returned ")
    if not isinstance(fs.labels, torch.Tensor) or fs.labels.dtype != torch.int64 or fs.labels.dim() != 1:
        return "labels are not a 1-D int64 tensor"
    if not len(fs.features) == len(fs.labels) == len(fs.ids):
        return f"{len(fs.features)} features, {len(fs.labels)} labels and {len(fs.ids)} ids"
    return None


def _encode(model: DualEncoder, source: Source, runtime: Runtime) -> FeatureSet:
    loader, decode = _batches(model, source, runtime)
    dataset = loader.dataset
    total = math.ceil(len(dataset) / runtime.batch_size) if hasattr(dataset, "__len__") else None
    encode = image_encoder(model, runtime)
    feats, labels, ids, skipped = [], [], [], []
    start, count = time.perf_counter(), 0
    with torch.inference_mode(), runtime.autocast():
        for images, batch_labels, batch_ids, batch_skipped in tqdm(
            loader,
            total=total,
            desc="encode images",
            unit="batch",
            disable=None if runtime.progress else True,
        ):
            if decode is not None and images is not None:
                images, kept, failed = decode(images, batch_ids)
                batch_labels, batch_ids = batch_labels[kept], [batch_ids[i] for i in kept]
                batch_skipped = batch_skipped + failed
            skipped += batch_skipped
            if images is None:
                continue
            images = images.to(runtime.device, non_blocking=True, memory_format=_memory_format(runtime))
            feats.append(check_embeddings(encode(images), len(batch_ids), model.name, "image").float().cpu())
            labels.append(batch_labels)
            ids += batch_ids
            count += len(batch_ids)
    if not ids:
        raise ClipevalError(f"No readable images in {source.describe()} ({len(skipped)} failed to decode).")
    elapsed = time.perf_counter() - start
    log.info("Encoded %d images in %.1f s (%.1f images/s)", count, elapsed, count / max(elapsed, 1e-9))
    features, label_tensor = torch.cat(feats), torch.cat(labels)
    if loader.num_workers > 0 and not hasattr(dataset, "__len__"):
        # Workers interleave shards in an order that depends on timing; sort for reproducible outputs.
        order = sorted(range(len(ids)), key=ids.__getitem__)
        features, label_tensor, ids = features[order], label_tensor[order], [ids[i] for i in order]
    return FeatureSet(features, label_tensor, ids, skipped)


def _batches(model: DualEncoder, source: Source, runtime: Runtime):
    """The DataLoader, and the decoder the main process applies to its batches (None: workers decode)."""
    workers = min(runtime.workers, source.loader_options(runtime.limit).get("max_workers", runtime.workers))
    options = dict(batch_size=runtime.batch_size, num_workers=workers, pin_memory=runtime.device.type == "cuda")
    if runtime.decode == "pil":
        dataset = source.dataset(model.preprocess, runtime.limit)
        return torch.utils.data.DataLoader(dataset, collate_fn=_collate, **options), None
    from clipeval.data import tensor_decode

    if not isinstance(source, MapSource) or source.read_bytes(0) is None:
        raise ClipevalError(
            f"runtime.decode={runtime.decode} reads image files, which {source.describe()} does not have "
            "(image folders without a crop do). Use runtime.decode=pil."
        )
    transform = tensor_decode.tensor_transform(model.preprocess)
    size = len(source) if runtime.limit is None else min(runtime.limit, len(source))
    loader = torch.utils.data.DataLoader(
        tensor_decode.BytesDataset(source, size), collate_fn=functools.partial(_collate, stack=False), **options
    )
    return loader, lambda data, ids: tensor_decode.decode_batch(data, ids, transform, runtime.device)


def _memory_format(runtime: Runtime) -> torch.memory_format:
    return torch.channels_last if runtime.channels_last else torch.preserve_format


def image_encoder(model: DualEncoder, runtime: Runtime) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model.encode_image`` as the runtime asks: weights in channels_last, compiled once per model and backend."""
    if runtime.channels_last and isinstance(getattr(model, "model", None), torch.nn.Module):
        model.model.to(memory_format=torch.channels_last)
    if not runtime.compile:
        return model.encode_image
    backend = runtime.compile if isinstance(runtime.compile, str) else "inductor"
    compiled = model.__dict__.setdefault("_clipeval_compiled", {})  # lives and dies with the model
    if backend not in compiled:
        log.info("Compiling the image tower of %s with torch.compile (backend %s)", model.name, backend)
        compiled[backend] = torch.compile(model.encode_image, backend=backend, dynamic=False)
    return compiled[backend]


def _collate(items: list[Item], stack: bool = True):
    """(images, labels, ids, skipped) of a batch; ``stack=False`` keeps the images a list (encoded files)."""
    good = [it for it in items if it.error is None]
    skipped = [(it.sample_id, it.error) for it in items if it.error is not None]
    if not good:
        return None, None, [], skipped
    images = torch.stack([it.image for it in good]) if stack else [it.image for it in good]
    labels = torch.tensor([it.label for it in good], dtype=torch.int64)
    return images, labels, [it.sample_id for it in good], skipped


def _report_skipped(fs: FeatureSet, source: Source) -> None:
    if not fs.skipped:
        return
    shown = "\n".join(f"  {sid}: {why}" for sid, why in fs.skipped[:SHOW_SKIPPED])
    more = f"\n  ... and {len(fs.skipped) - SHOW_SKIPPED} more" if len(fs.skipped) > SHOW_SKIPPED else ""
    log.warning(
        "%d of %d images in %s could not be read and are left out of every metric:\n%s%s",
        len(fs.skipped),
        len(fs.skipped) + len(fs),
        source.describe(),
        shown,
        more,
    )
