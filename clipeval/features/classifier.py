"""Zero-shot text classifiers: one prototype per class from its prompt templates.

Each class's prompts are embedded, L2-normalised, averaged and renormalised (the prompt
ensemble of the CLIP paper, section 3.1.4). Templates are plain strings with ``{c}`` so
they can be hashed, cached and written to YAML.

A prototype depends on nothing but the model, its class name, the templates and the
precision, so prototypes are built and cached per class: a task builds only the classes it
scores (ImageNet-R's 200 of ImageNet's 1,000), and every task and run with the same model,
templates and precision reuses what another built (ImageNet-R, -A, ObjectNet, V2, Sketch and
val share ImageNet's class names and templates).

A class's row is the same whatever else is built with it: each class's prompts are encoded in
batches that hold no other class's prompt (the templates of one class, split at
``runtime.batch_size``), and its mean is taken over its own rows alone. A subset's rows are
then the full classifier's rows, bit for bit (tested on the CPU). Batches that mix classes
would not give that: a text tower trims or pads each batch to its longest prompt, and on this
CPU a prompt encoded in a batch of one or two gave other low bits (1e-6) than in a larger one.

The cache holds one entry per (model fingerprint, templates, precision) in
``<cache>/text_prototypes/``: the class names built so far and their rows. It grows as tasks
need new classes, rewritten (atomically, under the entry's lock, merged with what is there)
after every :data:`PROMPTS_PER_SAVE` prompts or so, so a build that is killed keeps the
classes it finished. One entry rather than one per class: measured on this machine, writing
1,000 per-class entries took 4.2 s (each is synced to disk) and reading them 0.55 s, against
0.02 s and 0.01 s for one entry of 1,000 rows (2 MB at width 512).

Captions (retrieval) take the same path with :func:`text_embeddings`: each caption is a "class" with the
one template ``{c}``, and its row is its own embedding. Tens of thousands of captions are too many to encode
one per batch, so they are encoded ``runtime.batch_size`` captions to a batch (``batch_classes``), under a
cache entry of their own (the key says ``batching``), apart from the classification rows above whose bits
must not depend on the batch. A caption's row is then the one of the batch it was first encoded in: the
same captions in the same order give the same batches and bits, and a caption already cached (from any
dataset) is read back, not encoded again; on this CPU a text encoded in another batch differs in the
last bits only (1e-6).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

import torch

from clipeval.cache import TensorCache, cache_key
from clipeval.config.runtime import Runtime
from clipeval.contracts import DualEncoder
from clipeval.distributed import world
from clipeval.errors import ClipevalError
from clipeval.interrupt import during
from clipeval.models.base import UNIT_NORM_TOLERANCE, check_embeddings, embedding_fault, normalize
from clipeval.progress import progress

log = logging.getLogger(__name__)

PLACEHOLDER = "{c}"
#: the cache kind of text prototypes: one entry per (model, templates, precision), rows by class name
KIND = "text_prototypes"
#: prompts encoded between two saves of the entry (at least a class's templates): what a killed build keeps
PROMPTS_PER_SAVE = 4096


def check_templates(templates: Sequence[str]) -> list[str]:
    templates = list(templates)
    if not templates:
        raise ClipevalError("No prompt templates: give task.templates a list of strings containing {c}, or a file.")
    bad = [t for t in templates if PLACEHOLDER not in t]
    if bad:
        raise ClipevalError(
            f"Every prompt template needs {PLACEHOLDER} where the class name goes; these lack it: {bad[:3]}"
        )
    return templates


def prompts(classnames: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Class-major list: all templates of class 0, then of class 1, ..."""
    return [t.replace(PLACEHOLDER, name) for name in classnames for t in templates]


def prototypes_key(model: DualEncoder, templates: Sequence[str], precision: str, batch_classes: bool = False) -> str:
    """The cache entry of ``model``'s prototypes for ``templates`` at ``precision``, whatever the classes
    (``batch_classes``: the entry of rows encoded several classes to a batch, :func:`text_embeddings`).

    The templates are kept as the exact list: their order does not change a mean in exact
    arithmetic, but it changes the order of the floating-point sum.
    """
    extra = {"batching": "classes"} if batch_classes else {}
    return cache_key(kind=KIND, model=model.fingerprint, templates=list(templates), precision=precision, **extra)


def text_embeddings(
    model: DualEncoder,
    texts: Sequence[str],
    runtime: Runtime,
    cache: TensorCache,
    known: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """[T, D] float32, unit norm: the embedding of each text of ``texts`` (captions), in order.

    The path of :func:`zeroshot_classifier` with each text a class of the template ``{c}``, encoded
    ``runtime.batch_size`` texts to a batch and cached by text under (model fingerprint, precision): a
    text already in ``known`` or the cache is not encoded again; a new or changed one is.
    """
    return zeroshot_classifier(model, texts, [PLACEHOLDER], runtime, cache, known, batch_classes=True)


def zeroshot_classifier(
    model: DualEncoder,
    classnames: Sequence[str],
    templates: Sequence[str],
    runtime: Runtime,
    cache: TensorCache,
    known: dict[str, torch.Tensor] | None = None,
    batch_classes: bool = False,
) -> torch.Tensor:
    """[C, D] float32 class prototypes, unit norm: one row per name of ``classnames``, in order.

    Only the classes that neither ``known`` (this run's prototypes of these templates, by class
    name, as :class:`clipeval.features.bank.FeatureBank` keeps them; filled in here) nor the cache
    holds are encoded. A name given twice is encoded once (its prompts, and so its rows, are equal).
    Under torchrun rank 0 encodes them and shares them (:mod:`clipeval.distributed`). ``batch_classes``:
    one template only, and several classes' prompts to a batch (:func:`text_embeddings`).
    """
    templates = check_templates(templates)
    known = {} if known is None else known
    distinct = list(dict.fromkeys(classnames))
    missing = [n for n in distinct if n not in known]
    if missing:
        what = f"{len(classnames)} classes" + (
            f" ({len(distinct)} distinct names)" if len(distinct) < len(classnames) else ""
        )
        what = f"{what} x {len(templates)} templates"

        def build() -> dict[str, torch.Tensor]:
            built: dict[str, torch.Tensor] = {}
            _load_or_build(model, missing, len(distinct), templates, runtime, cache, built, what, batch_classes)
            return built

        # under torchrun rank 0 builds them and the other ranks receive them: every rank scores with the same rows
        known.update(world().on_main(build, f"building the text prototypes of {what}"))
    return torch.stack([known[n] for n in classnames])


def _load_or_build(
    model: DualEncoder,
    missing: list[str],
    distinct: int,
    templates: list[str],
    runtime: Runtime,
    cache: TensorCache,
    known: dict[str, torch.Tensor],
    what: str,
    batch_classes: bool = False,
) -> None:
    """Put the prototypes of ``missing`` (of ``distinct`` classes asked for) into ``known``: from the cache, else
    built (under the entry's lock, so that a concurrent run that needs them waits and reads them) and cached."""
    key = prototypes_key(model, templates, runtime.precision, batch_classes)
    stamp = cache.stamp(KIND, key)
    missing = _take(known, _cached(cache, key), missing)
    if not missing:
        log.debug("Text prototypes of %s: cache hit", what)
        return
    with cache.lock(KIND, key, f"the text prototypes of {len(missing)} classes") as waited:
        if waited or cache.stamp(KIND, key) != stamp:  # what another run cached meanwhile
            missing = _take(known, _cached(cache, key), missing)
        if not missing:
            log.debug("Text prototypes of %s: cache hit (built by another run meanwhile)", what)
            return
        log.info(
            "Text prototypes of %s: %d already built, encoding %d prompts for the other %d classes",
            what,
            distinct - len(missing),
            len(missing) * len(templates),
            len(missing),
        )
        saved = [0]  # classes cached so far

        def keep(rows: dict[str, torch.Tensor]) -> None:
            saved[0] += len(rows) if _save(cache, key, rows) else 0

        def where() -> str:
            return f"{saved[0]} of them are cached and a rerun starts from there" if saved[0] else "none is cached"

        with during(lambda: f"building the text prototypes of {len(missing)} classes; {where()}"):
            _build(model, missing, templates, runtime, known, keep, batch_classes)


def _take(known: dict[str, torch.Tensor], cached: Mapping[str, torch.Tensor], missing: list[str]) -> list[str]:
    """Put the cached rows of ``missing`` into ``known``; the names still missing."""
    known.update({n: cached[n] for n in missing if n in cached})
    return [n for n in missing if n not in known]


def _build(
    model: DualEncoder,
    names: list[str],
    templates: list[str],
    runtime: Runtime,
    known: dict[str, torch.Tensor],
    save: Callable[[dict[str, torch.Tensor]], None],
    batch_classes: bool = False,
) -> None:
    """Encode the prompts of ``names`` in groups of about :data:`PROMPTS_PER_SAVE`, saving each group's rows."""
    total, per_group = len(names) * len(templates), max(1, PROMPTS_PER_SAVE // len(templates))
    start = time.perf_counter()
    with progress(total, "encode prompts", "prompt", runtime, log) as bar:
        for first in range(0, len(names), per_group):
            group = names[first : first + per_group]
            encode = _encode_batched if batch_classes else _encode_group
            rows = encode(model, group, templates, runtime, bar.update)
            known.update(rows)
            save(rows)
    elapsed = time.perf_counter() - start
    log.info(
        "Built the text prototypes of %d classes x %d templates (%d prompts) in %.1f s (%.1f prompts/s)",
        len(names),
        len(templates),
        total,
        elapsed,
        total / max(elapsed, 1e-9),
    )


def _encode_group(
    model: DualEncoder, names: list[str], templates: list[str], runtime: Runtime, done: Callable[[int], object]
) -> dict[str, torch.Tensor]:
    """The prototypes of ``names``: each class's prompts in batches of their own (no other class's prompt
    in them), so that its row is the same whatever else is built."""
    rows = {}
    with torch.inference_mode():
        for name in names:
            texts = prompts([name], templates)
            chunks = []
            for first in range(0, len(texts), runtime.batch_size):
                batch = texts[first : first + runtime.batch_size]
                with runtime.autocast():
                    embedded = model.encode_text(model.tokenize(batch).to(runtime.device))
                chunks.append(check_embeddings(embedded, len(batch), model.name, "text").float().cpu())
                done(len(batch))
            rows[name] = normalize(torch.cat(chunks).mean(dim=0, keepdim=True))[0]
    return rows


def _encode_batched(
    model: DualEncoder, names: list[str], templates: list[str], runtime: Runtime, done: Callable[[int], object]
) -> dict[str, torch.Tensor]:
    """The rows of ``names`` under one template, ``runtime.batch_size`` names to a batch (:func:`text_embeddings`)."""
    (template,) = templates
    rows = {}
    with torch.inference_mode():
        for first in range(0, len(names), runtime.batch_size):
            batch = names[first : first + runtime.batch_size]
            with runtime.autocast():
                embedded = model.encode_text(model.tokenize(prompts(batch, [template])).to(runtime.device))
            embedded = normalize(check_embeddings(embedded, len(batch), model.name, "text").float().cpu())
            rows.update(zip(batch, embedded, strict=True))
            done(len(batch))
    return rows


def _cached(cache: TensorCache, key: str, warn: bool = True) -> dict[str, torch.Tensor]:
    """The cached prototypes of entry ``key`` by class name: {} when there is none, or when it holds anything
    but distinct class names and as many finite unit float32 rows (a warning, unless not ``warn``)."""
    entry = cache.load(KIND, key)
    if entry is None:
        return {}
    names, weights = entry.get("classnames"), entry.get("weights")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        fault = "does not list distinct class names"
    else:
        fault = embedding_fault(weights, len(names), tolerance=UNIT_NORM_TOLERANCE)  # renormalised in float32
        if fault is None and weights.dtype != torch.float32:
            fault = f"has dtype {weights.dtype}, not float32"
    if fault is not None:
        if warn:
            log.warning("Ignoring cached text prototypes %s: it %s; encoding again", cache.path(KIND, key), fault)
        return {}
    return dict(zip(names, weights, strict=True))


def _save(cache: TensorCache, key: str, rows: dict[str, torch.Tensor]) -> bool:
    """Add ``rows`` to the entry, keeping the rows it holds (another run's, when two build at once without a
    lock); whether they were saved."""
    if not cache.enabled or not cache.writable:
        return False
    merged = {**rows, **_cached(cache, key, warn=False)}  # a damaged entry was reported when it was read
    names = list(merged)
    return cache.save(KIND, key, {"classnames": names, "weights": torch.stack([merged[n] for n in names])}) is not None
