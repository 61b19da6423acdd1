"""Adapters load real (tiny) models from files, and explain every way loading can fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_ARCH, save_tiny_open_clip, synthetic_image

from clipeval.errors import ClipevalError
from clipeval.models.base import check_dual_encoder
from clipeval.models.hf import HFClipEncoder
from clipeval.models.open_clip import OpenClipEncoder


def load_tiny(tiny, **kw) -> OpenClipEncoder:
    return OpenClipEncoder(arch=tiny["arch"], pretrained=tiny["pretrained"], model_config=tiny["model_config"], **kw)


def test_open_clip_checkpoint_file_loads_with_its_weights(tiny_open_clip):
    model = load_tiny(tiny_open_clip)
    saved = torch.load(tiny_open_clip["pretrained"], weights_only=True)
    assert torch.equal(model.model.state_dict()["text_projection"], saved["text_projection"])
    check_dual_encoder(model, "tiny")
    image = model.preprocess(synthetic_image(0, 0)).unsqueeze(0)
    img_emb = model.encode_image(image)
    txt_emb = model.encode_text(model.tokenize(["a photo of a cat.", "a dog"]))
    assert img_emb.shape == (1, 32) and txt_emb.shape == (2, 32)
    assert img_emb.dtype == txt_emb.dtype == torch.float32
    assert torch.allclose(txt_emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert model.tokenize(["x"]).shape == (1, 16)  # the arch's short context
    assert model.logit_scale == pytest.approx(1 / 0.07, rel=1e-4)


def test_fingerprint_is_stable_and_follows_the_weights(tiny_open_clip, tmp_path):
    first, again = load_tiny(tiny_open_clip), load_tiny(tiny_open_clip)
    assert first.fingerprint == again.fingerprint
    other = save_tiny_open_clip(tmp_path, seed=1)
    changed = OpenClipEncoder(TINY_ARCH, pretrained=str(other), model_config=tiny_open_clip["model_config"])
    assert changed.fingerprint != first.fingerprint


def test_missing_checkpoint_file_names_the_path_and_the_fix(tiny_open_clip, tmp_path):
    with pytest.raises(ClipevalError, match=r"checkpoint file not found: .*nope\.pt[\s\S]*model\.checkpoint="):
        OpenClipEncoder(
            TINY_ARCH,
            pretrained=str(tmp_path / "nope.pt"),
            model_config=tiny_open_clip["model_config"],
        )


def test_checkpoint_in_the_wrong_format_is_a_clear_error(tiny_open_clip, tmp_path):
    bad = tmp_path / "weights.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(ClipevalError, match=r"Could not load weights for model[\s\S]*Looked in: .*weights\.pt"):
        OpenClipEncoder(TINY_ARCH, pretrained=str(bad), model_config=tiny_open_clip["model_config"])


def test_checkpoint_of_another_architecture_is_a_clear_error(tiny_open_clip, tmp_path):
    config = json.loads(Path(tiny_open_clip["model_config"]).read_text())
    config["embed_dim"] = 48
    (tmp_path / "clipeval-test-wide.json").write_text(json.dumps(config))
    with pytest.raises(ClipevalError, match="made for another architecture or resolution than clipeval-test-wide"):
        OpenClipEncoder(
            "clipeval-test-wide",
            pretrained=tiny_open_clip["pretrained"],
            model_config=str(tmp_path / "clipeval-test-wide.json"),
        )


def test_unknown_architecture_and_tag_suggest_the_right_ones():
    with pytest.raises(ClipevalError, match="Did you mean 'ViT-B-32'"):
        OpenClipEncoder("ViT-B-23")
    with pytest.raises(
        ClipevalError,
        match="neither a file nor a pretrained tag of ViT-B-32.*Did you mean 'openai'",
    ):
        OpenClipEncoder("ViT-B-32", pretrained="opena")


def test_published_weights_offline_fail_with_the_way_to_pass_a_file_keeping_the_tag():
    # HF_HUB_OFFLINE=1 (conftest): open_clip cannot fetch, and must not pretend it could.
    with pytest.raises(
        ClipevalError,
        match=r"Could not load weights for model 'rn50'[\s\S]*model.pretrained=openai model.checkpoint=/path/to/",
    ):
        OpenClipEncoder("RN50-quickgelu", pretrained="openai", name="rn50")


def test_hf_clip_from_a_local_folder_matches_transformers(tiny_hf_clip):
    from transformers import CLIPModel, CLIPProcessor

    model = HFClipEncoder(str(tiny_hf_clip))
    check_dual_encoder(model, "hf")
    reference = CLIPModel.from_pretrained(tiny_hf_clip).eval()
    processor = CLIPProcessor.from_pretrained(tiny_hf_clip)
    image = synthetic_image(1, 2)
    inputs = processor(
        text=["a photo of a cat."],
        images=image,
        return_tensors="pt",
        padding="max_length",
        max_length=16,
    )
    with torch.no_grad():
        ref_img = reference.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
        ref_txt = reference.get_text_features(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        ).pooler_output
        img = model.encode_image(model.preprocess(image).unsqueeze(0))
        txt = model.encode_text(model.tokenize(["a photo of a cat."]))
    assert torch.allclose(img, ref_img / ref_img.norm(dim=-1, keepdim=True), atol=1e-5)
    assert torch.allclose(txt, ref_txt / ref_txt.norm(dim=-1, keepdim=True), atol=1e-5)
    assert model.fingerprint == HFClipEncoder(str(tiny_hf_clip)).fingerprint


def test_hf_missing_folder_is_a_clear_error(tmp_path):
    """A local path (/, ./, ../, ~) with nothing there says so, not transformers' rules for hub repo ids."""
    absent = tmp_path / "absent"
    with pytest.raises(ClipevalError) as info:
        HFClipEncoder(str(absent))
    message = str(info.value)
    assert message.startswith(f"model.name_or_path='{absent}' is a local path, and {absent} does not exist: ")
    assert "save_pretrained(DIR)" in message and "a hub id loads only from the local Hugging Face cache" in message
    assert "Repo id" not in message
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ClipevalError, match=r"weights.bin is a file, not a folder: a Hugging Face model is a folder"):
        HFClipEncoder(str(tmp_path / "weights.bin"))


def test_hf_hub_id_not_in_the_cache_offline_says_how_to_save_it_where_there_is_network():
    with pytest.raises(ClipevalError, match=r"Could not load Hugging Face model[\s\S]*model.name_or_path=DIR"):
        HFClipEncoder("no-such-org/no-such-model")


def test_trimmed_text_encoding_equals_the_full_context(tiny_open_clip, monkeypatch):
    from clipeval.models import open_clip as adapter

    model = load_tiny(tiny_open_clip)
    texts = ["a photo of a cat.", "a very long and rather wordy description of a small grey cat", "x"]
    tokens = model.tokenize(texts)
    with torch.no_grad():
        first = model.encode_text(tokens)  # decides, on this batch, whether trimming is exact
        assert model._trim is True
        again = model.encode_text(tokens)  # trimmed from now on
        reference = torch.nn.functional.normalize(model.model.encode_text(tokens), dim=-1)
    assert (again - reference).abs().max() < 1e-5
    assert torch.equal(first, again)  # the first batch as every later one: a prompt's bits do not depend on its turn
    # a model on which the trimmed pass differs keeps the full context
    monkeypatch.setattr(adapter, "encode_text_trimmed", lambda m, t: m.encode_text(t) + 1.0)
    other = load_tiny(tiny_open_clip)
    with torch.no_grad():
        other.encode_text(tokens)
    assert other._trim is False
