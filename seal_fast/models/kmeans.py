"""K-Means baseline on one or several embedding spaces."""
from __future__ import annotations

import time
from dataclasses import KW_ONLY, dataclass

import numpy as np
import torch

from ..errors import SealFastError
from ..kmeans_algorithm import assign, kmeans, prepare_spaces
from ..validation import CLUSTERS_HELP, Clusters, Real, Whole
from .base import ClusterEstimator, param
from .registry import register
from .tensors import to_tensors


@register
@dataclass(eq=False, repr=False)
class KMeans(ClusterEstimator):
    """K-Means on L2-normalised, concatenated spaces (TURTLE's baseline convention).

    Parameters
    ----------
    n_clusters : int, "auto", "auto:KMIN-KMAX" or range
        K; "auto" chooses it in 2..~sqrt(N) (choose_k), a range within it.
    n_init : int, default 10
        Restarts (k-means++ seeding each); the lowest inertia wins.
    max_iter, tol : Lloyd iteration limits.
    seed : int
    device : "auto", "cpu", "cuda", ...

    Attributes
    ----------
    n_clusters_ : the K fitted (chosen with "auto"); k_scores_ : {K: score} of the search, or None
    labels_ : (N,) int64
    cluster_centers_ : (K, sum d_k) float32, in the normalised concatenated space
    inertia_, n_iter_, fit_seconds_

    Examples
    --------
    >>> km = KMeans(3, seed=0).fit(Z)        # doctest: +SKIP
    >>> km.labels_[:5]                        # doctest: +SKIP
    """

    method = "kmeans"
    scale_invariant = True  # every row is normalised (safely, kmeans_algorithm.unit_rows) before anything else

    n_clusters: int | str | range = param(check=Clusters(), help=CLUSTERS_HELP)
    _: KW_ONLY
    n_init: int = param(10, check=Whole(), help="restarts (k-means++ seeding each); the lowest inertia wins")
    max_iter: int = param(300, check=Whole(), help="Lloyd iterations per restart, at most")
    tol: float = param(1e-4, check=Real(0.0), help="stop once the centres move less than this")

    def fit(self, Zs, y=None):
        Zs = self._check_fit_input(Zs)
        k = self._choose_n_clusters(Zs)
        device = self.resolved_device()
        t0 = time.perf_counter()
        X = prepare_spaces(to_tensors(Zs, device))
        centers, labels, inertia, n_iter = kmeans(X, k, n_init=self.n_init, max_iter=self.max_iter,
                                                  tol=self.tol, seed=self.seed)
        self.feature_dims_ = [Z.shape[1] for Z in Zs]
        self.cluster_centers_ = centers.cpu()
        self.labels_ = labels.cpu().numpy().astype(np.int64)
        self.inertia_ = inertia
        self.n_iter_ = n_iter
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def predict(self, Zs) -> np.ndarray:
        Zs = self._check_predict_input(Zs)
        device = self.resolved_device()
        X = prepare_spaces(to_tensors(Zs, device))
        labels, _ = assign(X, self.cluster_centers_.to(device))
        return labels.cpu().numpy().astype(np.int64)

    def _state(self):
        return {**super()._state(), "cluster_centers_": self.cluster_centers_,
                "labels_": torch.from_numpy(self.labels_)}

    def _set_state(self, state):
        super()._set_state(state)
        centers = state["cluster_centers_"]
        expected = (self.n_clusters_, sum(self.feature_dims_))
        if not isinstance(centers, torch.Tensor) or tuple(centers.shape) != expected:
            raise SealFastError(f"cluster_centers_ has shape {tuple(getattr(centers, 'shape', ()))}, but "
                                f"n_clusters_={self.n_clusters_} and the fitted widths {self.feature_dims_} "
                                f"need {expected}")
        self.cluster_centers_ = centers
        self.labels_ = state["labels_"].numpy()
