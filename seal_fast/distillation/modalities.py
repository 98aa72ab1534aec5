"""The modalities the heads are trained on.

A modality is one fixed view of the data: its features (N, d) on the device, its
cluster head, and the top-k neighbour lists in its own feature space. All feature
sets are frozen, as in SATC's Algorithm 1; only the heads learn. SEAL and SATC share
two: the visual one (L2-normalised phi) and the spatial one (g(x), the frozen GAT's
embedding of each image's patch graph).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..rows import by_row_blocks
from ..spatial import spatial_features
from .heads import ClusterHead


@dataclass
class Modality:
    """One view of the data: features (N, d) on the device, its cluster head, and
    (once computed) the top-k neighbours of every row in this feature space."""

    name: str
    features: torch.Tensor
    head: ClusterHead
    neighbor_index: torch.Tensor | None = None   # (N, k) int64


def visual_and_spatial(Z: torch.Tensor, P, n_clusters: int, *, spatial_dim: int, patch_neighbors: int,
                       backend: str, generator: torch.Generator, device) -> list[Modality]:
    """The two modalities SEAL and SATC share: the visual one on L2-normalised Z and
    the spatial one on g(x), the frozen GAT's embedding of each image's patch graph.
    The visual head, the GAT and the spatial head draw from `generator` in that order."""
    visual = Modality("visual", F.normalize(Z, dim=1),
                      ClusterHead(Z.shape[1], n_clusters, generator=generator).to(device))
    G = spatial_features(P, out_dim=spatial_dim, patch_neighbors=patch_neighbors, backend=backend,
                         generator=generator, device=device)
    spatial = Modality("spatial", G, ClusterHead(G.shape[1], n_clusters, generator=generator).to(device))
    return [visual, spatial]


def fresh_heads(modalities: list[Modality], n_clusters: int, generator: torch.Generator, device) -> list[Modality]:
    """The same features and neighbour lists with newly initialised heads (a restart)."""
    return [Modality(m.name, m.features, ClusterHead(m.features.shape[1], n_clusters, generator=generator).to(device),
                     m.neighbor_index) for m in modalities]


@torch.no_grad()
def head_labels(modality: Modality, rows: torch.Tensor | None = None) -> torch.Tensor:
    """argmax of the modality's head over all its rows (or the rows `rows`), in eval mode."""
    modality.head.eval()
    features = modality.features if rows is None else modality.features[rows.to(modality.features.device)]
    return by_row_blocks(lambda x: modality.head(x).argmax(1), features)
