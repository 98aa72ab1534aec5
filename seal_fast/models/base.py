"""Shared estimator plumbing: parameters, input conversion, save/load."""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin

from ..distillation import DistillConfig
from ..ops import BACKENDS, LEVELS
from ..errors import NotFitted, SealFastError
from ..readers import load_torch
from ..rows import ROW_BLOCK
from ..spatial import require_patches
from ..store import atomic_path
from ..labeling import LabelingConfig
from ..validation import (Device, Flag, OneOf, Real, Whole, as_spaces, check_int, check_n_clusters, check_neighbors,
                          check_same_dims, check_scale, resolve_device)

MODEL_FORMAT = "seal_fast.model"
MODEL_VERSION = 1
_REGISTRY: dict[str, type] = {}


def register(cls):
    """Add an estimator to the registry; every parameter must be declared with `param`."""
    undeclared = [f.name for f in dataclasses.fields(cls) if "check" not in f.metadata]
    if undeclared:
        raise TypeError(f"{cls.__name__}: parameters {undeclared} are not declared with param(..., check=...)")
    _REGISTRY[cls.method] = cls
    return cls


def registered_methods() -> tuple[str, ...]:
    """Every method name an estimator registered."""
    return tuple(_REGISTRY)


def estimator_class(method: str) -> type:
    """The estimator class of a method name ("kmeans", "turtle", "seal", "satc")."""
    if method not in _REGISTRY:
        raise SealFastError(f"unknown method {method!r}; choose from {', '.join(_REGISTRY)}")
    return _REGISTRY[method]


def to_tensors(Zs, device, dtype=torch.float32, block: int = ROW_BLOCK) -> list[torch.Tensor]:
    """Arrays -> tensors on `device` in `dtype`, without a copy where none is needed:
    a tensor already there (any device) is used as is, and so is a float32 numpy
    array (a memory map included: its pages are read from disk as they are used)
    when the device is the CPU. Anything else is copied once, in row blocks."""
    out = []
    for Z in Zs:
        if isinstance(Z, torch.Tensor):
            out.append(Z.detach().to(device=device, dtype=dtype))
            continue
        if torch.device(device).type == "cpu" and Z.dtype == np.dtype(torch.empty((), dtype=dtype).numpy().dtype) \
                and Z.flags.c_contiguous:
            with warnings.catch_warnings():  # a read-only memory map: nothing here writes to its input
                warnings.simplefilter("ignore", UserWarning)
                out.append(torch.from_numpy(Z))
            continue
        T = torch.empty(Z.shape, dtype=dtype, device=device)
        for s in range(0, Z.shape[0], block):
            # np.array copies (memory maps are read-only, torch wants writable memory) in native byte order
            T[s:s + block] = torch.from_numpy(np.array(Z[s:s + block], dtype=Z.dtype.newbyteorder("="))).to(
                device=device, dtype=dtype)
        out.append(T)
    return out


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

    seed: int = param(0, check=Whole(0, 2**63 - 1), help="random seed")
    device: str = param("auto", check=Device(),
                        help='"auto" (CUDA when available), "cpu", "cuda:1", or a torch.device')
    verbose: bool = param(False, check=Flag(), help="progress bars")

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
        return {"feature_dims_": list(self.feature_dims_)}

    def _set_state(self, state: dict) -> None:
        self.feature_dims_ = [check_int(d, "feature_dims_", 1, 1 << 24) for d in state["feature_dims_"]]

    def save(self, path) -> None:
        """Write the fitted model to `path` (atomically)."""
        self._check_fitted()
        if Path(path).is_dir():
            raise SealFastError(f"{path} is a directory; give a file name for the model")
        payload = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "method": self.method,
                   "params": _plain(self.get_params()), "state": self._state(),
                   "meta": _plain(getattr(self, "meta_", {}))}
        with atomic_path(path, ".pt") as tmp:
            torch.save(payload, tmp)

    @classmethod
    def load(cls, path, device=None):
        model = load_model(path, device=device)
        if cls is not ClusterEstimator and not isinstance(model, cls):
            raise SealFastError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model


@dataclass(eq=False, repr=False, kw_only=True)
class SpatialDistillation(ClusterEstimator):
    """The settings and input checks of the stages SEAL and SATC share: the frozen
    patch GAT and the mutual distillation between modalities (their docstrings say
    what each setting means for them)."""

    requires: ClassVar[tuple[str, ...]] = ("patches",)

    epochs: int = param(20, check=Whole(), help="mutual-distillation epochs")
    batch_size: int = param(512, check=Whole(), help="distillation batch size")
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
        n_clusters = check_n_clusters(self.n_clusters, n)
        P = require_patches(patches, n, self.patch_neighbors, type(self).__name__)
        n_neighbors = check_neighbors(self.n_neighbors, n)
        config = DistillConfig(epochs=self.epochs, batch_size=self.batch_size, temperature=self.temperature,
                               entropy_weight=self.entropy_weight, n_neighbors=n_neighbors, level=self.level,
                               min_steps_per_epoch=self.min_steps_per_epoch, **self._early_stopping())
        return n_clusters, P, config

    def _early_stopping(self) -> dict:
        """DistillConfig's loss weighting and early stopping, where a method sets them."""
        return {}


@dataclass(eq=False, repr=False, kw_only=True)
class LabelingSettings(ClusterEstimator):
    """The settings of the human labeling that TURTLE and SEAL share: the number of
    outer iterations and the label-free stopping rule (TURTLE's docstring)."""

    iterations: int = param(6000, check=Whole(), help="outer iterations T of the human labeling, at most")
    # measured on TURTLE and SEAL, two datasets (docs/results.md, "Stopping rule")
    stop_tol: float = param(0.02, check=Real(0.0),
                            help="labeling stops once at most this share of a probe subset changes label in "
                                 "stop_patience windows of stop_window iterations in a row (0: run all iterations)")
    stop_window: int = param(100, check=Whole(), help="iterations between two looks of the stopping rule")
    stop_patience: int = param(3, check=Whole(), help="quiet windows in a row that stop the labeling")

    def _labeling_config(self, batch_size: int) -> LabelingConfig:
        return LabelingConfig(iterations=self.iterations, batch_size=batch_size, stop_tol=self.stop_tol,
                              stop_window=self.stop_window, stop_patience=self.stop_patience,
                              **self._labeling_extra())

    def _labeling_extra(self) -> dict:
        """LabelingConfig's inner-loop settings, where a method sets them."""
        return {}


def cpu_state(module: torch.nn.Module) -> dict:
    """A module's state dict on the CPU, as `save` stores it."""
    return {k: v.cpu() for k, v in module.state_dict().items()}


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, torch.device):
        return str(obj)
    return obj


# parameters of older versions, with the only value they could have had for the
# fitted state to mean what it means now
RETIRED_PARAMS = {"gat": "frozen"}


def _current_params(cls, params: dict, path) -> dict:
    names = cls.param_names()
    for name in [p for p in params if p not in names]:
        if name not in RETIRED_PARAMS or params[name] != RETIRED_PARAMS[name]:
            raise SealFastError(f"{path}: {cls.__name__} no longer has the parameter {name}={params[name]!r}; "
                                "refit the model with this version")
        del params[name]
    return params


def load_model(path, device=None) -> ClusterEstimator:
    """Load any estimator written by `save` (the method is read from the file).

    Only tensors and plain values are read (`weights_only=True`: nothing in the file
    is ever executed), and the loaded state is checked before use: finite, with the
    shapes its parameters declare, and able to label a row of each fitted width."""
    path = Path(path)
    payload = load_torch(path, f"model file {path}", "seal_fast model file")  # checksums verified, nothing unpickled
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise SealFastError(f"{path}: not a seal_fast model file")
    if payload.get("version") != MODEL_VERSION:
        raise SealFastError(f"{path}: model format version {payload.get('version')!r} is not supported")
    method = payload.get("method")
    if method not in _REGISTRY:
        raise SealFastError(f"{path}: unknown method {method!r}")
    if not isinstance(payload.get("params"), dict) or not isinstance(payload.get("state"), dict):
        raise SealFastError(f"{path}: damaged seal_fast model file (no parameters or state)")
    cls = _REGISTRY[method]
    params = _current_params(cls, dict(payload["params"]), path)
    if device is not None:
        params["device"] = device
    resolve_device(params.get("device", "auto"))  # a device this machine lacks: the user's error, not the file's
    _check_finite_state(payload["state"], path)
    try:
        model = cls(**params)
        model.check_params()
        model._set_state(payload["state"])
        # a state whose parts disagree (altered shapes) fails here, not on the user's data
        model.predict([np.zeros((2, d), np.float32) for d in model.feature_dims_])
    except SealFastError as exc:
        raise SealFastError(f"{path}: damaged or altered seal_fast model file ({exc})") from None
    except Exception as exc:
        raise SealFastError(f"{path}: damaged or altered seal_fast model file ({type(exc).__name__}: "
                            f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''})") from None
    meta = payload.get("meta", {})
    model.meta_ = meta if isinstance(meta, dict) else {}
    return model


def _check_finite_state(state, path) -> None:
    """Every tensor of a saved state holds finite numbers (NaN weights label every row alike)."""
    stack = [("state", state)]
    while stack:
        where, obj = stack.pop()
        if isinstance(obj, torch.Tensor):
            if obj.is_floating_point() and not bool(torch.isfinite(obj).all()):
                raise SealFastError(f"{path}: the model's {where} holds NaN or inf; refit it")
        elif isinstance(obj, dict):
            stack += [(f"{where}.{k}", v) for k, v in obj.items()]
        elif isinstance(obj, (list, tuple)):
            stack += [(f"{where}[{i}]", v) for i, v in enumerate(obj)]
