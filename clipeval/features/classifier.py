"""Zero-shot text classifiers: one prototype per class from its prompt templates.

Each class's prompts are embedded, L2-normalised, averaged and renormalised (the prompt
ensemble of the CLIP paper, section 3.1.4). Templates are plain strings with ``{c}`` so
they can be hashed, cached and written to YAML.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from clipeval.cache import TensorCache, cache_key
from clipeval.config.runtime import Runtime
from clipeval.contracts import DualEncoder
from clipeval.errors import ClipevalError
from clipeval.interrupt import during
from clipeval.models.base import UNIT_NORM_TOLERANCE, check_embeddings, embedding_fault, normalize

log = logging.getLogger(__name__)

PLACEHOLDER = "{c}"


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


def zeroshot_classifier(
    model: DualEncoder,
    classnames: Sequence[str],
    templates: Sequence[str],
    runtime: Runtime,
    cache: TensorCache,
) -> torch.Tensor:
    """[C, D] float32 class prototypes, unit norm."""
    templates = check_templates(templates)
    key = cache_key(
        kind="text_classifier",
        model=model.fingerprint,
        classnames=list(classnames),
        templates=templates,
        precision=runtime.precision,
    )
    what = f"the text classifier of {len(classnames)} classes x {len(templates)} templates"
    stamp = cache.stamp("classifiers", key)
    weights = _cached(cache, key, len(classnames))
    if weights is None:
        with cache.lock("classifiers", key, what) as waited:
            if waited or cache.stamp("classifiers", key) != stamp:  # what another run cached meanwhile
                weights = _cached(cache, key, len(classnames))
            if weights is None:
                with during(f"building {what}; it is not cached"):
                    weights = _build(model, classnames, templates, runtime)
                cache.save("classifiers", key, {"weights": weights})
                return weights
    log.info(
        "Text classifier (%d classes x %d templates): cache hit",
        len(classnames),
        len(templates),
    )
    return weights


def _build(model: DualEncoder, classnames: Sequence[str], templates: list[str], runtime: Runtime) -> torch.Tensor:
    start = time.perf_counter()
    texts = prompts(classnames, templates)
    chunks = []
    with torch.inference_mode(), runtime.autocast():
        for i in tqdm(
            range(0, len(texts), runtime.batch_size),
            desc="encode prompts",
            unit="batch",
            disable=None if runtime.progress else True,
        ):
            batch = texts[i : i + runtime.batch_size]
            tokens = model.tokenize(batch)
            embedded = check_embeddings(model.encode_text(tokens.to(runtime.device)), len(batch), model.name, "text")
            chunks.append(embedded.float().cpu())
    per_prompt = torch.cat(chunks).view(len(classnames), len(templates), -1)
    weights = normalize(per_prompt.mean(dim=1))
    log.info(
        "Built text classifier: %d classes x %d templates in %.1f s",
        len(classnames),
        len(templates),
        time.perf_counter() - start,
    )
    return weights


def _cached(cache: TensorCache, key: str, classes: int) -> torch.Tensor | None:
    """The cached [classes, D] prototypes of ``key`` when they are finite unit float32 rows; else a warning and None."""
    entry = cache.load("classifiers", key)
    if entry is None:
        return None
    weights = entry.get("weights")
    fault = embedding_fault(weights, classes, tolerance=UNIT_NORM_TOLERANCE)  # renormalised in float32
    if fault is None and weights.dtype != torch.float32:
        fault = f"dtype {weights.dtype}, not float32"
    if fault is not None:
        log.warning("Ignoring cached text classifier %s: it %s; encoding again", cache.path("classifiers", key), fault)
        return None
    return weights
