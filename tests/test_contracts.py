"""The contracts of clipeval.contracts, stated as tests a plugin author can copy.

Each protocol is checked twice: by ``isinstance`` (the protocols are ``runtime_checkable``, so a
missing member fails) and by :func:`assert_implements`, which also compares every method's
parameters with the protocol's, so that an implementation cannot drift from the contract
unnoticed. Then its behaviour:

- a :class:`Source` has a key that follows its content (not its location) and yields
  :class:`~clipeval.data.base.Item` s that agree with its label range and class count;
- a :class:`DualEncoder` embeds images and texts into one space as unit-norm float32 rows, its
  image tower is differentiable in the input (for attacks), and its weights can be frozen;
- the runner's ``RunContext`` and the tests' ``ArrayContext`` are :class:`EvaluationContext` s;
- an :class:`Evaluator` returns records and nothing else: no files, no figures, no printing;
  its records survive a JSON round trip and their per-sample data recompute their values;
- a :class:`BaselineProvider` gives (in-distribution, shift) accuracy fractions per shift.

To test a plugin: add its class to the matching list below (or copy the test next to yours).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib
import inspect
import json
import pkgutil
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from array_context import ArrayContext
from conftest import compose_config, make_image_folder, make_wds, synthetic_image
from http_server import serving

import clipeval.data
import clipeval.embedded
import clipeval.evaluators
from clipeval.cache import TensorCache
from clipeval.config.runtime import Runtime
from clipeval.contracts import BaselineProvider, DualEncoder, EvaluationContext, Evaluator, Source
from clipeval.data import base as data_base
from clipeval.data.base import Item
from clipeval.errors import ClipevalError
from clipeval.features.bank import FeatureBank
from clipeval.results.record import Record
from clipeval.results.samples import Samples
from clipeval.results.statistics import STATISTICS
from clipeval.run.context import RunContext
from clipeval.run.task import Task, load_task

# ---------------------------------------------------------------- the check every contract shares


def protocol_methods(protocol: type) -> dict[str, Callable]:
    """The methods a protocol declares (properties and data members are checked by isinstance)."""
    return {n: m for n, m in vars(protocol).items() if not n.startswith("_") and inspect.isfunction(m)}


def assert_implements(obj: object, protocol: type, names: bool = True) -> None:
    """``obj`` is an instance of ``protocol`` and each of its methods can be called as the protocol declares it.

    Every method must accept the protocol's parameters positionally (its required ones alone, and all of
    them); with ``names`` (contexts, whose optional parameters callers pass by name) also by name.
    Extra optional parameters, or ``*args, **kwargs`` (an ``nn.Module``'s ``to``), are fine.
    """
    assert isinstance(obj, protocol), f"{type(obj).__name__} lacks members of {protocol.__name__}"
    for name, declared in protocol_methods(protocol).items():
        params = list(inspect.signature(declared).parameters.values())[1:]  # without self
        wanted = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        required = [p for p in wanted if p.default is p.empty]
        actual = inspect.signature(getattr(obj, name))
        calls = [([object()] * len(required), {}), ([object()] * len(wanted), {})]
        if names:
            by_name = {p.name: object() for p in wanted if p not in required}
            if any(p.kind is p.VAR_KEYWORD for p in params):  # note(message, **details): any detail by name
                by_name["any_detail"] = object()
            calls.append(([object()] * len(required), by_name))
        for args, kwargs in calls:
            try:
                actual.bind(*args, **kwargs)
            except TypeError as exc:
                raise AssertionError(
                    f"{type(obj).__name__}.{name}{actual} cannot be called as {protocol.__name__}.{name}"
                    f"{inspect.signature(declared)} is ({len(args)} positional, {sorted(kwargs)} by name): {exc}"
                ) from None


def classes_in(package, has: Callable[[type], bool]) -> set[type]:
    """The classes defined in ``package``'s modules that ``has`` accepts (so a new one cannot go untested)."""
    found = set()
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        if info.name.endswith(("__main__", ".train")):
            continue
        module = importlib.import_module(info.name)
        found |= {
            c for _, c in inspect.getmembers(module, inspect.isclass) if c.__module__ == module.__name__ and has(c)
        }
    return found


# ---------------------------------------------------------------- Source


def _objectnet(root: Path, variant: int) -> Path:
    """ObjectNet's layout with two classes (banana -> ImageNet class 1, teapot -> 0) and its four mapping files."""
    for label, folder in enumerate(["banana", "teapot"]):
        write_class(root / "objectnet-1.0" / "images" / folder, label, variant)
    mappings = root / "objectnet-1.0" / "mappings"
    mappings.mkdir(parents=True, exist_ok=True)
    (mappings / "folder_to_objectnet_label.json").write_text(json.dumps({"banana": "Banana", "teapot": "Teapot"}))
    (mappings / "objectnet_to_imagenet_1k.json").write_text(json.dumps({"Banana": "banana", "Teapot": "teapot"}))
    (mappings / "pytorch_to_imagenet_2012_id.json").write_text(json.dumps({"0": 0, "1": 1}))
    (mappings / "imagenet_to_label_2012_v2").write_text("teapot\nbanana\n")
    return root


def write_class(folder: Path, label: int, variant: int, count: int = 3) -> None:
    """``count`` images of ``label``; ``variant`` 1 changes the pixels of the first one only."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        synthetic_image(label, i + (50 if variant and i == 0 else 0)).save(folder / f"{i}.png")


def _folder(root: Path, variant: int):
    from clipeval.data.folder import ImageFolderSource

    for label, name in enumerate(["cat", "dog", "fox"]):
        write_class(root / "images" / name, label, variant)
    return ImageFolderSource(root / "images")


def _imagenet_val(root: Path, variant: int):
    from clipeval.data.imagenet import ImageNetVal

    wnids = ["n01440764", "n01443537", "n01484850"]
    for label, wnid in enumerate(wnids):
        write_class(root / "imagenet" / "val" / wnid, label, variant)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    return ImageNetVal(str(root), str(root / "wnids.txt"))


def _objectnet_source(root: Path, variant: int):
    from clipeval.data.imagenet import ObjectNet

    return ObjectNet(str(_objectnet(root, variant)))


def _wds(root: Path, variant: int):
    from clipeval.data.wds import WebDatasetSource

    make_wds(root / "wds", per_class=2 + variant, shards=1)
    return WebDatasetSource(root / "wds")


def _hf(root: Path, variant: int):
    import datasets

    from clipeval.data.hf import HFDatasetSource

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    images = [synthetic_image(i % 3, i + (50 if variant and i == 0 else 0)) for i in range(6)]
    datasets.Dataset.from_dict({"image": images, "label": [i % 3 for i in range(6)]}, features=features).save_to_disk(
        root / "hf"
    )
    return HFDatasetSource(str(root / "hf"))


@functools.cache
def _server_for(folder: Path):
    """One HTTP server per folder, kept until the session ends (the contract test builds sources one after the
    other and reads the first one last)."""
    stack = contextlib.ExitStack()
    atexit.register(stack.close)
    return stack.enter_context(serving(folder))


def _hf_stream(root: Path, variant: int):
    """Rows as in ``_hf``, as a parquet file streamed from a server on 127.0.0.1: sources made at different roots
    with the same variant read the same URL, so the same bytes there must give the same key."""
    import datasets

    from clipeval.data.hf_stream import HFStreamingSource

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    images = [synthetic_image(i % 3, i + (50 if variant and i == 0 else 0)) for i in range(6)]
    rows = {"image": images, "label": [i % 3 for i in range(6)]}
    datasets.Dataset.from_dict(rows, features=features).to_parquet(root.parent / f"v{variant}.parquet")
    return HFStreamingSource(f"{_server_for(root.parent).url}/v{variant}.parquet")


def _karpathy(root: Path, variant: int):
    """A Karpathy-split folder: 6 images with 1 or 2 captions each, and a train image left out."""
    from clipeval.data.captions import KarpathySource

    (root / "images").mkdir(parents=True)
    entries = []
    for i in range(7):
        synthetic_image(i % 3, i + (50 if variant and i == 0 else 0)).save(root / "images" / f"{i}.png")
        captions = [{"raw": f"picture {i}"}, {"raw": f"another view of picture {i}"}][: 1 + i % 2]
        entries.append({"filename": f"{i}.png", "split": "train" if i == 6 else "test", "sentences": captions})
    (root / "captions.json").write_text(json.dumps({"images": entries}))
    return KarpathySource(str(root), "captions.json", "images")


def _winogavil(root: Path, variant: int):
    """WinoGAViL's hub files: 12 instances over 30 candidate images."""
    from association_data import write_winogavil

    from clipeval.data.associations import WinoGAViLSource

    write_winogavil(root)
    if variant:
        synthetic_image(0, 99, size=48).save(root / "winogavil_images" / "img001.jpg")
    return WinoGAViLSource(str(root))


def _sampled(root: Path, variant: int):
    from clipeval.data.sampled import SampledSource

    return SampledSource(_folder(root, variant), per_class=2, seed=0)


def _corrupted(root: Path, variant: int):
    from clipeval.data.corrupted import CorruptedSource

    return CorruptedSource(_folder(root, variant), "gaussian_noise", 2, resize=None, crop=32)


def _digits(root: Path, variant: int):
    from clipeval.embedded.source import DigitsSource

    return DigitsSource("rotated", seed=variant)  # a generated shift: the seed changes its content


#: every built-in source, built at a root with content ``variant`` (0 or 1: one image differs)
SOURCES: dict[str, Callable[[Path, int], Source]] = {
    "ImageFolderSource": _folder,
    "ImageNetVal": _imagenet_val,
    "ObjectNet": _objectnet_source,
    "WebDatasetSource": _wds,
    "HFDatasetSource": _hf,
    "HFStreamingSource": _hf_stream,
    "KarpathySource": _karpathy,
    "WinoGAViLSource": _winogavil,
    "SampledSource": _sampled,
    "CorruptedSource": _corrupted,
    "DigitsSource": _digits,
}


def test_every_built_in_source_is_covered():
    concrete = lambda c: issubclass(c, data_base.Source) and not inspect.isabstract(c)  # noqa: E731
    built_in = classes_in(clipeval.data, concrete) | classes_in(clipeval.embedded, concrete)
    assert {c.__name__ for c in built_in} == set(SOURCES)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_a_source_has_a_content_key_and_yields_items(name, tmp_path):
    make = SOURCES[name]
    source = make(tmp_path / "a", 0)
    assert_implements(source, Source)
    assert isinstance(source.key, str) and source.key and isinstance(source.describe(), str)
    # the key follows the content: the same data elsewhere has the same key, changed data another
    assert make(tmp_path / "b", 0).key == source.key
    assert make(tmp_path / "c", 1).key != source.key
    items = list(source.dataset(lambda image: torch.tensor(np.asarray(image.convert("RGB"))), None))
    assert items and all(isinstance(it, Item) and it.error is None for it in items)
    assert all(isinstance(it.label, int) and isinstance(it.sample_id, str) for it in items)
    assert len({it.sample_id for it in items}) == len(items)  # sample ids are unique
    labels = [it.label for it in items]
    if source.label_range() is not None:
        assert source.label_range() == (min(labels), max(labels))
    if source.num_classes is not None:
        assert max(labels) < source.num_classes
    if source.classnames is not None:
        assert len(source.classnames) == source.num_classes
    assert len(list(source.dataset(lambda image: image, 2))) == 2  # limit keeps the first N
    assert isinstance(source.loader_options(None), dict)


# ---------------------------------------------------------------- DualEncoder


def _open_clip(tiny_open_clip, tiny_hf_clip, tmp_path):
    from clipeval.models.open_clip import OpenClipEncoder

    return OpenClipEncoder(**{k: tiny_open_clip[k] for k in ("arch", "pretrained", "model_config")})


def _hf_clip(tiny_open_clip, tiny_hf_clip, tmp_path):
    from clipeval.models.hf import HFClipEncoder

    return HFClipEncoder(str(tiny_hf_clip))


def _deferred(tiny_open_clip, tiny_hf_clip, tmp_path):
    """What the runner hands evaluators on a warm rerun: a model known from its card, built on first use."""
    from clipeval.models.deferred import DeferredModel

    built = _open_clip(tiny_open_clip, tiny_hf_clip, tmp_path)
    return DeferredModel(built.name, built.fingerprint, lambda: built, torch.device("cpu"))


def _user(tiny_open_clip, tiny_hf_clip, tmp_path):
    from user_model import ColourModel

    return ColourModel()


#: the adapters that ship (and a user's model, as model=custom builds it); attack: whether adversarial
#: evaluation can use it (its preprocess is a torchvision Compose ending in Normalize)
MODELS = {"open_clip": (_open_clip, True), "hf": (_hf_clip, False), "deferred": (_deferred, True),
          "user": (_user, True)}  # fmt: skip


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_model_embeds_images_and_texts_in_one_unit_norm_space(name, tiny_open_clip, tiny_hf_clip, tmp_path):
    from clipeval.evaluators.adversarial import split_preprocess

    make, attackable = MODELS[name]
    model = make(tiny_open_clip, tiny_hf_clip, tmp_path)
    assert_implements(model, DualEncoder, names=False)
    assert isinstance(model.name, str) and isinstance(model.fingerprint, str) and model.fingerprint
    assert model.to(torch.device("cpu")) is not None and float(model.logit_scale) > 0
    images = torch.stack([model.preprocess(synthetic_image(c, 0)) for c in range(3)])
    assert images.dtype == torch.float32 and images.dim() == 4 and images.shape[1] == 3  # [B, 3, H, W]
    image = model.encode_image(images)
    text = model.encode_text(model.tokenize(["a photo of a red square.", "a green circle", "blue"]))
    assert image.dtype == text.dtype == torch.float32 and image.shape == text.shape == (3, image.shape[1])
    assert torch.allclose(image.norm(dim=1), torch.ones(3), atol=1e-4)
    assert torch.allclose(text.norm(dim=1), torch.ones(3), atol=1e-4)
    # what an attack needs: gradients reach the input, and the weights can be frozen
    x = images.clone().requires_grad_(True)
    model.encode_image(x)[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    owner = model if callable(getattr(model, "parameters", None)) else model.model
    assert list(owner.parameters())
    if attackable:
        split_preprocess(model.preprocess)
    else:
        with pytest.raises(ClipevalError, match="Compose ending in Normalize"):
            split_preprocess(model.preprocess)


# ---------------------------------------------------------------- EvaluationContext and Evaluator


@pytest.fixture
def folder_task(tmp_path) -> Task:
    """task=folder on 3 colours x 4 images, loaded (and checked) as the runner loads it."""
    root = make_image_folder(tmp_path / "images")
    return load_task(compose_config(["task=folder", f"task.root={root}"]).task)


@pytest.fixture
def run_context(folder_task, tmp_path) -> RunContext:
    """The runner's context of ``folder_task`` with a colour model, the disk cache off."""
    from user_model import ColourModel

    runtime = Runtime.create(device="cpu", workers=0, progress=False)
    return RunContext(FeatureBank(ColourModel(), runtime, TensorCache(tmp_path / "cache", enabled=False)), folder_task)


def test_the_runners_context_and_the_tests_array_context_are_evaluation_contexts(run_context):
    assert_implements(run_context, EvaluationContext)
    assert_implements(ArrayContext({"test": (np.eye(3), np.arange(3))}), EvaluationContext)


def _evaluators() -> dict[str, Evaluator]:
    from clipeval.evaluators.adversarial import Adversarial
    from clipeval.evaluators.association import Association
    from clipeval.evaluators.corruption_error import CorruptionError
    from clipeval.evaluators.groups import MacroF1, WorstGroup
    from clipeval.evaluators.linear_probe import FewShot, LinearProbe
    from clipeval.evaluators.ood import OutOfDistribution
    from clipeval.evaluators.retrieval import Retrieval
    from clipeval.evaluators.zeroshot import ZeroShot

    return {
        "Retrieval": Retrieval(),
        "Association": Association(),
        "ZeroShot": ZeroShot(calibration=True),
        "OutOfDistribution": OutOfDistribution("test", "test", in_distribution_labels="subset", resamples=50),
        "MacroF1": MacroF1(),
        "WorstGroup": WorstGroup(field=0, group_by="parity", k=1),
        "LinearProbe": LinearProbe("test", ["test"]),
        "FewShot": FewShot("test", "test", ks=[1, 2], seeds=2),
        "Adversarial": Adversarial("test", eps=[0, 4], steps=2, limit=6, attacks=["pgd", "apgd-ce"]),
        "CorruptionError": CorruptionError(baseline={"fog": 0.5}, datasets={"fog": ["test"] * 5}),
    }


def test_every_built_in_evaluator_is_covered():
    built_in = classes_in(clipeval.evaluators, lambda c: callable(getattr(c, "evaluate", None)))
    assert {c.__name__ for c in built_in} == set(_evaluators())


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and mtime."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", sorted(_evaluators()))
def test_an_evaluator_returns_records_and_nothing_else(name, folder_task, run_context, tmp_path, monkeypatch, capsys):
    evaluator = _evaluators()[name]
    assert_implements(evaluator, Evaluator)
    if name == "Retrieval":  # it needs captions: the same kind of images, described by a Karpathy-split JSON
        _karpathy(tmp_path / "captioned" / "flickr30k", 0)
        (tmp_path / "captioned" / "flickr30k" / "captions.json").rename(
            tmp_path / "captioned" / "flickr30k" / "dataset_flickr30k.json"
        )
        (tmp_path / "captioned" / "flickr30k" / "images").rename(
            tmp_path / "captioned" / "flickr30k" / "flickr30k-images"
        )
        folder_task = load_task(compose_config(["task=flickr30k", f"data_root={tmp_path / 'captioned'}"]).task)
        run_context = RunContext(
            FeatureBank(run_context.model, run_context.runtime, run_context.bank.cache), folder_task
        )
    if name == "Association":  # it needs association instances: WinoGAViL's files
        _winogavil(tmp_path / "associations" / "winogavil", 0)
        folder_task = load_task(compose_config(["task=winogavil", f"data_root={tmp_path / 'associations'}"]).task)
        run_context = RunContext(
            FeatureBank(run_context.model, run_context.runtime, run_context.bank.cache), folder_task
        )
    if name == "WorstGroup":  # an image folder ships no per-sample metadata: give each sample a group
        ids = run_context.features("test").ids
        groups = {s: np.array([k % 2]) for k, s in enumerate(ids)}
        monkeypatch.setattr(folder_task.source("test"), "sample_metadata", lambda: groups, raising=False)
        monkeypatch.setattr(run_context, "sample_metadata", lambda d: groups)
    if hasattr(evaluator, "check"):
        evaluator.check(folder_task)  # the optional check, as the runner calls it when the task loads
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before, figures = tree(tmp_path), plt.get_fignums()
    records = evaluator.evaluate(run_context)
    # no side effects: nothing written (in the working directory or anywhere else here), drawn or printed
    assert tree(tmp_path) == before and not list(cwd.iterdir()), "it wrote files"
    assert plt.get_fignums() == figures, "it drew a figure"
    assert capsys.readouterr().out == "", "it printed"
    assert records and all(isinstance(r, Record) for r in records)
    assert all(r.task == "" for r in records)  # the runner fills it in
    assert len({r.key for r in records}) == len(records)  # identity is (task, dataset, metric, params)
    for record in records:
        assert Record.from_json(json.loads(json.dumps(record.to_json()))) == record
        if record.samples is None:
            continue
        samples = run_context.kept.samples[record.samples]  # kept through the context, not elsewhere
        assert Samples.from_json(json.loads(json.dumps(samples.to_json()))).n == samples.n
        if record.metric in STATISTICS:  # a part of the samples (the worst group), or all of them
            assert STATISTICS[record.metric].n(samples, record.outcome) == record.n
        else:
            assert samples.n == record.n
        if samples.has(record.metric, record.outcome):  # its per-sample data recompute its value
            assert samples.value(record.metric, record.outcome) == pytest.approx(record.value), record.label


def test_an_evaluator_runs_on_the_array_context_too():
    """What a plugin's unit test looks like: an evaluator on feature arrays, no model and no files."""
    from clipeval.evaluators.linear_probe import LinearProbe

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    x = np.eye(3)[y] + rng.normal(scale=0.1, size=(60, 3))
    ctx = ArrayContext({"train": (x, y), "test": (x, y)})
    records = LinearProbe("train", ["test"]).evaluate(ctx)
    top1 = next(r for r in records if r.metric == "top1")
    assert top1.value == 1.0 and top1.params == {"probe": "linear", "train": "train"}
    assert ctx.kept[top1.samples].value("top1") == 1.0


# ---------------------------------------------------------------- BaselineProvider


def check_points(provider: BaselineProvider, settings, shifts: set[str]) -> None:
    assert_implements(provider, BaselineProvider, names=False)
    assert isinstance(provider.label, str) and provider.label
    points = provider.points(settings)
    assert set(points) == shifts
    frames = list(points.values())
    if hasattr(provider, "average_points"):
        frames.append(provider.average_points(settings))
    for frame in frames:
        assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["id", "shift"] and len(frame) >= 2
        values = frame.to_numpy(dtype=float)
        assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()  # fractions


def test_a_baseline_table_is_a_baseline_provider(tmp_path):
    from clipeval.report.baselines import TableBaselines

    table = tmp_path / "top1.csv"
    table.write_text("model,val,sketch,rendition\nr18,69.8,20.1,33.0\nr50,76.1,24.1,36.2\nvit,81.0,29.5,44.1\n")
    provider = TableBaselines(
        {"sketch": {"x": "val", "y": "sketch"}, "renditions": {"x": "val", "y": "rendition"}}, path=str(table)
    )
    check_points(provider, None, {"sketch", "renditions"})
    assert provider.points()["sketch"].loc["r50"].tolist() == pytest.approx([0.761, 0.241])  # percent -> fractions


def test_the_digits_zoo_is_a_baseline_provider():
    from clipeval.embedded.source import DigitsSource
    from clipeval.embedded.zoo import DigitsZoo

    settings = {"in_distribution": [DigitsSource(split="test")], "sketch": [DigitsSource("sketch")]}
    check_points(DigitsZoo(), settings, {"sketch"})
    with pytest.raises(ClipevalError, match="needs the suite's settings"):
        DigitsZoo().points()  # it evaluates its models on the suite's data: no settings, no points
