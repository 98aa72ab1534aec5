"""Turning RGB uint8 images into a backbone's input tensor."""
from __future__ import annotations

from dataclasses import dataclass, asdict

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_ASPECT = 3  # long side / short side kept before resizing (see _resize_crop)


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to `size` (bicubic, antialiased), centre-crop
    `size` x `size`, scale to [0, 1], normalise with `mean`/`std`."""

    size: int = 224
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    interpolation: str = "bicubic"

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(self, images: list[np.ndarray]) -> torch.Tensor:
        """List of (H, W, 3) uint8 -> (B, 3, size, size) float32."""
        if not images:
            return torch.empty(0, 3, self.size, self.size)
        shapes = {im.shape for im in images}
        if len(shapes) == 1:  # one resize for the whole batch
            batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
            x = self._resize_crop(batch)
        else:
            # np.array copies: decoded images are read-only views that torch would warn about
            x = torch.cat([self._resize_crop(torch.from_numpy(np.array(im)).permute(2, 0, 1)[None]) for im in images])
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std

    def _resize_crop(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # The centre crop keeps the middle min(h, w) of the long side. A long side beyond
        # MAX_ASPECT times the short one is cut to its middle first, so that memory stays
        # bounded by construction (a 20000 x 1 image would otherwise be resized to
        # 224 x 4.5M floats); the cut keeps min(h, w) of margin on either side of the
        # crop, far more than the filter reaches, and leaves every ordinary image as it was.
        if max(h, w) > MAX_ASPECT * min(h, w):
            keep = MAX_ASPECT * min(h, w)
            x = x[..., (h - keep) // 2:(h - keep) // 2 + keep, :] if h > w else \
                x[..., (w - keep) // 2:(w - keep) // 2 + keep]
            h, w = x.shape[-2:]
        x = x.float().div_(255.0)
        scale = self.size / min(h, w)
        nh, nw = max(self.size, round(h * scale)), max(self.size, round(w * scale))
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode=self.interpolation, align_corners=False,
                              antialias=self.interpolation in ("bilinear", "bicubic")).clamp_(0.0, 1.0)
        top, left = (nh - self.size) // 2, (nw - self.size) // 2
        return x[:, :, top:top + self.size, left:left + self.size]
