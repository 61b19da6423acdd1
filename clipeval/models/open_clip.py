"""open_clip models: a built-in architecture with a pretrained tag or a local checkpoint file."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from clipeval.errors import ClipevalError, did_you_mean
from clipeval.models.base import WrappedModule, fingerprint, normalize, skip_weight_init

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz", ".ckpt")


class OpenClipEncoder(WrappedModule):
    """Wraps ``open_clip.create_model_and_transforms``.

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
    ):
        import open_clip

        self.name = name or arch
        if model_config:
            config_path = Path(model_config).expanduser()
            if not config_path.is_file():
                raise ClipevalError(f"Model '{self.name}': architecture config {config_path} does not exist.")
            open_clip.add_model_config(str(config_path))
        if arch not in open_clip.list_models():
            raise ClipevalError(
                f"Unknown open_clip architecture '{arch}'. {did_you_mean(arch, open_clip.list_models())}"
            )
        pretrained = _check_pretrained(self.name, arch, pretrained)
        try:
            # A checkpoint is loaded strictly (every weight overwritten), so initialising first is wasted time.
            with skip_weight_init() if pretrained else contextlib.nullcontext():
                model, _, preprocess = open_clip.create_model_and_transforms(
                    arch, pretrained=pretrained, cache_dir=cache_dir
                )
        except Exception as exc:  # download, format and shape errors all mean "these weights won't load"
            raise ClipevalError(_load_failure(self.name, arch, pretrained, cache_dir, exc)) from exc
        self.model = model.eval()
        self.preprocess = preprocess
        self._tokenizer = open_clip.get_tokenizer(arch)
        context = getattr(self._tokenizer, "context_length", None)
        self.fingerprint = fingerprint(model, preprocess, type(self._tokenizer).__name__, context)
        self._trim: bool | None = None

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self._tokenizer(list(texts))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return normalize(self.model.encode_image(images.to(self.device)))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.to(self.device)
        if self._trim is None:  # first call: trim only if this model provably gives the same embeddings
            full = normalize(self.model.encode_text(tokens))
            if trimmable(self.model):
                self._trim = bool((normalize(encode_text_trimmed(self.model, tokens)) - full).abs().max() < 1e-5)
            else:
                self._trim = False
            return full
        return normalize(encode_text_trimmed(self.model, tokens) if self._trim else self.model.encode_text(tokens))


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
    return os.sep in value or value.endswith(CHECKPOINT_SUFFIXES) or value.startswith(("~", "."))


def _check_pretrained(name: str, arch: str, pretrained: str | None) -> str | None:
    import open_clip

    if not pretrained:
        return None
    if _is_path(pretrained) or Path(pretrained).expanduser().is_file():
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise ClipevalError(
                f"Model '{name}': checkpoint file not found: {path.resolve()}\n"
                "Pass model.pretrained=/path/to/checkpoint (.pt, .bin or .safetensors)."
            )
        return str(path)
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained not in tags:
        raise ClipevalError(
            f"Model '{name}': '{pretrained}' is neither a file nor a pretrained tag of {arch}. "
            f"{did_you_mean(pretrained, tags) if tags else f'{arch} has no published tags; pass a checkpoint file.'}"
        )
    return pretrained


def _load_failure(name: str, arch: str, pretrained: str | None, cache_dir: str | None, exc: Exception) -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    where = cache_dir or f"{HF_HUB_CACHE} (Hugging Face hub cache) and ~/.cache/clip"
    looked = (
        pretrained
        if pretrained and os.path.isfile(pretrained)
        else f"open_clip's download of tag '{pretrained}', cached under {where}"
    )
    return (
        f"Could not load weights for model '{name}' ({arch}, pretrained={pretrained}).\n"
        f"Looked in: {looked}\n"
        f"Cause: {type(exc).__name__}: {str(exc)[:500]}\n"
        "Without network, download the checkpoint elsewhere and pass it as a file: "
        f"model=open_clip model.arch={arch} model.pretrained=/path/to/checkpoint.pt"
    )
