"""Soft-target cross-entropy with its log-softmax, one row per sample.

Used by the human-labeling stage: the outer loss is the cross-entropy of the
fitted classifiers' logits against the task encoder's soft labels, and it must
be differentiable with respect to those labels.
"""
from __future__ import annotations

import torch

from .._extension import compiled_available
from ._backend import check_one_device, pick


def soft_cross_entropy_reference(logits: torch.Tensor, target: torch.Tensor):
    """Pure-PyTorch oracle: returns (loss (B,), log_probs (B, K))."""
    log_probs = torch.log_softmax(logits, dim=1)
    return -(target * log_probs).sum(dim=1), log_probs


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, *, backend: str = "auto"):
    r"""Per-row soft-target cross-entropy.

    ``loss[b] = -sum_k target[b, k] * log_softmax(logits)[b, k]``

    Args:
        logits: (B, K) floating tensor.
        target: (B, K) tensor of the same dtype, rows usually on the simplex
            (not required: the gradient is exact for any target).
        backend: ``"auto"``, ``"compiled"`` or ``"reference"``.

    Returns:
        ``(loss, log_probs)`` of shapes (B,) and (B, K). Differentiable with
        respect to both ``logits`` and ``target``.

    Example:
        >>> z = torch.randn(4, 3); t = torch.softmax(torch.randn(4, 3), 1)
        >>> loss, logp = soft_cross_entropy(z, t)
        >>> loss.shape
        torch.Size([4])
    """
    if logits.dim() != 2 or logits.shape != target.shape:
        raise ValueError(f"logits and target must both be (B, K); got {tuple(logits.shape)} and {tuple(target.shape)}")
    if logits.dtype != target.dtype:
        raise ValueError(f"logits and target dtypes differ: {logits.dtype} vs {target.dtype}")
    check_one_device("soft_cross_entropy", logits=logits, target=target)
    if pick(backend, logits, target):
        return torch.ops.seal_fast.soft_cross_entropy(logits, target)
    return soft_cross_entropy_reference(logits, target)


if compiled_available():

    @torch.library.register_fake("seal_fast::soft_cross_entropy")
    def _(logits, target):
        torch._check(logits.dim() == 2, lambda: "logits must be (B, K)")
        torch._check(logits.shape == target.shape, lambda: "target must match logits")
        return logits.new_empty(logits.shape[0]), torch.empty_like(logits)

    @torch.library.register_fake("seal_fast::soft_cross_entropy_backward")
    def _(grad_loss, log_probs, target):
        return torch.empty_like(log_probs), torch.empty_like(log_probs)

    def _setup_context(ctx, inputs, output):
        _, target = inputs
        _, log_probs = output
        ctx.save_for_backward(log_probs, target)

    def _backward(ctx, grad_loss, grad_log_probs):
        log_probs, target = ctx.saved_tensors
        if grad_loss is None:
            grad_loss = log_probs.new_zeros(log_probs.shape[0])
        grad_logits, grad_target = torch.ops.seal_fast.soft_cross_entropy_backward(
            grad_loss.contiguous(), log_probs, target)
        if grad_log_probs is not None:
            # log_softmax's own backward: g - softmax * sum(g)
            grad_logits = grad_logits + grad_log_probs - log_probs.exp() * grad_log_probs.sum(1, keepdim=True)
        return grad_logits, grad_target

    torch.library.register_autograd(
        "seal_fast::soft_cross_entropy", _backward, setup_context=_setup_context)
