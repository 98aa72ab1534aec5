"""Cross-modal InfoNCE between two modalities' cluster assignments.

level="instance" (SEAL eqs. 8-9): rows are samples; sample i of A is pulled to
row i of B and pushed from the other rows of B, and vice versa:

    L = 1/B sum_i [ -log softmax_j(cos(A_i, B_j)/T)_i  -log softmax_j(cos(B_i, A_j)/T)_i ]

level="cluster" (TAC): columns are clusters; the 2K column vectors of A and B
are contrasted NT-Xent style, column c of A with column c of B as the positive
and the other 2K - 2 columns as negatives:

    L = 1/(2K) sum_{u in 2K} -log( exp(cos(u, u+)/T) / sum_{v != u} exp(cos(u, v)/T) )
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._extension import compiled_available
from ._backend import check_one_device, pick

LEVELS = ("instance", "cluster")


def cross_modal_infonce_reference(A: torch.Tensor, B: torch.Tensor, temperature: float,
                                  level: str = "instance") -> torch.Tensor:
    """Pure-PyTorch oracle (a scalar)."""
    if level == "instance":
        An, Bn = F.normalize(A, dim=1), F.normalize(B, dim=1)
        sim = An @ Bn.T / temperature                      # (B, B)
        target = torch.arange(A.shape[0], device=A.device)
        return F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)
    if level == "cluster":
        K = A.shape[1]
        C = F.normalize(torch.cat([A.T, B.T], dim=0), dim=1)  # (2K, B)
        sim = C @ C.T / temperature
        self_mask = torch.eye(2 * K, dtype=torch.bool, device=A.device)
        sim = sim.masked_fill(self_mask, float("-inf"))
        target = torch.cat([torch.arange(K, 2 * K), torch.arange(0, K)]).to(A.device)
        return F.cross_entropy(sim, target)
    raise ValueError(f"level must be one of {LEVELS}, got {level!r}")


def cross_modal_infonce(A, B, temperature: float, level: str = "instance", *, backend: str = "auto"):
    r"""Symmetric InfoNCE between A and B (both (B, K)), at the instance or cluster level.

    Args:
        A, B: (B, K) assignments (or any features) of the same samples in two modalities.
        temperature: T > 0.
        level: ``"instance"`` (rows) or ``"cluster"`` (columns).
        backend: ``"auto"``, ``"compiled"`` or ``"reference"``.

    Returns:
        A scalar tensor, differentiable in A and B. The compiled kernels compute
        the gradients in the same pass as the loss.

    Example:
        >>> A = torch.softmax(torch.randn(512, 10), 1); B = torch.softmax(torch.randn(512, 10), 1)
        >>> loss = cross_modal_infonce(A, B, 1.0, "instance")
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    if A.dim() != 2 or A.shape != B.shape:
        raise ValueError(f"A and B must both be (B, K); got {tuple(A.shape)} and {tuple(B.shape)}")
    if A.shape[0] == 0 or A.shape[1] == 0:
        raise ValueError("A and B must not be empty")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    check_one_device("cross_modal_infonce", A=A, B=B)
    if pick(backend, A, B):
        with_grad = torch.is_grad_enabled() and (A.requires_grad or B.requires_grad)
        loss, _, _ = torch.ops.seal_fast.cross_modal_infonce(A, B, float(temperature), LEVELS.index(level),
                                                             with_grad)
        return loss
    return cross_modal_infonce_reference(A, B, temperature, level)


if compiled_available():

    @torch.library.register_fake("seal_fast::cross_modal_infonce")
    def _(A, B, temperature, level, with_grad):
        torch._check(A.dim() == 2 and A.shape == B.shape, lambda: "A and B must both be (B, K)")
        if with_grad:
            return A.new_empty(()), torch.empty_like(A), torch.empty_like(B)
        return A.new_empty(()), A.new_empty(0), B.new_empty(0)

    def _setup_context(ctx, inputs, output):
        A, B, temperature, level, with_grad = inputs
        _, grad_A, grad_B = output
        if (A.requires_grad or B.requires_grad) and not with_grad:
            raise RuntimeError("cross_modal_infonce was called with with_grad=False on inputs that need gradients")
        ctx.save_for_backward(grad_A, grad_B)

    def _backward(ctx, grad_loss, _grad_A, _grad_B):
        # the kernels return the gradient as constants: differentiating it again would be silently wrong
        if torch.is_grad_enabled():
            raise RuntimeError("cross_modal_infonce does not support double backward (create_graph=True); "
                               "use backend='reference' for higher-order gradients")
        grad_A, grad_B = ctx.saved_tensors
        return grad_loss * grad_A, grad_loss * grad_B, None, None, None

    torch.library.register_autograd("seal_fast::cross_modal_infonce", _backward, setup_context=_setup_context)
