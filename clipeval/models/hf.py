"""Hugging Face transformers dual encoders (CLIP, SigLIP, ChineseCLIP, AltCLIP) from a hub id or a local folder.

Each family embeds exactly as its own library documents it (tests/test_model_parity_hf.py checks
this per family): images go through the model's own image processor, texts through its own
tokenizer with the padding of the model card, and every input the tokenizer returns
(``input_ids``, ``attention_mask``, ``token_type_ids``) reaches ``get_text_features``. Families
whose recipe has not been checked are refused rather than guessed.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from clipeval.errors import ClipevalError
from clipeval.models.base import WrappedModule, fingerprint, normalize

#: ``config.model_type`` -> the tokenizer padding of the family's model card.
#: SigLIP pools the last position, so it must see the full padded context it was trained on
#: ("make sure to set padding='max_length' as that's how the model was trained"); CLIP,
#: ChineseCLIP and AltCLIP pad to the longest prompt and mask the padding (their cards use
#: ``padding=True``; ChineseCLIP's and AltCLIP's text towers are bidirectional and read it).
TEXT_PADDING: dict[str, str] = {
    "clip": "longest",
    "siglip": "max_length",
    "chinese_clip": "longest",
    "altclip": "longest",
}
FAMILIES = "transformers CLIP, SigLIP and SigLIP 2 (SiglipModel checkpoints), ChineseCLIP and AltCLIP"
UNSUPPORTED_HINTS = {
    "siglip2": "SigLIP 2 NaFlex checkpoints (Siglip2Model) need a per-image pixel_attention_mask and spatial_shapes; "
    "use a fixed-resolution SigLIP 2 checkpoint (a SiglipModel, e.g. google/siglip2-base-patch16-224).",
}
PROBE_TEXT = "a photo of a cat."


class HFImageTransform:
    """The model's own image processor as a per-image transform (picklable for workers)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """PIL image -> CHW float tensor, as ``processor(images=image)["pixel_values"][0]``."""
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]

    def __repr__(self) -> str:
        return f"HFImageTransform({self.processor.to_json_string()})"


class HFClipEncoder(WrappedModule):
    """A transformers dual encoder with its own processor, tokenizer and text recipe.

    ``tokenize`` returns the tokenizer's ``BatchEncoding`` (tensors by name, with ``.to(device)``);
    ``encode_text`` passes all of them to ``get_text_features``.

    Raises:
        ClipevalError: the model, tokenizer or image processor cannot be loaded; the model is not a
            dual encoder; its family's recipe is not one clipeval checks; or its processor returns an
            input clipeval cannot pass on.
    """

    def __init__(self, name_or_path: str, name: str | None = None, revision: str | None = None):
        self.name = name or Path(str(name_or_path)).name
        self.model, self._tokenizer, image_processor = _load(name_or_path, self.name, revision)
        family = _family(self.model, name_or_path)
        self._text_kwargs = _text_recipe(family, self.model, self._tokenizer)
        self._text_inputs = _check_inputs(
            self.model.get_text_features,
            self._tokenizer([PROBE_TEXT], return_tensors="pt", **self._text_kwargs),
            "tokenizer",
            name_or_path,
        )
        _check_inputs(
            self.model.get_image_features,
            image_processor(images=Image.new("RGB", (32, 32)), return_tensors="pt"),
            "image processor",
            name_or_path,
        )
        self.preprocess = HFImageTransform(image_processor)
        self.fingerprint = fingerprint(
            self.model, self.preprocess, _describe(self._tokenizer), self._text_kwargs, self._text_inputs
        )

    def tokenize(self, texts: Sequence[str]) -> Mapping[str, torch.Tensor]:
        """Texts -> the tokenizer's ``BatchEncoding``: ``input_ids`` (B, L) and whatever else it returns."""
        return self._tokenizer(list(texts), return_tensors="pt", **self._text_kwargs)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) from ``preprocess`` -> (B, D) unit-norm float32."""
        return normalize(_pooled(self.model.get_image_features(pixel_values=images.to(self.device))))

    def encode_text(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """What ``tokenize`` returned -> (B, D) unit-norm float32."""
        if not isinstance(tokens, Mapping):
            raise TypeError(
                f"{self.name}: encode_text takes what tokenize returns (a mapping of tensors such as input_ids and "
                f"attention_mask), not {type(tokens).__name__}."
            )
        inputs = {key: value.to(self.device) for key, value in tokens.items()}
        return normalize(_pooled(self.model.get_text_features(**inputs)))


def _load(name_or_path: str, name: str, revision: str | None) -> tuple[Any, Any, Any]:
    """Model, tokenizer and image processor, the last two as ``AutoProcessor`` pairs them (the model card's)."""
    from transformers import AutoModel, AutoProcessor

    from clipeval.logs import quiet_transformers

    _check_local_path(name_or_path)
    quiet_transformers()  # its warnings to the run's log, no progress bars
    try:
        # mismatched sizes are reported in loading_info (and refused below, naming them) rather than raised bare
        model, loading_info = AutoModel.from_pretrained(
            name_or_path, revision=revision, output_loading_info=True, ignore_mismatched_sizes=True
        )
        model = model.eval()
        processor = AutoProcessor.from_pretrained(name_or_path, revision=revision)
    except Exception as exc:  # offline hub, missing folder or file, wrong format, missing tokenizer backend
        path = Path(name_or_path).expanduser()
        fix = (
            "Install the package it names (SigLIP's own tokenizer needs: pip install sentencepiece protobuf)."
            if isinstance(exc, ImportError)
            else "Without network, save the model where there is network (model.save_pretrained(DIR) and "
            "AutoProcessor.from_pretrained(...).save_pretrained(DIR)) and pass model.name_or_path=DIR."
        )
        raise ClipevalError(
            f"Could not load Hugging Face model '{name}' from '{name_or_path}'.\n"
            f"Looked in: {path.resolve() if path.exists() else 'the Hugging Face hub and its local cache'}\n"
            f"Cause: {type(exc).__name__}: {str(exc).strip()[:500]}\n{fix}"
        ) from exc
    _check_loading(loading_info, name, name_or_path)
    tokenizer = getattr(processor, "tokenizer", None)
    image_processor = getattr(processor, "image_processor", None)
    if tokenizer is None or image_processor is None:
        missing = "tokenizer" if tokenizer is None else "image processor"
        raise ClipevalError(
            f"'{name_or_path}' has no {missing} (AutoProcessor found {type(processor).__name__}). Save the model's "
            "processor beside it: AutoProcessor.from_pretrained(<hub id>).save_pretrained(DIR)."
        )
    for method in ("get_image_features", "get_text_features"):
        if not hasattr(model, method):
            raise ClipevalError(f"'{name_or_path}' ({type(model).__name__}) is not a dual encoder: no {method}.")
    return model, tokenizer, image_processor


SAVE_HOW = (
    "model.save_pretrained(DIR) and AutoProcessor.from_pretrained(<hub id>).save_pretrained(DIR) where there is network"
)


def _check_local_path(name_or_path: str) -> None:
    """ClipevalError for a ``name_or_path`` that is a local path (it starts with /, ./, ../ or ~, or names more
    than org/name) with no model folder there: transformers would try it as a hub id, and its message would cite
    the rules for repo ids."""
    text = str(name_or_path)
    local = text.startswith(("/", "./", "../", "~", ".\\")) or text.count("/") > 1 or Path(text).exists()
    if not local:
        return
    path = Path(text).expanduser()
    if path.is_dir():
        return
    found = "is a file, not a folder" if path.exists() else "does not exist"
    raise ClipevalError(
        f"model.name_or_path={text!r} is a local path, and {path.absolute()} {found}: a Hugging Face model is a "
        f"folder the model and its processor were saved to ({SAVE_HOW}), or a hub id such as "
        "openai/clip-vit-base-patch32 (without network, a hub id loads only from the local Hugging Face cache, "
        "HF_HOME, where an earlier download put it)."
    )


def _check_loading(info: Mapping[str, Any], name: str, name_or_path: str) -> None:
    """Refuse weights that did not all load: transformers initialises missing tensors randomly (and only
    logs a table). ``info`` is ``from_pretrained(..., output_loading_info=True)``'s second value; the keys
    the model class declares ignorable (``_keys_to_ignore_on_load_missing``/``_unexpected``, old
    ``position_ids`` buffers) are already out of it.

    Raises:
        ClipevalError: naming the model, the folder or hub id, and the missing, unexpected or
            differently shaped tensors.
    """
    problems = []
    for kind in ("missing_keys", "unexpected_keys"):
        keys = sorted(info.get(kind) or ())
        if keys:
            shown = ", ".join(keys[:40]) + (f" and {len(keys) - 40} more" if len(keys) > 40 else "")
            problems.append(f"{len(keys)} {kind.replace('_', ' ')}: {shown}")
    mismatched = sorted(info.get("mismatched_keys") or ())
    if mismatched:
        shown = ", ".join(f"{key} (file {list(a)}, model {list(b)})" for key, a, b in mismatched[:10])
        problems.append(f"{len(mismatched)} tensors of another shape: {shown}")
    problems += [str(msg).strip()[:300] for msg in info.get("error_msgs") or ()]
    if problems:
        raise ClipevalError(
            f"Hugging Face model '{name}' ({name_or_path}): its weights do not match its config, so transformers "
            "would initialise the missing tensors randomly:\n  " + "\n  ".join(problems) + "\n"
            "The checkpoint is incomplete or made for another architecture: save it again from the full model "
            "(model.save_pretrained(DIR)) with the config it was trained with."
        )


def _family(model, name_or_path: str) -> str:
    family = str(getattr(model.config, "model_type", ""))
    if family not in TEXT_PADDING:
        raise ClipevalError(
            f"'{name_or_path}' is a {type(model).__name__} (model_type '{family}'). clipeval embeds {FAMILIES} "
            "exactly as transformers documents them, and does not guess the recipe of other families. "
            f"{UNSUPPORTED_HINTS.get(family, 'Wrap it in an adapter of your own: model=custom model._target_=...')}"
        )
    return family


def _text_recipe(family: str, model, tokenizer) -> dict[str, Any]:
    """Tokenizer keyword arguments: the family's padding, truncated to the positions the model has."""
    text_config = getattr(model.config, "text_config", model.config)
    limit = int(text_config.max_position_embeddings)
    if family == "altclip":  # RoBERTa numbers positions from pad_token_id + 1
        limit -= int(text_config.pad_token_id) + 1
    max_length = min(limit, int(tokenizer.model_max_length))
    return {"padding": TEXT_PADDING[family], "truncation": True, "max_length": max_length}


def _check_inputs(method, inputs: Mapping[str, Any], producer: str, name_or_path: str) -> list[str]:
    """The names ``producer`` returns; each must be a named parameter of ``method``, or nothing is scored."""
    accepted = {
        p.name for p in inspect.signature(method).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD
    }
    extra = sorted(set(inputs) - accepted)
    if extra:
        raise ClipevalError(
            f"The {producer} of '{name_or_path}' returns {', '.join(extra)}, which {method.__name__} does not take "
            "by name; clipeval cannot pass them on, so it would not embed as the library does. "
            f"clipeval supports {FAMILIES}."
        )
    return sorted(inputs)


#: ``init_kwargs`` that say where and how a tokenizer was loaded, not what it does.
LOAD_CONTEXT = {"name_or_path", "is_local", "local_files_only", "_commit_hash", "cache_dir", "revision", "subfolder"}


def _describe(tokenizer) -> list[Any]:
    """What decides the tokenizer's output, without where it was loaded from: the same tokenizer from
    the hub or from a folder, wherever that folder is, has the same description."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    content = backend.to_str() if backend is not None else sorted(tokenizer.get_vocab().items())
    settings = {
        key: value
        for key, value in sorted(tokenizer.init_kwargs.items())
        if isinstance(value, (bool, int, float, str)) and key not in LOAD_CONTEXT and not key.endswith("_file")
    }
    return [
        type(tokenizer).__name__,
        content,
        settings,
        tokenizer.special_tokens_map,
        tokenizer.padding_side,
        tokenizer.truncation_side,
    ]


def _pooled(out) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output is the projected embedding.
    return out.pooler_output if hasattr(out, "pooler_output") else out
