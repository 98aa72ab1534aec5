"""Checks of user input at the pipeline's edges, with messages that name the problem."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .errors import SealFastError, SealFastTypeError


def as_feature_matrix(Z, name: str = "features", *, finite: bool = True) -> np.ndarray | torch.Tensor:
    """Check one embedding space: a dense 2-D array of real numbers, non-empty, and
    (unless `finite=False`: the caller scans the values later) finite. Floating-point arrays are returned unchanged (memory maps stay memory
    maps, scanned in chunks; tensors stay on their device); integer and numeric
    object arrays are converted to float32."""
    if _is_sparse(Z):
        raise SealFastError(f"{name}: sparse input is not supported; pass a dense array")
    if not isinstance(Z, (np.ndarray, torch.Tensor)):
        Z = np.asarray(Z)
    if Z.ndim == 1:
        raise SealFastError(f"{name}: expected a 2-D array (N, d), got shape {tuple(Z.shape)}. Reshape your data "
                            "with .reshape(-1, 1) if it is one feature or .reshape(1, -1) if it is one sample")
    if Z.ndim != 2:
        raise SealFastError(f"{name}: expected a 2-D array (N, d), got shape {tuple(Z.shape)}")
    n, d = Z.shape
    if n == 0 or d == 0:
        raise SealFastError(f"{name}: {n} sample(s) and {d} feature(s) (shape={tuple(Z.shape)}) while a minimum "
                            "of 1 is required.")
    if isinstance(Z, torch.Tensor):
        if Z.is_complex():
            raise SealFastError(f"{name}: Complex data not supported")
        if not Z.is_floating_point():
            Z = Z.float()
    elif np.issubdtype(Z.dtype, np.complexfloating):
        raise SealFastError(f"{name}: Complex data not supported")
    elif not np.issubdtype(Z.dtype, np.floating):
        if not (np.issubdtype(Z.dtype, np.integer) or np.issubdtype(Z.dtype, np.bool_) or Z.dtype == object):
            raise SealFastError(f"{name}: expected numbers, got dtype {Z.dtype}")
        try:
            Z = Z.astype(np.float32)
        except (TypeError, ValueError) as exc:
            raise SealFastTypeError(f"{name}: expected numbers ({exc})") from None
    if finite:
        check_finite(Z, name)
    return Z


def _is_sparse(Z) -> bool:
    if isinstance(Z, torch.Tensor):
        return Z.layout != torch.strided
    try:
        import scipy.sparse
    except ImportError:  # pragma: no cover - scipy is a dependency
        return False
    return scipy.sparse.issparse(Z)


FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_finite(Z, name: str) -> None:
    """Raise naming the first row that holds NaN or inf, or (in a wider float type)
    a value float32 cannot hold: every fit computes in float32."""
    wide = Z.dtype in (torch.float64,) if isinstance(Z, torch.Tensor) else Z.dtype.itemsize > 4
    step = max(1, (1 << 24) // max(1, int(np.prod(Z.shape[1:]))))
    for start in range(0, Z.shape[0], step):
        block = Z[start:start + step]
        if isinstance(block, torch.Tensor):
            flat = block.reshape(block.shape[0], -1)
            bad = ~torch.isfinite(flat).all(dim=1)
            big = (flat.abs() > FLOAT32_MAX).any(dim=1) & ~bad if wide else None
            rows = torch.nonzero(bad).flatten().tolist()
            big_rows = torch.nonzero(big).flatten().tolist() if wide else []
        else:
            flat = np.asarray(block).reshape(block.shape[0], -1)
            bad = ~np.isfinite(flat).all(axis=1)
            rows = np.flatnonzero(bad).tolist()
            big_rows = np.flatnonzero((np.abs(flat) > FLOAT32_MAX).any(axis=1) & ~bad).tolist() if wide else []
        if rows:
            raise SealFastError(f"{name}: row {start + rows[0]} contains NaN or inf")
        if big_rows:
            raise SealFastError(f"{name}: row {start + big_rows[0]} holds a value beyond float32's range "
                                f"(+-{FLOAT32_MAX:.3g}), which the fit computes in; rescale the features")


# The typical row norm a method that is not scale-invariant accepts: outside it,
# logits saturate (or vanish) in float32 and every row gets the same label.
SCALE_RANGE = (1e-6, 1e6)


def _row_norms(rows) -> np.ndarray:
    """L2 norm of every row, in float32 (which holds any float16/float32 row's norm;
    float64 input stays float64), a block of rows at a time so that the temporary
    stays small even for patch rows (~30k values each)."""
    block = max(1, (1 << 22) // max(1, int(np.prod(rows.shape[1:]))))
    norms = np.zeros(rows.shape[0])
    for s in range(0, rows.shape[0], block):
        part = rows[s:s + block]
        if isinstance(part, torch.Tensor):
            part = part.detach().to("cpu", torch.float64 if part.dtype == torch.float64 else torch.float32)
            norms[s:s + block] = part.reshape(part.shape[0], -1).norm(dim=1).double().numpy()
        else:
            part = np.asarray(part, np.float64 if np.dtype(part.dtype).itemsize > 4 else np.float32)
            norms[s:s + block] = np.linalg.norm(part.reshape(part.shape[0], -1), axis=1)
    return norms


def check_scale(Z, name: str, sample: int = 4096) -> None:
    """The median L2 norm of the non-zero rows (over an even sample of rows) lies in SCALE_RANGE."""
    step = max(1, Z.shape[0] // sample)
    norms = _row_norms(Z[::step][:sample])
    norms = norms[norms > 0]  # zero rows have no scale to judge (and a model's trial rows are zeros)
    if norms.size == 0:
        return
    norm = float(np.median(norms))
    low, high = SCALE_RANGE
    if not low <= norm <= high:
        raise SealFastError(f"{name}: the typical row norm is {norm:.3g}, outside [{low:g}, {high:g}] where this "
                            "method's float32 arithmetic works; rescale the features (e.g. divide by their "
                            "mean row norm), or use K-Means, which normalises every row")


def as_spaces(Zs, name: str = "spaces") -> list:
    """One array or a list of arrays (one per embedding space), all with the same N.
    A list whose items are not arrays (e.g. a list of rows) is one 2-D array."""
    if Zs is None:
        raise SealFastError(f"{name}: expected an array (N, d) or a list of such arrays, one per space; got None")
    if _is_sparse(Zs):
        raise SealFastError(f"{name}: sparse input is not supported; pass a dense array")
    if isinstance(Zs, (np.ndarray, torch.Tensor)):
        Zs = [Zs]
    elif isinstance(Zs, (list, tuple)) and Zs and all(isinstance(Z, (np.ndarray, torch.Tensor)) for Z in Zs):
        Zs = list(Zs)
    else:
        try:
            Zs = [np.asarray(Zs)]
        except (ValueError, TypeError) as exc:
            raise SealFastError(f"{name}: not a numeric array ({exc})") from None
    out = [as_feature_matrix(Z, f"{name}[{i}]" if len(Zs) > 1 else name) for i, Z in enumerate(Zs)]
    ns = [Z.shape[0] for Z in out]
    if len(set(ns)) != 1:
        raise SealFastError(f"{name}: spaces have different numbers of rows {ns}")
    return out


def check_n_clusters(k, n: int | None = None) -> int:
    """A whole number of clusters in [1, N] (N unknown yet: just >= 1)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise SealFastError(f"n_clusters must be an integer, got {k!r}")
    k = int(k)
    if k < 1:
        raise SealFastError(f"n_clusters must be at least 1, got {k}")
    if n is not None and k > n:
        raise SealFastError(f"n_clusters={k} exceeds the number of samples N={n}")
    return k


def check_int(value, name: str, low: int = 1, high: int | None = None) -> int:
    """A whole number in [low, high] (bools are not numbers here)."""
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low
            or (high is not None and value > high)):
        bounds = f">= {low}" if high is None else f">= {low} (at most {high:,})" if high == MAX_COUNT else \
            f"in [{low}, {high}]"
        raise SealFastError(f"{name} must be an integer {bounds}, got {value!r}")
    return int(value)


def check_positive_int(value, name: str) -> int:
    """A whole number >= 1."""
    return check_int(value, name, 1)


def check_float(value, name: str, low: float | None = None, *, above: bool = False) -> float:
    """A finite real number, >= low (or > low with above=True)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or (low is not None and (value <= low if above else value < low)):
        bound = "" if low is None else f" {'>' if above else '>='} {low}"
        raise SealFastError(f"{name} must be a finite number{bound}, got {value!r}")
    return float(value)


def check_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise SealFastError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_neighbors(n_neighbors, n: int) -> int:
    """Cross-modal neighbours per sample: a whole number >= 1; a collection of N
    samples has only N-1 others, so more than that means all of them."""
    return min(check_positive_int(n_neighbors, "n_neighbors"), n - 1)


def check_same_dims(Zs: Sequence, dims: Sequence[int], estimator: str) -> None:
    for i, (Z, d) in enumerate(zip(Zs, dims)):
        if Z.shape[1] != d:
            what = "X" if len(dims) == 1 else f"space {i}"
            raise SealFastError(f"{what} has {Z.shape[1]} features, but {estimator} is expecting {d} features as "
                                "input (the fitted dimension)")


UNLABELLED = -1  # in true labels: a row without a class, left out of the scores


def check_labels(y, n: int | None = None, name: str = "labels", allow_unlabelled: bool = False) -> np.ndarray:
    """1-D integer labels >= 0 as int64 (integer-valued floats within int64's range are
    accepted); with allow_unlabelled, -1 marks a row without a label."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise SealFastError(f"{name}: expected a 1-D array, got shape {y.shape}")
    if y.size == 0:
        raise SealFastError(f"{name}: empty")
    if np.issubdtype(y.dtype, np.unsignedinteger) and y.size and int(y.max()) > np.iinfo(np.int64).max:
        raise SealFastError(f"{name}: values beyond the int64 range")
    if not np.issubdtype(y.dtype, np.integer):
        whole = np.issubdtype(y.dtype, np.floating) and bool(np.all(np.isfinite(y))) and bool(np.all(y == np.round(y)))
        # 2**63 itself is not an int64: compare against it, not against int64's max (rounded up in float)
        if not whole or float(np.max(np.abs(y))) >= 2.0 ** 63:
            raise SealFastError(f"{name}: expected integer labels, got {y.dtype} values that are not whole numbers "
                                "within the int64 range")
    y = y.astype(np.int64, copy=False)
    low = UNLABELLED if allow_unlabelled else 0
    if int(y.min()) < low:
        what = "-1 (unlabelled) is the only negative value allowed" if allow_unlabelled else "must be >= 0"
        raise SealFastError(f"{name}: found {int(y.min())}; labels {what}")
    if n is not None and y.shape[0] != n:
        raise SealFastError(f"{name}: {y.shape[0]} labels for {n} samples")
    if allow_unlabelled and int(y.max()) < 0:
        raise SealFastError(f"{name}: every row is unlabelled (-1); leave the labels out instead")
    return y


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


def check_choice(value, choices, name: str):
    """One of a fixed set of strings."""
    if value not in choices:
        raise SealFastError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


# --- what a parameter may hold: declared beside the estimator's field (models/base.py: param) ---
MAX_COUNT = 10**9  # iterations, epochs, batch sizes...: more than this is a typo, not a plan


class Whole:
    """A whole number in [low, high]."""
    type = int

    def __init__(self, low: int = 1, high: int | None = MAX_COUNT):
        self.low, self.high = low, high

    def __call__(self, value, name: str):
        return check_int(value, name, self.low, self.high)


class Real:
    """A finite real number, >= low (> low with above=True)."""
    type = float

    def __init__(self, low: float | None = None, above: bool = False):
        self.low, self.above = low, above

    def __call__(self, value, name: str):
        return check_float(value, name, self.low, above=self.above)


class Flag:
    type = bool

    def __call__(self, value, name: str):
        return check_bool(value, name)


class OneOf:
    """One of a fixed set of strings (the command line offers them as its choices)."""
    type = str

    def __init__(self, values):
        self.values = tuple(values)

    def __call__(self, value, name: str):
        return check_choice(value, self.values, name)


CLUSTERS_HELP = ("K, the number of clusters: a whole number, or 'auto' / 'auto:KMIN-KMAX' to choose it "
                 "(the largest eigengap of the kNN graph)")


class Clusters:
    """n_clusters: a whole number, or "auto" / "auto:KMIN-KMAX" / a range (choose_k)."""
    type = str

    def __call__(self, value, name: str):
        from .choose_k import parse_n_clusters

        return parse_n_clusters(value)


class Device:
    type = str

    def __call__(self, value, name: str):
        return resolve_device(value)
