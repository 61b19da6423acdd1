"""Dual encoders written by a user, loaded through ``model=custom model._target_=...``."""

from __future__ import annotations

import torch
from torchvision import transforms

from clipeval.models.base import fingerprint, normalize


class MeanColourEncoder(torch.nn.Module):
    """Embeds an image as its mean RGB and a text by which colour word it names."""

    COLOURS = ("red", "green", "blue")

    def __init__(self, name: str = "mean-colour"):
        super().__init__()
        self.name = name
        self.preprocess = transforms.Compose([transforms.Resize((8, 8)), transforms.ToTensor()])
        self.scale = torch.nn.Parameter(torch.tensor(1.0))
        self.fingerprint = fingerprint(self, self.preprocess, self.COLOURS)

    @property
    def logit_scale(self) -> float:
        return 100.0

    def tokenize(self, texts):
        return torch.tensor([[float(c in t) for c in self.COLOURS] for t in texts])

    def encode_image(self, images):
        return normalize(images.mean(dim=(2, 3)) * self.scale)

    def encode_text(self, tokens):
        return normalize(tokens + 1e-3)


class ColourModel(MeanColourEncoder):
    """A differentiable dual encoder for attacks: an image is its mean colour after the Normalize
    that ends its preprocess, a text the colour words it names (conftest's images: one colour per class)."""

    def __init__(self, name: str = "colour"):
        super().__init__(name)
        self.preprocess = transforms.Compose(
            [transforms.Resize((8, 8)), transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)]
        )
        self.fingerprint = fingerprint(self, self.preprocess, self.COLOURS)

    @property
    def logit_scale(self) -> float:
        return 10.0  # gentle enough that cross-entropy keeps a gradient at the clean images
