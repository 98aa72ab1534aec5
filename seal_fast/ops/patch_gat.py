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
from ._backend import check_one_device, pick


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
    if not pool:
        return out
    return out.mean(dim=1) if M else out.sum(dim=1)  # no patches pool to zeros (not NaN), as every kernel does


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
    check_one_device("patch_gat", X=X, W=W, att_src=att_src, att_dst=att_dst, nbr=nbr)


def shared_memory_bytes(M: int, k: int, dtype: torch.dtype) -> int:
    """Shared memory the CUDA kernels need for one image's graph (csrc/cuda/patch_gat_plan.h; a test compares)."""
    element = torch.empty((), dtype=dtype).element_size()
    return element * (5 * M + 2 * M * k) + 4 * (2 * M * k + M + 1)


def fits_on_chip(M: int, k: int, dtype: torch.dtype, limit: int) -> bool:
    """Whether the CUDA kernel can hold one image's graph in a block's shared memory
    (`limit`: the bytes a block may opt in to). Larger graphs (M in the thousands,
    e.g. DINOv2 patch tokens at 518 px) take the ATen reference instead."""
    return shared_memory_bytes(M, k, dtype) <= limit


def _kernel_can_run(X: torch.Tensor, k: int) -> bool:
    if X.device.type != "cuda":
        return True
    return fits_on_chip(X.shape[1], k, X.dtype, torch.cuda.get_device_properties(X.device).shared_memory_per_block_optin)


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
        On CUDA, graphs too large for one block's shared memory run on the
        reference path under ``"auto"`` (``"compiled"`` then raises instead).

    Example:
        >>> from seal_fast.ops import patch_knn
        >>> X = torch.randn(8, 49, 64); nbr = patch_knn(X, 8)
        >>> g = patch_gat(X, torch.randn(64, 32), torch.randn(32), torch.randn(32), nbr)   # (8, 32)
    """
    _check(X, W, att_src, att_dst, nbr)
    if pick(backend, X) and (backend == "compiled" or _kernel_can_run(X, nbr.shape[2])):
        return torch.ops.seal_fast.patch_gat(X, W, att_src, att_dst, nbr, float(negative_slope), bool(pool))[0]
    return patch_gat_reference(X, W, att_src, att_dst, nbr, negative_slope, pool)


if compiled_available():

    @torch.library.register_fake("seal_fast::patch_gat")
    def _(X, W, att_src, att_dst, nbr, negative_slope, pool):
        B, M, _ = X.shape
        out = X.new_empty(B, W.shape[1]) if pool else X.new_empty(B, M, W.shape[1])
        return out, X.new_empty(B, M, nbr.shape[2])

    @torch.library.register_fake("seal_fast::patch_gat_backward")
    def _(grad_out, X, W, att_src, att_dst, nbr, alpha, negative_slope, pool):
        return torch.empty_like(X), torch.empty_like(W), torch.empty_like(att_src), torch.empty_like(att_dst)

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
