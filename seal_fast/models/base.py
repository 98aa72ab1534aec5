"""The estimators' base class and `param`, the one place a parameter is declared."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch
from sklearn.base import BaseEstimator, ClusterMixin

from ..choose_k import choose_k, parse_n_clusters
from ..errors import NotFitted, SealFastError
from ..kmeans_algorithm import prepare_spaces
from ..validation import (Device, Flag, Whole, as_spaces, check_int, check_n_clusters, check_same_dims, check_scale,
                          resolve_device)
from .persistence import load_model, save_model
from .registry import refuse_renamed
from .tensors import to_tensors


def param(default=dataclasses.MISSING, *, check, help: str = ""):
    """An estimator parameter, declared once: its default, what it may hold (a check
    from `validation`: Whole, Real, Flag, OneOf, ...) and its meaning in one line,
    which the command line shows. `check_params` runs every field's check."""
    return dataclasses.field(default=default, metadata={"check": check, "help": help})


@dataclass(eq=False, repr=False, kw_only=True)
class ClusterEstimator(ClusterMixin, BaseEstimator):
    """Base class: parameters are dataclass fields stored as given; work happens in
    `fit`. scikit-learn's BaseEstimator and ClusterMixin give get_params/set_params
    (so `sklearn.base.clone` works), the repr and fit_predict.

    Class attributes say what a method takes besides the visual spaces: `requires`
    (fit fails without them) and `accepts` (used when given), e.g. "patches", "text".
    """

    method: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    accepts: ClassVar[tuple[str, ...]] = ()
    scale_invariant: ClassVar[bool] = False  # whether rows of any magnitude are handled (else check_scale)
    renamed: ClassVar[dict[str, str]] = {}  # old parameter name -> today's (refused when given, read from old files)

    seed: int = param(0, check=Whole(0, 2**63 - 1), help="random seed")
    device: str = param("auto", check=Device(),
                        help='"auto" (CUDA when available), "cpu", "cuda:1", or a torch.device')
    verbose: bool = param(False, check=Flag(), help="progress bars")

    def set_params(self, **params):
        refuse_renamed(type(self), params)
        return super().set_params(**params)

    @classmethod
    def param_names(cls) -> list[str]:
        return cls._get_param_names()

    @classmethod
    def param_field(cls, name: str) -> dataclasses.Field:
        """The declaration of parameter `name` (its default, check and help)."""
        return {f.name: f for f in dataclasses.fields(cls)}[name]

    # --- inputs ------------------------------------------------------------
    def resolved_device(self) -> torch.device:
        """The torch device `device` names here ("auto": CUDA when available)."""
        return resolve_device(self.device)

    def backend_used(self) -> str:
        """What the fit runs on here: "torch" for a method without fused ops, else
        "compiled" (the C++/CUDA kernels) or "reference" (pure PyTorch)."""
        backend = getattr(self, "backend", None)
        if backend is None:
            return "torch"
        if backend == "reference":
            return "reference"
        from .._extension import use_compiled

        return "compiled" if use_compiled(torch.empty(0, device=self.resolved_device())) else "reference"

    def check_params(self) -> None:
        """Check every parameter against its declaration before any work; `fit` calls it first."""
        for f in dataclasses.fields(self):
            f.metadata["check"](getattr(self, f.name), f.name)

    def _check_fit_input(self, Zs) -> list:
        self.check_params()
        return self._check_scales(as_spaces(Zs, "features"))

    def _check_predict_input(self, Zs) -> list:
        self._check_fitted()
        Zs = as_spaces(Zs, "features")
        if len(Zs) != len(self.feature_dims_):
            raise SealFastError(f"model was fitted on {len(self.feature_dims_)} space(s), got {len(Zs)}")
        check_same_dims(Zs, self.feature_dims_, type(self).__name__)
        return self._check_scales(Zs)

    def _check_scales(self, Zs) -> list:
        if not self.scale_invariant:
            for i, Z in enumerate(Zs):
                check_scale(Z, f"features[{i}]" if len(Zs) > 1 else "features")
        return Zs

    def _choose_n_clusters(self, Zs) -> int:
        """K for this fit: `n_clusters` itself, or with "auto" or a range the K that
        choose_k picks on the visual spaces (L2-normalised, concatenated). Sets
        `n_clusters_` and `k_scores_` (None for a fixed K)."""
        spec = parse_n_clusters(self.n_clusters)
        n = Zs[0].shape[0]
        if isinstance(spec, int):
            self.n_clusters_, self.k_scores_, self.k_search_ = check_n_clusters(spec, n), None, None
            return self.n_clusters_
        choice = choose_k(prepare_spaces(to_tensors(Zs, self.resolved_device())), spec, seed=self.seed,
                          progress=self.verbose)
        self.n_clusters_, self.k_scores_, self.k_search_ = choice.k, choice.scores, choice
        return choice.k

    def _check_fitted(self):
        if not hasattr(self, "feature_dims_"):
            raise NotFitted(f"this {type(self).__name__} is not fitted yet; call fit first")

    @property
    def n_features_in_(self) -> int:
        """The width of the fitted space (scikit-learn's attribute; with several spaces, their sum)."""
        self._check_fitted()
        return int(sum(self.feature_dims_))

    # --- persistence -------------------------------------------------------
    def _state(self) -> dict:
        """Learned state as tensors / plain values (subclasses extend)."""
        return {"feature_dims_": list(self.feature_dims_), "n_clusters_": self.n_clusters_,
                "k_scores_": None if self.k_scores_ is None else {int(k): float(v) for k, v in self.k_scores_.items()}}

    def _set_state(self, state: dict) -> None:
        self.feature_dims_ = [check_int(d, "feature_dims_", 1, 1 << 24) for d in state["feature_dims_"]]
        # files written before K could be chosen hold a fixed n_clusters and no n_clusters_
        spec = parse_n_clusters(self.n_clusters)
        fixed = spec if isinstance(spec, int) else None
        self.n_clusters_ = check_int(state.get("n_clusters_", fixed), "n_clusters_", 1, 1 << 24)
        if fixed is not None and self.n_clusters_ != fixed:
            raise SealFastError(f"the saved n_clusters_={self.n_clusters_} disagrees with n_clusters={fixed}")
        scores = state.get("k_scores_")
        self.k_scores_ = None if scores is None else {check_int(k, "k_scores_", 1, 1 << 24): float(v)
                                                      for k, v in dict(scores).items()}
        self.k_search_ = None

    def save(self, path) -> None:
        """Write the fitted model to `path` (atomically; persistence.save_model)."""
        self._check_fitted()
        save_model(self, path)

    @classmethod
    def load(cls, path, device=None):
        model = load_model(path, device=device)
        if cls is not ClusterEstimator and not isinstance(model, cls):
            raise SealFastError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model
