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
from ..spatial import require_patches
from ..store import atomic_path
from ..validation import (as_spaces, check_bool, check_choice, check_float, check_int, check_n_clusters,
                          check_neighbors, check_same_dims, resolve_device)

MODEL_FORMAT = "seal_fast.model"
MODEL_VERSION = 1
_REGISTRY: dict[str, type] = {}


def register(cls):
    _REGISTRY[cls.method] = cls
    return cls


def estimator_class(method: str) -> type:
    """The estimator class of a method name ("kmeans", "turtle", "seal", "satc")."""
    if method not in _REGISTRY:
        raise SealFastError(f"unknown method {method!r}; choose from {', '.join(_REGISTRY)}")
    return _REGISTRY[method]


def store_inputs(estimator, store, spaces: list[str]) -> tuple[list, dict]:
    """What `estimator.fit` takes, read from a feature store: the visual spaces
    `spaces`, and the other inputs the method accepts that the store has (or
    requires, so that a missing one is reported by the store)."""
    readers = {"patches": store.patches, "text": store.text}
    extra = {name: readers[name]() for name in estimator.accepts
             if name in estimator.requires or store.has(name)}
    return [store.space(name) for name in spaces], extra


def to_tensors(Zs, device, dtype=torch.float32, block: int = 1 << 16) -> list[torch.Tensor]:
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
            # np.array copies: memory maps are read-only and torch wants writable memory
            T[s:s + block] = torch.from_numpy(np.array(Z[s:s + block])).to(device=device, dtype=dtype)
        out.append(T)
    return out


# What every parameter name may hold, whichever estimator has it (a name means one
# thing everywhere). Checked at the start of `fit`, before any work.
PARAMETER_CHECKS = {
    "n_clusters": check_n_clusters,
    "seed": lambda v: check_int(v, "seed", 0, 2**63 - 1),
    "verbose": lambda v: check_bool(v, "verbose"),
    "exact": lambda v: check_bool(v, "exact"),
    **{name: (lambda v, n=name: check_int(v, n, 1)) for name in (
        "n_init", "max_iter", "iterations", "inner_steps", "batch_size", "labeling_batch_size", "epochs",
        "restarts", "n_neighbors", "min_steps_per_epoch", "stop_window", "stop_patience")},
    **{name: (lambda v, n=name: check_int(v, n, 0)) for name in ("patience", "spatial_dim")},
    "patch_neighbors": lambda v: check_int(v, "patch_neighbors", 0, 32),
    **{name: (lambda v, n=name: check_float(v, n, 0.0)) for name in (
        "tol", "gamma", "entropy_weight", "consistency_weight", "min_delta", "stop_tol")},
    **{name: (lambda v, n=name: check_float(v, n, 0.0, above=True)) for name in (
        "inner_lr", "outer_lr", "temperature")},
    "text_threshold": lambda v: check_float(v, "text_threshold"),
}


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
    choices: ClassVar[dict] = {}  # string parameters and the values they may take

    seed: int = 0
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda:1", or a torch.device
    verbose: bool = False  # progress bars

    @classmethod
    def param_names(cls) -> list[str]:
        return cls._get_param_names()

    def _config(self, config_class, **overrides):
        """A stage's config dataclass filled from the parameters of the same name."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(config_class) if hasattr(self, f.name)}
        return config_class(**{**values, **overrides})

    # --- inputs ------------------------------------------------------------
    def _device(self) -> torch.device:
        return resolve_device(self.device)

    def check_params(self) -> None:
        """Check every parameter (PARAMETER_CHECKS, `choices`, the device) before any work;
        `fit` calls it first."""
        for name in self.param_names():
            value = getattr(self, name)
            if name in PARAMETER_CHECKS:
                PARAMETER_CHECKS[name](value)
            if name in self.choices:
                check_choice(value, self.choices[name], name)
        self._device()

    def _check_fit_input(self, Zs) -> list:
        self.check_params()
        return as_spaces(Zs, "features")

    def _check_predict_input(self, Zs) -> list:
        self._check_fitted()
        Zs = as_spaces(Zs, "features")
        if len(Zs) != len(self.feature_dims_):
            raise SealFastError(f"model was fitted on {len(self.feature_dims_)} space(s), got {len(Zs)}")
        check_same_dims(Zs, self.feature_dims_, type(self).__name__)
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
        self.feature_dims_ = [check_int(d, "feature_dims_", 1) for d in state["feature_dims_"]]

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
    choices: ClassVar[dict] = {"level": LEVELS, "backend": BACKENDS}

    epochs: int = 20
    batch_size: int = 512
    temperature: float = 1.0
    entropy_weight: float = 5.0
    n_neighbors: int = 50
    min_steps_per_epoch: int = 100
    restarts: int = 3
    level: str = "instance"
    spatial_dim: int = 0
    patch_neighbors: int = 8
    backend: str = "auto"

    def _check_distillation_input(self, Zs, patches):
        """(n_clusters, patches, distillation config) after checking every setting and input."""
        n = Zs[0].shape[0]
        n_clusters = check_n_clusters(self.n_clusters, n)
        P = require_patches(patches, n, self.patch_neighbors, type(self).__name__)
        n_neighbors = check_neighbors(self.n_neighbors, n)
        return n_clusters, P, self._config(DistillConfig, n_neighbors=n_neighbors)


@dataclass(eq=False, repr=False, kw_only=True)
class LabelingSettings(ClusterEstimator):
    """The settings of the human labeling that TURTLE and SEAL share: the number of
    outer iterations and the label-free stopping rule (TURTLE's docstring)."""

    iterations: int = 6000
    stop_tol: float = 0.02  # measured on TURTLE and SEAL, two datasets (README, "Stopping rule")
    stop_window: int = 100
    stop_patience: int = 3


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
    if not path.is_file():
        raise SealFastError(f"model file {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before refusing them
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip/pickle errors of a damaged file, or a foreign pickle with code in it
        text = str(exc).strip()
        reason = ("it holds Python objects other than tensors, which are never unpickled"
                  if "weights only" in text.lower() or "weights_only" in text else
                  (text.splitlines()[0][:200] if text else type(exc).__name__))
        raise SealFastError(f"{path}: not a seal_fast model file ({reason})") from None
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
