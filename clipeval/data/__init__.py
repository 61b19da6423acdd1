"""Datasets as sources of (image, label, sample id), each with a stable key for caching."""

from clipeval.data.base import DataNotFound, MapSource, Source

__all__ = ["DataNotFound", "MapSource", "Source"]
