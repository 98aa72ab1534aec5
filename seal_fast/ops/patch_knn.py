"""Neighbour lists of per-image patch graphs: the edges `patch_gat` attends over."""
from __future__ import annotations

import torch

from .._extension import compiled_available
from ._backend import pick


def patch_knn_reference(P: torch.Tensor, k: int) -> torch.Tensor:
    """Oracle of `patch_knn`: (B, M, k + 1) = each node first, then its k most
    cosine-similar other patches of the same image (ties: lower index first).
    The cosine is dot / (|p_i| |p_j|), the formula of the compiled kernels."""
    B, M, _ = P.shape
    P = P.float()
    norm = P.norm(dim=2).clamp_min(1e-12)
    sim = (P @ P.transpose(1, 2)) / (norm[:, :, None] * norm[:, None, :])
    sim = sim.masked_fill(torch.eye(M, dtype=torch.bool, device=P.device), float("-inf"))
    others = torch.sort(sim, dim=2, descending=True, stable=True).indices[:, :, :k]
    self_idx = torch.arange(M, device=P.device).view(1, M, 1).expand(B, M, 1)
    return torch.cat([self_idx, others], dim=2).contiguous()


MAX_NEIGHBORS = 32  # every backend's limit (the CUDA kernel keeps each list in registers)


def patch_knn(P: torch.Tensor, k: int, *, backend: str = "auto") -> torch.Tensor:
    r"""Neighbour lists of the per-image patch graphs: (B, M, k + 1), the node
    itself first, then its k most cosine-similar other patches of the same image
    (ties: lower index first). k = 0 gives the self loops alone; k is at most
    `MAX_NEIGHBORS` on every backend.

    Example:
        >>> P = torch.randn(8, 49, 64)
        >>> edges = patch_knn(P, 8)   # (8, 49, 9)
    """
    if P.dim() != 3:
        raise ValueError(f"P must be (B, M, c), got {tuple(P.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= MAX_NEIGHBORS:
        raise ValueError(f"k={k!r} patch neighbours: expected an integer in [0, {MAX_NEIGHBORS}]")
    if k > P.shape[1] - 1:
        raise ValueError(f"k={k} neighbours need at least k+1={k + 1} patches per image, got M={P.shape[1]}")
    if pick(backend, P):
        return torch.ops.seal_fast.patch_knn(P, int(k))
    return patch_knn_reference(P, k)


if compiled_available():

    @torch.library.register_fake("seal_fast::patch_knn")
    def _(P, k):
        return P.new_empty(P.shape[0], P.shape[1], k + 1, dtype=torch.long)
