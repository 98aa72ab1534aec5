"""DINOv2 ViTs through timm's own model and checkpoint-loading code.

Image embedding: the final CLS token (after the last norm), as TURTLE uses.
Patch features: the final patch tokens on the 16x16 grid (224 px / patch 14).

Weights: `weights=PATH` loads a local checkpoint (timm or the original
facebookresearch format; timm's filter converts it and resizes position
embeddings); without it the weights come from the Hugging Face hub (online).
"""
from __future__ import annotations

from ..data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from ..errors import SealFastError
from .base import Backbone
from .hub import require_hub

DINOV2_MODELS = {
    "dinov2-vit-s-14": "vit_small_patch14_dinov2.lvd142m",
    "dinov2-vit-b-14": "vit_base_patch14_dinov2.lvd142m",
    "dinov2-vit-l-14": "vit_large_patch14_dinov2.lvd142m",
    "dinov2-vit-g-14": "vit_giant_patch14_dinov2.lvd142m",
}
IMAGE_SIZE = 224


class DINOv2Encoder(Backbone):
    preprocessing = Preprocessing(IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD, "bicubic")

    def __init__(self, name: str, weights: str | None = None):
        super().__init__()
        try:
            import timm
        except ImportError as exc:
            raise SealFastError(f"{name} needs timm: `pip install timm`") from exc
        self.name = name
        overlay = {"file": str(weights)} if weights is not None else None
        if weights is None:
            require_hub(name, getattr(timm.models.get_pretrained_cfg(DINOV2_MODELS[name]), "hf_hub_id", None))
        try:
            self.model = timm.create_model(DINOV2_MODELS[name], pretrained=True, pretrained_cfg_overlay=overlay,
                                           img_size=IMAGE_SIZE, num_classes=0)
        except Exception as exc:
            where = f"from {weights}" if weights else "from the Hugging Face hub (needs a network connection)"
            raise SealFastError(f"could not load {name} weights {where}: {exc}. "
                                "Pass --weights PATH to use a local checkpoint.") from exc
        self.model.eval().requires_grad_(False)
        self.dim = int(self.model.embed_dim)
        self.patch_dim = self.dim
        g = IMAGE_SIZE // self.model.patch_embed.patch_size[0]
        self.grid = (g, g)
        self.patch_layer = "final patch tokens"

    def forward(self, x, pooled=True, patches=False):
        tokens = self.model.forward_features(x)  # (B, prefix + M, d), final norm applied
        out = {}
        if pooled:
            out["pooled"] = tokens[:, 0]
        if patches:
            out["patches"] = tokens[:, self.model.num_prefix_tokens:]
        return out
