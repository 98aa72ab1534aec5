"""Image sources (folders, .npz files, built-in datasets) and their preprocessing."""
from .sources import BUILTIN_SOURCES, ImageSource, UnreadableImage, open_source

__all__ = ["BUILTIN_SOURCES", "ImageSource", "UnreadableImage", "open_source"]
