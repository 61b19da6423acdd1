"""Weights that do not fit their model are refused, never loaded into a model that then scores.

Three kinds of silent wrong number, each refused with exit 2 and a message naming the model:

* an open_clip weights file made for another architecture or resolution (open_clip itself would
  interpolate its position embeddings to fit, without a word);
* a transformers checkpoint missing tensors, holding extra ones, or holding tensors of another shape
  (transformers would initialise the missing ones randomly and only log a table);
* a ``logit_scale`` that is not a finite positive multiplier (NaN, 0 or negative), from a broken
  checkpoint or a custom adapter: every attack loss and calibrated probability would be meaningless.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_ARCH, TINY_CONFIG, compose_config, run_in_process, save_tiny_open_clip
from safetensors.torch import load_file, save_file
from user_model import MeanColourEncoder

from clipeval.config.paths import asset
from clipeval.errors import ClipevalError
from clipeval.models.base import check_outputs
from clipeval.models.hf import HFClipEncoder
from clipeval.models.open_clip import OpenClipEncoder


def register_variant(folder: Path, base: dict, arch: str, vision: dict | None = None, text: dict | None = None) -> str:
    """An architecture JSON like ``base`` with some vision/text settings changed; returns its path."""
    config = json.loads(json.dumps(base))
    config["vision_cfg"].update(vision or {})
    config["text_cfg"].update(text or {})
    path = folder / f"{arch}.json"
    path.write_text(json.dumps(config))
    return str(path)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """The tiny open_clip model (image size 32, context 16) saved as a plain state dict."""
    return save_tiny_open_clip(tmp_path_factory.mktemp("tiny"), seed=0)


def as_training_checkpoint(checkpoint: Path, folder: Path) -> Path:
    """The same weights as open_clip's training script saves them: {'epoch', 'name', 'state_dict': module.*}."""
    state = torch.load(checkpoint, weights_only=True)
    path = folder / "epoch_1.pt"
    torch.save({"epoch": 1, "name": "run", "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return path


def as_safetensors(checkpoint: Path, folder: Path) -> Path:
    path = folder / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in torch.load(checkpoint, weights_only=True).items()}, str(path))
    return path


def as_legacy_pickle(checkpoint: Path, folder: Path) -> Path:
    """torch's pre-1.6 (non-zip) format, which cannot be memory-mapped."""
    path = folder / "legacy.pt"
    torch.save(torch.load(checkpoint, weights_only=True), path, _use_new_zipfile_serialization=False)
    return path


FILE_FORMATS = {
    "state_dict": lambda c, f: c,
    "training": as_training_checkpoint,
    "safetensors": as_safetensors,
    "legacy": as_legacy_pickle,
}
OTHER_ARCHS = {
    # what differs from the file's architecture -> the tensor whose shape says so
    "image_size": ({"image_size": 48}, {}, "visual.positional_embedding: file [17, 64], model [37, 64]"),
    "context_length": ({}, {"context_length": 12}, "positional_embedding: file [16, 64], model [12, 64]"),
    "patch_size": ({"patch_size": 16}, {}, "visual.conv1.weight: file [64, 3, 8, 8], model [64, 3, 16, 16]"),
}


@pytest.mark.parametrize("fmt", list(FILE_FORMATS))
@pytest.mark.parametrize("change", list(OTHER_ARCHS))
def test_a_file_made_for_another_architecture_is_refused_naming_the_tensors(tiny_checkpoint, tmp_path, fmt, change):
    vision, text, shapes = OTHER_ARCHS[change]
    arch = f"clipeval-test-{change.replace('_', '-')}"
    config = register_variant(tmp_path, TINY_CONFIG, arch, vision, text)
    weights = FILE_FORMATS[fmt](tiny_checkpoint, tmp_path)
    with pytest.raises(ClipevalError) as error:
        OpenClipEncoder(arch, name="variant", model_config=config, checkpoint=str(weights))
    message = str(error.value)
    assert "Model 'variant'" in message and str(weights) in message and "another architecture" in message
    assert shapes in message


def test_a_file_made_for_its_architecture_still_loads_in_every_format(tiny_checkpoint, tmp_path):
    config = str(tiny_checkpoint.parent / f"{TINY_ARCH}.json")
    reference = torch.load(tiny_checkpoint, weights_only=True)["visual.positional_embedding"]
    for fmt, convert in FILE_FORMATS.items():
        model = OpenClipEncoder(TINY_ARCH, model_config=config, checkpoint=str(convert(tiny_checkpoint, tmp_path)))
        assert torch.equal(model.model.visual.positional_embedding, reference), fmt


def test_an_fp16_file_of_another_resolution_is_refused_before_open_clip_tries_to_resize_it(tmp_path):
    # tiny_digits ships as fp16 safetensors; open_clip's resize of fp16 fails with a bare NotImplementedError
    base = json.loads(Path(asset("tiny-digits-vit.json")).read_text())
    config = register_variant(tmp_path, base, "clipeval-test-digits-24", vision={"image_size": 24})
    with pytest.raises(ClipevalError, match=r"another architecture.*\n.*visual.positional_embedding: file \[17, 96\]"):
        OpenClipEncoder("clipeval-test-digits-24", model_config=config, checkpoint=asset("tiny_digits.safetensors"))


def hf_copy(tiny_hf_clip: Path, folder: Path, edit) -> str:
    """A copy of the tiny HF CLIP whose model.safetensors is ``edit(tensors)``."""
    target = folder / "hf"
    shutil.copytree(tiny_hf_clip, target)
    tensors = load_file(str(target / "model.safetensors"))
    save_file(edit(tensors), str(target / "model.safetensors"), metadata={"format": "pt"})
    return str(target)


def without_projection_and_a_layer(tensors: dict) -> dict:
    return {k: v for k, v in tensors.items() if "text_projection" not in k and "text_model.encoder.layers.1." not in k}


def with_an_extra_tensor(tensors: dict) -> dict:
    return {**tensors, "text_model.encoder.layers.2.mlp.fc1.weight": torch.zeros(64, 32)}


@pytest.mark.parametrize(
    "edit, named",
    [
        (without_projection_and_a_layer, ["missing keys", "text_projection.weight", "text_model.encoder.layers.1."]),
        (with_an_extra_tensor, ["unexpected keys", "text_model.encoder.layers.2.mlp.fc1.weight"]),
    ],
    ids=["missing", "unexpected"],
)
def test_a_transformers_checkpoint_whose_tensors_do_not_match_is_refused(tiny_hf_clip, tmp_path, edit, named):
    folder = hf_copy(tiny_hf_clip, tmp_path, edit)
    with pytest.raises(ClipevalError) as error:
        HFClipEncoder(folder, name="cut")
    message = str(error.value)
    assert "'cut'" in message and folder in message and all(n in message for n in named), message


def test_a_transformers_checkpoint_with_a_tensor_of_another_shape_is_refused(tiny_hf_clip, tmp_path):
    def reshaped(tensors: dict) -> dict:
        return {**tensors, "text_projection.weight": torch.zeros(8, 32)}

    with pytest.raises(ClipevalError, match=r"text_projection.weight \(file \[8, 32\], model \[16, 32\]\)"):
        HFClipEncoder(hf_copy(tiny_hf_clip, tmp_path, reshaped), name="reshaped")


def test_a_complete_transformers_checkpoint_still_loads(tiny_hf_clip, tmp_path):
    model = HFClipEncoder(hf_copy(tiny_hf_clip, tmp_path, dict), name="whole")
    assert model.logit_scale == pytest.approx(float(torch.tensor(2.6592).exp()), rel=1e-3)


def test_a_checkpoint_whose_logit_scale_is_nan_stops_the_run(tmp_path):
    weights = load_file(asset("tiny_digits.safetensors"))
    weights["logit_scale"] = torch.full_like(weights["logit_scale"], float("nan"))
    save_file(weights, str(tmp_path / "nan_scale.safetensors"))
    with pytest.raises(ClipevalError, match="Model 'tiny_digits': logit_scale is nan"):
        run_in_process(["task=digits", f"model.pretrained={tmp_path / 'nan_scale.safetensors'}"], tmp_path / "run")


def test_the_open_clip_and_transformers_logit_scale_is_the_multiplier_not_its_log():
    cfg = compose_config(["model=tiny_digits"])
    model = OpenClipEncoder(**{k: v for k, v in cfg.model.items() if k != "_target_"})
    assert model.logit_scale == pytest.approx(float(model.model.logit_scale.detach().exp()))
    assert check_outputs(model) is model


class ScaledColourEncoder(MeanColourEncoder):
    scale_value = 100.0

    @property
    def logit_scale(self) -> float:
        return self.scale_value


@pytest.mark.parametrize("value", [0.0, -100.0, float("nan"), float("inf")])
def test_a_custom_model_whose_logit_scale_is_not_a_positive_number_is_refused(value):
    model = ScaledColourEncoder(name="scaled")
    model.scale_value = value
    with pytest.raises(ClipevalError, match=f"Model 'scaled': logit_scale is {value}"):
        check_outputs(model)


def test_a_custom_model_with_a_positive_logit_scale_passes():
    assert check_outputs(ScaledColourEncoder(name="scaled")).logit_scale == 100.0
