"""Text prototypes are built per class, for the classes a task scores only, and cached per class.

A class's prototype is the normalised mean of its normalised prompt embeddings: it depends on
its name, the templates, the model and the precision, and on nothing else that is built with
it. So a task that scores 200 of ImageNet's 1,000 classes builds 200, and the next task or run
with the same model and templates reuses every prototype an earlier one built.
"""

from __future__ import annotations

import logging
import re

import pytest
import torch
from user_model import MeanColourEncoder

import clipeval.features.classifier as classifier
from clipeval.cache import TensorCache
from clipeval.config.paths import builtin_tasks_dir
from clipeval.config.runtime import Runtime
from clipeval.features.classifier import prototypes_key, zeroshot_classifier
from clipeval.models.open_clip import OpenClipEncoder

TASKS = builtin_tasks_dir()
NAMES = (TASKS / "imagenet" / "classnames.txt").read_text().splitlines()
TEMPLATES = (TASKS / "imagenet" / "templates.txt").read_text().splitlines()
R = [int(i) for i in (TASKS / "imagenet_r" / "class_indices.txt").read_text().split()]
A = [int(i) for i in (TASKS / "imagenet_a" / "class_indices.txt").read_text().split()]


def fresh(tiny_open_clip) -> OpenClipEncoder:
    """A new model object: its first text batch (where open_clip's trimmed pass is checked) is this build's."""
    return OpenClipEncoder(**{k: tiny_open_clip[k] for k in ("arch", "pretrained", "model_config")})


def runtime(**settings) -> Runtime:
    return Runtime.create(device="cpu", workers=0, progress=False, **settings)


def no_cache(tmp_path) -> TensorCache:
    return TensorCache(tmp_path / "off", enabled=False)


def encoded_prompts(caplog) -> list[int]:
    return [int(n) for m in caplog.messages for n in re.findall(r"encoding (\d+) prompts", m)]


def test_a_subset_of_classes_gets_the_full_classifiers_rows_bit_for_bit(tiny_open_clip, tmp_path):
    """ImageNet-R's classes among the first 40 ImageNet classes, in another order, built alone with
    all 80 templates: exactly the rows the 40-class classifier has for them, as is one class alone."""
    names = NAMES[:40]
    full = zeroshot_classifier(fresh(tiny_open_clip), names, TEMPLATES, runtime(), no_cache(tmp_path))
    subset = [i for i in R if i < len(names)][::-1]
    assert len(subset) >= 10
    rows = zeroshot_classifier(
        fresh(tiny_open_clip), [names[i] for i in subset], TEMPLATES, runtime(), no_cache(tmp_path)
    )
    assert torch.equal(rows, full[subset])
    alone = zeroshot_classifier(fresh(tiny_open_clip), [names[subset[0]]], TEMPLATES, runtime(), no_cache(tmp_path))
    assert torch.equal(alone[0], full[subset[0]])
    # and each row is the normalised mean of the class's normalised prompt embeddings
    model = fresh(tiny_open_clip)
    with torch.inference_mode():
        prompts = model.encode_text(model.tokenize([t.replace("{c}", names[0]) for t in TEMPLATES]))
    mean = prompts.mean(dim=0)
    assert torch.allclose(full[0], mean / mean.norm(), atol=1e-6)


def test_each_class_is_encoded_once_across_tasks_and_runs(tiny_open_clip, tmp_path, caplog):
    """ImageNet-R's classes, then ImageNet-A's (some shared), then all 1,000, each call a new run (a
    new model object) on one cache folder: every distinct class name is encoded exactly once."""
    caplog.set_level(logging.DEBUG, logger="clipeval")
    templates, cache = TEMPLATES[:2], TensorCache(tmp_path / "cache")
    r_names, a_names = [NAMES[i] for i in R], [NAMES[i] for i in A]
    shared = set(r_names) & set(a_names)
    assert 0 < len(shared) < 200

    r_rows = zeroshot_classifier(fresh(tiny_open_clip), r_names, templates, runtime(), cache)
    zeroshot_classifier(fresh(tiny_open_clip), a_names, templates, runtime(), cache)
    every = zeroshot_classifier(fresh(tiny_open_clip), NAMES, templates, runtime(), cache)
    distinct = len(set(NAMES))  # the CLIP paper's list repeats two names
    assert encoded_prompts(caplog) == [400, 2 * (200 - len(shared)), 2 * (distinct - len(set(r_names + a_names)))]
    assert f"{len(shared)} already built, encoding" in caplog.text
    assert "1000 classes (998 distinct names) x 2 templates" in caplog.text
    assert torch.equal(every[R], r_rows)
    assert torch.equal(every[657], every[744])  # 'missile' twice: one prototype
    (entry,) = (tmp_path / "cache" / "text_prototypes").rglob("*.pt")  # one entry grows; no file per class
    assert entry.stem == prototypes_key(fresh(tiny_open_clip), templates, "fp32")

    caplog.clear()

    class NoText(MeanColourEncoder):  # stands in for a model whose text tower must not run
        def encode_text(self, tokens):
            raise AssertionError("encoded a prompt that is cached")

    silent = NoText()
    silent.fingerprint = fresh(tiny_open_clip).fingerprint
    assert torch.equal(zeroshot_classifier(silent, r_names, templates, runtime(), cache), r_rows)
    assert "Text prototypes of 200 classes x 2 templates: cache hit" in caplog.text


def test_one_run_encodes_each_class_once_with_the_cache_off(tmp_path, caplog):
    """The run's bank keeps the prototypes it built: a second task asking for some of them encodes none."""
    from clipeval.features.bank import FeatureBank

    caplog.set_level(logging.INFO, logger="clipeval")
    bank = FeatureBank(MeanColourEncoder(), runtime(), no_cache(tmp_path))
    first = bank.classifier(["red", "green", "blue"], ["a {c} thing."])
    second = bank.classifier(["blue", "red"], ["a {c} thing."])
    assert torch.equal(second, first[[2, 0]])
    assert encoded_prompts(caplog) == [3]
    bank.classifier(["blue"], ["a {c} drawing."])  # other templates: other prototypes
    assert encoded_prompts(caplog) == [3, 1]


class CountingColours(MeanColourEncoder):
    """Stops (as Ctrl-C would) when asked to encode its ``stop_at``-th text batch."""

    def __init__(self, stop_at: int | None = None):
        super().__init__()
        self.stop_at, self.batches = stop_at, 0

    def encode_text(self, tokens):
        self.batches += 1
        if self.batches == self.stop_at:
            raise KeyboardInterrupt
        return super().encode_text(tokens)


def test_a_build_that_is_stopped_keeps_the_classes_it_finished(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="clipeval")
    monkeypatch.setattr(classifier, "PROMPTS_PER_SAVE", 2)  # one template: saved every two classes
    names, cache = ["red", "green", "blue", "dark red", "light green", "navy blue"], TensorCache(tmp_path / "c")
    with pytest.raises(KeyboardInterrupt) as stopped:
        zeroshot_classifier(CountingColours(stop_at=5), names, ["a {c} thing."], runtime(), cache)
    assert str(stopped.value) == (
        "building the text prototypes of 6 classes; 4 of them are cached and a rerun starts from there"
    )
    caplog.clear()
    rerun = CountingColours()
    rows = zeroshot_classifier(rerun, names, ["a {c} thing."], runtime(), cache)
    assert "4 already built, encoding 2 prompts for the other 2 classes" in caplog.text and rerun.batches == 2
    whole = zeroshot_classifier(CountingColours(), names, ["a {c} thing."], runtime(), no_cache(tmp_path))
    assert torch.equal(rows, whole)


def test_each_class_is_encoded_in_batches_of_its_own_prompts(tmp_path):
    """Three templates, batch size two: every class takes two batches, and no batch mixes classes."""
    seen: list[list[str]] = []

    class Recording(MeanColourEncoder):
        def tokenize(self, texts):
            seen.append(list(texts))
            return super().tokenize(texts)

    templates = ["a {c} thing.", "a {c} drawing.", "the {c} one."]
    zeroshot_classifier(Recording(), ["red", "blue"], templates, runtime(batch_size=2), no_cache(tmp_path))
    assert seen == [
        ["a red thing.", "a red drawing."], ["the red one."], ["a blue thing.", "a blue drawing."], ["the blue one."],
    ]  # fmt: skip
