"""What every backbone provides to the embedding stage."""
from __future__ import annotations

import abc

import torch
from torch import nn

from ..data.preprocess import Preprocessing


class Backbone(nn.Module, metaclass=abc.ABCMeta):
    """A frozen image encoder.

    `forward(x, pooled=True, patches=False)` returns a dict with
    ``"pooled"`` (B, dim) — the image embedding φ(x) — and/or ``"patches"``
    (B, M, patch_dim) — the feature map on its row-major grid of M = gh * gw
    cells, the nodes of the spatial encoder's patch graph.
    """

    name: str = ""
    dim: int = 0
    patch_dim: int = 0
    grid: tuple[int, int] = (0, 0)
    patch_layer: str = ""
    preprocessing: Preprocessing = Preprocessing()

    def describe(self) -> dict:
        return {"backbone": self.name, "dim": self.dim, "patch_dim": self.patch_dim,
                "grid": list(self.grid), "patch_layer": self.patch_layer,
                "preprocessing": self.preprocessing.to_dict()}

    @abc.abstractmethod
    def forward(self, x: torch.Tensor, pooled: bool = True, patches: bool = False) -> dict:
        """(B, 3, S, S) normalised images -> {"pooled": (B, dim), "patches": (B, M, patch_dim)}."""
