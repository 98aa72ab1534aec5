"""The inner loop of human labeling: a few Adam steps of per-space linear classifiers.

Each outer iteration of TURTLE-style labeling fits, from a cold start, one
linear classifier per embedding space to the current soft labels with `steps`
Adam updates on the soft-target cross-entropy (mean over the batch), and then
scores the soft labels by how well those classifiers reproduce them.

First-order mode (TURTLE's): the labels enter the fit detached. Exact mode: the
result is differentiable with respect to the labels through every Adam step
(reverse mode), so the outer loss sees how the labels shaped the classifiers.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .._extension import compiled_available
from ._backend import check_one_device, pick


def _adam_step(p, g, m, v, t, lr, beta1, beta2, eps):
    """One torch.optim.Adam update (no weight decay, no amsgrad), written functionally."""
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g * g
    bias1 = 1.0 - beta1 ** t
    bias2 = 1.0 - beta2 ** t
    denom = v.sqrt() / (bias2 ** 0.5) + eps
    return p - (lr / bias1) * m / denom, m, v


def unrolled_linear_fit_reference(Zs: Sequence[torch.Tensor], targets: torch.Tensor,
                                  W0s: Sequence[torch.Tensor], b0s: Sequence[torch.Tensor],
                                  steps: int, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
    """Pure-PyTorch oracle of the unrolled fit.

    For every space k: starting from (W0s[k] (K, d_k), b0s[k] (K,)), `steps`
    Adam updates of ``CE(Zs[k] @ W.T + b, targets)`` (mean over rows; the
    gradient is computed in closed form). Returns ``(Ws, bs, logits)`` with the
    final logits ``Zs[k] @ Ws[k].T + bs[k]`` per space.

    Written without in-place updates, so autograd can differentiate the result
    with respect to `targets` through every step (the exact hypergradient).
    """
    beta1, beta2 = betas
    Ws, bs, logits_out = [], [], []
    t_sum = targets.sum(1, keepdim=True)
    for Z, W, b in zip(Zs, W0s, b0s):
        n = Z.shape[0]
        mW, vW = torch.zeros_like(W), torch.zeros_like(W)
        mb, vb = torch.zeros_like(b), torch.zeros_like(b)
        for t in range(1, steps + 1):
            logits = Z @ W.T + b
            G = (torch.softmax(logits, dim=1) * t_sum - targets) / n  # d mean-CE / d logits
            gW, gb = G.T @ Z, G.sum(0)
            W, mW, vW = _adam_step(W, gW, mW, vW, t, lr, beta1, beta2, eps)
            b, mb, vb = _adam_step(b, gb, mb, vb, t, lr, beta1, beta2, eps)
        Ws.append(W)
        bs.append(b)
        logits_out.append(Z @ W.T + b)
    return Ws, bs, logits_out


def _check(Zs, targets, W0s, b0s, steps):
    if not isinstance(Zs, (list, tuple)) or not Zs:
        raise ValueError("Zs must be a non-empty list of (B, d_k) tensors")
    if not (len(Zs) == len(W0s) == len(b0s)):
        raise ValueError("Zs, W0s and b0s need one entry per space")
    if targets.dim() != 2:
        raise ValueError(f"targets must be (B, K), got {tuple(targets.shape)}")
    B, K = targets.shape
    for i, (Z, W, b) in enumerate(zip(Zs, W0s, b0s)):
        if Z.dim() != 2 or Z.shape[0] != B:
            raise ValueError(f"Zs[{i}] must be (B={B}, d), got {tuple(Z.shape)}")
        if tuple(W.shape) != (K, Z.shape[1]) or tuple(b.shape) != (K,):
            raise ValueError(f"W0s[{i}]/b0s[{i}] must be ({K}, {Z.shape[1]})/({K},), "
                             f"got {tuple(W.shape)}/{tuple(b.shape)}")
        if W.dtype != targets.dtype or b.dtype != targets.dtype:
            # the weights are fitted in the targets' dtype and returned in it
            raise ValueError(f"W0s[{i}]/b0s[{i}] must have the targets' dtype {targets.dtype}, "
                             f"got {W.dtype}/{b.dtype}")
        check_one_device("unrolled_linear_fit", targets=targets, **{f"Zs[{i}]": Z, f"W0s[{i}]": W, f"b0s[{i}]": b})
    if steps < 0:
        raise ValueError("steps must be >= 0")


def unrolled_linear_fit(Zs, targets, W0s, b0s, steps: int, lr: float, betas=(0.9, 0.999),
                        eps: float = 1e-8, *, exact: bool = False, backend: str = "auto"):
    r"""Fit per-space linear classifiers to soft targets with `steps` Adam updates.

    Args:
        Zs: list of (B, d_k) feature batches, one per space.
        targets: (B, K) soft targets.
        W0s, b0s: initial weights (K, d_k) and biases (K,) per space.
        steps, lr, betas, eps: Adam settings.
        exact: keep the result differentiable with respect to `targets`
            through the unrolled steps; otherwise `targets` is detached
            (first-order hypergradient, as TURTLE).
        backend: ``"auto"``, ``"compiled"`` or ``"reference"``.

    Returns:
        ``(Ws, bs, logits)``: final weights, biases and logits per space.

    Example:
        >>> Z = torch.randn(100, 8); t = torch.softmax(torch.randn(100, 3), 1)
        >>> Ws, bs, logits = unrolled_linear_fit([Z], t, [torch.zeros(3, 8)], [torch.zeros(3)], 10, 1e-3)
    """
    Zs, W0s, b0s = list(Zs), list(W0s), list(b0s)
    _check(Zs, targets, W0s, b0s, steps)
    if not exact:
        targets = targets.detach()
    if pick(backend, targets):
        Ws, bs, logits = torch.ops.seal_fast.unrolled_linear_fit(
            Zs, targets, W0s, b0s, int(steps), float(lr), float(betas[0]), float(betas[1]), float(eps))
        return list(Ws), list(bs), list(logits)
    with torch.set_grad_enabled(exact and torch.is_grad_enabled()):
        return unrolled_linear_fit_reference(Zs, targets, W0s, b0s, steps, lr, betas, eps)


if compiled_available():

    @torch.library.register_fake("seal_fast::unrolled_linear_fit")
    def _(Zs, targets, W0s, b0s, steps, lr, beta1, beta2, eps):
        torch._check(targets.dim() == 2, lambda: "targets must be (B, K)")
        return ([torch.empty_like(W) for W in W0s], [torch.empty_like(b) for b in b0s],
                [targets.new_empty(targets.shape) for _ in Zs])

    @torch.library.register_fake("seal_fast::unrolled_linear_fit_backward")
    def _(grad_Ws, grad_bs, grad_logits, Zs, targets, W0s, b0s, steps, lr, beta1, beta2, eps):
        return torch.empty_like(targets)

    def _setup_context(ctx, inputs, output):
        Zs, targets, W0s, b0s, steps, lr, beta1, beta2, eps = inputs
        if any(t.requires_grad for t in [*Zs, *W0s, *b0s]):
            raise RuntimeError("unrolled_linear_fit is differentiable with respect to `targets` only")
        ctx.save_for_backward(targets, *Zs, *W0s, *b0s)
        ctx.n_spaces = len(Zs)
        ctx.hyper = (steps, lr, beta1, beta2, eps)

    def _backward(ctx, grad_Ws, grad_bs, grad_logits):
        targets, *rest = ctx.saved_tensors
        n = ctx.n_spaces
        Zs, W0s, b0s = rest[:n], rest[n:2 * n], rest[2 * n:]
        # outputs the outer loss did not use arrive as None
        grad_Ws = [torch.zeros_like(W) if g is None else g for g, W in zip(grad_Ws, W0s)]
        grad_bs = [torch.zeros_like(b) if g is None else g for g, b in zip(grad_bs, b0s)]
        grad_logits = [torch.zeros_like(targets) if g is None else g for g in grad_logits]
        grad_targets = torch.ops.seal_fast.unrolled_linear_fit_backward(
            grad_Ws, grad_bs, grad_logits, list(Zs), targets, list(W0s), list(b0s), *ctx.hyper)
        none = [None] * n
        return none, grad_targets, none, none, None, None, None, None, None

    torch.library.register_autograd("seal_fast::unrolled_linear_fit", _backward, setup_context=_setup_context)
