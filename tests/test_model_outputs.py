"""A model's embeddings are checked before anything is cached or scored.

Each class below is a user model (``model=custom model._target_=...``) with one fault. Both
towers are checked when the model is built (two noise images, two prompts), and every batch
is checked again while encoding, so a fault that only some inputs trigger is caught too: the
run stops with exit 2 and a message naming the model, and leaves no features, classifier or
result behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_in_process
from user_model import MeanColourEncoder

from clipeval.cache import TensorCache
from clipeval.config.runtime import Runtime
from clipeval.data.folder import ImageFolderSource
from clipeval.errors import ClipevalError
from clipeval.features.encode import image_features
from clipeval.models.base import check_outputs, embedding_fault, normalize


class NanImages(MeanColourEncoder):
    def encode_image(self, images):
        return torch.full((len(images), 3), float("nan"))


class InfText(MeanColourEncoder):
    def encode_text(self, tokens):
        out = super().encode_text(tokens)
        out[0, 0] = float("inf")
        return out


class UnnormalisedImages(MeanColourEncoder):
    def encode_image(self, images):
        return images.mean(dim=(2, 3)) * 3  # forgot to normalise


class WiderText(MeanColourEncoder):
    def encode_text(self, tokens):
        return normalize(torch.cat([tokens, tokens[:, :1]], dim=1) + 1e-3)  # width 4, images have 3


class OneImageShort(MeanColourEncoder):
    def encode_image(self, images):
        return super().encode_image(images)[:-1]


class OneImageRow(MeanColourEncoder):
    def encode_image(self, images):
        return super().encode_image(images)[0]  # shape [3]: a vector, not [batch, 3]


class NanOnRedImages(MeanColourEncoder):
    """Fine on noise (what the build check sees); NaN on mostly-red pictures, which come last."""

    def encode_image(self, images):
        out, colour = super().encode_image(images), images.mean(dim=(2, 3))
        out[(colour[:, 0] > 0.6) & (colour[:, 1] < 0.3)] = float("nan")
        return out


class NanOnSquares(MeanColourEncoder):
    """Fine on the build check's prompts; NaN on any prompt that names a square."""

    def tokenize(self, texts):
        return torch.cat([super().tokenize(texts), torch.tensor([[float("square" in t)] for t in texts])], dim=1)

    def encode_text(self, tokens):
        out = super().encode_text(tokens[:, :3])
        out[tokens[:, 3] > 0] = float("nan")
        return out


FAULTS = [
    (NanImages, "image tower returned non-finite values (NaN or Inf) in 2 of 2 embeddings"),
    (InfText, "text tower returned non-finite values (NaN or Inf) in 1 of 2 embeddings"),
    (UnnormalisedImages, "image tower returned embeddings that are not unit norm"),
    (WiderText, "image embeddings have width 3 but its text embeddings 4"),
    (OneImageShort, "image tower returned 1 embeddings for a batch of 2"),
    (OneImageRow, "image tower returned shape [3], expected [batch, D]"),
    (NanOnRedImages, "image tower returned non-finite values (NaN or Inf) in 4 of 4 embeddings"),
    (NanOnSquares, "text tower returned non-finite values (NaN or Inf) in 1 of 1 embeddings"),  # a class's batch
]


def overrides(cls: type, folder: Path) -> list[str]:
    return [
        "model=custom",
        f"model._target_={__name__}.{cls.__name__}",
        f"+model.name={cls.__name__}",
        "task=folder",
        f"task.root={folder}",
        "runtime.batch_size=4",
    ]


def written(tmp_path: Path, kind: str) -> list[Path]:
    return sorted((tmp_path / kind).rglob("*.*"))


@pytest.mark.parametrize("cls, fault", FAULTS, ids=[c.__name__ for c, _ in FAULTS])
def test_a_faulty_model_stops_the_run_before_anything_is_cached_or_scored(cls, fault, image_folder, tmp_path):
    with pytest.raises(ClipevalError) as error:
        run_in_process(overrides(cls, image_folder), tmp_path / "run")
    assert f"Model '{cls.__name__}'" in str(error.value) and fault in str(error.value)
    assert written(tmp_path, "cache/text_prototypes") == []
    if cls is not NanOnSquares:  # its image tower is sound: features of the images may stay cached
        assert written(tmp_path, "cache/features") == []
    stored = [json.loads(path.read_text()) for path in written(tmp_path, "store")]
    if cls in (NanOnRedImages, NanOnSquares):
        # found while evaluating: the run writes what finished (nothing was scored) with the failure
        (doc,) = stored
        assert doc["records"] == [] and fault in doc["failures"][0]["error"]
    else:  # found when the model is built, before any evaluation: nothing is written
        assert stored == [] and not (tmp_path / "run" / "results.json").exists()


def test_the_cli_exits_2_naming_the_model_and_the_fault(image_folder, tmp_path):
    tests = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    args = [*overrides(NanImages, image_folder), "runtime.workers=0", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(
        [sys.executable, "-m", "clipeval", *args], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr
    assert "Model 'NanImages': its image tower returned non-finite values" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_sound_user_model_passes_the_checks(image_folder, tmp_path):
    model = check_outputs(MeanColourEncoder())
    runtime = Runtime.create(device="cpu", workers=0, progress=False, batch_size=4)
    fs = image_features(model, ImageFolderSource(image_folder), runtime, TensorCache(tmp_path / "c"))
    assert fs.features.shape == (12, 3) and torch.allclose(fs.features.norm(dim=1), torch.ones(12))


def test_every_batch_is_checked_even_without_the_build_check(image_folder, tmp_path):
    """A model handed to image_features directly (the Python API) is checked batch by batch."""
    runtime = Runtime.create(device="cpu", workers=0, progress=False, batch_size=4)
    with pytest.raises(ClipevalError, match="Model 'NanOnRedImages': its image tower returned non-finite"):
        image_features(
            NanOnRedImages("NanOnRedImages"), ImageFolderSource(image_folder), runtime, TensorCache(tmp_path)
        )
    assert list(tmp_path.rglob("*.pt")) == []


def test_features_and_classifiers_of_different_widths_never_meet(image_folder, tmp_path):
    """The bank compares widths whatever side came from the cache: here both sides come from the cache,
    written by two models that share a fingerprint (a user's fingerprint that misses a change)."""
    from clipeval.features.bank import FeatureBank

    runtime = Runtime.create(device="cpu", workers=0, progress=False)
    cache = TensorCache(tmp_path / "c")
    source = ImageFolderSource(image_folder)
    FeatureBank(MeanColourEncoder("m"), runtime, cache).features(source)
    wide = WiderText("m")
    wide.fingerprint = MeanColourEncoder("m").fingerprint
    FeatureBank(wide, runtime, cache).classifier(["red"], ["a {c} thing."])
    bank = FeatureBank(MeanColourEncoder("m"), runtime, cache)
    bank.features(source)
    with pytest.raises(
        ClipevalError, match="Model 'm': its text embeddings have width 4 but its image embeddings have width 3"
    ):
        bank.classifier(["red"], ["a {c} thing."])


def test_the_unit_norm_tolerance_follows_the_dtype_the_tower_returns():
    unit = normalize(torch.randn(4, 512, generator=torch.Generator().manual_seed(0)))
    assert embedding_fault(unit) is None
    assert embedding_fault(unit.half()) is None and embedding_fault(unit.bfloat16()) is None  # rounding only
    assert "not unit norm" in embedding_fault(unit * 1.002)  # float32: within 1e-3
    assert "not unit norm" in embedding_fault((unit * 1.05).bfloat16())  # bf16: within 4 eps = 0.031
