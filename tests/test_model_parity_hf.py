"""Every transformers family clipeval supports embeds exactly as the family's model card does it.

For each family a tiny model with random weights, scaled up so that a wrong recipe moves the
embeddings far, is saved with a tiny tokenizer and image processor, as ``save_pretrained`` would
publish it. The reference is the recipe of the family's documentation, written out here on its
own: the family's processor class, the card's padding, every tokenizer output passed to
``get_text_features``, ``pixel_values`` to ``get_image_features``, then L2 normalisation. Each
family also shows that a wrong recipe (clipeval's old one: pad to the full context, ids only; or
another family's image preprocessing) lands far outside the tolerance, so the check can fail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from clipeval.errors import ClipevalError
from clipeval.models.hf import HFClipEncoder

TOL = 1e-5  # float32 on CPU: the same operations, at most reordered
FAR = 1e-2  # a wrong recipe moves some embedding component by more than this
WORDS = [
    "a",
    "photo",
    "of",
    "the",
    "cat",
    "dog",
    "bird",
    "car",
    "small",
    "big",
    "red",
    "green",
    "blue",
    "sketch",
    "drawing",
    "painting",
    "猫",
    "狗",
    "鸟",
    "照片",
    "一张",
]
TEXTS = ["a photo of a cat.", "a small red car", "一张 猫 的 照片", "a sketch of a big green bird and a dog", "dog"]
TEXT_POSITIONS = 16


def images() -> list[Image.Image]:
    """Non-square noise of several sizes, so that resize mode and crop matter."""
    rng = np.random.default_rng(0)
    shapes = [(40, 56), (64, 30), (33, 33), (21, 70)]
    return [Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)) for hw in shapes]


def vision_config() -> dict:
    return dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
    )


def text_config(vocab_size: int, positions: int = TEXT_POSITIONS, **extra) -> dict:
    return dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=positions,
        **extra,
    )


def tiny(model_class, config) -> torch.nn.Module:
    """The model with seeded random weights, scaled up (std 0.5 instead of 0.02) so that attention
    stops being uniform and padding, masks and preprocessing all change the embeddings."""
    torch.manual_seed(0)
    model = model_class(config)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 0.5)
    return model


def letters() -> list[str]:
    return list("abcdefghijklmnopqrstuvwxyz.,")


def build_clip(folder: Path, **_) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for ch in bytes_to_unicode().values():
            vocab[ch + suffix] = len(vocab)
    # One token per byte (no merges): 64 positions hold every test prompt.
    text = text_config(len(vocab), positions=64, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    config = CLIPConfig(text_config=text, vision_config=vision_config(), projection_dim=16)
    tiny(CLIPModel, config).save_pretrained(folder)
    CLIPTokenizer(vocab=vocab, merges=[], model_max_length=64).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)


def gemma_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-fallback BPE whose merges spell each test word as one "▁word" token, as a real vocabulary would."""
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "▁": 4}
    merges = []
    for piece in letters() + [c for w in WORDS for c in w]:
        vocab.setdefault(piece, len(vocab))
    for word in WORDS:
        spelled = "▁"
        for ch in word:
            merges.append((spelled, ch))
            spelled += ch
            vocab.setdefault(spelled, len(vocab))
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    return vocab, list(dict.fromkeys(merges))


def build_siglip(folder: Path, tokenizer_inputs: list[str] | None = None) -> None:
    """A SiglipModel with a Gemma tokenizer, as SigLIP 2's fixed-resolution checkpoints are published.

    ``tokenizer_inputs=["input_ids"]`` is what SigLIP's published tokenizer config declares (no mask);
    transformers' Gemma tokenizer also returns an ``attention_mask`` unless told otherwise.
    """
    from transformers import GemmaTokenizer, SiglipConfig, SiglipImageProcessor, SiglipModel

    vocab, merges = gemma_vocab()
    text = text_config(len(vocab), pad_token_id=0, eos_token_id=1, bos_token_id=2)
    tiny(SiglipModel, SiglipConfig(text_config=text, vision_config=vision_config())).save_pretrained(folder)
    extra = {"model_input_names": tokenizer_inputs} if tokenizer_inputs else {}
    GemmaTokenizer(vocab=vocab, merges=merges, model_max_length=64, **extra).save_pretrained(folder)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)


def build_chinese_clip(folder: Path, **_) -> None:
    from transformers import BertTokenizer, ChineseCLIPConfig, ChineseCLIPImageProcessor, ChineseCLIPModel

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *letters(), *("##" + c for c in letters())]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    text = text_config(len(vocab), positions=64, type_vocab_size=2)
    config = ChineseCLIPConfig(text_config=text, vision_config=vision_config(), projection_dim=16)
    tiny(ChineseCLIPModel, config).save_pretrained(folder)
    BertTokenizer(vocab=vocab).save_pretrained(folder)
    # As OFA-Sys publishes it: a plain resize to the square, no centre crop.
    ChineseCLIPImageProcessor(
        size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32}, do_center_crop=False
    ).save_pretrained(folder)


def build_altclip(folder: Path, **_) -> None:
    from transformers import AltCLIPConfig, AltCLIPModel, CLIPImageProcessor, XLMRobertaTokenizer

    special = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces = special + [("▁" + w, -1.0) for w in WORDS] + [(c, -2.0) for c in [*letters(), "▁"]] + [("<mask>", 0.0)]
    text = text_config(len(pieces), positions=40, project_dim=16, pad_token_id=1, type_vocab_size=1)
    config = AltCLIPConfig(text_config=text, vision_config=vision_config(), projection_dim=16)
    tiny(AltCLIPModel, config).save_pretrained(folder)
    XLMRobertaTokenizer(vocab=pieces).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)


def squash_processor(like):
    """Another family's image recipe: resize to the square without a crop."""
    from transformers import ChineseCLIPImageProcessor

    return ChineseCLIPImageProcessor(
        size={"height": 32, "width": 32},
        do_center_crop=False,
        image_mean=like.image_mean,
        image_std=like.image_std,
    )


def crop_processor(like):
    """Another family's image recipe: resize the short side, then centre crop."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        image_mean=like.image_mean,
        image_std=like.image_std,
    )


def old_clipeval_text(tokenizer, texts: list[str], positions: int) -> dict[str, torch.Tensor]:
    """clipeval's recipe before issue 13: every prompt padded to the full context, ids only."""
    ids = tokenizer(texts, padding="max_length", truncation=True, max_length=positions, return_tensors="pt")
    return {"input_ids": ids["input_ids"]}


def unmasked_text(tokenizer, texts: list[str], positions: int) -> dict[str, torch.Tensor]:
    """The card's padding with the mask dropped."""
    ids = tokenizer(texts, padding="max_length", max_length=positions, return_tensors="pt")
    return {"input_ids": ids["input_ids"]}


def longest_text(tokenizer, texts: list[str], positions: int) -> dict[str, torch.Tensor]:
    """Padding to the longest prompt, where the card says to pad to the trained length."""
    return dict(tokenizer(texts, padding=True, return_tensors="pt"))


@dataclass
class Family:
    build: Callable[..., None]
    model_class: str
    processor_class: str
    #: the tokenizer arguments of the family's model card
    card_text: dict
    #: a deliberately wrong text recipe, or None where none can matter (CLIP's causal tower)
    wrong_text: Callable | None
    wrong_image: Callable
    positions: int = TEXT_POSITIONS
    build_kwargs: dict = field(default_factory=dict)


FAMILIES = {
    # openai/clip-vit-base-patch32: tokenizer(texts, padding=True); the causal text tower reads up
    # to the first end-of-text token, so no padding can change it: only images can go wrong.
    "clip": Family(build_clip, "CLIPModel", "CLIPProcessor", {"padding": True}, None, squash_processor, positions=64),
    # google/siglip-*: "make sure to set padding='max_length' as that's how the model was trained";
    # SigLIP 2: "... and max_length=64". The published tokenizer config returns ids only.
    "siglip": Family(
        build_siglip,
        "SiglipModel",
        "SiglipProcessor",
        {"padding": "max_length", "max_length": TEXT_POSITIONS},
        longest_text,
        crop_processor,
        build_kwargs={"tokenizer_inputs": ["input_ids"]},
    ),
    # The same with a tokenizer that returns a mask: the card passes it on, so must we.
    "siglip_masked": Family(
        build_siglip,
        "SiglipModel",
        "SiglipProcessor",
        {"padding": "max_length", "max_length": TEXT_POSITIONS},
        unmasked_text,
        crop_processor,
    ),
    # OFA-Sys/chinese-clip-*: processor(text=..., padding=True); BERT text tower, CLS pooled.
    "chinese_clip": Family(
        build_chinese_clip,
        "ChineseCLIPModel",
        "ChineseCLIPProcessor",
        {"padding": True},
        old_clipeval_text,
        crop_processor,
        positions=64,
    ),
    # BAAI/AltCLIP: processor(text=..., padding=True); XLM-R text tower, CLS pooled.
    "altclip": Family(
        build_altclip,
        "AltCLIPModel",
        "AltCLIPProcessor",
        {"padding": True},
        old_clipeval_text,
        squash_processor,
        positions=38,
    ),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Callable[[str], Path]:
    """family name -> folder with the tiny model, tokenizer and image processor (built once)."""
    folders: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in folders:
            folder = tmp_path_factory.mktemp(name)
            FAMILIES[name].build(folder, **FAMILIES[name].build_kwargs)
            folders[name] = folder
        return folders[name]

    return get


def unit(features) -> torch.Tensor:
    x = features.pooler_output if hasattr(features, "pooler_output") else features
    return x / x.norm(dim=-1, keepdim=True)


class Reference:
    """The family's documented recipe, with its own processor and model classes."""

    def __init__(self, folder: Path, family: Family):
        self.model = getattr(transformers, family.model_class).from_pretrained(folder).eval()
        self.processor = getattr(transformers, family.processor_class).from_pretrained(folder)
        self.family = family

    def text(self, inputs: dict | None = None) -> torch.Tensor:
        if inputs is None:
            inputs = self.processor(text=TEXTS, return_tensors="pt", **self.family.card_text)
        with torch.no_grad():
            return unit(self.model.get_text_features(**inputs))

    def image(self, image_processor=None) -> torch.Tensor:
        processor = image_processor or self.processor.image_processor
        pixels = processor(images=images(), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            return unit(self.model.get_image_features(pixel_values=pixels))


def clipeval_embeddings(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    model = HFClipEncoder(str(folder))
    with torch.no_grad():
        img = model.encode_image(torch.stack([model.preprocess(im) for im in images()]))
        txt = model.encode_text(model.tokenize(TEXTS))
    return img, txt


@pytest.mark.parametrize("name", list(FAMILIES))
def test_embeddings_equal_the_family_documented_recipe(saved, name):
    folder = saved(name)
    reference = Reference(folder, FAMILIES[name])
    img, txt = clipeval_embeddings(folder)
    assert (img - reference.image()).abs().max() < TOL
    assert (txt - reference.text()).abs().max() < TOL


@pytest.mark.parametrize("name", [n for n, f in FAMILIES.items() if f.wrong_text is not None])
def test_a_wrong_text_recipe_would_be_caught(saved, name):
    family = FAMILIES[name]
    reference = Reference(saved(name), family)
    right = reference.text()
    wrong = reference.text(family.wrong_text(reference.processor.tokenizer, TEXTS, family.positions))
    assert (wrong - right).abs().max() > FAR
    image = reference.image()
    assert not torch.equal((image @ wrong.T).argmax(1), (image @ right.T).argmax(1))  # predictions change


@pytest.mark.parametrize("name", list(FAMILIES))
def test_a_wrong_image_recipe_would_be_caught(saved, name):
    family = FAMILIES[name]
    reference = Reference(saved(name), family)
    wrong = reference.image(family.wrong_image(reference.processor.image_processor))
    assert (wrong - reference.image()).abs().max() > FAR


def test_clip_text_tower_reads_no_padding(saved):
    """Why transformers CLIP already matched with the old recipe: its causal tower stops at the end token."""
    reference = Reference(saved("clip"), FAMILIES["clip"])
    old = reference.text(old_clipeval_text(reference.processor.tokenizer, TEXTS, 64))
    assert (old - reference.text()).abs().max() < TOL


def test_text_inputs_are_what_the_tokenizer_returns(saved):
    """Mask and token types reach the model only where the model's own tokenizer returns them."""
    assert set(HFClipEncoder(str(saved("chinese_clip"))).tokenize(["猫"])) == {
        "input_ids",
        "attention_mask",
        "token_type_ids",
    }
    assert set(HFClipEncoder(str(saved("siglip"))).tokenize(["a cat"])) == {"input_ids"}
    siglip = HFClipEncoder(str(saved("siglip_masked"))).tokenize(["a cat", "a photo of a dog"])
    assert set(siglip) == {"input_ids", "attention_mask"}
    assert siglip["input_ids"].shape == (2, TEXT_POSITIONS)  # SigLIP always sees its trained length


def test_text_recipe_is_part_of_the_fingerprint(saved):
    """Same weights, a tokenizer that returns a mask: other embeddings, so another cache key."""
    with_mask = HFClipEncoder(str(saved("siglip_masked")))
    without = HFClipEncoder(str(saved("siglip")))
    weights, same = with_mask.model.state_dict(), without.model.state_dict()
    assert all(torch.equal(weights[k], same[k]) for k in weights)
    assert with_mask.fingerprint != without.fingerprint


def test_a_moved_folder_keeps_its_fingerprint(saved, tmp_path):
    """Where a model was loaded from is no part of what it computes: the cache still hits after a move."""
    import shutil

    moved = shutil.copytree(saved("altclip"), tmp_path / "moved")
    assert HFClipEncoder(str(moved)).fingerprint == HFClipEncoder(str(saved("altclip"))).fingerprint


def test_prompts_longer_than_the_text_tower_are_truncated_to_its_positions(saved):
    """RoBERTa (AltCLIP) numbers positions from pad_token_id + 1: 40 positions hold 38 tokens."""
    model = HFClipEncoder(str(saved("altclip")))
    tokens = model.tokenize([" ".join(["dog"] * 100)])
    assert tokens["input_ids"].shape == (1, 38)
    assert torch.isfinite(model.encode_text(tokens)).all()


def test_encode_text_refuses_bare_ids(saved):
    """Ids without their mask would embed wrongly on bidirectional towers: only tokenize's output is taken."""
    model = HFClipEncoder(str(saved("chinese_clip")))
    with pytest.raises(TypeError, match="what tokenize returns"):
        model.encode_text(model.tokenize(["猫"])["input_ids"])


def test_a_family_whose_recipe_is_not_checked_is_refused(tmp_path):
    from transformers import (
        GemmaTokenizer,
        Siglip2Config,
        Siglip2ImageProcessor,
        Siglip2Model,
    )

    vision = {k: v for k, v in vision_config().items() if k != "image_size"}
    vocab, merges = gemma_vocab()
    Siglip2Model(Siglip2Config(text_config=text_config(len(vocab)), vision_config=vision)).save_pretrained(tmp_path)
    GemmaTokenizer(vocab=vocab, merges=merges).save_pretrained(tmp_path)
    Siglip2ImageProcessor(patch_size=8, max_num_patches=16).save_pretrained(tmp_path)
    with pytest.raises(ClipevalError, match=r"model_type 'siglip2'[\s\S]*fixed-resolution SigLIP 2 checkpoint"):
        HFClipEncoder(str(tmp_path))


def test_a_tokenizer_output_the_model_cannot_take_is_refused(saved, tmp_path):
    """A CLIP model saved with a BERT tokenizer: token_type_ids would have nowhere to go."""
    import shutil

    from transformers import BertTokenizer

    for item in saved("clip").iterdir():
        if not item.name.startswith(("tokenizer", "vocab", "merges", "special_tokens")):
            shutil.copy(item, tmp_path / item.name)
    BertTokenizer(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "cat"])}).save_pretrained(
        tmp_path
    )
    with pytest.raises(ClipevalError, match="tokenizer of .* returns token_type_ids, which get_text_features"):
        HFClipEncoder(str(tmp_path))


@pytest.mark.parametrize("name", ["chinese_clip", "altclip"])
def test_padding_to_the_longest_prompt_does_not_make_embeddings_depend_on_the_batch(saved, name):
    """The mask hides the padding, so a prompt embeds the same alone or beside a longer one."""
    model = HFClipEncoder(str(saved(name)))
    with torch.no_grad():
        together = model.encode_text(model.tokenize(TEXTS))
        alone = torch.cat([model.encode_text(model.tokenize([text])) for text in TEXTS])
    assert (together - alone).abs().max() < TOL


def test_a_missing_tokenizer_backend_names_the_package_to_install(saved, monkeypatch):
    import transformers as library

    def needs_sentencepiece(*args, **kwargs):
        raise ImportError("SiglipTokenizer requires the SentencePiece library but it was not found")

    monkeypatch.setattr(library.AutoProcessor, "from_pretrained", needs_sentencepiece)
    with pytest.raises(ClipevalError, match=r"SentencePiece[\s\S]*pip install sentencepiece protobuf"):
        HFClipEncoder(str(saved("siglip")))


def test_a_zero_shot_run_predicts_as_the_library_recipe(saved, image_folder, tmp_path):
    """End to end (config, classifier, feature bank): ChineseCLIP's top-1 on every image equals the
    prediction of its documented recipe, prompt "a photo of a {c}." with folder names as classes."""
    import pyarrow.parquet as pq
    from conftest import run_in_process

    folder = saved("chinese_clip")
    run_in_process(["model=hf", f"model.name_or_path={folder}", "task=folder", f"task.root={image_folder}"], tmp_path)
    table = pq.read_table(tmp_path / "predictions" / "folder" / "test.parquet").to_pylist()

    reference = Reference(folder, FAMILIES["chinese_clip"])
    names = sorted(p.name for p in image_folder.iterdir())
    prompts = reference.processor(
        text=[f"a photo of a {n.replace('_', ' ')}." for n in names], padding=True, return_tensors="pt"
    )
    pixels = reference.processor(
        images=[Image.open(image_folder / row["sample_id"]).convert("RGB") for row in table], return_tensors="pt"
    )["pixel_values"]
    with torch.no_grad():
        text = unit(reference.model.get_text_features(**prompts))
        image = unit(reference.model.get_image_features(pixel_values=pixels))
    assert [row["topk"][0] for row in table] == (image @ text.T).argmax(1).tolist()
