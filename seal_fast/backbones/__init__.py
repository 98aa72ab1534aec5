"""Registry of frozen image encoders, by the names the CLI accepts."""
from __future__ import annotations

from ..errors import SealFastError
from .base import Backbone
from .clip import CLIP_MODELS, CLIPImageEncoder
from .dinov2 import DINOV2_MODELS, DINOv2Encoder
from .efficientnet import EFFICIENTNET_LITE, EfficientNetLite

DEFAULT_BACKBONE = "efficientnet-lite0"
# the patch features come from a second network, as both papers take them (docs/results.md)
DEFAULT_PATCH_BACKBONE = "efficientnet-lite2"


def known_backbones() -> list[str]:
    return [*EFFICIENTNET_LITE, *CLIP_MODELS, *DINOV2_MODELS]


def get_backbone(name: str, weights: str | None = None) -> Backbone:
    """Build a backbone by name; `weights` is a local checkpoint path (optional)."""
    if name in EFFICIENTNET_LITE:
        return EfficientNetLite(name, weights)
    if name in CLIP_MODELS:
        return CLIPImageEncoder(name, weights)
    if name in DINOV2_MODELS:
        return DINOv2Encoder(name, weights)
    raise SealFastError(f"unknown backbone {name!r}; known backbones: {', '.join(known_backbones())}")


__all__ = ["Backbone", "DEFAULT_BACKBONE", "DEFAULT_PATCH_BACKBONE", "get_backbone", "known_backbones"]
