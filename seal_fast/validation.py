"""Checks of user input at the pipeline's edges, with messages that name the problem."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .errors import SealFastError


def as_feature_matrix(Z, name: str = "features") -> np.ndarray | torch.Tensor:
    """Check one embedding space: 2-D, non-empty, finite. Returns it unchanged.

    Works on numpy arrays (memory-mapped ones included, scanned in chunks so a
    large store is never loaded twice) and on torch tensors.
    """
    if not isinstance(Z, (np.ndarray, torch.Tensor)):
        Z = np.asarray(Z)
    if Z.ndim != 2:
        raise SealFastError(f"{name}: expected a 2-D array (N, d), got shape {tuple(Z.shape)}")
    n, d = Z.shape
    if n == 0 or d == 0:
        raise SealFastError(f"{name}: empty array of shape {tuple(Z.shape)}")
    if isinstance(Z, torch.Tensor):
        if not Z.is_floating_point():
            raise SealFastError(f"{name}: expected floating-point features, got {Z.dtype}")
    elif not np.issubdtype(Z.dtype, np.floating):
        raise SealFastError(f"{name}: expected floating-point features, got {Z.dtype}")
    check_finite(Z, name)
    return Z


def check_finite(Z, name: str) -> None:
    """Raise naming the first row that holds NaN or inf."""
    step = max(1, (1 << 24) // max(1, int(np.prod(Z.shape[1:]))))
    for start in range(0, Z.shape[0], step):
        block = Z[start:start + step]
        if isinstance(block, torch.Tensor):
            bad = ~torch.isfinite(block.reshape(block.shape[0], -1)).all(dim=1)
            rows = torch.nonzero(bad).flatten().tolist()
        else:
            bad = ~np.isfinite(np.asarray(block).reshape(block.shape[0], -1)).all(axis=1)
            rows = np.flatnonzero(bad).tolist()
        if rows:
            raise SealFastError(f"{name}: row {start + rows[0]} contains NaN or inf")


def as_spaces(Zs, name: str = "spaces") -> list:
    """One array or a list of arrays (one per embedding space), all with the same N."""
    if isinstance(Zs, (np.ndarray, torch.Tensor)):
        Zs = [Zs]
    Zs = list(Zs)
    if not Zs:
        raise SealFastError(f"{name}: no embedding space given")
    out = [as_feature_matrix(Z, f"{name}[{i}]" if len(Zs) > 1 else name) for i, Z in enumerate(Zs)]
    ns = [Z.shape[0] for Z in out]
    if len(set(ns)) != 1:
        raise SealFastError(f"{name}: spaces have different numbers of rows {ns}")
    return out


def check_n_clusters(k, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise SealFastError(f"n_clusters must be an integer, got {k!r}")
    k = int(k)
    if k < 2:
        raise SealFastError(f"n_clusters must be at least 2, got {k}")
    if k > n:
        raise SealFastError(f"n_clusters={k} exceeds the number of samples N={n}")
    return k


def check_positive_int(value, name: str) -> int:
    """A whole number >= 1 (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise SealFastError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_neighbors(n_neighbors, n: int) -> int:
    """Cross-modal neighbours per sample: a whole number >= 1; a collection of N
    samples has only N-1 others, so more than that means all of them."""
    return min(check_positive_int(n_neighbors, "n_neighbors"), n - 1)


def check_same_dims(Zs: Sequence, dims: Sequence[int], what: str) -> None:
    got = [Z.shape[1] for Z in Zs]
    if list(got) != list(dims):
        raise SealFastError(f"{what}: feature dimensions {got} differ from the fitted ones {list(dims)}")


def check_labels(y, n: int | None = None, name: str = "labels") -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise SealFastError(f"{name}: expected a 1-D array, got shape {y.shape}")
    if y.size == 0:
        raise SealFastError(f"{name}: empty")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise SealFastError(f"{name}: expected integer labels, got {y.dtype}")
    if n is not None and y.shape[0] != n:
        raise SealFastError(f"{name}: {y.shape[0]} labels for {n} samples")
    return y.astype(np.int64, copy=False)


def resolve_device(device) -> torch.device:
    """`"auto"` = CUDA when available, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise SealFastError(f"unknown device {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SealFastError(f"device {device!r} requested but CUDA is not available")
    return dev


def check_restarts(restarts) -> int:
    """Distillation restarts: a whole number >= 1."""
    return check_positive_int(restarts, "restarts")
