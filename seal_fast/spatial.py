"""Spatial encoder: a graph-attention layer over each image's patch graph, mean-pooled.

Nodes are the M cells of a backbone's feature map (patch features, (N, M, c)).
Each node is joined to its k most cosine-similar patches of the same image plus
itself (the self loop); one GAT layer (SEAL eq. 3) mixes every node with its
neighbours, and the mean over nodes is the spatial embedding g(x) (eq. 4).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .errors import SealFastError
from .ops.patch_gat import patch_gat, patch_knn


class SpatialEncoder(nn.Module):
    """g(x) = mean_i sum_j alpha_ij W x_j over the patch graph of each image.

    Parameters are initialised like torch_geometric's GATConv (Glorot).
    """

    def __init__(self, in_dim: int, out_dim: int, k: int = 8, negative_slope: float = 0.2,
                 backend: str = "auto", generator: torch.Generator | None = None):
        super().__init__()
        self.in_dim, self.out_dim, self.k = in_dim, out_dim, k
        self.negative_slope = negative_slope
        self.backend = backend
        a = math.sqrt(6.0 / (in_dim + out_dim))
        self.weight = nn.Parameter((torch.rand(in_dim, out_dim, generator=generator) * 2 - 1) * a)
        b = math.sqrt(6.0 / (1 + out_dim))
        self.att_src = nn.Parameter((torch.rand(out_dim, generator=generator) * 2 - 1) * b)
        self.att_dst = nn.Parameter((torch.rand(out_dim, generator=generator) * 2 - 1) * b)

    def forward(self, P: torch.Tensor, nbr: torch.Tensor | None = None) -> torch.Tensor:
        if P.dim() != 3 or P.shape[2] != self.in_dim:
            raise SealFastError(f"patch features must be (B, M, {self.in_dim}), got {tuple(P.shape)}")
        P = P.to(self.weight.dtype)
        if nbr is None:
            if self.k + 1 > P.shape[1]:
                raise SealFastError(f"patch graph: k={self.k} neighbours need at least k+1={self.k + 1} patches "
                                    f"per image, got M={P.shape[1]}")
            nbr = patch_knn(P, self.k, backend=self.backend)
        return patch_gat(P, self.weight, self.att_src, self.att_dst, nbr, self.negative_slope, pool=True,
                         backend=self.backend)

    def extra_repr(self):
        return f"{self.in_dim} -> {self.out_dim}, k={self.k}, negative_slope={self.negative_slope}"
