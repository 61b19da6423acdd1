"""Dual encoders behind one small protocol, with adapters for open_clip and transformers."""

from clipeval.contracts import DualEncoder
from clipeval.models.base import check_dual_encoder

__all__ = ["DualEncoder", "check_dual_encoder"]
