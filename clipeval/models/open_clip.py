"""open_clip models, built exactly as published: architecture, weights, preprocessing and tokenizer.

A *published tag* (``openai``, ``laion2b_s34b_b79k``, ``webli`` ...) means more than a download:
open_clip's pretrained config for it (``open_clip.get_pretrained_cfg(arch, tag)``) fixes the image
mean/std, the resize interpolation and mode, and whether the towers use QuickGELU. clipeval applies
all of them whatever the weights' source, so ``model.pretrained=<tag> model.checkpoint=<file>`` (the
offline way) builds the same model as the tag alone. An architecture that contradicts its tag
(OpenAI's weights on plain-GELU ``ViT-B-32``, which open_clip only warns about) is an error naming
the architecture to use, never a silently different model.

Weights without a tag (``model.pretrained=/path/file`` or ``model.checkpoint=/path/file``) get
open_clip's defaults, as open_clip's training script gives them; its own checkpoints (a dict with
``epoch``, ``name`` and a ``state_dict`` whose keys start with ``module.``) load as they are.
``model.arch=hf-hub:org/name`` takes architecture, preprocessing and weights from a Hugging Face hub
repository (or its local cache, offline).

A weights file must have been made for the architecture it is loaded into: every tensor it shares
with the built model must have the model's shape. open_clip itself would quietly interpolate
position embeddings of another image size or context length (and fail obscurely on fp16 files),
so :func:`check_shapes` compares shapes first and refuses the file. Shapes are all a file can be
checked against: weights of another training run (another tag) with the same shapes load as given.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clipeval.errors import ClipevalError, did_you_mean, kind_of
from clipeval.logs import dropped
from clipeval.models.base import WrappedModule, fingerprint, normalize, skip_weight_init
from clipeval.results.files import read_json

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz", ".ckpt")
HUB_PREFIX = "hf-hub:"
#: the pretrained-config keys that change preprocessing (open_clip.transform.PreprocessCfg fields); the
#: only other key that changes numbers is quick_gelu (image size, context and tokenizer are the arch's)
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")


@dataclass(frozen=True)
class Recipe:
    """What to build, checked before anything is built.

    ``tag_cfg`` is open_clip's pretrained config of ``tag`` (empty without a tag); ``checkpoint`` a
    local weights file, or None to download the tag's weights (or, for ``hf-hub:`` names, the repo's).
    """

    arch: str
    tag: str | None = None
    checkpoint: str | None = None
    tag_cfg: dict[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None

    @property
    def from_hub(self) -> bool:
        return self.arch.startswith(HUB_PREFIX)

    def weights_file(self, name: str) -> str | None:
        """The local file to load: the checkpoint, or the tag's download (from open_clip's cache offline)."""
        if self.checkpoint or not self.tag:
            return self.checkpoint
        import open_clip

        try:
            return open_clip.download_pretrained(self.tag_cfg, cache_dir=self.cache_dir)
        except Exception as exc:  # network, hub and cache errors all mean "not here"
            raise ClipevalError(_load_failure(name, self, exc)) from exc


def resolve(
    name: str,
    arch: str,
    pretrained: str | None = None,
    checkpoint: str | None = None,
    cache_dir: str | None = None,
) -> Recipe:
    """Check an arch/tag/file combination and say what to build.

    Raises ClipevalError for an unknown arch or tag, a tag published for another arch, an arch whose
    activation contradicts its tag's (naming the arch to use), a missing file, or a tag or file given
    with an ``hf-hub:`` name (which carries its own).
    """
    import open_clip

    if arch.startswith(HUB_PREFIX):
        if pretrained or checkpoint:
            raise ClipevalError(
                f"Model '{name}': {arch} carries its own weights and preprocessing; open_clip would ignore "
                f"model.pretrained/model.checkpoint ({pretrained or checkpoint}). Drop them, or use the "
                "built-in architecture name with the tag and file."
            )
        return Recipe(arch=arch, cache_dir=cache_dir)
    if arch not in open_clip.list_models():
        raise ClipevalError(f"Unknown open_clip architecture '{arch}'. {did_you_mean(arch, open_clip.list_models())}")
    if pretrained and _is_path(pretrained):
        if checkpoint:
            raise ClipevalError(
                f"Model '{name}': model.pretrained ({pretrained}) and model.checkpoint ({checkpoint}) are both files. "
                "Give the weights file as model.checkpoint and, for published weights, their tag as model.pretrained."
            )
        pretrained, checkpoint = None, pretrained
    if checkpoint:
        checkpoint = _existing_file(name, checkpoint)
    if not pretrained:
        if checkpoint:
            _warn_untagged(name, arch, checkpoint)
        return Recipe(arch=arch, checkpoint=checkpoint, cache_dir=cache_dir)
    tag_cfg = _tag_cfg(name, arch, pretrained)
    _check_activation(name, arch, pretrained, tag_cfg)
    return Recipe(arch=arch, tag=pretrained, checkpoint=checkpoint, tag_cfg=tag_cfg, cache_dir=cache_dir)


def build(recipe: Recipe, name: str, device: str | torch.device = "cpu", load_weights: bool = True):
    """What ``open_clip.create_model_and_transforms`` does (create_model, then image_transform_v2 of the
    model's preprocess config), for ``recipe``; returns (model, eval preprocess).

    Weights always load from a local file (the checkpoint or the tag's download) with the tag's
    settings passed explicitly, so a tag and a tag plus its file are one code path. With
    ``load_weights=False`` the model keeps its initialisation (for tests; use ``device="meta"`` to
    allocate nothing). open_clip's QuickGELU-mismatch warning, should one still come, is an error.
    """
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    weights = recipe.weights_file(name) if load_weights else None
    if recipe.from_hub:
        weights = None  # the repo names its own weights
    if weights:
        check_shapes(recipe, name, weights)
    try:
        # A checkpoint is loaded strictly (every weight overwritten), so initialising first is wasted time.
        quiet = skip_weight_init() if weights or recipe.from_hub else contextlib.nullcontext()
        skeleton = dropped(_no_weights_message) if not load_weights else contextlib.nullcontext()
        with quiet, skeleton, torch.device(device), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = open_clip.create_model(
                recipe.arch,
                pretrained=weights,
                load_weights=load_weights,
                device=device,
                require_pretrained=load_weights and (bool(weights) or recipe.from_hub),
                cache_dir=recipe.cache_dir,
                force_preprocess_cfg={k: v for k, v in recipe.tag_cfg.items() if k in PREPROCESS_KEYS},
            )
    except Exception as exc:  # download, format and shape errors all mean "these weights won't load"
        raise ClipevalError(_load_failure(name, recipe, exc)) from exc
    for warning in caught:
        if "mismatch" in str(warning.message).lower():
            raise ClipevalError(f"Model '{name}': {warning.message}")
        warnings.warn(warning.message, warning.category, stacklevel=2)
    preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    return model, preprocess


def _no_weights_message(record) -> bool:
    """open_clip's warning that a model it built has no weights: expected of a skeleton (``load_weights=False``)."""
    return "No pretrained weights loaded" in record.getMessage()


def check_shapes(recipe: Recipe, name: str, weights: str) -> None:
    """Refuse a weights file made for another architecture or resolution, before open_clip loads it.

    Compares the shape of every tensor the file shares with ``recipe``'s model (built on the meta
    device: no memory, no initialisation) after open_clip's own key conversions (training
    checkpoints' ``state_dict`` and ``module.`` prefix, the old text-tower layout, a scalar
    ``logit_scale``). Only shapes are read (safetensors headers, or a memory-mapped torch.load).
    Files this cannot read (.npz big_vision weights, TorchScript archives) are left to open_clip,
    which loads the first with its own checks and refuses the second.

    Raises:
        ClipevalError: naming the model, the file, and each differing key with both shapes.
    """
    shapes = _file_shapes(weights)
    if shapes is None:
        return
    model, _ = build(recipe, name, device="meta", load_weights=False)
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    differing = [
        f"{key}: file {list(shape)}, model {list(expected[key])}"
        for key, shape in sorted(_as_open_clip_loads(model, shapes).items())
        if key in expected and shape != expected[key]
    ]
    if differing:
        raise ClipevalError(
            f"Model '{name}': the weights file {weights} was made for another architecture or resolution than "
            f"{recipe.arch}; {len(differing)} tensor(s) differ in shape:\n  "
            + "\n  ".join(differing[:20])
            + ("\n  ..." if len(differing) > 20 else "")
            + "\nopen_clip would resize or reject them. Set model.arch (or model.model_config) to the architecture "
            "the file was trained as, or pass the file made for this one."
        )


def _file_shapes(path: str) -> dict[str, tuple[int, ...]] | None:
    """Tensor shapes of a weights file as open_clip.factory.load_state_dict unwraps it, without reading
    the weights; None for files it cannot read that way (open_clip then loads or refuses them itself)."""
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as handle:
            state = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    elif path.endswith((".npz", ".npy")):
        return None
    else:
        checkpoint = _torch_load(path)
        if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
            checkpoint = checkpoint["state_dict"]
        if not isinstance(checkpoint, dict):
            return None
        state = {key: tuple(value.shape) for key, value in checkpoint.items() if isinstance(value, torch.Tensor)}
    if state and next(iter(state)).startswith("module"):
        state = {key[7:]: shape for key, shape in state.items()}
    return state


def _torch_load(path: str) -> Any:
    """torch.load memory-mapped (zip checkpoints), else read (legacy format); None for what open_clip must judge
    itself (TorchScript archives, pickles that are not weights)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(name.endswith("/constants.pkl") for name in archive.namelist()):
                return None  # TorchScript: torch.load would hand it to torch.jit.load; open_clip refuses it
    for mmap in (True, False):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except Exception:  # mmap needs the zip format; TorchScript and arbitrary pickles fail both ways
            continue
    return None


def _as_open_clip_loads(model, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """``shapes`` after the key conversions of open_clip.factory.load_checkpoint, run on meta tensors."""
    from open_clip.convert import convert_state_dict
    from open_clip.model import convert_to_custom_text_state_dict

    state = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    state = convert_state_dict(model, state)
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    scale = getattr(model, "logit_scale", None)
    if "logit_scale" in state and scale is not None and state["logit_scale"].numel() == scale.numel():
        state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
    return {key: tuple(value.shape) for key, value in state.items()}


class OpenClipEncoder(WrappedModule):
    """An open_clip model as published: see the module docstring for what ``pretrained`` and ``checkpoint`` mean.

    ``model_config`` registers an architecture JSON of the user's (open_clip's own format)
    before loading, so custom or tiny models load exactly like published ones.
    """

    def __init__(
        self,
        arch: str,
        pretrained: str | None = None,
        name: str | None = None,
        model_config: str | None = None,
        cache_dir: str | None = None,
        checkpoint: str | None = None,
    ):
        import open_clip

        self.name = name or arch
        register_model_config(self.name, model_config)
        self.recipe = resolve(self.name, arch, pretrained, checkpoint, cache_dir)
        model, preprocess = build(self.recipe, self.name)
        self.model = model.eval()
        self.preprocess = preprocess
        self._tokenizer = open_clip.get_tokenizer(arch, cache_dir=cache_dir)
        context = getattr(self._tokenizer, "context_length", None)
        architecture = json.dumps(model_cfg(arch, cache_dir), sort_keys=True, default=str)
        # the architecture counts: the same weights under GELU and QuickGELU give different features
        self.fingerprint = fingerprint(model, preprocess, type(self._tokenizer).__name__, context, architecture)
        self._trim: bool | None = None

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self._tokenizer(list(texts))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return normalize(self.model.encode_image(images.to(self.device)))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.to(self.device)
        if self._trim is None:  # first call: trim only if this model provably gives the same embeddings
            full = normalize(self.model.encode_text(tokens))
            if not trimmable(self.model):
                self._trim = False
                return full
            trimmed = normalize(encode_text_trimmed(self.model, tokens))
            self._trim = bool((trimmed - full).abs().max() < 1e-5)
            return trimmed if self._trim else full  # the first batch as every later one: the same prompt, the same bits
        return normalize(encode_text_trimmed(self.model, tokens) if self._trim else self.model.encode_text(tokens))


def register_model_config(name: str, model_config: str | None) -> None:
    """Register a user's architecture JSON with open_clip (its file name, minus .json, is the arch)."""
    import open_clip

    if model_config:
        config_path = Path(model_config).expanduser()
        what = f"Model '{name}': architecture config (model.model_config)"
        if not config_path.exists():
            raise ClipevalError(f"{what} {config_path} does not exist.")
        if config_path.is_file() and config_path.suffix != ".json":
            raise ClipevalError(
                f"{what} {config_path} is not a .json file: open_clip reads <arch>.json files only (and names the "
                "architecture after the file)."
            )
        # open_clip would read it itself, with a traceback for a file that is not JSON text (and keep failing on it)
        _, data = read_json(config_path, what)  # a folder, binary, truncated or malformed JSON: said as such
        needed = ("embed_dim", "vision_cfg", "text_cfg")
        if not isinstance(data, dict) or not all(k in data for k in needed):
            have = (
                f"its keys are {', '.join(map(str, data))}" if isinstance(data, dict) else f"it holds {kind_of(data)}"
            )
            raise ClipevalError(
                f"{what} {config_path} is not an open_clip architecture: it needs {', '.join(needed)} ({have})."
            )
        open_clip.add_model_config(str(config_path))


def model_cfg(arch: str, cache_dir: str | None = None) -> dict[str, Any]:
    """open_clip's architecture config of ``arch`` (for ``hf-hub:`` names, the repo's ``model_cfg``)."""
    import open_clip

    if arch.startswith(HUB_PREFIX):
        from open_clip.pretrained import download_pretrained_from_hf

        path = download_pretrained_from_hf(arch[len(HUB_PREFIX) :], "open_clip_config.json", cache_dir=cache_dir)
        config = json.loads(Path(path).read_text())
        return config.get("model_cfg", config)
    return open_clip.get_model_config(arch) or {}


def trimmable(model) -> bool:
    """A CLIP text tower with a causal mask that pools at the end-of-text token."""
    import open_clip

    return (
        type(model) is open_clip.model.CLIP
        and getattr(model, "text_pool_type", None) in ("argmax", "eos")
        and getattr(model, "attn_mask", None) is not None
    )


def encode_text_trimmed(model, text: torch.Tensor) -> torch.Tensor:
    """open_clip's CLIP.encode_text on the context cut after the last end-of-text token.

    Behind a causal mask no position sees a later one, and the embedding is read at the
    end-of-text token, so the padding after it changes nothing but the cost: 80 ImageNet
    prompts need about 20 of the 77 positions. Equality is checked on each model's first batch.
    """
    from open_clip.transformer import text_global_pool

    eos = getattr(model, "text_eos_id", None)
    ends = text.argmax(dim=-1) if model.text_pool_type == "argmax" else (text == eos).int().argmax(dim=-1)
    length = int(ends.max()) + 1
    text = text[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(text).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:length, :length]))
    x = text_global_pool(x, text, model.text_pool_type, eos_token_id=eos)
    if model.text_projection is None:
        return x
    return model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) else x @ model.text_projection


def _is_path(value: str) -> bool:
    return (
        os.sep in value
        or value.endswith(CHECKPOINT_SUFFIXES)
        or value.startswith(("~", "."))
        or Path(value).expanduser().is_file()
    )


def _existing_file(name: str, value: str) -> str:
    path = Path(value).expanduser()
    if not path.is_file():
        raise ClipevalError(
            f"Model '{name}': checkpoint file not found: {path.resolve()}\n"
            "Pass model.checkpoint=/path/to/checkpoint (.pt, .bin or .safetensors), with model.pretrained=<tag> "
            "when it holds published weights."
        )
    return str(path)


def _tag_cfg(name: str, arch: str, tag: str) -> dict[str, Any]:
    """open_clip's pretrained config of ``tag`` for ``arch``; a tag of other archs names them."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if cfg:
        return dict(cfg)
    tags = open_clip.list_pretrained_tags_by_model(arch)
    owners = open_clip.pretrained.list_pretrained_models_by_tag(tag)
    where = f" It is published for: {', '.join(owners)}; set model.arch to one of them." if owners else ""
    available = did_you_mean(tag, tags) if tags else f"{arch} has no published tags; pass a checkpoint file."
    raise ClipevalError(f"Model '{name}': '{tag}' is neither a file nor a pretrained tag of {arch}.{where} {available}")


def _quick_gelu(arch: str) -> bool:
    import open_clip

    return bool((open_clip.get_model_config(arch) or {}).get("quick_gelu", False))


def _check_activation(name: str, arch: str, tag: str, tag_cfg: dict[str, Any]) -> None:
    """The activation a tag states must be the arch's: open_clip only warns, and every number would differ.

    A tag that does not state it (every tag but those trained with QuickGELU) leaves the arch's own
    setting: roberta-ViT-B-32's config, for one, says QuickGELU while its only tag is silent.
    """
    import open_clip

    if "quick_gelu" not in tag_cfg:
        return
    wanted = bool(tag_cfg["quick_gelu"])
    if _quick_gelu(arch) == wanted:
        return
    base = arch.removesuffix("-quickgelu")
    right = [
        m
        for m in open_clip.list_models()
        if m.removesuffix("-quickgelu") == base and _quick_gelu(m) == wanted and open_clip.get_pretrained_cfg(m, tag)
    ]
    fix = (
        f"use model.arch={right[0]}"
        if right
        else f'register a copy of {arch}\'s config JSON with "quick_gelu": {str(wanted).lower()} as model.model_config'
    )
    raise ClipevalError(
        f"Model '{name}': the '{tag}' weights of {arch} were trained with {'QuickGELU' if wanted else 'GELU'}, "
        f"but open_clip's {arch} uses {'GELU' if wanted else 'QuickGELU'}: every embedding would differ from "
        f"the published model. {fix[0].upper() + fix[1:]}."
    )


def _warn_untagged(name: str, arch: str, checkpoint: str) -> None:
    """Weights from a file with no tag get open_clip's defaults; say so when a published tag differs."""
    import open_clip

    built = {**_default_preprocess(), "quick_gelu": _quick_gelu(arch)}
    differing = []
    for tag in open_clip.list_pretrained_tags_by_model(arch):
        cfg = open_clip.get_pretrained_cfg(arch, tag)
        published = {k: cfg.get(k, built[k]) for k in built}
        if any(_differs(published[k], built[k]) for k in built):
            differing.append(tag)
    if differing:
        log.warning(
            "Model '%s': weights from %s with no tag are built with open_clip's defaults for %s (%s). "
            "If they are published weights, name their tag (model.pretrained=<tag> model.checkpoint=%s): "
            "tags %s use other settings.",
            name,
            checkpoint,
            arch,
            ", ".join(f"{k}={v}" for k, v in built.items()),
            checkpoint,
            ", ".join(differing),
        )


def _default_preprocess() -> dict[str, Any]:
    from open_clip.transform import PreprocessCfg

    defaults = PreprocessCfg()
    return {key: getattr(defaults, key) for key in PREPROCESS_KEYS}


def _differs(a: Any, b: Any) -> bool:
    return (tuple(a) if isinstance(a, (list, tuple)) else a) != (tuple(b) if isinstance(b, (list, tuple)) else b)


def _load_failure(name: str, recipe: Recipe, exc: Exception) -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    where = recipe.cache_dir or f"{HF_HUB_CACHE} (Hugging Face hub cache) and ~/.cache/clip"
    if recipe.checkpoint:
        looked = recipe.checkpoint
    elif recipe.from_hub:
        looked = f"the hub repository {recipe.arch[len(HUB_PREFIX) :]}, cached under {where}"
    else:
        looked = f"open_clip's download of tag '{recipe.tag}', cached under {where}"
    if recipe.from_hub:
        fix = "Without network, download the repository (open_clip_config.json and weights) into that cache elsewhere."
    else:
        tag = f"model.pretrained={recipe.tag} " if recipe.tag else ""
        fix = (
            "Without network, download the checkpoint elsewhere and pass it as a file, keeping the tag: "
            f"model=open_clip model.arch={recipe.arch} {tag}model.checkpoint=/path/to/checkpoint.pt"
        )
    if "TorchScript" in str(exc):
        fix = (
            "This is a TorchScript archive (OpenAI's original .pt files are), which clipeval does not execute: "
            f"use the safetensors file open_clip downloads for the tag instead.\n{fix}"
        )
    return (
        f"Could not load weights for model '{name}' ({recipe.arch}, pretrained={recipe.tag or recipe.checkpoint}).\n"
        f"Looked in: {looked}\n"
        f"Cause: {type(exc).__name__}: {str(exc)[:500]}\n{fix}"
    )
