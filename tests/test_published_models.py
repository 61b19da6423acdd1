"""Published open_clip models load exactly as published (issue 13, sections 1 and 6).

A published tag fixes more than the weights: open_clip's pretrained config for it sets the
activation (QuickGELU or GELU), the image mean/std, the resize interpolation and the resize mode.
Everything here runs offline on randomly initialised weights: real architectures are built on the
meta device (nothing allocated), tiny ones end to end, and "published" tags and hub repositories
are faked in a local Hugging Face cache laid out as ``huggingface_hub`` writes it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path

import open_clip
import pytest
import torch
from conftest import TINY_ARCH, TINY_CONFIG, compose_config, synthetic_image
from omegaconf import OmegaConf
from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict
from open_clip.transformer import QuickGELU
from PIL import Image
from torchvision import transforms as T

from clipeval.config.paths import conf_dir
from clipeval.errors import ClipevalError
from clipeval.models.base import stable_repr
from clipeval.models.open_clip import OpenClipEncoder, build, resolve

CONF_MODELS = sorted((conf_dir() / "model").glob("*.yaml"))
PREPROCESS = ("mean", "std", "interpolation", "resize_mode")
TINY_QUICK = f"{TINY_ARCH}-quickgelu"
#: parity tolerance on unit-norm embeddings, and the least difference a wrong recipe must make (100x it)
ATOL = 1e-5
WRONG = 100 * ATOL
FAKE_TAG = "clipeval_fake"
FAKE_HUB = "clipeval/tiny-fake"
#: a published tag whose every setting differs from open_clip's defaults, as SigLIP's do
FAKE_TAG_CFG = {
    "url": "",
    "hf_hub": f"{FAKE_HUB}/",
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "interpolation": "bilinear",
    "resize_mode": "squash",
    "quick_gelu": True,
}


def model_config(config_file: Path, *overrides: str) -> dict:
    cfg = compose_config([f"model={config_file.stem}", "task=folder", *overrides])
    if OmegaConf.is_missing(cfg.model, "arch"):  # open_clip.yaml: the user names the arch
        return {"_target_": cfg.model._target_}
    return OmegaConf.to_container(cfg.model, resolve=True)


def published_tag(config: dict) -> str | None:
    """The config's published tag, or None (another adapter, or weights from a file)."""
    if config["_target_"] != "clipeval.models.open_clip.OpenClipEncoder" or not config.get("pretrained"):
        return None
    return config["pretrained"] if open_clip.get_pretrained_cfg(config["arch"], config["pretrained"]) else None


def activations(model: torch.nn.Module) -> set[type]:
    return {type(m) for m in model.modules() if isinstance(m, (torch.nn.GELU, QuickGELU))}


def assert_built_as_tag_says(model: torch.nn.Module, preprocess, tag_cfg: dict) -> None:
    """Activation, preprocess config and the transform itself are those of the tag."""
    assert activations(model) == ({QuickGELU} if tag_cfg.get("quick_gelu") else {torch.nn.GELU})
    for key in PREPROCESS:
        got, want = model.visual.preprocess_cfg[key], tag_cfg[key]
        assert (tuple(got) if key in ("mean", "std") else got) == want, key
    normalize = next(t for t in preprocess.transforms if isinstance(t, T.Normalize))
    assert tuple(normalize.mean) == tuple(tag_cfg["mean"]) and tuple(normalize.std) == tuple(tag_cfg["std"])
    resize = next(t for t in preprocess.transforms if isinstance(t, T.Resize))
    assert resize.interpolation.value == tag_cfg["interpolation"]
    # and the whole transform is the one open_clip makes for the tag itself
    size = {"size": model.visual.preprocess_cfg["size"]}
    expected = image_transform_v2(PreprocessCfg(**merge_preprocess_dict(size, tag_cfg)), is_train=False)
    assert as_tuples(stable_repr(preprocess)) == as_tuples(stable_repr(expected))


def as_tuples(text: str) -> str:
    """A hub config's JSON gives lists where open_clip's registry has tuples: the same values."""
    return text.replace("[", "(").replace("]", ")")


# --- every named config in conf/model/ ------------------------------------------------------


#: the configs that name a published tag (the others load a file, another adapter, or the user's arch)
TAGGED_MODELS = [path for path in CONF_MODELS if published_tag(model_config(path))]


def test_the_named_openai_configs_have_published_tags():
    assert {"vit_b32", "vit_b16", "vit_l14", "rn50"} <= {path.stem for path in TAGGED_MODELS}


@pytest.mark.parametrize("config_file", TAGGED_MODELS, ids=lambda path: path.stem)
def test_named_config_builds_what_its_tag_means_whatever_the_weights_source(config_file, tmp_path, monkeypatch):
    """The tag alone (weights downloaded) and the tag with a local file are one code path, with the tag's settings.

    Weights are not read: the download returns a local file and open_clip's strict loader is stubbed
    to record the file it gets, so a ViT-L-14 is checked in a second on the meta device.
    """
    config = model_config(config_file)
    tag = published_tag(config)
    tag_cfg = open_clip.get_pretrained_cfg(config["arch"], tag)
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"never read")
    loaded: list[str] = []
    monkeypatch.setattr(open_clip, "download_pretrained", lambda cfg, cache_dir=None: str(weights))
    monkeypatch.setattr(open_clip.factory, "load_checkpoint", lambda model, path, **kw: loaded.append(path))
    for overrides in ([], [f"model.checkpoint={weights}"]):
        config = model_config(config_file, *overrides)
        recipe = resolve(config["name"], config["arch"], config["pretrained"], config["checkpoint"])
        model, preprocess = build(recipe, config["name"], device="meta")
        assert loaded.pop() == str(weights)
        assert_built_as_tag_says(model, preprocess, tag_cfg)


# --- architecture and tag must agree ----------------------------------------------------------


def test_every_published_tag_on_an_arch_of_the_wrong_activation_is_refused_naming_the_right_arch():
    """open_clip only warns ("QuickGELU mismatch"); every embedding would differ, so this is exit 2."""
    mismatched = 0
    for arch, tag in open_clip.list_pretrained():
        states = open_clip.get_pretrained_cfg(arch, tag).get("quick_gelu")
        if states is None or bool(open_clip.get_model_config(arch).get("quick_gelu")) == states:
            assert resolve("m", arch, tag).tag == tag
            continue
        mismatched += 1
        with pytest.raises(ClipevalError, match=f"'{tag}' weights of {arch} were trained with QuickGELU") as error:
            resolve("m", arch, tag)
        right = str(error.value).partition("model.arch=")[2].rstrip(".")
        assert right == f"{arch}-quickgelu"
        assert resolve("m", right, tag).tag_cfg["quick_gelu"] is True
    assert mismatched >= 20  # OpenAI, LAION-400M, MetaCLIP and DFN tags of the GELU archs


def test_openai_weights_on_plain_vit_b32_are_an_error_even_from_a_local_file(tmp_path):
    weights = tmp_path / "ViT-B-32.pt"
    weights.write_bytes(b"not read: the combination is refused first")
    with pytest.raises(ClipevalError, match=r"uses GELU[\s\S]*Use model.arch=ViT-B-32-quickgelu"):
        OpenClipEncoder("ViT-B-32", pretrained="openai", checkpoint=str(weights))


def test_a_tag_of_another_arch_names_the_archs_that_publish_it():
    with pytest.raises(
        ClipevalError, match="nor a pretrained tag of ViT-B-32-quickgelu. It is published for: ViT-B-32;"
    ):
        resolve("m", "ViT-B-32-quickgelu", "laion2b_s34b_b79k")


def test_two_weight_files_or_a_hub_name_with_weights_are_refused(tmp_path):
    weights = tmp_path / "a.pt"
    weights.write_bytes(b"x")
    with pytest.raises(ClipevalError, match="are both files"):
        resolve("m", "ViT-B-32", str(weights), str(weights))
    with pytest.raises(ClipevalError, match="carries its own weights"):
        resolve("m", "hf-hub:org/name", "openai")


# --- tiny models end to end: a fake published tag in a local hub cache ------------------------


def add_to_hub_cache(cache: Path, repo: str, files: dict[str, bytes]) -> None:
    """Lay out ``files`` as huggingface_hub caches a download of ``repo`` (refs/main -> snapshot)."""
    commit = hashlib.sha1(repo.encode()).hexdigest()
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)


def state_dict_bytes(model: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def register_arch(folder: Path, name: str, config: dict) -> None:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(str(path))


def sensitive(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights scaled up, so that a wrong activation or preprocessing changes the embeddings."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2 and "embedding" not in name:
                gain = 3 if param.ndim == 2 else 1  # deep conv stacks (FastViT) would overflow at 3
                param.copy_(torch.randn(param.shape, generator=generator) * gain / param[0].numel() ** 0.5)
    return model


@pytest.fixture
def fake_published(tmp_path, monkeypatch) -> dict:
    """A tiny arch in GELU and QuickGELU versions, a published tag of the QuickGELU one, its weights in a hub cache."""
    register_arch(tmp_path, TINY_ARCH, TINY_CONFIG)
    register_arch(tmp_path, TINY_QUICK, {**TINY_CONFIG, "quick_gelu": True})
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, TINY_QUICK, {FAKE_TAG: FAKE_TAG_CFG})
    torch.manual_seed(0)
    model = sensitive(open_clip.create_model(TINY_QUICK))
    weights = tmp_path / "tiny-published.pt"
    weights.write_bytes(state_dict_bytes(model))
    hub = tmp_path / "hub"
    add_to_hub_cache(hub, FAKE_HUB, {"open_clip_pytorch_model.bin": weights.read_bytes()})
    return {"weights": str(weights), "hub": str(hub)}


def embeddings(encoder: OpenClipEncoder, images: list[Image.Image], texts: list[str]) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        pixels = torch.stack([encoder.preprocess(image) for image in images])
        return encoder.encode_image(pixels), encoder.encode_text(encoder.tokenize(texts))


def open_clip_recipe(arch: str, images, texts, **kwargs) -> tuple[torch.Tensor, ...]:
    """open_clip's documented recipe: create_model_and_transforms, get_tokenizer, encode_*, normalised."""
    model, _, preprocess = open_clip.create_model_and_transforms(arch, **kwargs)
    tokenizer = open_clip.get_tokenizer(arch, cache_dir=kwargs.get("cache_dir"))
    with torch.no_grad():
        image = model.eval().encode_image(torch.stack([preprocess(i) for i in images]), normalize=True)
        return image, model.encode_text(tokenizer(texts), normalize=True)


IMAGES = [synthetic_image(label, 0, size=size) for label, size in ((0, 40), (1, 56), (2, 48))]
TEXTS = ["a photo of a red square.", "a green circle", "blue"]


def test_a_tag_with_a_local_file_is_the_tag_offline(fake_published):
    """Tag alone (weights from the hub cache), tag + file, and open_clip's own tag path agree exactly."""
    hub = fake_published["hub"]
    from_tag = OpenClipEncoder(TINY_QUICK, pretrained=FAKE_TAG, cache_dir=hub)
    from_file = OpenClipEncoder(TINY_QUICK, pretrained=FAKE_TAG, checkpoint=fake_published["weights"])
    assert_built_as_tag_says(from_tag.model, from_tag.preprocess, FAKE_TAG_CFG)
    assert_built_as_tag_says(from_file.model, from_file.preprocess, FAKE_TAG_CFG)
    assert from_tag.fingerprint == from_file.fingerprint
    reference = open_clip_recipe(TINY_QUICK, IMAGES, TEXTS, pretrained=FAKE_TAG, cache_dir=hub)
    for ours in (embeddings(from_tag, IMAGES, TEXTS), embeddings(from_file, IMAGES, TEXTS)):
        for got, want in zip(ours, reference, strict=True):
            assert torch.allclose(got, want, atol=ATOL)


def test_weights_without_their_tag_lose_its_settings_and_the_log_says_so(fake_published, caplog):
    """The same file with no tag gets open_clip's defaults: other pixels, other embeddings."""
    with caplog.at_level(logging.WARNING, logger="clipeval.models.open_clip"):
        untagged = OpenClipEncoder(TINY_QUICK, checkpoint=fake_published["weights"])
    assert f"tags {FAKE_TAG} use other settings" in caplog.text
    assert f"model.pretrained=<tag> model.checkpoint={fake_published['weights']}" in caplog.text
    tagged = OpenClipEncoder(TINY_QUICK, pretrained=FAKE_TAG, checkpoint=fake_published["weights"])
    image_tagged, _ = embeddings(tagged, IMAGES, TEXTS)
    image_untagged, _ = embeddings(untagged, IMAGES, TEXTS)
    assert (image_tagged - image_untagged).abs().max() > WRONG  # the check above guards a real difference
    assert tagged.fingerprint != untagged.fingerprint


def test_the_same_weights_under_gelu_and_quickgelu_are_different_models(fake_published):
    """Activation is part of the fingerprint: cached GELU features are never served for QuickGELU."""
    quick = OpenClipEncoder(TINY_QUICK, checkpoint=fake_published["weights"])
    gelu = OpenClipEncoder(TINY_ARCH, checkpoint=fake_published["weights"])
    assert activations(quick.model) == {QuickGELU} and activations(gelu.model) == {torch.nn.GELU}
    assert quick.fingerprint != gelu.fingerprint
    _, text_quick = embeddings(quick, IMAGES, TEXTS)
    _, text_gelu = embeddings(gelu, IMAGES, TEXTS)
    assert (text_quick - text_gelu).abs().max() > WRONG  # a wrong activation is visible in the numbers


def test_an_unreachable_tag_keeps_the_tag_in_the_offline_advice(fake_published, tmp_path):
    with pytest.raises(
        ClipevalError,
        match=rf"Could not load weights[\s\S]*model.pretrained={FAKE_TAG} model.checkpoint=/path/to/checkpoint.pt",
    ):
        OpenClipEncoder(TINY_QUICK, pretrained=FAKE_TAG, cache_dir=str(tmp_path / "empty-cache"))


# --- open_clip's own checkpoints and hub repositories -----------------------------------------


def test_open_clip_training_checkpoints_load(fake_published, tmp_path):
    """open_clip's training script saves epoch, name, optimizer and a DistributedDataParallel state_dict."""
    model = sensitive(open_clip.create_model(TINY_QUICK), seed=3)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 3, 32, 32), torch.zeros(1, 16, dtype=torch.long))[0].sum().backward()
    optimizer.step()
    checkpoint = {
        "epoch": 3,
        "name": "tiny-run",
        "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
    }
    path = tmp_path / "epoch_3.pt"
    torch.save(checkpoint, path)
    loaded = OpenClipEncoder(TINY_QUICK, pretrained=str(path))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


def hub_repo(hub: Path, repo: str, model: torch.nn.Module | None) -> str:
    config = {
        "model_cfg": {**TINY_CONFIG, "quick_gelu": True},
        "preprocess_cfg": {k: v for k, v in FAKE_TAG_CFG.items() if k in PREPROCESS},
    }
    files = {"open_clip_config.json": json.dumps(config).encode()}
    if model is not None:
        files["open_clip_pytorch_model.bin"] = state_dict_bytes(model)
    add_to_hub_cache(hub, repo, files)
    return f"hf-hub:{repo}"


def test_hf_hub_names_load_from_the_local_hub_cache_as_open_clip_does(tmp_path):
    torch.manual_seed(0)
    name = hub_repo(tmp_path, "clipeval/tiny-hub", sensitive(open_clip.create_model(TINY_ARCH)))
    ours = OpenClipEncoder(name, cache_dir=str(tmp_path))
    assert ours.name == name and activations(ours.model) == {QuickGELU}
    assert_built_as_tag_says(ours.model, ours.preprocess, FAKE_TAG_CFG)
    reference = open_clip_recipe(name, IMAGES, TEXTS, cache_dir=str(tmp_path))
    for got, want in zip(embeddings(ours, IMAGES, TEXTS), reference, strict=True):
        assert torch.allclose(got, want, atol=ATOL)


def test_hf_hub_repo_without_weights_is_an_error_not_a_random_model(tmp_path):
    """open_clip logs a warning and returns random weights; clipeval refuses."""
    name = hub_repo(tmp_path, "clipeval/config-only", None)
    with pytest.raises(ClipevalError, match=r"Could not load weights[\s\S]*clipeval/config-only"):
        OpenClipEncoder(name, cache_dir=str(tmp_path))


# --- section 6: every open_clip family embeds as open_clip documents it ------------------------
#
# Each family's real config JSON is shrunk (towers of 2 layers, width 64, 32x32 images, 16 tokens)
# keeping every structural option: timm towers (the same timm classes, shrunk), text pool type,
# causal mask or none, final LN placement, norm/activation kwargs, tokenizer kind and kwargs. Its
# real tag's pretrained config is registered for the tiny arch, pointing at a fake hub cache.

TINY_TIMM = {  # a family's timm tower, shrunk: (its timm entry point, the arguments that shrink it)
    "clipeval_tiny_siglip": ("vision_transformer.vit_base_patch16_siglip_224", {"img_size": 32, "patch_size": 8}),
    "clipeval_tiny_pe_core": (
        "eva.vit_pe_core_base_patch16_224",
        {"img_size": 32, "patch_size": 8, "ref_feat_shape": (4, 4)},
    ),
    "clipeval_tiny_fastvit_mci": ("fastvit.fastvit_mci0", {"layers": (1, 1, 1, 1), "embed_dims": (16, 32, 64, 128)}),
}
VIT_SHRINK = {"embed_dim": 64, "depth": 2, "num_heads": 2}
#: (real arch, its tag, the tiny timm tower replacing its timm one)
FAMILIES = [
    ("ViT-B-32-quickgelu", "openai", None),  # OpenAI CLIP: QuickGELU, causal text, argmax pool (trimmed)
    ("ViT-B-16-SigLIP", "webli", "clipeval_tiny_siglip"),  # timm MAP-pooled tower, bidirectional text, last pool
    ("ViT-B-16-SigLIP2", "webli", "clipeval_tiny_siglip"),  # + tanh GELU in the text tower
    ("PE-Core-B-16", "meta", "clipeval_tiny_pe_core"),  # timm EVA tower with RoPE, custom text tower
    ("MobileCLIP-S1", "datacompdr", "clipeval_tiny_fastvit_mci"),  # timm FastViT, bidirectional argmax text
    ("ViT-L-14-CLIPA", "datacomp1b", None),  # no ln_pre, avg pool, LN after pool, bidirectional last pool
    ("ViT-H-14-worldwide-quickgelu", "metaclip2_worldwide", None),  # MetaCLIP 2: eos pool, HF tokenizer (trimmed)
    ("EVA02-B-16", "merged2b_s8b_b131k", "eva.eva02_base_patch16_clip_224"),  # timm EVA02 tower
]


def register_tiny_timm() -> None:
    import timm
    from timm.models import register_model

    towers = {**TINY_TIMM, "eva.eva02_base_patch16_clip_224": ("eva.eva02_base_patch16_clip_224", {"img_size": 32})}
    for name, (entry, shrink) in towers.items():
        tiny = f"clipeval_tiny_{entry.rpartition('.')[2]}" if name == entry else name
        if tiny in timm.list_models():
            continue
        module, _, function = entry.partition(".")
        family = getattr(__import__(f"timm.models.{module}", fromlist=[function]), function)
        args = {**VIT_SHRINK, **shrink} if "fastvit" not in entry else shrink

        def build_tiny(pretrained=False, _family=family, _args=args, **kwargs):
            return _family(pretrained=pretrained, **{**_args, **kwargs})

        build_tiny.__name__ = tiny
        register_model(build_tiny)


def timm_tower(name: str | None) -> str | None:
    if name is None:
        return None
    return f"clipeval_tiny_{name.rpartition('.')[2]}" if "." in name else name


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory) -> tuple[str, int]:
    """A local Hugging Face tokenizer (word level, pad 0, end-of-text 1) standing in for a family's own."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for text in TEXTS for w in text.lower().replace(".", " .").split()})
    vocab = {token: i for i, token in enumerate(["[PAD]", "</s>", "[UNK]", *words])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    folder = tmp_path_factory.mktemp("tokenizer")
    PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", eos_token="</s>", unk_token="[UNK]", sep_token="</s>"
    ).save_pretrained(folder)
    return str(folder), len(vocab)


def shrink(real_arch: str, tower: str | None, tokenizer: tuple[str, int]) -> dict:
    """The family's config JSON with small towers and every structural option kept."""
    config = json.loads(json.dumps(open_clip.get_model_config(real_arch)))
    config["embed_dim"] = 64
    vision, text = config["vision_cfg"], config["text_cfg"]
    vision["image_size"] = 32
    if "timm_model_name" in vision:
        vision["timm_model_name"] = timm_tower(tower)
    else:
        vision.update(layers=2, width=64, head_width=32, patch_size=8)
    text.update(context_length=16, width=64, heads=2, layers=2)
    if "hf_tokenizer_name" in text:
        text["hf_tokenizer_name"], text["vocab_size"] = tokenizer
    return config


@pytest.fixture
def tiny_family(tmp_path, monkeypatch, tiny_tokenizer):
    """Make a tiny version of a family, with its real tag registered and its weights in a fake hub cache."""
    register_tiny_timm()

    def make(real_arch: str, tag: str, tower: str | None) -> dict:
        arch = f"clipeval-tiny-{real_arch}"
        config = shrink(real_arch, tower, tiny_tokenizer)
        register_arch(tmp_path, arch, config)
        repo = f"clipeval/{arch}"
        tag_cfg = {**open_clip.get_pretrained_cfg(real_arch, tag), "url": "", "hf_hub": f"{repo}/"}
        monkeypatch.setitem(open_clip.pretrained._PRETRAINED, arch, {tag: tag_cfg})
        torch.manual_seed(0)
        model = sensitive(open_clip.create_model(arch))
        weights = tmp_path / f"{arch}.pt"
        weights.write_bytes(state_dict_bytes(model))
        add_to_hub_cache(tmp_path / "hub", repo, {"open_clip_pytorch_model.bin": weights.read_bytes()})
        return {"arch": arch, "tag": tag, "tag_cfg": tag_cfg, "config": config, "weights": str(weights)}

    make.hub = str(tmp_path / "hub")
    return make


def wrong_preprocess(model: torch.nn.Module, tag_cfg: dict):
    """The commonest mistake: another family's normalisation (OpenAI's, or SigLIP's for OpenAI-normalised tags)."""
    openai = open_clip.constants.OPENAI_DATASET_MEAN, open_clip.constants.OPENAI_DATASET_STD
    mean, std = ((0.5,) * 3, (0.5,) * 3) if tuple(tag_cfg["mean"]) == openai[0] else openai
    settings = {**{k: tag_cfg[k] for k in PREPROCESS}, "mean": mean, "std": std}
    return image_transform_v2(PreprocessCfg(size=model.visual.preprocess_cfg["size"], **settings), is_train=False)


def encode_trimmed_context(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The text tower run on the context cut after the longest prompt (what clipeval does for causal towers)."""
    import copy

    length = int((tokens != 0).nonzero()[:, 1].max()) + 1
    model = copy.deepcopy(model)
    owner = model.text if hasattr(model, "text") else model
    owner.positional_embedding = torch.nn.Parameter(owner.positional_embedding[:length])
    return torch.nn.functional.normalize(model.encode_text(tokens[:, :length]), dim=-1)


@pytest.mark.parametrize("real_arch, tag, tower", FAMILIES, ids=[family[0] for family in FAMILIES])
def test_open_clip_family_embeds_exactly_as_open_clip_documents(real_arch, tag, tower, tiny_family):
    """clipeval == create_model_and_transforms + get_tokenizer + encode_*, and a wrong recipe would show."""
    family = tiny_family(real_arch, tag, tower)
    ours = OpenClipEncoder(family["arch"], pretrained=tag, checkpoint=family["weights"])
    reference = open_clip_recipe(family["arch"], IMAGES, TEXTS, pretrained=tag, cache_dir=tiny_family.hub)
    tokens = ours.tokenize(TEXTS)
    with torch.no_grad():
        image = ours.encode_image(torch.stack([ours.preprocess(i) for i in IMAGES]))
        first, again = ours.encode_text(tokens), ours.encode_text(tokens)  # again: after the trimming decision
    assert torch.isfinite(image).all() and torch.isfinite(first).all()
    for got, want in ((image, reference[0]), (first, reference[1]), (again, reference[1])):
        assert torch.allclose(got, want, atol=ATOL), (got - want).abs().max()
    causal = not family["config"]["text_cfg"].get("no_causal_mask", False)
    assert ours._trim is (causal and type(ours.model) is open_clip.model.CLIP)
    # the same comparison would catch a wrong recipe
    with torch.no_grad():
        wrong = wrong_preprocess(ours.model, family["tag_cfg"])
        wrong_image = ours.encode_image(torch.stack([wrong(i) for i in IMAGES]))
        assert (wrong_image - reference[0]).abs().max() > WRONG
        if not causal:  # a bidirectional tower sees the padding: trimming it would be a wrong recipe
            assert (encode_trimmed_context(ours.model, tokens) - reference[1]).abs().max() > WRONG


def test_a_torchscript_archive_is_refused_with_the_file_to_use_instead(fake_published, tmp_path):
    """OpenAI's original .pt files are TorchScript; clipeval loads weights only (torch.load weights_only=True)."""
    archive = tmp_path / "ViT-B-32.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), archive)
    with pytest.raises(ClipevalError, match=r"TorchScript archive[\s\S]*safetensors file open_clip downloads"):
        OpenClipEncoder(TINY_QUICK, pretrained=FAKE_TAG, checkpoint=str(archive))
