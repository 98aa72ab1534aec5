"""The cluster head of every modality: Linear(d, d) -> BatchNorm -> ReLU ->
Linear(d, K) -> Softmax (TAC's head), and phi_hat, the trained visual head's hidden
layer (SEAL's spatially-aware embedding)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..rows import by_row_blocks


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


@torch.no_grad()
def spatially_aware_embedding(head: ClusterHead, Z: torch.Tensor) -> torch.Tensor:
    """phi_hat: the trained visual head's hidden layer on the L2-normalised embedding."""
    head.eval()
    return by_row_blocks(lambda z: head.hidden(F.normalize(z, dim=1)), Z)


def head_from_state(state: dict, in_dim: int, n_clusters: int) -> ClusterHead:
    """A trained head rebuilt from its saved state dict, in eval mode."""
    head = ClusterHead(in_dim, n_clusters)
    head.load_state_dict(state)
    return head.eval()
