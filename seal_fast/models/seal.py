"""SEAL: spatial embedding (patch GAT) + mutual distillation + human labeling."""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from ..cluster.labeling import LabelingConfig, TaskEncoder, human_labeling
from ..distill import ClusterHead, DistillConfig, Modality, distill_with_restarts, restart_seed
from ..errors import SealFastError
from ..spatial import SpatialEncoder
from ..validation import check_finite, check_n_clusters, check_restarts, check_neighbors
from .base import ClusterEstimator, register, to_tensors

GAT_MODES = ("frozen", "joint")
LABEL_ON = ("phi_hat", "phi+phi_hat")
LABEL_RESTARTS = ("kept", "all")


def check_patches(P, n: int, k: int):
    """Patch features (N, M, c): same N as the spaces, enough patches for the graph, finite."""
    if not hasattr(P, "shape") or len(P.shape) != 3:
        raise SealFastError(f"patches: expected (N, M, c), got shape {getattr(P, 'shape', None)}")
    if P.shape[0] != n:
        raise SealFastError(f"patches: {P.shape[0]} rows for {n} samples")
    if P.shape[1] < k + 1:
        raise SealFastError(f"patches: M={P.shape[1]} patches per image is fewer than the k+1={k + 1} "
                            "nodes the patch graph needs (lower patch_neighbors)")
    if P.shape[2] == 0:
        raise SealFastError("patches: zero channels")
    check_finite(P, "patches")
    return P


def require_patches(patches, n: int, k: int, method: str, call: str = "fit(Zs, patches=P)"):
    """The patch features a spatial method cannot do without, checked."""
    if patches is None:
        raise SealFastError(f"{method} needs patch features: {call} with P of shape (N, M, c); "
                            "`seal-fast embed` writes them to the feature store")
    return check_patches(patches, n, k)


def visual_and_spatial(Z: torch.Tensor, P, k: int, *, spatial_dim: int, patch_neighbors: int, backend: str,
                       generator: torch.Generator, device, frozen: bool = True):
    """The two modalities SEAL and SATC share: the visual one on L2-normalised Z and the
    spatial one (a GAT over each image's patch graph; frozen: g(x) computed once).
    Heads and encoder draw their initialisation from `generator` in a fixed order."""
    visual = Modality("visual", F.normalize(Z, dim=1), ClusterHead(Z.shape[1], k, generator=generator).to(device))
    encoder = SpatialEncoder(P.shape[2], spatial_dim or P.shape[2], k=patch_neighbors,
                             backend=backend, generator=generator).to(device)
    if frozen:
        G = spatial_embeddings(encoder, P, device)
        return visual, Modality("spatial", G, ClusterHead(G.shape[1], k, generator=generator).to(device))
    n = P.shape[0]
    Pt = to_tensors([P.reshape(n, -1)], device, dtype=torch.float16)[0].view(P.shape)
    return visual, Modality("spatial", Pt, ClusterHead(encoder.out_dim, k, generator=generator).to(device),
                            encoder=_NormalizedEncoder(encoder))


def restart_modalities(first: list[Modality], r: int, k: int, seed: int, device, rebuild=None) -> list[Modality]:
    """The modalities of distillation restart r: restart 0 is `first`; later ones
    keep the (frozen) inputs and get fresh heads drawn from the restart's seed.
    `rebuild(generator)` makes everything anew instead (a trained encoder cannot
    be shared between restarts)."""
    if r == 0:
        return first
    generator = torch.Generator().manual_seed(restart_seed(seed, r))
    if rebuild is not None:
        return rebuild(generator)
    return [Modality(m.name, m.inputs, ClusterHead(m.head.fc1.in_features, k, generator=generator).to(device))
            for m in first]


def spatial_embeddings(encoder: SpatialEncoder, P, device, block: int = 1024) -> torch.Tensor:
    """g(x) for every image, L2-normalised, computed in blocks straight from (memory-mapped) patches."""
    out = []
    with torch.no_grad():
        for s in range(0, P.shape[0], block):
            x = torch.from_numpy(np.array(P[s:s + block])) if not isinstance(P, torch.Tensor) else P[s:s + block]
            out.append(F.normalize(encoder(x.to(device=device, dtype=torch.float32)), dim=1))
    return torch.cat(out)


@register
class SEAL(ClusterEstimator):
    """SEAL (spatial embedding + human labeling) on one or several embedding spaces.

    For every space: a spatial encoder (one GAT layer over each image's patch
    graph, mean-pooled) gives g(x); a visual and a spatial cluster head are
    trained by mutual distillation; the visual head's hidden layer is the
    spatially-aware embedding phi_hat. TURTLE's human labeling on phi and the
    restarts' phi_hats gives the clusters. See the README for the choices where
    the paper is vague.

    Parameters
    ----------
    n_clusters : int
    iterations : int, default 6000
        Outer iterations of the human labeling.
    epochs, batch_size, temperature, entropy_weight, level :
        Mutual distillation (SEAL: 20, 512, 1.0, 5, "instance").
    n_neighbors : int, default 50
        Cross-modal neighbours per sample (the papers' 50; all N-1 others when fewer).
    min_steps_per_epoch : int, default 100
        An epoch is one pass over the data or this many steps, whichever is
        more, so that small datasets get the training the papers' 20 epochs
        give N = 50,000 (about 2,000 steps).
    restarts : int, default 3
        Distillation restarts per space (fresh heads, same spatial features and
        neighbours). The consensus restart, whose visual-head partition agrees
        best with the others', is kept as `heads_` (its phi_hat is what
        `transform` returns); the labeling sees every restart's phi_hat unless
        label_restarts="kept". 1 = the paper's single run.
    label_on : "phi+phi_hat" or "phi_hat", default "phi+phi_hat"
        The spaces the human labeling sees: phi_hat and the input embedding phi
        side by side (TURTLE's multi-space labeling), or the paper's phi_hat alone.
    label_restarts : "all" or "kept", default "all"
        phi_hat of every restart (one labeling space each, so the labeling seeks
        the partition that phi and all restarts' embeddings support) or of the
        kept restart only. The defaults were measured on Fashion-MNIST (README):
        70.7 ACC over three seeds against 66.9 for the paper's phi_hat of the
        kept restart. Labeling cost grows with the number of spaces
        (restarts + 1 per input space by default).
    gat : "frozen" or "joint"
        Frozen: the GAT keeps its (seeded) random initialisation and g(x) is
        computed once. Joint: the GAT is trained through the distillation loss.
    spatial_dim : int, default 0 (= patch channels)
    patch_neighbors : int, default 8
        k of the per-image patch graph (plus the self loop).
    seed, device, backend, verbose

    Attributes
    ----------
    labels_ : (N,) int64
    heads_ : list of fitted visual ClusterHeads (one per space, the kept restart's)
    label_heads_ : per space, the visual heads whose phi_hat the labeling sees
    labeler_ : TURTLE task encoder on those spaces
    fit_details_ : timings and losses per stage
    """

    method = "seal"

    def __init__(self, n_clusters: int, *, iterations: int = 6000, epochs: int = 20, batch_size: int = 512,
                 temperature: float = 1.0, entropy_weight: float = 5.0, n_neighbors: int = 50,
                 min_steps_per_epoch: int = 100, restarts: int = 3, label_on: str = "phi+phi_hat",
                 label_restarts: str = "all", level: str = "instance", gat: str = "frozen", spatial_dim: int = 0,
                 patch_neighbors: int = 8,
                 labeling_batch_size: int = 10000, seed: int = 0, device="auto", backend: str = "auto",
                 verbose: bool = False):
        self.n_clusters = n_clusters
        self.iterations = iterations
        self.epochs = epochs
        self.batch_size = batch_size
        self.temperature = temperature
        self.entropy_weight = entropy_weight
        self.n_neighbors = n_neighbors
        self.min_steps_per_epoch = min_steps_per_epoch
        self.restarts = restarts
        self.label_on = label_on
        self.label_restarts = label_restarts
        self.level = level
        self.gat = gat
        self.spatial_dim = spatial_dim
        self.patch_neighbors = patch_neighbors
        self.labeling_batch_size = labeling_batch_size
        self.seed = seed
        self.device = device
        self.backend = backend
        self.verbose = verbose

    def distill_config(self, n_neighbors: int) -> DistillConfig:
        return DistillConfig(epochs=self.epochs, batch_size=self.batch_size, temperature=self.temperature,
                             entropy_weight=self.entropy_weight, n_neighbors=n_neighbors, level=self.level,
                             min_steps_per_epoch=self.min_steps_per_epoch)

    def fit(self, Zs, patches=None):
        Zs = self._check_fit_input(Zs)
        n = Zs[0].shape[0]
        k = check_n_clusters(self.n_clusters, n)
        if self.gat not in GAT_MODES:
            raise SealFastError(f"gat must be one of {GAT_MODES}, got {self.gat!r}")
        if self.label_on not in LABEL_ON:
            raise SealFastError(f"label_on must be one of {LABEL_ON}, got {self.label_on!r}")
        if self.label_restarts not in LABEL_RESTARTS:
            raise SealFastError(f"label_restarts must be one of {LABEL_RESTARTS}, got {self.label_restarts!r}")
        check_restarts(self.restarts)
        n_neighbors = check_neighbors(self.n_neighbors, n)
        P = require_patches(patches, n, self.patch_neighbors, "SEAL")
        device = self._device()
        cpu_gen = torch.Generator().manual_seed(self.seed)
        details = {"n_neighbors": n_neighbors, "distill": []}
        X = to_tensors(Zs, device)
        self.heads_, self.label_heads_ = [], []
        for i, Z in enumerate(X):
            t0 = time.perf_counter()

            def build(generator):  # both closures are used within this iteration only
                return list(visual_and_spatial(Z, P, k, spatial_dim=self.spatial_dim,
                                               patch_neighbors=self.patch_neighbors, backend=self.backend,
                                               generator=generator, device=device, frozen=self.gat == "frozen"))

            first = build(cpu_gen)
            t_spatial = time.perf_counter() - t0
            rebuild = None if self.gat == "frozen" else build
            runs = distill_with_restarts(
                lambda r: restart_modalities(first, r, k, self.seed, device, rebuild),
                [(0, 1, 1.0)], self.distill_config(n_neighbors), restarts=self.restarts, seed=self.seed,
                device=device, backend=self.backend, progress=self.verbose, desc=f"SEAL distill [{i}]")
            visual, result = runs.modalities[0], runs.result
            self.heads_.append(visual.head)
            self.label_heads_.append([visual.head] if self.label_restarts == "kept"
                                     else [run[0].head for run in runs.runs])
            details["distill"].append({"spatial_s": round(t_spatial, 3), "distill_s": round(result.seconds, 3),
                                       "neighbor_s": round(result.neighbor_seconds, 3),
                                       "loss_per_epoch": [round(x, 4) for x in result.losses],
                                       "restarts": self.restarts, "restart_kept": runs.chosen,
                                       "restart_agreement_nmi": runs.agreement,
                                       "restart_distill_s": runs.seconds})
        spaces = self._labeling_spaces(X)
        labeling = human_labeling(spaces, k, self.labeling_config(), seed=self.seed, backend=self.backend,
                                  progress=self.verbose, desc="SEAL labeling")
        self.labeler_ = labeling.encoder
        self.feature_dims_ = [Z.shape[1] for Z in Zs]
        self.labels_ = self.labeler_.predict_proba(spaces).argmax(1).cpu().numpy().astype(np.int64)
        details["labeling_spaces"] = len(spaces)
        details["labeling_s"] = round(labeling.seconds, 3)
        details["labeling_s_per_iteration"] = labeling.seconds_per_iteration
        self.fit_details_ = details
        return self

    def _labeling_spaces(self, X: list[torch.Tensor]) -> list[torch.Tensor]:
        """What the labeling sees, per input space: (phi,) then phi_hat of each labeling head."""
        spaces = []
        for Z, heads in zip(X, self.label_heads_):
            if self.label_on == "phi+phi_hat":
                spaces.append(Z)
            spaces.extend(self._embed(h.to(Z.device), Z) for h in heads)
        return spaces

    def labeling_config(self) -> LabelingConfig:
        return LabelingConfig(iterations=self.iterations, batch_size=self.labeling_batch_size)

    @staticmethod
    @torch.no_grad()
    def _embed(head: ClusterHead, Z: torch.Tensor, block: int = 65536) -> torch.Tensor:
        """phi_hat: the visual head's hidden layer on the L2-normalised embedding."""
        head.eval()
        return torch.cat([head.hidden(F.normalize(Z[s:s + block], dim=1)) for s in range(0, Z.shape[0], block)])

    def transform(self, Zs) -> list[np.ndarray]:
        """The spatially-aware embeddings phi_hat of new rows (one array per space)."""
        Zs = self._check_predict_input(Zs)
        device = self._device()
        X = to_tensors(Zs, device)
        return [self._embed(h.to(device), Z).cpu().numpy() for h, Z in zip(self.heads_, X)]

    def predict_proba(self, Zs, patches=None) -> np.ndarray:
        Zs = self._check_predict_input(Zs)
        device = self._device()
        spaces = self._labeling_spaces(to_tensors(Zs, device))
        return self.labeler_.to(device).predict_proba(spaces).cpu().numpy()

    def predict(self, Zs, patches=None) -> np.ndarray:
        """Labels of new rows; only the visual embeddings are needed (patches are ignored)."""
        return self.predict_proba(Zs).argmax(1).astype(np.int64)

    def _state(self):
        return {**super()._state(),
                "heads": [_cpu_state(h) for h in self.heads_],
                "label_heads": [[_cpu_state(h) for h in heads] for heads in self.label_heads_],
                "labeler": _cpu_state(self.labeler_),
                "labels_": torch.from_numpy(self.labels_)}

    def _set_state(self, state):
        super()._set_state(state)
        self.heads_ = [_head_from_state(sd, d, self.n_clusters) for d, sd in zip(self.feature_dims_, state["heads"])]
        if "label_heads" not in state:  # written before label_on/label_restarts: the paper's labeling on phi_hat
            self.label_on, self.label_restarts = "phi_hat", "kept"
        label_heads = state.get("label_heads", [[sd] for sd in state["heads"]])
        self.label_heads_ = [[_head_from_state(sd, d, self.n_clusters) for sd in heads]
                             for d, heads in zip(self.feature_dims_, label_heads)]
        labeler = state["labeler"]  # one weight matrix v.i (K, d_i) per labeling space
        n_spaces = sum(1 for name in labeler if name.startswith("v."))
        self.labeler_ = TaskEncoder([labeler[f"v.{i}"].shape[1] for i in range(n_spaces)], self.n_clusters)
        self.labeler_.load_state_dict(labeler)
        self.labels_ = state["labels_"].numpy()


def _cpu_state(module: torch.nn.Module) -> dict:
    return {k: v.cpu() for k, v in module.state_dict().items()}


def _head_from_state(state: dict, in_dim: int, n_clusters: int) -> ClusterHead:
    head = ClusterHead(in_dim, n_clusters)
    head.load_state_dict(state)
    return head.eval()


class _NormalizedEncoder(torch.nn.Module):
    """Spatial encoder whose output is L2-normalised, like the frozen path's g(x)."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, P):
        return F.normalize(self.encoder(P.float()), dim=1)
