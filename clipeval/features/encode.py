"""Image features: encode a source once per model, and keep the result in the cache.

Everything downstream (zero-shot, linear probes, few-shot, template ablations) reads the
same features, so a dataset is encoded once per (model, data, selection, transform,
precision). Images stream through a DataLoader; only the features stay in memory.

A dataset with random access (image folders, ImageNet layouts, Hugging Face datasets) is
encoded in chunks of ``runtime.chunk_size`` images, rounded up to whole batches. Each chunk
is cached (atomically, checksummed) as soon as it is done, under the feature key, its image
range and the batch size; a run that was killed leaves its finished chunks, and a rerun
encodes only the chunks that are missing. Chunks start at multiples of the batch size, so
every image is encoded in the same batch as in an uninterrupted run, and the features are
bit-identical. Once the whole entry is cached, its chunks are deleted. When the cache cannot take the
entry (it filled up, or turned read-only, while the source was encoded: one warning, and the run goes on
with the features in memory), the chunks this run cached for it are deleted too: they hold the space the
entry lacked, and a full cache would otherwise keep them for good. Chunks a killed run left, which this
run resumed from, stay: they were there before and a later run still resumes from them. Webdataset shards
(no random access) are encoded in one go. While a run encodes a source it holds the entry's
lock (:meth:`TensorCache.lock`): a second run that needs the same features waits and reuses them.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from clipeval.cache import TensorCache, cache_key
from clipeval.config.runtime import Runtime
from clipeval.contracts import DualEncoder
from clipeval.data.base import Item, MapSource, Source
from clipeval.distributed import World, world
from clipeval.errors import ClipevalError
from clipeval.interrupt import during, workers_share_temp_dir
from clipeval.models.base import LOOSEST_NORM_TOLERANCE, check_embeddings, embedding_fault
from clipeval.progress import progress

log = logging.getLogger(__name__)

SHOW_SKIPPED = 5
#: cache kind of the chunks of an entry that is being encoded. Chunks are a kind of their own, under keys of
#: their own (:func:`chunk_key`): whole entries keep their format and keys, so FORMAT_VERSION stays 2.
CHUNK_KIND = "feature_chunks"


@dataclass
class FeatureSet:
    features: torch.Tensor  # [N, D] float32, L2-normalised
    labels: torch.Tensor  # [N] int64
    ids: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (sample id, why)
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class CaptionSet:
    """The captions of a dataset's encoded images, for retrieval (:meth:`clipeval.run.context.RunContext.captions`).

    ``features``: [T, D] float32, unit norm, one row per caption; ``image``: [T] int64, the row of each
    caption's image in the dataset's :class:`FeatureSet`; ``ids``: [T] ``<image sample id>#<j>`` (its j-th
    caption, from 0); ``texts``: [T] the captions.
    """

    features: torch.Tensor
    image: torch.Tensor
    ids: list[str]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class AssociationSet:
    """The association instances of a dataset whose candidate images were all encoded
    (:meth:`clipeval.run.context.RunContext.associations`).

    ``features``: [I, D] float32, unit norm, one row per instance: its cue's prompt; ``candidates``: I tensors
    [m_i] int64, the rows of each instance's candidate images in the dataset's :class:`FeatureSet`;
    ``answers``: I tensors [m_i] bool, which candidates go with the cue; ``ids``: [I] the instances' ids;
    ``prompts``: [I] the texts encoded.
    """

    features: torch.Tensor
    candidates: list[torch.Tensor]
    answers: list[torch.Tensor]
    ids: list[str]
    prompts: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def feature_key(model: DualEncoder, source: Source, runtime: Runtime) -> str:
    return cache_key(
        kind="image_features",
        model=model.fingerprint,
        source=source.key,
        limit=runtime.limit,
        precision=runtime.precision,
        # the torchvision path's code version: its GPU kernels are not promised to give the same bits batched
        # as one by one, so features cached before it batched by size are not reused
        decode=runtime.decode if runtime.decode == "pil" else f"{runtime.decode}/2",
    )


def chunk_images(runtime: Runtime) -> int:
    """Images per chunk: ``runtime.chunk_size`` rounded up to whole batches."""
    return math.ceil(runtime.chunk_size / runtime.batch_size) * runtime.batch_size


def chunk_key(key: str, start: int, stop: int, batch_size: int) -> str:
    """The cache key of images ``start:stop`` of the entry ``key``, encoded in batches of ``batch_size``."""
    return cache_key(kind="image_feature_chunk", features=key, start=start, stop=stop, batch_size=batch_size)


def image_features(model: DualEncoder, source: Source, runtime: Runtime, cache: TensorCache) -> FeatureSet:
    """The features of ``source``: from the cache, else encoded (and cached). Under torchrun every rank calls it
    in the same order: rank 0 looks in the cache and tells the others, each rank encodes its share of the
    chunks, and every rank gets all of them (see :mod:`clipeval.distributed`)."""
    ranks = world()
    key = feature_key(model, source, runtime)
    what = source.describe() + (f", first {runtime.limit} used" if runtime.limit else "")
    stamp = cache.stamp("features", key)
    fs = ranks.broadcast(_cached(cache, key) if ranks.is_main else None)
    if fs is None:
        with cache.lock("features", key, f"the image features of {what}") as waited:  # rank 0's lock only
            if ranks.is_main and (waited or cache.stamp("features", key) != stamp):  # cached by another run meanwhile
                fs = _cached(cache, key)
            fs = ranks.broadcast(fs)
            if fs is None:
                fs, chunks, written = _encode(model, source, runtime, cache, key, what)
                ranks.on_main(lambda: _save_entry(cache, key, fs, chunks, written), f"caching the features of {what}")
                if not ranks.is_main:  # rank 0 has saved the whole entry (or the cache could not take it)
                    for chunk in written:
                        cache.remove(CHUNK_KIND, chunk)
    if fs.from_cache:
        log.debug(
            "Image features of %s: cache hit (%d samples), not re-encoding",
            source.describe(),
            len(fs),
        )
    _report_skipped(fs, source)
    return fs


def _save_entry(cache: TensorCache, key: str, fs: FeatureSet, chunks: list[str], written: list[str]) -> bool:
    """Cache the whole entry and delete its chunks; when the cache cannot take it, delete the chunks this run
    cached (they hold the space the entry lacked). Whether the entry was saved."""
    entry = {"features": fs.features, "labels": fs.labels, "ids": fs.ids, "skipped": [list(s) for s in fs.skipped]}
    saved = cache.save("features", key, entry)
    if saved:
        log.debug("Cached image features at %s", saved)
        for chunk in chunks:  # the whole entry holds them now
            cache.remove(CHUNK_KIND, chunk)
    elif written:  # the cache could not take the entry (warned): free what this run put there
        removed = sum(cache.remove(CHUNK_KIND, chunk) for chunk in written)
        log.info(
            "Removed the %d chunk(s) of these features that this run cached%s",
            removed,
            "" if removed == len(written) else f" ({len(written) - removed} could not be removed)",
        )
    return saved is not None


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


class _Part:
    """What the batches of one chunk (or of a whole stream) gave: features, labels, ids, skipped images."""

    def __init__(self) -> None:
        self.feats: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.ids: list[str] = []
        self.skipped: list[tuple[str, str]] = []

    def entry(self) -> dict:
        """As a cache entry; a chunk whose every image failed has [0, 0] features and no labels."""
        return {
            "features": torch.cat(self.feats) if self.feats else torch.empty(0, 0),
            "labels": torch.cat(self.labels) if self.labels else torch.empty(0, dtype=torch.int64),
            "ids": self.ids,
            "skipped": [list(s) for s in self.skipped],
        }


def _cached_chunk(cache: TensorCache, key: str, size: int) -> dict | None:
    """A cached chunk of ``size`` images (each one encoded or skipped) whose features pass the checks; else None."""
    entry = cache.load(CHUNK_KIND, key)
    if entry is None:
        return None
    try:
        ids, skipped = list(entry["ids"]), [tuple(s) for s in entry["skipped"]]
        fault = None if len(ids) + len(skipped) == size else f"{len(ids) + len(skipped)} images, not {size}"
        if fault is None and ids:
            fault = feature_set_fault(FeatureSet(entry["features"], entry["labels"], ids, skipped))
    except (KeyError, TypeError) as exc:
        fault = f"missing or malformed field {exc}"
    if fault is not None:
        log.warning("Ignoring cached chunk %s: %s; encoding it again", cache.path(CHUNK_KIND, key), fault)
        return None
    return entry


def _encode(
    model: DualEncoder, source: Source, runtime: Runtime, cache: TensorCache, key: str, what: str
) -> tuple[FeatureSet, list[str], list[str]]:
    """The features of ``source``, the keys of its chunks (to delete once the entry is cached), and those of the
    chunks this call cached."""
    dataset, options, decode = _dataset(model, source, runtime)
    collate = options.pop("collate_fn")
    streamed = isinstance(dataset, torch.utils.data.IterableDataset)
    if streamed:
        return _encode_stream(model, runtime, dataset, options, collate, decode, source, what), [], []

    ranks = world()
    chunks = _Chunks.of(len(dataset), runtime, cache, key)
    cached = [0]  # images in cached chunks: a rerun resumes from them

    def where() -> str:
        if not cached[0]:
            return "none of them is cached"
        return f"{cached[0]} of {chunks.n} images are cached and a rerun resumes from there"

    def work() -> tuple[dict[int, dict], list[str]]:
        parts = _resumed(cache, chunks, mine, what)
        cached[0] += sum(chunks.size(i) for i in parts)
        todo = [i for i in mine if i not in parts]
        written = _encode_chunks(
            model, runtime, (dataset, options, collate, decode), chunks, todo, parts, cache, cached
        )
        return {i: parts[i] for i in mine}, written

    with during(lambda: f"encoding the image features of {what}; {where()}"):  # from the log line on
        log.info("Image features of %s: cache miss, encoding %d images", what, chunks.n)
        mine = ranks.span(len(chunks.ranges))  # under torchrun: this rank's chunks (all of them otherwise)
        if ranks.distributed:
            _log_span(ranks, mine, chunks)
        shares = ranks.each(work, f"encoding the image features of {what}")  # every rank's chunks, on every rank
    parts = {i: entry for share, _ in shares for i, entry in share.items()}
    return _feature_set([parts[i] for i in range(len(chunks.ranges))], source), chunks.keys, shares[ranks.rank][1]


@dataclass
class _Chunks:
    """The chunks of a dataset of ``n`` images: their image ranges, and their cache keys (none when the dataset is
    one chunk, whose entry is the whole entry, or when the cache cannot be written)."""

    n: int
    batch_size: int
    ranges: list[tuple[int, int]]
    keys: list[str]

    @classmethod
    def of(cls, n: int, runtime: Runtime, cache: TensorCache, key: str) -> _Chunks:
        step, bs = chunk_images(runtime), runtime.batch_size
        ranges = [(start, min(start + step, n)) for start in range(0, n, step)]
        keys = [chunk_key(key, start, stop, bs) for start, stop in ranges] if len(ranges) > 1 and cache.writable else []
        return cls(n, bs, ranges, keys)

    def size(self, i: int) -> int:
        return self.ranges[i][1] - self.ranges[i][0]


def _log_span(ranks: World, mine: range, chunks: _Chunks) -> None:
    if ranks.is_main and len(chunks.ranges) < ranks.size:  # the other ranks log warnings only: rank 0 says it
        log.info(
            "%d of %d ranks encode no chunk of these images: they make %d chunk(s) of runtime.chunk_size=%d (a "
            "smaller chunk_size shares a dataset out more finely)",
            ranks.size - len(chunks.ranges),
            ranks.size,
            len(chunks.ranges),
            chunks.ranges[0][1] - chunks.ranges[0][0] if chunks.ranges else 0,
        )
    if not mine:
        log.info(
            "Rank %d of %d encodes none of the %d chunk(s) of %d images: fewer chunks than ranks (a smaller "
            "runtime.chunk_size shares a dataset out more finely)",
            ranks.rank,
            ranks.size,
            len(chunks.ranges),
            chunks.n,
        )
        return
    first, last = chunks.ranges[mine.start][0], chunks.ranges[mine.stop - 1][1] - 1
    log.info(
        "Rank %d of %d encodes chunks %d-%d of %d (images %d-%d of %d)",
        ranks.rank,
        ranks.size,
        mine.start,
        mine.stop - 1,
        len(chunks.ranges),
        first,
        last,
        chunks.n,
    )


def _resumed(cache: TensorCache, chunks: _Chunks, mine: range, what: str) -> dict[int, dict]:
    """The chunks of ``mine`` that a run which did not finish cached (and that pass the checks)."""
    parts: dict[int, dict] = {}
    for i in mine if chunks.keys else []:
        entry = _cached_chunk(cache, chunks.keys[i], chunks.size(i))
        if entry is not None:
            parts[i] = entry
    if parts:
        resumed = sum(chunks.size(i) for i in parts)
        log.info(
            "Image features of %s: resumed from %d images (%d of %d chunks) cached by a run that did not finish; "
            "encoding the other %d",
            what,
            resumed,
            len(parts),
            len(chunks.ranges),
            sum(chunks.size(i) for i in mine) - resumed,
        )
    return parts


def _encode_chunks(
    model: DualEncoder,
    runtime: Runtime,
    data: tuple,
    chunks: _Chunks,
    todo: list[int],
    parts: dict[int, dict],
    cache: TensorCache,
    cached: list[int],
) -> list[str]:
    """Encode the chunks ``todo`` into ``parts``, caching each as it is done (and counting its images in
    ``cached[0]``); the keys of those cached.

    ``data``: (dataset, DataLoader options, collate function, decoder) as :func:`_dataset` gives them."""
    dataset, options, collate, decode = data
    bs, written = chunks.batch_size, []
    batches = [list(range(b, min(b + bs, chunks.ranges[i][1]))) for i in todo for b in range(*chunks.ranges[i], bs)]
    if not batches:
        return written
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=collate, **options)
    fresh = [(_Part(), math.ceil(chunks.size(i) / bs)) for i in todo]

    def done(index: int) -> None:  # chunk todo[index] is encoded: cache it now
        i = todo[index]
        parts[i] = fresh[index][0].entry()
        if chunks.keys and cache.save(CHUNK_KIND, chunks.keys[i], parts[i]) is not None:
            cached[0] += chunks.size(i)
            written.append(chunks.keys[i])

    _encode_batches(model, runtime, loader, decode, fresh, done, sum(chunks.size(i) for i in todo))
    return written


def _encode_stream(model, runtime, dataset, options, collate, decode, source: Source, what: str) -> FeatureSet:
    """The features of a streamed source (no random access, so no chunks): encoded in one go, by rank 0 alone
    under torchrun (the others receive them)."""

    def work() -> FeatureSet:
        part = _Part()
        with during(f"encoding the image features of {what}; none of them is cached"):
            log.info(
                "Image features of %s: cache miss, encoding its images (streamed: their number is known at the end)",
                what,
            )
            loader = torch.utils.data.DataLoader(dataset, batch_size=runtime.batch_size, collate_fn=collate, **options)
            _encode_batches(model, runtime, loader, decode, [(part, None)], None, None)
        fs = _feature_set([part.entry()], source)
        if options["num_workers"] > 0:
            # Workers interleave shards in an order that depends on timing; sort for reproducible outputs.
            order = sorted(range(len(fs.ids)), key=fs.ids.__getitem__)
            fs = FeatureSet(fs.features[order], fs.labels[order], [fs.ids[i] for i in order], fs.skipped)
        return fs

    return world().on_main(work, f"encoding the image features of {what}")


def _encode_batches(
    model: DualEncoder,
    runtime: Runtime,
    loader: torch.utils.data.DataLoader,
    decode: Callable | None,
    parts: list[tuple[_Part, int | None]],
    done: Callable[[int], None] | None,
    total: int | None,
) -> None:
    """Encode the batches of ``loader`` (``total`` images, None when unknown) into ``parts`` in order: each takes
    its count of batches (None: all the rest), then ``done(index)`` is called."""
    encode = image_encoder(model, runtime)
    index, taken = 0, 0
    start, count = time.perf_counter(), 0
    with torch.inference_mode(), runtime.autocast(), progress(total, "encode images", "image", runtime, log) as bar:
        for images, batch_labels, batch_ids, batch_skipped in loader:
            part, batches = parts[index]
            if decode is not None and images is not None:
                images, kept, failed = decode(images, batch_ids)
                batch_labels, batch_ids = batch_labels[kept], [batch_ids[i] for i in kept]
                batch_skipped = batch_skipped + failed
            part.skipped += batch_skipped
            if images is not None:
                images = images.to(runtime.device, non_blocking=True, memory_format=_memory_format(runtime))
                part.feats.append(check_embeddings(encode(images), len(batch_ids), model.name, "image").float().cpu())
                part.labels.append(batch_labels)
                part.ids += batch_ids
                count += len(batch_ids)
            bar.update(len(batch_ids) + len(batch_skipped))
            taken += 1
            if batches is not None and taken == batches:
                if done is not None:
                    done(index)
                index, taken = index + 1, 0
    elapsed = time.perf_counter() - start
    log.info("Encoded %d images in %.1f s (%.1f images/s)", count, elapsed, count / max(elapsed, 1e-9))


def _feature_set(entries: list[dict], source: Source) -> FeatureSet:
    """One FeatureSet of the chunks' entries, in order."""
    kept = [e for e in entries if e["ids"]]
    skipped = [tuple(s) for e in entries for s in e["skipped"]]
    if not kept:
        raise ClipevalError(f"No readable images in {source.describe()} ({len(skipped)} failed to decode).")
    return FeatureSet(
        torch.cat([e["features"] for e in kept]),
        torch.cat([e["labels"] for e in kept]),
        [i for e in kept for i in e["ids"]],
        skipped,
    )


def _dataset(model: DualEncoder, source: Source, runtime: Runtime):
    """The dataset, the DataLoader options (batching aside), and the decoder the main process applies to its
    batches (None: workers decode)."""
    workers = min(runtime.workers, source.loader_options(runtime.limit).get("max_workers", runtime.workers))
    if workers > 0:
        workers_share_temp_dir()  # a worker stopped by a signal leaves no pymp-* folder behind
    options = dict(num_workers=workers, pin_memory=runtime.device.type == "cuda")
    if runtime.decode == "pil":
        return source.dataset(model.preprocess, runtime.limit), dict(options, collate_fn=_collate), None
    from clipeval.data import tensor_decode

    if not isinstance(source, MapSource) or source.read_bytes(0) is None:
        raise ClipevalError(
            f"runtime.decode={runtime.decode} reads image files, which {source.describe()} does not have "
            "(image folders without a crop do). Use runtime.decode=pil."
        )
    transform = tensor_decode.tensor_transform(model.preprocess)
    size = len(source) if runtime.limit is None else min(runtime.limit, len(source))
    return (
        tensor_decode.BytesDataset(source, size),
        dict(options, collate_fn=functools.partial(_collate, stack=False)),
        lambda data, ids: tensor_decode.decode_batch(data, ids, transform, runtime.device),
    )


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
