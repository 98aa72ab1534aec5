"""The settings of the stages two methods share: spatial distillation (SEAL, SATC)
and the human labeling (TURTLE, SEAL), each mapped explicitly onto its config."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..distillation import DistillConfig
from ..errors import SealFastError
from ..labeling import LabelingConfig
from ..ops import BACKENDS, LEVELS
from ..spatial import require_patches
from ..validation import OneOf, Real, Whole, check_neighbors
from .base import ClusterEstimator, param


@dataclass(eq=False, repr=False, kw_only=True)
class SpatialDistillation(ClusterEstimator):
    """The settings and input checks of the stages SEAL and SATC share: the frozen
    patch GAT and the mutual distillation between modalities (their docstrings say
    what each setting means for them). How many epochs, and whether training may
    stop early, is each method's own (`_schedule`)."""

    requires: ClassVar[tuple[str, ...]] = ("patches",)

    distill_batch_size: int = param(512, check=Whole(), help="distillation batch (capped at N)")
    temperature: float = param(1.0, check=Real(0.0, above=True), help="temperature of the cross-modal InfoNCE")
    entropy_weight: float = param(5.0, check=Real(0.0), help="weight of the batch-mean assignment's entropy")
    n_neighbors: int = param(50, check=Whole(), help="cross-modal neighbours per sample (all N-1 others when fewer)")
    min_steps_per_epoch: int = param(100, check=Whole(), help="an epoch is a pass or this many steps, the more")
    restarts: int = param(3, check=Whole(), help="distillation restarts (fresh heads, the same neighbours)")
    level: str = param("instance", check=OneOf(LEVELS), help="contrast rows (instance) or columns (cluster)")
    spatial_dim: int = param(0, check=Whole(0), help="width of g(x) (0: the patch channels)")
    patch_neighbors: int = param(8, check=Whole(0, 32), help="k of the per-image patch graph (plus the self loop)")
    backend: str = param("auto", check=OneOf(BACKENDS),
                         help="compiled ops (auto: when built) or the pure-PyTorch reference")

    def _check_distillation_input(self, Zs, patches):
        """(n_clusters, patches, distillation config) after checking every setting and input."""
        n = Zs[0].shape[0]
        if n < 2:
            raise SealFastError(f"{type(self).__name__} needs at least 2 samples (each is distilled towards its "
                                f"neighbours); got N={n}")
        n_clusters = self._choose_n_clusters(Zs)
        P = require_patches(patches, n, self.patch_neighbors, type(self).__name__)
        n_neighbors = check_neighbors(self.n_neighbors, n)
        config = DistillConfig(batch_size=self.distill_batch_size, temperature=self.temperature,
                               entropy_weight=self.entropy_weight, n_neighbors=n_neighbors, level=self.level,
                               min_steps_per_epoch=self.min_steps_per_epoch, **self._schedule())
        return n_clusters, P, config

    def _schedule(self) -> dict:
        """DistillConfig's epochs, loss weighting and early stopping, as the method sets them."""
        raise NotImplementedError


@dataclass(eq=False, repr=False, kw_only=True)
class LabelingSettings(ClusterEstimator):
    """The settings of the human labeling that TURTLE and SEAL share: the number of
    outer iterations, the batch and the label-free stopping rule (TURTLE's docstring)."""

    iterations: int = param(6000, check=Whole(), help="outer iterations T of the human labeling, at most")
    labeling_batch_size: int = param(10000, check=Whole(), help="labeling batch (capped at N)")
    # measured on TURTLE and SEAL, two datasets (docs/results.md, "Stopping rule")
    stop_tol: float = param(0.02, check=Real(0.0),
                            help="labeling stops once at most this share of a probe subset changes label in "
                                 "stop_patience windows of stop_window iterations in a row (0: run all iterations)")
    stop_window: int = param(100, check=Whole(), help="iterations between two looks of the stopping rule")
    stop_patience: int = param(3, check=Whole(), help="quiet windows in a row that stop the labeling")

    def _labeling_config(self) -> LabelingConfig:
        return LabelingConfig(iterations=self.iterations, batch_size=self.labeling_batch_size,
                              stop_tol=self.stop_tol, stop_window=self.stop_window,
                              stop_patience=self.stop_patience, **self._labeling_extra())

    def _labeling_extra(self) -> dict:
        """LabelingConfig's inner-loop settings, where a method sets them."""
        return {}
