"""Cluster heads and the modalities they are trained on.

A modality is one fixed view of the data: its features (N, d) on the device, a
cluster head Linear(d, d) -> BatchNorm -> ReLU -> Linear(d, K) -> Softmax (TAC's
head), and the top-k neighbour lists in its own feature space. All feature sets
are frozen, as in SATC's Algorithm 1; only the heads learn.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..rows import by_row_blocks
from ..spatial import spatial_features


class ClusterHead(nn.Module):
    """Linear(d, h) -> BatchNorm -> ReLU -> Linear(h, K) -> Softmax (TAC's head).

    The hidden layer (after BN and ReLU) of the trained visual head is SEAL's
    spatially-aware embedding phi_hat, the same size as phi.
    """

    def __init__(self, in_dim: int, n_clusters: int, hidden: int | None = None,
                 generator: torch.Generator | None = None):
        super().__init__()
        hidden = hidden or in_dim
        self.fc1 = nn.Linear(in_dim, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, n_clusters)
        with torch.no_grad():  # truncated normal, std 0.02, as TAC
            for lin in (self.fc1, self.fc2):
                lin.weight.copy_(_trunc_normal(lin.weight.shape, 0.02, generator))
                lin.bias.zero_()

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.fc1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc2(self.hidden(x)), dim=1)


def _trunc_normal(shape, std, generator):
    t = torch.randn(shape, generator=generator) * std
    while True:  # resample outside +-2 std
        bad = t.abs() > 2 * std
        if not bad.any():
            return t
        t[bad] = torch.randn(int(bad.sum()), generator=generator) * std


@dataclass
class Modality:
    """One view of the data: features (N, d) on the device, its cluster head, and
    (once computed) the top-k neighbours of every row in this feature space."""

    name: str
    features: torch.Tensor
    head: ClusterHead
    neighbor_index: torch.Tensor | None = None   # (N, k) int64


@torch.no_grad()
def spatially_aware_embedding(head: ClusterHead, Z: torch.Tensor) -> torch.Tensor:
    """phi_hat: the trained visual head's hidden layer on the L2-normalised embedding."""
    head.eval()
    return by_row_blocks(lambda z: head.hidden(F.normalize(z, dim=1)), Z)


@torch.no_grad()
def head_labels(modality: Modality) -> torch.Tensor:
    """argmax of the modality's head over all its rows, in eval mode."""
    modality.head.eval()
    return by_row_blocks(lambda x: modality.head(x).argmax(1), modality.features)


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


def head_from_state(state: dict, in_dim: int, n_clusters: int) -> ClusterHead:
    """A trained head rebuilt from its saved state dict, in eval mode."""
    head = ClusterHead(in_dim, n_clusters)
    head.load_state_dict(state)
    return head.eval()


def fresh_heads(modalities: list[Modality], n_clusters: int, generator: torch.Generator, device) -> list[Modality]:
    """The same features and neighbour lists with newly initialised heads (a restart)."""
    return [Modality(m.name, m.features, ClusterHead(m.features.shape[1], n_clusters, generator=generator).to(device),
                     m.neighbor_index) for m in modalities]
