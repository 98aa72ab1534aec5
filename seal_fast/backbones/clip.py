"""CLIP image encoders (OpenAI weights) through open_clip's own loading code.

Image embedding: `encode_image`, the projected embedding TURTLE and the papers use.
Patch features: the last stage of the ResNets (e.g. RN50: 2048 ch on 7x7, the
SEAL paper's choice) or the ViTs' final patch tokens (before projection).

Weights: `weights=PATH` loads a local checkpoint (an OpenAI `.pt` or an open_clip
state dict of the same architecture); without it, the OpenAI weights are fetched
from open_clip's hub, which needs a network connection.
"""
from __future__ import annotations


from ..data.preprocess import CLIP_MEAN, CLIP_STD, Preprocessing
from ..errors import SealFastError
from .base import Backbone
from .hub import require_hub

# our name -> open_clip architecture
CLIP_MODELS = {
    "clip-rn50": "RN50",
    "clip-rn101": "RN101",
    "clip-rn50x4": "RN50x4",
    "clip-vit-b-32": "ViT-B-32",
    "clip-vit-b-16": "ViT-B-16",
    "clip-vit-l-14": "ViT-L-14",
}


def create_clip_model(name: str, weights: str | None = None):
    """The whole open_clip model (image and text towers), frozen, in eval mode."""
    try:
        import open_clip
    except ImportError as exc:
        raise SealFastError(f"{name} needs open_clip: `pip install open_clip_torch`") from exc
    arch = CLIP_MODELS[name]
    pretrained = str(weights) if weights is not None else "openai"
    if weights is None:
        require_hub(name, (open_clip.get_pretrained_cfg(arch, "openai") or {}).get("hf_hub"))
    try:
        # OpenAI's CLIP was trained with QuickGELU; open_clip sets it for the
        # "openai" tag itself but not for a local file, so say it explicitly.
        model = open_clip.create_model(arch, pretrained=pretrained, force_quick_gelu=True,
                                       require_pretrained=True)
    except Exception as exc:  # network errors, missing/wrong files: one clear message
        where = f"from {weights}" if weights else "from the open_clip hub (needs a network connection)"
        raise SealFastError(f"could not load {name} weights {where}: {exc}. "
                            "Pass --weights PATH to use a local checkpoint.") from exc
    return model.eval().requires_grad_(False)


class CLIPImageEncoder(Backbone):
    def __init__(self, name: str, weights: str | None = None, model=None):
        super().__init__()
        self.name = name
        self.model = model if model is not None else create_clip_model(name, weights)
        visual = self.model.visual
        size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
        self.preprocessing = Preprocessing(int(size), CLIP_MEAN, CLIP_STD, "bicubic")
        self.dim = int(visual.output_dim)
        self.is_vit = hasattr(visual, "conv1") and hasattr(visual, "transformer")
        if self.is_vit:
            patch = visual.patch_size if isinstance(visual.patch_size, int) else visual.patch_size[0]
            g = size // patch
            self.grid = (g, g)
            self.patch_dim = int(visual.conv1.out_channels)
            self.patch_layer = "final patch tokens (before projection)"
        else:
            g = size // 32
            self.grid = (g, g)
            self.patch_dim = int(visual.layer4[-1].conv3.out_channels if hasattr(visual.layer4[-1], "conv3")
                                 else visual.attnpool.c_proj.in_features)
            self.patch_layer = "layer4 (last ResNet stage)"

    def forward(self, x, pooled=True, patches=False):
        visual = self.model.visual
        out = {}
        if self.is_vit:
            if patches:
                visual.output_tokens = True
                emb, tokens = visual(x)
                visual.output_tokens = False
                out["patches"] = tokens
            else:
                emb = visual(x)
            if pooled:
                out["pooled"] = emb
            return out
        # ModifiedResNet: stem and stages, then attention pooling
        h = visual.stem(x) if hasattr(visual, "stem") else _resnet_stem(visual, x)
        h = visual.layer4(visual.layer3(visual.layer2(visual.layer1(h))))
        if patches:
            out["patches"] = h.flatten(2).transpose(1, 2)
        if pooled:
            out["pooled"] = visual.attnpool(h)
        return out


def _resnet_stem(visual, x):
    x = x.to(dtype=visual.conv1.weight.dtype)
    x = visual.act1(visual.bn1(visual.conv1(x)))
    x = visual.act2(visual.bn2(visual.conv2(x)))
    x = visual.act3(visual.bn3(visual.conv3(x)))
    return visual.avgpool(x)
