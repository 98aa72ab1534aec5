"""SATC: spatial structure + selective text, tri-modal mutual distillation."""
from __future__ import annotations

import time
from dataclasses import KW_ONLY, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..distillation import (RESTART_CHOICES, ClusterHead, Modality, distill_with_restarts, head_from_state,
                            visual_and_spatial)
from ..errors import SealFastError
from ..rows import by_row_blocks
from ..text_counterparts import textual_compactness
from ..validation import CLUSTERS_HELP, Clusters, OneOf, Real, Whole, as_feature_matrix
from .base import param
from .registry import register
from .stages import SpatialDistillation
from .tensors import cpu_state, to_tensors


@register
@dataclass(eq=False, repr=False)
class SATC(SpatialDistillation):
    """SATC (paper Algorithm 1) on one visual space.

    Visual, spatial (frozen GAT over the patch graph, as the paper's Algorithm 1
    freezes all three feature sets) and, when its compactness tau exceeds
    `text_threshold`, textual features each get a cluster head; the heads are
    trained by mutual distillation on every pair of modalities in use
    (visual-spatial, textual-spatial, visual-textual); the answer is the argmax
    of the visual head.

    Early stopping: the paper stops when the *accuracy* stops improving, which
    needs labels. Here training stops when the training loss has not improved
    by `min_delta` for `patience` epochs, and the weights of the best-loss
    epoch are kept.

    Parameters
    ----------
    n_clusters : int, "auto", "auto:KMIN-KMAX" or range
        K; "auto" chooses it in 2..~sqrt(N) (choose_k), a range within it.
    max_epochs : int, default 5
        At most this many epochs per restart (training stops earlier when the
        loss stops improving, below). The paper trains up to 200 with
        accuracy-based stopping; here a restart's basin is set within its first
        epochs, so the default schedule is short (the measurements:
        docs/experiments.md, "SATC as shipped"; the paper's: max_epochs=200).
    patience : int, default 10
    distill_batch_size, temperature, consistency_weight, entropy_weight, level :
        Distillation (SATC: 512, 0.5, lambda1 = 1, lambda2 = 5, "instance").
        The default temperature here is 1.0, not the paper's 0.5 (measured in
        docs/experiments.md).
    n_neighbors : int, default 50
        Cross-modal neighbours per sample (the paper's 50; all N-1 others when fewer).
    restarts : int, default 5
        Distillation restarts, one of which is kept (`restart_choice`). 1 = a single run.
        Five, not SEAL's three: SATC answers with one restart's head, so it has
        only the choice between restarts to escape a weak optimum.
    restart_choice : "consensus" or "neighbors", default "consensus"
        consensus: the restart whose visual-head partition is closest, in mean
        NMI, to the other restarts'. neighbors: the restart whose partition keeps
        the most top-k visual neighbour pairs in one cluster. Both label-free.
    min_steps_per_epoch : int, default 100
        An epoch is one pass over the data or this many steps, whichever is more.
    text_threshold : float, default 0.33
    patch_neighbors, spatial_dim, seed, device, backend, verbose

    Attributes
    ----------
    n_clusters_ : the K fitted (chosen with "auto"); k_scores_ : {K: score} of the search, or None
    labels_, head_ (the visual head), text_compactness_ (tau or None),
    text_used_ (bool), restart_labels_ (every restart's visual-head partition of
    the rows restart_rows_, (R, S): all N rows up to 10,000 with the consensus
    choice, evenly spaced ones beyond; all rows with the neighbours choice), fit_details_
    """

    method = "satc"
    accepts = ("patches", "text")
    renamed = {"batch_size": "distill_batch_size", "epochs": "max_epochs"}

    n_clusters: int | str | range = param(check=Clusters(), help=CLUSTERS_HELP)
    _: KW_ONLY
    max_epochs: int = param(5, check=Whole(), help="mutual-distillation epochs per restart, at most")
    restarts: int = param(5, check=Whole(), help="distillation restarts, one of which is kept (restart_choice)")
    patience: int = param(10, check=Whole(0), help="epochs without a better training loss before stopping")
    min_delta: float = param(1e-4, check=Real(0.0), help="a loss improvement smaller than this does not count")
    consistency_weight: float = param(1.0, check=Real(0.0), help="lambda1: weight of the cross-modal terms")
    restart_choice: str = param("consensus", check=OneOf(RESTART_CHOICES),
                                help="the restart kept: the consensus one, or the one keeping the most neighbour "
                                     "pairs together")
    text_threshold: float = param(0.33, check=Real(), help="text is used when its compactness tau exceeds this")

    def _schedule(self) -> dict:
        return {"epochs": self.max_epochs, "consistency_weight": self.consistency_weight, "patience": self.patience,
                "min_delta": self.min_delta}

    def fit(self, Zs, y=None, *, patches=None, text=None):
        Zs = self._check_fit_input(Zs)
        if len(Zs) != 1:
            raise SealFastError(f"SATC uses one visual space, got {len(Zs)}; choose one (e.g. --spaces NAME)")
        n = Zs[0].shape[0]
        n_clusters, P, config = self._check_distillation_input(Zs, patches)
        device = self.resolved_device()
        generator = torch.Generator().manual_seed(self.seed)
        t0 = time.perf_counter()
        Z = to_tensors(Zs, device)[0]
        modalities = visual_and_spatial(Z, P, n_clusters, spatial_dim=self.spatial_dim,
                                        patch_neighbors=self.patch_neighbors, backend=self.backend,
                                        generator=generator, device=device)
        pairs = [(0, 1, 1.0)]
        self.text_compactness_ = None
        self.text_used_ = False
        if text is not None:
            text = as_feature_matrix(text, "text features")
            if text.shape[0] != n:
                raise SealFastError(f"text features: {text.shape[0]} rows for {n} samples")
            self.text_compactness_ = textual_compactness(text, n_clusters, seed=self.seed)
            self.text_used_ = self.text_compactness_ > self.text_threshold
            if self.text_used_:
                T = F.normalize(to_tensors([text], device)[0], dim=1)
                modalities.append(Modality("text", T, ClusterHead(T.shape[1], n_clusters,
                                                                  generator=generator).to(device)))
                pairs += [(2, 1, 1.0), (0, 2, 1.0)]  # textual-spatial, visual-textual
        t_prep = time.perf_counter() - t0
        runs = distill_with_restarts(modalities, pairs, config,
                                     n_clusters=n_clusters, restarts=self.restarts, seed=self.seed,
                                     choice=self.restart_choice, device=device, backend=self.backend,
                                     progress=self.verbose, desc="SATC distill")
        result = runs.result
        self.head_ = runs.modalities[0].head
        self.feature_dims_ = [Z.shape[1]]
        self.labels_ = runs.labels.cpu().numpy().astype(np.int64)  # the visual head's argmax
        self.restart_labels_ = torch.stack(runs.partitions).cpu().numpy().astype(np.int64)
        self.restart_rows_ = (torch.arange(Z.shape[0]) if runs.rows is None else runs.rows).numpy()
        self.fit_details_ = {
            "text_compactness": self.text_compactness_, "text_threshold": self.text_threshold,
            "text_used": self.text_used_, "modalities": [m.name for m in modalities],
            "n_neighbors": config.n_neighbors,
            "prepare_s": round(t_prep, 3), "distill_s": round(result.seconds, 3),
            "neighbor_s": round(runs.neighbor_seconds, 3), "epochs_run": len(result.losses),
            "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
            "early_stopping": f"training loss, patience {self.patience}, min_delta {self.min_delta}",
            "loss_per_epoch": [round(x, 4) for x in result.losses],
            "restarts": self.restarts, "restart_choice": self.restart_choice, "restart_kept": runs.chosen,
            "restart_scores": runs.scores, "restart_agreement_nmi": runs.agreement,
            "restart_distill_s": runs.seconds,
        }
        return self

    @torch.no_grad()
    def _visual_head(self, Zs, output) -> np.ndarray:
        """`output` of the visual head's probabilities on new rows, block by block."""
        Zs = self._check_predict_input(Zs)
        device = self.resolved_device()
        Z = to_tensors(Zs, device)[0]
        head = self.head_.to(device).eval()
        return by_row_blocks(lambda z: output(head(F.normalize(z, dim=1))), Z).cpu().numpy()

    def predict_proba(self, Zs) -> np.ndarray:
        return self._visual_head(Zs, lambda p: p)

    def predict(self, Zs) -> np.ndarray:
        """Labels of new rows from the visual head (patches and text are not needed)."""
        return self._visual_head(Zs, lambda p: p.argmax(1)).astype(np.int64)

    def _state(self):
        return {**super()._state(), "head": cpu_state(self.head_),
                "labels_": torch.from_numpy(self.labels_),
                "text_compactness_": self.text_compactness_, "text_used_": self.text_used_}

    def _set_state(self, state):
        super()._set_state(state)
        self.head_ = head_from_state(state["head"], self.feature_dims_[0], self.n_clusters_)
        self.labels_ = state["labels_"].numpy()
        self.text_compactness_ = state["text_compactness_"]
        self.text_used_ = state["text_used_"]
