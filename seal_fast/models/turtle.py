"""TURTLE: human labeling directly on the foundation-model embeddings."""
from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

import numpy as np
import torch

from ..labeling import TaskEncoder, human_labeling
from ..ops import BACKENDS
from ..validation import CLUSTERS_HELP, Clusters, Flag, OneOf, Real, Whole
from .base import param
from .registry import register
from .stages import LabelingSettings
from .tensors import to_tensors


@register
@dataclass(eq=False, repr=False)
class TURTLE(LabelingSettings):
    """TURTLE (Gadetsky et al., 2024) on one or several embedding spaces.

    Parameters
    ----------
    n_clusters : int, "auto", "auto:KMIN-KMAX" or range
        K; "auto" chooses it in 2..~sqrt(N) (choose_k), a range within it.
    iterations : int, default 6000
        Outer iterations T (at most, with the stopping rule).
    stop_tol, stop_window, stop_patience : float, int, int, default 0.02, 100, 3
        Label-free stopping: every `stop_window` iterations the labels of a fixed
        probe subset of 5,000 rows are compared with the last window's (the first
        window's with the start's); the search
        stops once at most a `stop_tol` share changed in `stop_patience` windows in
        a row. 0 runs all `iterations` (TURTLE's fixed T); the default's measurement
        against the fixed T is in docs/results.md, "Stopping rule". `n_iter_` says
        how many ran.
    inner_steps : int, default 10
        Adam steps M of the inner linear classifiers (cold start each iteration).
    gamma : float, default 10
        Weight of the entropy of the batch-mean labeling.
    labeling_batch_size : int, default 10000 (capped at N)
    inner_lr, outer_lr : float, default 1e-3
    seed : int
    device : "auto", "cpu", "cuda", ...
    exact : bool, default False
        Differentiate the outer loss through the M inner Adam steps (exact
        hypergradient) instead of TURTLE's first-order approximation.
    backend : "auto" (compiled ops when built), "compiled" or "reference"

    Attributes
    ----------
    n_clusters_ : the K fitted (chosen with "auto"); k_scores_ : {K: score} of the search, or None
    labels_ : (N,) int64
    encoder_ : the fitted TaskEncoder
    n_iter_ : outer iterations run
    labeling_trace_ : per window (iterations, share of probe labels changed, mean objective)
    fit_seconds_, seconds_per_iteration_

    Examples
    --------
    >>> model = TURTLE(10, iterations=2000).fit([Z1, Z2])   # doctest: +SKIP
    >>> model.predict([Z1_test, Z2_test])                   # doctest: +SKIP
    """

    method = "turtle"
    renamed = {"batch_size": "labeling_batch_size"}

    n_clusters: int | str | range = param(check=Clusters(), help=CLUSTERS_HELP)
    _: KW_ONLY
    inner_steps: int = param(10, check=Whole(), help="Adam steps M of the inner linear classifiers")
    gamma: float = param(10.0, check=Real(0.0), help="weight of the batch-mean labeling's entropy")
    inner_lr: float = param(1e-3, check=Real(0.0, above=True), help="learning rate of the inner classifiers")
    outer_lr: float = param(1e-3, check=Real(0.0, above=True), help="learning rate of the task encoder")
    exact: bool = param(False, check=Flag(), help="differentiate through the inner steps (TURTLE: first-order)")
    backend: str = param("auto", check=OneOf(BACKENDS),
                         help="compiled ops (auto: when built) or the pure-PyTorch reference")

    def _labeling_extra(self) -> dict:
        return {"inner_steps": self.inner_steps, "gamma": self.gamma, "inner_lr": self.inner_lr,
                "outer_lr": self.outer_lr, "exact": self.exact}

    def fit(self, Zs, y=None):
        Zs = self._check_fit_input(Zs)
        k = self._choose_n_clusters(Zs)
        device = self.resolved_device()
        X = to_tensors(Zs, device)
        result = human_labeling(X, k, self._labeling_config(), seed=self.seed, backend=self.backend,
                                progress=self.verbose, desc="TURTLE")
        self.encoder_ = result.encoder
        self.feature_dims_ = [Z.shape[1] for Z in Zs]
        self.labels_ = self.encoder_.predict(X).cpu().numpy().astype(np.int64)
        self.n_iter_ = result.iterations
        self.labeling_trace_ = result.trace
        self.fit_seconds_ = result.seconds
        self.seconds_per_iteration_ = result.seconds_per_iteration
        self.final_pred_error_ = result.pred_error
        self.final_entropy_ = result.entropy
        self.fit_details_ = {"labeling_iterations": result.iterations, "labeling_stopped_early": result.stopped_early,
                             "labeling_s": round(result.seconds, 3), "labeling_trace": result.trace}
        return self

    def predict_proba(self, Zs) -> np.ndarray:
        Zs = self._check_predict_input(Zs)
        device = self.resolved_device()
        enc = self.encoder_.to(device)
        return enc.predict_proba(to_tensors(Zs, device)).cpu().numpy()

    def predict(self, Zs) -> np.ndarray:
        Zs = self._check_predict_input(Zs)
        device = self.resolved_device()
        return self.encoder_.to(device).predict(to_tensors(Zs, device)).cpu().numpy().astype(np.int64)

    def _state(self):
        return {**super()._state(), "encoder": {k: v.cpu() for k, v in self.encoder_.state_dict().items()},
                "labels_": torch.from_numpy(self.labels_)}

    def _set_state(self, state):
        super()._set_state(state)
        enc = TaskEncoder(self.feature_dims_, self.n_clusters_)
        enc.load_state_dict(state["encoder"])
        self.encoder_ = enc
        self.labels_ = state["labels_"].numpy()
