"""Choosing the number of clusters from the data: `n_clusters="auto"`.

The criterion is the eigengap of a k-nearest-neighbour graph (von Luxburg, "A tutorial
on spectral clustering", 2007, section 8.3): the cosine kNN graph of the rows, made
symmetric, has a normalised Laplacian whose eigenvalues 0 = l_1 <= l_2 <= ... stay near
0 for as many eigenvalues as the graph has weakly joined groups, then jump. The score
of a candidate K is that jump, l_{K+1} - l_K; the chosen K has the largest. It was
chosen by measurement against two chance-corrected criteria, the stability of K-Means
partitions fitted on two halves and the agreement (Cohen's kappa) of a linear classifier
with K-Means labels on held-out rows, each minus its value on Gaussian data of the same
covariance (`bench/choose_k.py`; docs/results.md, "Choosing K"): on digits (K = 10) the
eigengap chose 9, stability 3 to 13 and kappa 18 to 20; on mixtures with known K it was
the only one exact on every separable mixture. Classical indices on K-Means partitions
(silhouette, Calinski-Harabasz, Davies-Bouldin, the gap statistic, Gaussian mixtures'
BIC) were exact on the separable mixtures too, but chose 2, 4, 7 or 13 to 20 on digits.
No criterion measured found Fashion-MNIST's 10 while staying near digits' (the eigengap
chose 16, its gaps there are nearly flat; Davies-Bouldin 9, but 4 on digits): the plot
of the scores shows how clear a choice was.

It needs one neighbour search and one eigen-decomposition, whatever the range, so the
search costs a fraction of a fit; every method then fits once, at the chosen K.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import SealFastError

AUTO = "auto"
GRAPH_NEIGHBORS = 10   # 10 and 20 choose alike on digits and the mixtures (bench/choose_k.py)
MAX_ROWS = 10000       # larger inputs are subsampled (seeded): the graph's shape, not its size, decides


@dataclass(frozen=True)
class KRange:
    """An asked-for search range; None: the default for N (`default_range`)."""

    kmin: int | None = None
    kmax: int | None = None

    def __str__(self):
        return AUTO if self.kmin is None else f"{AUTO}:{self.kmin}-{self.kmax}"


def parse_n_clusters(value) -> int | KRange:
    """n_clusters as given: a whole number (a fixed K), "auto", "auto:KMIN-KMAX", or a
    Python range of consecutive K. Raises a one-line error otherwise."""
    if isinstance(value, range):
        if value.step != 1 or len(value) == 0:
            raise SealFastError(f"n_clusters={value!r}: a range of K must be non-empty with step 1, "
                                "e.g. range(2, 21)")
        return _checked_range(value.start, value[-1], repr(value))
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+", text):
            value = int(text)
        elif text == AUTO:
            return KRange()
        else:
            match = re.fullmatch(r"auto:(-?\d+)-(-?\d+)", text.replace(" ", ""))
            if not match:
                raise SealFastError(f"n_clusters={value!r}: expected a whole number, 'auto' or 'auto:KMIN-KMAX' "
                                    "(e.g. auto:2-20)")
            return _checked_range(int(match[1]), int(match[2]), repr(value))
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SealFastError(f"n_clusters must be a whole number, 'auto', 'auto:KMIN-KMAX' or a range, got {value!r}")
    if value < 1:
        raise SealFastError(f"n_clusters must be at least 1, got {value}")
    return int(value)


def _checked_range(kmin: int, kmax: int, given: str) -> KRange:
    if kmin < 2:
        raise SealFastError(f"n_clusters={given}: the smallest K to try must be at least 2, got {kmin}")
    if kmax < kmin:
        raise SealFastError(f"n_clusters={given}: the range {kmin}-{kmax} is empty or reversed (KMIN <= KMAX)")
    return KRange(kmin, kmax)


def default_range(n: int) -> tuple[int, int]:
    """2 to about sqrt(N) (at least 10, at most 100), below N."""
    return 2, min(n - 1, max(10, min(100, round(math.sqrt(n)))))


def candidate_range(spec: KRange, n: int) -> tuple[int, int]:
    """The K to try for N rows, checked: each candidate leaves the graph's eigengap defined."""
    if n < 3:
        raise SealFastError(f"n_clusters={spec}: choosing K needs at least 3 samples, got N={n}")
    kmin, kmax = default_range(n) if spec.kmin is None else (spec.kmin, spec.kmax)
    limit = min(n, MAX_ROWS) - 1
    if kmax > limit:
        raise SealFastError(f"n_clusters={spec}: KMAX={kmax} is above what {n} samples can show (at most {limit}"
                            f"{f', the rows the search uses' if n > MAX_ROWS else ''})")
    return kmin, kmax


@dataclass
class KChoice:
    """What the search found: the chosen K, every candidate's score, what it cost."""

    k: int
    scores: dict[int, float]
    eigenvalues: list[float]
    rows: int
    seconds: float
    details: dict = field(default_factory=dict)  # seconds of the two stages, pieces of the graph

    def runners_up(self, count: int = 2) -> dict[int, float]:
        """The next best candidates, each score as a fraction of the chosen K's: near 1,
        the choice was close (Fashion-MNIST's 16 has 22 at 0.91, digits' 9 has 19 at 0.83)."""
        best = self.scores[self.k]
        return {k: self.scores[k] / best if best > 0 else 1.0 for k in ranked(self.scores)[1:count + 1]}

    def report(self) -> dict:
        """The run report's entry (RESULT.json)."""
        return {"criterion": "eigengap of the normalised Laplacian of the cosine "
                             f"{GRAPH_NEIGHBORS}-NN graph",
                "chosen": self.k, "runners_up": {str(k): round(r, 3) for k, r in self.runners_up().items()},
                "scores": {str(k): round(s, 6) for k, s in self.scores.items()},
                "eigenvalues": [round(v, 6) for v in self.eigenvalues], "rows": self.rows,
                "seconds": round(self.seconds, 3), **{k: round(v, 3) for k, v in self.details.items()}}


def knn_graph_spectrum(X: torch.Tensor, n_eigenvalues: int, *, n_neighbors: int = GRAPH_NEIGHBORS,
                       seed: int = 0) -> tuple[np.ndarray, dict]:
    """The `n_eigenvalues` smallest eigenvalues of the normalised Laplacian of the
    symmetric cosine kNN graph of the rows of X (N, d), and the seconds of its two stages."""
    from .ops.cosine_topk import cosine_topk

    n = X.shape[0]
    k = min(n_neighbors, n - 1)
    t0 = time.perf_counter()
    _, index = cosine_topk(X, X, k, exclude_self=True)
    t_neighbors = time.perf_counter() - t0
    eigenvalues, n_parts = laplacian_spectrum(either_lists(index.cpu().numpy()), n_eigenvalues, seed=seed)
    return eigenvalues, {"neighbors_s": t_neighbors, "eigen_s": time.perf_counter() - t0 - t_neighbors,
                         "graph_pieces": n_parts}


def neighbour_lists(index: np.ndarray, weights: np.ndarray | None = None):
    """The directed graph (sparse, N x N) with an edge i -> j for each j that i lists
    among its neighbours (`index`: (N, k)), weighted 1 or by `weights` (N, k)."""
    import scipy.sparse as sp

    n, k = index.shape
    data = np.ones(n * k) if weights is None else weights.ravel()
    return sp.csr_matrix((data, (np.repeat(np.arange(n), k), index.ravel())), shape=(n, n))


def either_lists(index: np.ndarray):
    """The graph (sparse, N x N, weights 1) in which i ~ j when either lists the other
    among its neighbours (`index`: (N, k) neighbour lists)."""
    W = neighbour_lists(index)
    return ((W + W.T) > 0).astype(np.float64)


def laplacian_spectrum(W, n_eigenvalues: int, *, seed: int = 0) -> tuple[np.ndarray, int]:
    """The `n_eigenvalues` smallest eigenvalues of the normalised Laplacian
    I - D^-1/2 W D^-1/2 of the symmetric sparse graph W, and its number of pieces."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components
    from threadpoolctl import threadpool_limits

    d = np.asarray(W.sum(axis=1)).ravel()
    # a row with no edge (not in either_lists' graphs, in sparser ones) adds an eigenvalue 1, not a group
    scale = sp.diags(1.0 / np.sqrt(np.maximum(d, 1e-300)))
    A = (scale @ W @ scale).tocsr()  # eigenvalues of the Laplacian are 1 - those of A
    # Well separated groups are separate pieces of the graph, each adding an eigenvalue 0;
    # Lanczos (eigsh) finds one vector per repeated eigenvalue, so each piece is solved alone.
    n_parts, part = connected_components(W, directed=False)
    rng = np.random.default_rng(seed)
    values = []
    # one BLAS thread: these small products gain nothing from more, and threads that wait
    # for a busy core made the step 10x slower beside other work (threadpoolctl comes with
    # scikit-learn)
    with threadpool_limits(1):
        for p in range(n_parts):
            members = np.flatnonzero(part == p)
            values.extend(1.0 - _largest_eigenvalues(A[members][:, members], n_eigenvalues, rng))
    return np.sort(np.clip(values, 0.0, 2.0))[:n_eigenvalues], n_parts


def _largest_eigenvalues(A, count: int, rng) -> np.ndarray:
    """Up to `count` largest eigenvalues of the symmetric sparse matrix A (one connected piece)."""
    from scipy.sparse.linalg import eigsh

    m = A.shape[0]
    if m <= 500 or count >= m - 1:  # dense is quicker and exact at this size
        return np.linalg.eigvalsh(A.toarray())[::-1][:count]
    return eigsh(A, k=count, which="LA", v0=rng.standard_normal(m), tol=1e-8)[0]


def search_rows(X: torch.Tensor, seed: int, rows: int = MAX_ROWS) -> torch.Tensor:
    """The rows the search reads: all of X, or a seeded subsample of `rows` of them."""
    if X.shape[0] <= rows:
        return X
    keep = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(seed))[:rows]
    return X.index_select(0, keep.to(X.device))


def eigengap_scores(eigenvalues: np.ndarray, kmin: int, kmax: int) -> dict[int, float]:
    """Each candidate K's score: the jump l_{K+1} - l_K after its K smallest eigenvalues."""
    gaps = np.diff(eigenvalues)  # gaps[j] = l_{j+2} - l_{j+1}: the jump after j+1 eigenvalues
    return {k: float(gaps[k - 1]) for k in range(kmin, kmax + 1)}


def ranked(scores: dict[int, float]) -> list[int]:
    """The candidates from the best score down (ties: the fewer clusters first)."""
    return sorted(scores, key=lambda k: (-scores[k], k))


def choose_k(X: torch.Tensor, spec: KRange, *, seed: int = 0, progress: bool = False) -> KChoice:
    """Choose K in the range `spec` asks for on the rows of X (N, d): the largest
    eigengap of the kNN graph (module docstring). Above MAX_ROWS rows a seeded subsample
    is used."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    kmin, kmax = candidate_range(spec, X.shape[0])
    X = search_rows(X, seed)
    with tqdm(total=1, desc=f"choose K ({kmin}-{kmax})", disable=not progress) as bar:
        eigenvalues, details = knn_graph_spectrum(X, kmax + 1, seed=seed)
        bar.update()
    scores = eigengap_scores(eigenvalues, kmin, kmax)
    return KChoice(ranked(scores)[0], scores, [float(v) for v in eigenvalues], X.shape[0], time.perf_counter() - t0, details)


def plot_scores(choice: KChoice, path, title: str = "") -> None:
    """A PNG of score against K with the chosen K marked (PIL: no plotting library needed)."""
    from PIL import Image, ImageDraw

    from .files import atomic_path

    width, height, left, right, top, bottom = 640, 360, 60, 20, 30, 40
    ks = sorted(choice.scores)
    peak = max(max(choice.scores.values()), 1e-12)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)

    def xy(k, s):
        span = max(1, ks[-1] - ks[0])
        return (left + (k - ks[0]) / span * (width - left - right),
                height - bottom - s / peak * (height - top - bottom))

    draw.line([(left, top), (left, height - bottom), (width - right, height - bottom)], fill="black")
    draw.text((4, 4), title or "eigengap of the kNN graph against K", fill="black")
    draw.text((4, top), f"{peak:.3g}", fill="black")
    draw.text((4, height - bottom - 10), "0", fill="black")
    points = [xy(k, choice.scores[k]) for k in ks]
    if len(points) > 1:
        draw.line(points, fill=(40, 90, 200), width=2)
    step = max(1, len(ks) // 15)
    for k, (x, y) in zip(ks, points):
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(40, 90, 200))
        if (k - ks[0]) % step == 0:
            draw.text((x - 6, height - bottom + 6), str(k), fill="black")
    x, y = xy(choice.k, choice.scores[choice.k])
    draw.line([(x, top), (x, height - bottom)], fill=(200, 40, 40), width=1)
    draw.text((min(x + 4, width - 110), top), f"chosen K = {choice.k}", fill=(200, 40, 40))
    draw.text((width // 2 - 10, height - 16), "K", fill="black")
    with atomic_path(path, ".png") as tmp:
        canvas.save(tmp, format="PNG")
