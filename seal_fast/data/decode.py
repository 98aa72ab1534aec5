"""Image files and arrays -> RGB uint8 (H, W, 3): decoding with a size cap, more than
8 bits scaled to 8, grey/palette/alpha converted, so no backbone ever sees a channel
count or a range it does not expect."""
from __future__ import annotations

import numpy as np


class UnreadableImage(Exception):
    """One image could not be decoded; the source and the reason are in the message."""


def to_rgb(img: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8 -> (H, W, 3) uint8."""
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise UnreadableImage(f"unsupported image shape {img.shape}")
    if img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    if img.shape[2] == 4:  # composite on white: transparent pixels are background, not black
        rgb = img[:, :, :3].astype(np.float32)
        alpha = img[:, :, 3:].astype(np.float32) / 255.0
        return np.clip(rgb * alpha + 255.0 * (1.0 - alpha) + 0.5, 0, 255).astype(np.uint8)
    return img


# No backbone looks at more than ~520 px; decoding is capped well above that so that
# one huge photo cannot cost gigabytes (a 9000 x 9000 PNG is 240 MB as RGB bytes).
MAX_SIDE = 2048


def decode(im) -> np.ndarray:
    """A PIL image -> (H, W) or (H, W, 3|4) uint8, shrunk so its shorter side is at most MAX_SIDE."""
    if im.format == "JPEG":  # JPEG can decode at 1/2, 1/4, 1/8 scale directly
        im.draft(im.mode, (max(1, im.width * MAX_SIDE // min(im.size)), max(1, im.height * MAX_SIDE // min(im.size))))
    im.load()  # decode now: truncated files fail here, not later
    factor = -(-min(im.size) // MAX_SIDE)  # the smallest whole factor that brings the shorter side to MAX_SIDE
    if factor >= 2:
        im = im.reduce(factor)  # box filter: averages, so no aliasing
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        return np.asarray(im.convert("RGBA"))
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _to_uint8(np.asarray(im))
    if im.mode in ("L", "1"):
        return np.asarray(im.convert("L"))
    return np.asarray(im.convert("RGB"))


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Grey images of more than 8 bits -> 8 bits. 16-bit (and 32-bit integer images
    whose values fit in 16 bits) are scaled by 255/65535; float images in [0, 1] by
    255; anything else by its own minimum and maximum."""
    a = arr.astype(np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        raise UnreadableImage("no finite pixel values")
    a = np.where(finite, a, 0.0)
    lo, hi = float(a.min()), float(a.max())
    if np.issubdtype(arr.dtype, np.integer) and lo >= 0 and hi <= 65535:
        scaled = a * (255.0 / 65535.0)
    elif np.issubdtype(arr.dtype, np.floating) and lo >= 0 and hi <= 1:
        scaled = a * 255.0
    else:
        scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)
