"""K-Means in torch (k-means++ seeding, Lloyd iterations, several restarts), as functions.

The `KMeans` estimator (models/kmeans.py) and the text stage call these.

Runs on the chosen device with every distance computed as a GEMM over row
blocks, so it stays O(N * K) in memory. The TURTLE baseline convention is kept
by `prepare_spaces`: each space is L2-normalised, then the spaces are
concatenated.
"""
from __future__ import annotations

import math

import torch

from .rows import ROW_BLOCK


def unit_rows(Z: torch.Tensor) -> torch.Tensor:
    """Rows of unit L2 norm (zero rows stay zero), whatever their magnitude. F.normalize
    squares the values, which overflows in float32 for rows of 1e20 (every row becomes
    0) and underflows for rows of 1e-40; those rows are divided by their largest |value|
    first. Rows of ordinary magnitude are F.normalize's, bit for bit."""
    out = torch.nn.functional.normalize(Z, dim=1)
    norm = torch.linalg.vector_norm(Z, dim=1)
    bad = ~torch.isfinite(norm) | (norm < 1e-12)
    if bool(bad.any()):
        rows = Z[bad]
        peak = rows.abs().amax(dim=1, keepdim=True)
        out[bad] = torch.nn.functional.normalize(rows / torch.where(peak > 0, peak, torch.ones_like(peak)), dim=1)
    return out


def prepare_spaces(Zs) -> torch.Tensor:
    """L2-normalise each space (list of (N, d_k) tensors) and concatenate them
    (TURTLE's K-Means baseline)."""
    return torch.cat([unit_rows(Z) for Z in Zs], dim=1)


def _sq_dists(X: torch.Tensor, x_sq: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    return (x_sq[:, None] - 2.0 * (X @ C.T) + (C * C).sum(1)[None, :]).clamp_min_(0.0)


def assign(X: torch.Tensor, C: torch.Tensor, block: int = ROW_BLOCK):
    """Nearest centre and its squared distance for every row, in row blocks."""
    labels = torch.empty(X.shape[0], dtype=torch.long, device=X.device)
    dist = torch.empty(X.shape[0], dtype=X.dtype, device=X.device)
    c_sq = (C * C).sum(1)
    for s in range(0, X.shape[0], block):
        xb = X[s:s + block]
        d = ((xb * xb).sum(1)[:, None] - 2.0 * (xb @ C.T) + c_sq[None, :]).clamp_min_(0.0)
        dist[s:s + block], labels[s:s + block] = d.min(dim=1)
    return labels, dist


def kmeans_plusplus(X: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ seeding (2 + log k candidates per step, as scikit-learn)."""
    n = X.shape[0]
    x_sq = (X * X).sum(1)
    n_trials = 2 + int(math.log(k))
    first = torch.randint(n, (1,), generator=generator, device=X.device)
    centers = [X[first]]
    closest = _sq_dists(X, x_sq, centers[0]).squeeze(1)
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # fewer distinct points than k: pick any
            cand = torch.randint(n, (n_trials,), generator=generator, device=X.device)
        else:
            cand = torch.multinomial(closest / total, n_trials, replacement=True, generator=generator)
        d_cand = _sq_dists(X, x_sq, X[cand])  # (n, trials)
        new_closest = torch.minimum(closest[:, None], d_cand)
        best = new_closest.sum(0).argmin()
        closest = new_closest[:, best]
        centers.append(X[cand[best]][None])
    return torch.cat(centers)


def lloyd(X: torch.Tensor, centers: torch.Tensor, max_iter: int, tol: float, generator: torch.Generator):
    """Lloyd iterations until the centres move less than `tol` (relative to the data's variance)."""
    k = centers.shape[0]
    scale = X.var(dim=0).mean() * tol
    labels = None
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        labels, dist = assign(X, centers)
        sums = torch.zeros_like(centers).index_add_(0, labels, X)
        counts = torch.bincount(labels, minlength=k).to(X.dtype)
        empty = counts == 0
        if empty.any():  # re-seed empty clusters with the points farthest from their centres
            far = torch.topk(dist, int(empty.sum())).indices
            sums[empty] = X[far]
            counts[empty] = 1.0
        new = sums / counts[:, None]
        shift = ((new - centers) ** 2).sum()
        centers = new
        if shift <= scale:
            break
    labels, dist = assign(X, centers)
    return centers, labels, float(dist.sum()), n_iter


def kmeans(X: torch.Tensor, k: int, *, n_init: int = 10, max_iter: int = 300, tol: float = 1e-4,
           seed: int = 0):
    """Best of `n_init` runs by inertia. Returns (centers, labels, inertia, n_iter)."""
    generator = torch.Generator(device=X.device)
    generator.manual_seed(seed)
    best = None
    for _ in range(n_init):
        c0 = kmeans_plusplus(X, k, generator)
        result = lloyd(X, c0, max_iter, tol, generator)
        if best is None or result[2] < best[2]:
            best = result
    return best
