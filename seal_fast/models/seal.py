"""SEAL: spatial embedding (patch GAT) + mutual distillation + human labeling."""
from __future__ import annotations

import time
from dataclasses import KW_ONLY, dataclass

import numpy as np
import torch

from ..distillation import distill_with_restarts, head_from_state, spatially_aware_embedding, visual_and_spatial
from ..labeling import TaskEncoder, human_labeling
from ..self_labeling import self_label
from ..validation import CLUSTERS_HELP, Clusters, Flag, OneOf, Whole
from .base import param
from .registry import register
from .stages import LabelingSettings, SpatialDistillation
from .tensors import cpu_state, to_tensors

LABEL_ON = ("phi_hat", "phi+phi_hat")
LABEL_RESTARTS = ("kept", "all")
LABELING_INITS = ("random", "consensus")


@register
@dataclass(eq=False, repr=False)
class SEAL(SpatialDistillation, LabelingSettings):
    """SEAL (spatial embedding + human labeling) on one or several embedding spaces.

    For every space: a frozen spatial encoder (one GAT layer over each image's
    patch graph, mean-pooled) gives g(x); a visual and a spatial cluster head are
    trained by mutual distillation, in several short restarts of which the
    consensus one is kept; its visual head's hidden layer is the spatially-aware
    embedding phi_hat. TURTLE's human labeling on phi_hat, started from the kept
    restart's partition, gives the clusters. docs/methods.md says where the paper
    is vague and what was chosen.

    Parameters
    ----------
    n_clusters : int, "auto", "auto:KMIN-KMAX" or range
        K; "auto" chooses it in 2..~sqrt(N) (choose_k), a range within it.
    iterations : int, default 6000
        Outer iterations of the human labeling (at most, with the stopping rule).
    stop_tol, stop_window, stop_patience :
        The labeling's label-free stopping rule (see TURTLE).
    epochs : int, default 2
        Mutual-distillation epochs per restart, all of them (SEAL has no early
        stopping; SATC's `max_epochs` is a bound). The paper trains 20; a
        restart's basin is set within its first epochs, so 6 restarts of 2 epochs
        cost less than 3 of 5 and fall into a weak optimum less often
        (docs/results.md, "SEAL's cost, accuracy and stability").
    distill_batch_size, temperature, entropy_weight, level :
        Mutual distillation (512, 1.0, 5, "instance").
    n_neighbors : int, default 50
        Cross-modal neighbours per sample (the papers' 50; all N-1 others when fewer).
    min_steps_per_epoch : int, default 100
        An epoch is one pass over the data or this many steps, whichever is
        more, so that small datasets get the training the papers' 20 epochs
        give N = 50,000 (about 2,000 steps).
    restarts : int, default 6
        Distillation restarts per space (fresh heads, same spatial features and
        neighbours). The consensus restart, whose visual-head partition agrees
        best with the others', is kept as `heads_` (its phi_hat is what
        `transform` returns); with label_restarts="all" the labeling sees every
        restart's phi_hat. 1 = the paper's single run.
    label_on : "phi_hat" or "phi+phi_hat", default "phi_hat"
        The spaces the human labeling sees: the paper's phi_hat alone, or phi_hat
        and the input embedding phi side by side (TURTLE's multi-space labeling).
    label_restarts : "kept" or "all", default "kept"
        phi_hat of every restart (one labeling space each, so the labeling seeks
        the partition that phi and all restarts' embeddings support) or of the
        kept restart only. Labeling cost grows with the number of spaces (one per
        input space by default; restarts + 1 with "all" and label_on="phi+phi_hat").
    labeling_init : "consensus" or "random", default "consensus"
        The labeling starts from a task encoder fitted to the kept restart's
        visual-head partition (a few hundred cross-entropy steps), so that it
        searches near the distillation's answer, or from a random one (TURTLE's
        start; with it, seeds land in optima several points apart).
    self_labeling : bool, default False
        After the labeling, a fresh labeler is trained on the rows the labeling is
        most sure of (the surer half of each cluster) whose visual neighbours mostly
        share their label, and labels every row (SCAN's last step, without
        augmentations: the embeddings are frozen).
    spatial_dim : int, default 0 (= patch channels)
    patch_neighbors : int, default 8
        k of the per-image patch graph (plus the self loop).
    labeling_batch_size : int, default 10000
    seed, device, backend, verbose

    Attributes
    ----------
    n_clusters_ : the K fitted (chosen with "auto"); k_scores_ : {K: score} of the search, or None
    labels_ : (N,) int64
    heads_ : list of fitted visual ClusterHeads (one per space, the kept restart's)
    label_heads_ : per space, the visual heads whose phi_hat the labeling sees
    restart_labels_ : per space, every restart's visual-head partition (R, S) of the
        rows `restart_rows_` (all N rows up to 10,000; evenly spaced ones beyond:
        the rows the consensus compares)
    restart_rows_ : (S,) int64 row indices of restart_labels_
    labeler_ : TURTLE task encoder on those spaces
    fit_details_ : timings and losses per stage
    """

    method = "seal"
    accepts = ("patches",)
    renamed = {"batch_size": "distill_batch_size"}

    n_clusters: int | str | range = param(check=Clusters(), help=CLUSTERS_HELP)
    _: KW_ONLY
    label_on: str = param("phi_hat", check=OneOf(LABEL_ON),
                          help="spaces of the human labeling: phi and phi_hat, or phi_hat alone (the paper)")
    label_restarts: str = param("kept", check=OneOf(LABEL_RESTARTS),
                                help="phi_hat of every restart, or of the kept restart only")
    restarts: int = param(6, check=Whole(), help="distillation restarts (fresh heads, the same neighbours)")
    epochs: int = param(2, check=Whole(), help="mutual-distillation epochs per restart (all are run)")
    labeling_init: str = param("consensus", check=OneOf(LABELING_INITS),
                               help="the labeling starts from a random task encoder (TURTLE) or from one fitted to "
                                    "the kept restart's partition")
    self_labeling: bool = param(False, check=Flag(),
                                help="after the labeling, retrain the labeler on its confident rows whose neighbours "
                                     "agree (SCAN's self-labeling)")

    def _schedule(self) -> dict:
        return {"epochs": self.epochs}

    def fit(self, Zs, y=None, *, patches=None):
        Zs = self._check_fit_input(Zs)
        n_clusters, P, config = self._check_distillation_input(Zs, patches)
        device = self.resolved_device()
        generator = torch.Generator().manual_seed(self.seed)
        details = {"n_neighbors": config.n_neighbors, "distill": []}
        X = to_tensors(Zs, device)
        self.heads_, self.label_heads_, self.restart_labels_ = [], [], []
        kept_labels = None  # the kept restart's partition of the first space, every row
        for i, Z in enumerate(X):
            t0 = time.perf_counter()
            first = visual_and_spatial(Z, P, n_clusters, spatial_dim=self.spatial_dim,
                                       patch_neighbors=self.patch_neighbors, backend=self.backend,
                                       generator=generator, device=device)
            t_spatial = time.perf_counter() - t0
            runs = distill_with_restarts(first, [(0, 1, 1.0)], config, n_clusters=n_clusters,
                                         restarts=self.restarts, seed=self.seed, device=device, backend=self.backend,
                                         progress=self.verbose, desc=f"SEAL distill [{i}]")
            self.heads_.append(runs.modalities[0].head)
            if i == 0:  # set by distill_with_restarts, which searches every modality's neighbours
                visual_neighbors = runs.modalities[0].neighbor_index
                assert visual_neighbors is not None
                kept_labels = runs.labels
                self.restart_rows_ = (torch.arange(Z.shape[0]) if runs.rows is None else runs.rows).numpy()
            self.label_heads_.append([runs.modalities[0].head] if self.label_restarts == "kept"
                                     else [run[0].head for run in runs.runs])
            self.restart_labels_.append(torch.stack(runs.partitions).cpu().numpy().astype(np.int64))
            details["distill"].append({"spatial_s": round(t_spatial, 3), "distill_s": round(runs.result.seconds, 3),
                                       "neighbor_s": round(runs.neighbor_seconds, 3),
                                       "loss_per_epoch": [round(x, 4) for x in runs.result.losses],
                                       "restarts": self.restarts, "restart_kept": runs.chosen,
                                       "restart_agreement_nmi": runs.agreement,
                                       "restart_distill_s": runs.seconds})
        spaces = self._labeling_spaces(X)
        # the consensus start: the kept restart's partition of the first space
        init = kept_labels.cpu() if self.labeling_init == "consensus" else None
        labeling = human_labeling(spaces, n_clusters, self._labeling_config(), seed=self.seed,
                                  backend=self.backend, progress=self.verbose, desc="SEAL labeling",
                                  init_labels=init)
        self.labeler_ = labeling.encoder
        if self.self_labeling:  # on the first space's visual neighbour lists
            t0 = time.perf_counter()
            refined = self_label(self.labeler_, spaces, visual_neighbors, self._labeling_config(), seed=self.seed)
            self.labeler_ = refined.encoder
            details["self_labeling"] = {"rows": refined.kept, "changed": round(refined.changed, 4),
                                        "seconds": round(time.perf_counter() - t0, 3)}
        self.feature_dims_ = [Z.shape[1] for Z in Zs]
        self.labels_ = self.labeler_.predict(spaces).cpu().numpy().astype(np.int64)
        details["labeling_spaces"] = len(spaces)
        details["labeling_s"] = round(labeling.seconds, 3)
        details["labeling_init_s"] = round(labeling.init_seconds, 3)
        details["labeling_init_agreement"] = labeling.init_agreement
        details["labeling_s_per_iteration"] = labeling.seconds_per_iteration
        details["labeling_iterations"] = labeling.iterations
        details["labeling_stopped_early"] = labeling.stopped_early
        details["labeling_trace"] = labeling.trace
        self.n_iter_ = labeling.iterations
        self.fit_details_ = details
        return self

    def _labeling_spaces(self, X: list[torch.Tensor]) -> list[torch.Tensor]:
        """What the labeling sees, per input space: (phi,) then phi_hat of each labeling head."""
        spaces = []
        for Z, heads in zip(X, self.label_heads_):
            if self.label_on == "phi+phi_hat":
                spaces.append(Z)
            spaces.extend(spatially_aware_embedding(h.to(Z.device), Z) for h in heads)
        return spaces

    def transform(self, Zs) -> list[np.ndarray]:
        """The spatially-aware embeddings phi_hat of new rows (one array per space)."""
        Zs = self._check_predict_input(Zs)
        device = self.resolved_device()
        X = to_tensors(Zs, device)
        return [spatially_aware_embedding(h.to(device), Z).cpu().numpy() for h, Z in zip(self.heads_, X)]

    def labeling_spaces(self, Zs) -> list[np.ndarray]:
        """The spaces the human labeling sees for these rows: per input space, phi
        (with label_on="phi+phi_hat") and then phi_hat of each labeling head."""
        Zs = self._check_predict_input(Zs)
        return [S.cpu().numpy() for S in self._labeling_spaces(to_tensors(Zs, self.resolved_device()))]

    def predict_proba(self, Zs) -> np.ndarray:
        Zs = self._check_predict_input(Zs)
        device = self.resolved_device()
        spaces = self._labeling_spaces(to_tensors(Zs, device))
        return self.labeler_.to(device).predict_proba(spaces).cpu().numpy()

    def predict(self, Zs) -> np.ndarray:
        """Labels of new rows; only the visual embeddings are needed."""
        Zs = self._check_predict_input(Zs)
        device = self.resolved_device()
        spaces = self._labeling_spaces(to_tensors(Zs, device))
        return self.labeler_.to(device).predict(spaces).cpu().numpy().astype(np.int64)

    def _state(self):
        return {**super()._state(),
                "heads": [cpu_state(h) for h in self.heads_],
                "label_heads": [[cpu_state(h) for h in heads] for heads in self.label_heads_],
                "labeler": cpu_state(self.labeler_),
                "labels_": torch.from_numpy(self.labels_)}

    def _set_state(self, state):
        super()._set_state(state)
        self.heads_ = [head_from_state(sd, d, self.n_clusters_) for d, sd in zip(self.feature_dims_, state["heads"])]
        if "label_heads" not in state:  # written before label_on/label_restarts: the paper's labeling on phi_hat
            self.label_on, self.label_restarts = "phi_hat", "kept"
        label_heads = state.get("label_heads", [[sd] for sd in state["heads"]])
        self.label_heads_ = [[head_from_state(sd, d, self.n_clusters_) for sd in heads]
                             for d, heads in zip(self.feature_dims_, label_heads)]
        labeler = state["labeler"]  # one weight matrix v.i (K, d_i) per labeling space
        n_spaces = sum(1 for name in labeler if name.startswith("v."))
        self.labeler_ = TaskEncoder([labeler[f"v.{i}"].shape[1] for i in range(n_spaces)], self.n_clusters_)
        self.labeler_.load_state_dict(labeler)
        self.labels_ = state["labels_"].numpy()
