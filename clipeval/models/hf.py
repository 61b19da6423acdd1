"""Hugging Face transformers dual encoders (CLIP, SigLIP and kin) from a hub id or a local folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from clipeval.errors import ClipevalError
from clipeval.models.base import WrappedModule, fingerprint, normalize


class HFImageTransform:
    """The model's own image processor as a per-image transform (picklable for workers)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]

    def __repr__(self) -> str:
        return f"HFImageTransform({self.processor.to_json_string()})"


class HFClipEncoder(WrappedModule):
    def __init__(self, name_or_path: str, name: str | None = None, revision: str | None = None):
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        self.name = name or Path(str(name_or_path)).name
        try:
            self.model = AutoModel.from_pretrained(name_or_path, revision=revision).eval()
            self._tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision)
            processor = AutoImageProcessor.from_pretrained(name_or_path, revision=revision)
        except Exception as exc:  # offline hub, missing folder or file, wrong format
            raise ClipevalError(
                f"Could not load Hugging Face model '{self.name}' from '{name_or_path}'.\n"
                f"Looked in: {Path(name_or_path).expanduser().resolve() if Path(name_or_path).expanduser().exists() else 'the Hugging Face hub and its local cache'}\n"
                f"Cause: {type(exc).__name__}: {str(exc)[:500]}\n"
                "Without network, save the model where there is network (model.save_pretrained(DIR), "
                "plus its tokenizer and image processor) and pass model.name_or_path=DIR."
            ) from exc
        for method in ("get_image_features", "get_text_features"):
            if not hasattr(self.model, method):
                raise ClipevalError(
                    f"'{name_or_path}' ({type(self.model).__name__}) is not a dual encoder: no {method}."
                )
        self.preprocess = HFImageTransform(processor)
        self._max_length = _text_context(self.model)
        vocab = sorted(self._tokenizer.get_vocab().items())
        self.fingerprint = fingerprint(
            self.model, self.preprocess, type(self._tokenizer).__name__, vocab, self._max_length
        )

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        # Padding to the full context, as SigLIP was trained; CLIP pools at the first EOS token
        # behind a causal mask, so its embeddings do not depend on the padding.
        batch = self._tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self._max_length,
            return_tensors="pt",
        )
        return batch["input_ids"]

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return normalize(_pooled(self.model.get_image_features(pixel_values=images.to(self.device))))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return normalize(_pooled(self.model.get_text_features(input_ids=tokens.to(self.device))))


def _pooled(out) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output is the projected embedding.
    return out.pooler_output if hasattr(out, "pooler_output") else out


def _text_context(model) -> int:
    text_config = getattr(model.config, "text_config", model.config)
    return int(getattr(text_config, "max_position_embeddings", 77))
