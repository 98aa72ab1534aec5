"""Graph attention over many small patch graphs (one per image), with mean pooling.

Every image contributes M patch nodes; node i of image b attends to the k nodes
listed in nbr[b, i] (its own index included: the self loop), as in the SEAL
paper's eq. 3 (one head):

    h = X W,  e_ij = LeakyReLU(a_dst . h_i + a_src . h_j),  alpha_i = softmax_j(e_ij),
    out_i = sum_j alpha_ij h_j,  and with pool=True the mean of out_i over the M nodes.

This matches torch_geometric's GATConv (heads=1, bias=False, add_self_loops=False)
on the union of the per-image graphs with edges j -> i.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._extension import compiled_available
from ._backend import pick


def patch_gat_reference(X: torch.Tensor, W: torch.Tensor, att_src: torch.Tensor, att_dst: torch.Tensor,
                        nbr: torch.Tensor, negative_slope: float = 0.2, pool: bool = True) -> torch.Tensor:
    """Pure-PyTorch oracle. X (B, M, c), W (c, C), att_* (C,), nbr (B, M, k) int64.

    Returns (B, C) when pool else (B, M, C).
    """
    B, M, _ = X.shape
    k = nbr.shape[2]
    H = X @ W                                        # (B, M, C)
    s_src = H @ att_src                              # (B, M)
    s_dst = H @ att_dst                              # (B, M)
    flat = nbr.reshape(B, M * k)
    e = s_dst[:, :, None] + torch.gather(s_src, 1, flat).view(B, M, k)
    alpha = torch.softmax(F.leaky_relu(e, negative_slope), dim=2)
    Hn = torch.gather(H, 1, flat[:, :, None].expand(B, M * k, H.shape[2])).view(B, M, k, H.shape[2])
    out = (alpha[..., None] * Hn).sum(dim=2)         # (B, M, C)
    return out.mean(dim=1) if pool else out


def patch_knn_reference(P: torch.Tensor, k: int) -> torch.Tensor:
    """Oracle of `patch_knn`: (B, M, k + 1) = each node first, then its k most
    cosine-similar other patches of the same image (ties: lower index first)."""
    B, M, _ = P.shape
    Pn = F.normalize(P.float(), dim=2)
    sim = Pn @ Pn.transpose(1, 2)
    sim = sim.masked_fill(torch.eye(M, dtype=torch.bool, device=P.device), float("-inf"))
    others = torch.sort(sim, dim=2, descending=True, stable=True).indices[:, :, :k]
    self_idx = torch.arange(M, device=P.device).view(1, M, 1).expand(B, M, 1)
    return torch.cat([self_idx, others], dim=2).contiguous()


def _check(X, W, att_src, att_dst, nbr):
    if X.dim() != 3:
        raise ValueError(f"X must be (B, M, c), got {tuple(X.shape)}")
    if W.dim() != 2 or W.shape[0] != X.shape[2]:
        raise ValueError(f"W must be (c={X.shape[2]}, C), got {tuple(W.shape)}")
    if att_src.shape != (W.shape[1],) or att_dst.shape != (W.shape[1],):
        raise ValueError(f"att_src and att_dst must be ({W.shape[1]},)")
    if nbr.dim() != 3 or nbr.shape[:2] != X.shape[:2] or nbr.dtype != torch.int64:
        raise ValueError(f"nbr must be int64 (B, M, k) = ({X.shape[0]}, {X.shape[1]}, k), got "
                         f"{tuple(nbr.shape)} {nbr.dtype}")


def patch_gat(X, W, att_src, att_dst, nbr, negative_slope: float = 0.2, pool: bool = True, *,
              backend: str = "auto"):
    r"""Single-head graph attention on a batch of per-image patch graphs.

    Args:
        X: (B, M, c) patch features.
        W: (c, C) projection.
        att_src, att_dst: (C,) attention vectors for the neighbour and the centre node.
        nbr: (B, M, k) int64 neighbour indices in [0, M), self loop included.
        negative_slope: LeakyReLU slope (0.2 in GAT).
        pool: mean over the M nodes.
        backend: ``"auto"``, ``"compiled"`` or ``"reference"``.

    Returns:
        (B, C) if ``pool`` else (B, M, C). Differentiable in X, W, att_src, att_dst.

    Example:
        >>> X = torch.randn(8, 49, 64); nbr = patch_knn(X, 8)
        >>> g = patch_gat(X, torch.randn(64, 32), torch.randn(32), torch.randn(32), nbr)   # (8, 32)
    """
    _check(X, W, att_src, att_dst, nbr)
    if pick(backend, X):
        return torch.ops.seal_fast.patch_gat(X, W, att_src, att_dst, nbr, float(negative_slope), bool(pool))[0]
    return patch_gat_reference(X, W, att_src, att_dst, nbr, negative_slope, pool)


def patch_knn(P: torch.Tensor, k: int, *, backend: str = "auto") -> torch.Tensor:
    r"""Neighbour lists of the per-image patch graphs: (B, M, k + 1), the node
    itself first, then its k most cosine-similar other patches of the same image
    (ties: lower index first).
    """
    if P.dim() != 3:
        raise ValueError(f"P must be (B, M, c), got {tuple(P.shape)}")
    if not 0 <= k <= P.shape[1] - 1:
        raise ValueError(f"k={k} neighbours need at least k+1={k + 1} patches per image, got M={P.shape[1]}")
    if pick(backend, P):
        return torch.ops.seal_fast.patch_knn(P, int(k))
    return patch_knn_reference(P, k)


if compiled_available():

    @torch.library.register_fake("seal_fast::patch_gat")
    def _(X, W, att_src, att_dst, nbr, negative_slope, pool):
        B, M, _ = X.shape
        out = X.new_empty(B, W.shape[1]) if pool else X.new_empty(B, M, W.shape[1])
        return out, X.new_empty(B, M, nbr.shape[2])

    @torch.library.register_fake("seal_fast::patch_gat_backward")
    def _(grad_out, X, W, att_src, att_dst, nbr, alpha, negative_slope, pool):
        return torch.empty_like(X), torch.empty_like(W), torch.empty_like(att_src), torch.empty_like(att_dst)

    @torch.library.register_fake("seal_fast::patch_knn")
    def _(P, k):
        return P.new_empty(P.shape[0], P.shape[1], k + 1, dtype=torch.long)

    def _setup_context(ctx, inputs, output):
        X, W, att_src, att_dst, nbr, negative_slope, pool = inputs
        _, alpha = output
        ctx.save_for_backward(X, W, att_src, att_dst, nbr, alpha)
        ctx.negative_slope, ctx.pool = negative_slope, pool

    def _backward(ctx, grad_out, _grad_alpha):
        X, W, att_src, att_dst, nbr, alpha = ctx.saved_tensors
        gX, gW, gs, gd = torch.ops.seal_fast.patch_gat_backward(
            grad_out.contiguous(), X, W, att_src, att_dst, nbr, alpha, ctx.negative_slope, ctx.pool)
        return gX, gW, gs, gd, None, None, None

    torch.library.register_autograd("seal_fast::patch_gat", _backward, setup_context=_setup_context)
