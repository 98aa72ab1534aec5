"""Image sources (folders, .npz files, built-in datasets), their decoding and their preprocessing."""
from .builtin import BUILTIN_SOURCES
from .decode import UnreadableImage
from .sources import ImageSource, open_source

__all__ = ["BUILTIN_SOURCES", "ImageSource", "UnreadableImage", "open_source"]
