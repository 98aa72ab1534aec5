"""The spatial modality: a graph-attention layer over each image's patch graph, mean-pooled.

Nodes are the M cells of a backbone's feature map (patch features, (N, M, c)).
Each node is joined to its k most cosine-similar patches of the same image plus
itself (the self loop); one GAT layer (SEAL eq. 3) mixes every node with its
neighbours, and the mean over nodes is the spatial embedding g(x) (eq. 4).

The GAT is frozen at its seeded Glorot initialisation, as SATC's Algorithm 1
freezes all its feature sets, so g(x) is computed once, in blocks straight from
the (memory-mapped) patch store.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import SealFastError
from .ops.patch_gat import patch_gat
from .ops.patch_knn import patch_knn
from .validation import check_finite, check_scale


class SpatialEncoder(nn.Module):
    """g(x) = mean_i sum_j alpha_ij W x_j over the patch graph of each image.

    Parameters are initialised like torch_geometric's GATConv (Glorot).
    """

    def __init__(self, in_dim: int, out_dim: int, patch_neighbors: int = 8, negative_slope: float = 0.2,
                 backend: str = "auto", generator: torch.Generator | None = None):
        super().__init__()
        self.in_dim, self.out_dim, self.patch_neighbors = in_dim, out_dim, patch_neighbors
        self.negative_slope = negative_slope
        self.backend = backend
        a = math.sqrt(6.0 / (in_dim + out_dim))
        self.weight = nn.Parameter((torch.rand(in_dim, out_dim, generator=generator) * 2 - 1) * a)
        b = math.sqrt(6.0 / (1 + out_dim))
        self.att_src = nn.Parameter((torch.rand(out_dim, generator=generator) * 2 - 1) * b)
        self.att_dst = nn.Parameter((torch.rand(out_dim, generator=generator) * 2 - 1) * b)

    def forward(self, P: torch.Tensor, edges: torch.Tensor | None = None) -> torch.Tensor:
        """P (B, M, in_dim) -> (B, out_dim); `edges` (B, M, k + 1) defaults to the patch kNN graph."""
        if P.dim() != 3 or P.shape[2] != self.in_dim:
            raise SealFastError(f"patch features must be (B, M, {self.in_dim}), got {tuple(P.shape)}")
        P = P.to(self.weight.dtype)
        if edges is None:
            _check_patch_count(P.shape[1], self.patch_neighbors)
            edges = patch_knn(P, self.patch_neighbors, backend=self.backend)
        return patch_gat(P, self.weight, self.att_src, self.att_dst, edges, self.negative_slope, pool=True,
                         backend=self.backend)

    def extra_repr(self):
        return (f"{self.in_dim} -> {self.out_dim}, patch_neighbors={self.patch_neighbors}, "
                f"negative_slope={self.negative_slope}")


def _check_patch_count(m: int, patch_neighbors: int) -> None:
    if m < patch_neighbors + 1:
        raise SealFastError(f"patches: M={m} patches per image is fewer than the k+1={patch_neighbors + 1} "
                            "nodes the patch graph needs (lower patch_neighbors: `--patch-neighbors` on the "
                            "command line)")


def check_patches(P, n: int, patch_neighbors: int):
    """Patch features (N, M, c): same N as the spaces, enough patches for the graph, finite."""
    if not hasattr(P, "shape"):
        try:
            P = np.asarray(P, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise SealFastError(f"patches: expected a numeric array (N, M, c), got a {type(P).__name__} that is "
                                f"not one ({str(exc).splitlines()[0]})") from None
    if len(P.shape) != 3:
        raise SealFastError(f"patches: expected (N, M, c), got shape {tuple(P.shape)}")
    if P.shape[0] != n:
        raise SealFastError(f"patches: {P.shape[0]} rows for {n} samples")
    _check_patch_count(P.shape[1], patch_neighbors)
    if P.shape[2] == 0:
        raise SealFastError("patches: zero channels")
    check_finite(P, "patches")
    check_scale(P, "patches")
    return P


def require_patches(patches, n: int, patch_neighbors: int, method: str):
    """The patch features a spatial method cannot do without, checked."""
    if patches is None:
        raise SealFastError(f"{method} needs patch features: fit(X, patches=P) with P of shape (N, M, c); "
                            "`seal-fast embed` writes them to the feature store")
    return check_patches(patches, n, patch_neighbors)


@torch.no_grad()
def spatial_embeddings(encoder: SpatialEncoder, P, device, block: int = 1024) -> torch.Tensor:
    """g(x) for every image, L2-normalised, computed in blocks straight from (memory-mapped) patches."""
    out = []
    for s in range(0, P.shape[0], block):
        x = P[s:s + block] if isinstance(P, torch.Tensor) else \
            torch.from_numpy(np.array(P[s:s + block], dtype=P.dtype.newbyteorder("=")))  # native byte order
        out.append(F.normalize(encoder(x.to(device=device, dtype=torch.float32)), dim=1))
    return torch.cat(out)


def spatial_features(P, *, out_dim: int, patch_neighbors: int, backend: str, generator: torch.Generator,
                     device) -> torch.Tensor:
    """g(x) of every image from a frozen GAT drawn from `generator` (out_dim 0: the patch width)."""
    encoder = SpatialEncoder(P.shape[2], out_dim or P.shape[2], patch_neighbors=patch_neighbors, backend=backend,
                             generator=generator).to(device)
    return spatial_embeddings(encoder, P, device)
