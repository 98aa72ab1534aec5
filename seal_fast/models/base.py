"""Shared estimator plumbing: parameters, input conversion, save/load."""
from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import torch

from ..errors import SealFastError
from ..store import atomic_path
from ..validation import as_spaces, check_same_dims, resolve_device

MODEL_FORMAT = "seal_fast.model"
MODEL_VERSION = 1
_REGISTRY: dict[str, type] = {}


def register(cls):
    _REGISTRY[cls.method] = cls
    return cls


def to_tensors(Zs, device, dtype=torch.float32, block: int = 1 << 16) -> list[torch.Tensor]:
    """Arrays (memory-mapped ones included) -> tensors on `device`, copied in row blocks."""
    out = []
    for Z in Zs:
        if isinstance(Z, torch.Tensor):
            out.append(Z.detach().to(device=device, dtype=dtype))
            continue
        T = torch.empty(Z.shape, dtype=dtype, device=device)
        for s in range(0, Z.shape[0], block):
            # np.array copies: memory maps are read-only and torch wants writable memory
            T[s:s + block] = torch.from_numpy(np.array(Z[s:s + block])).to(device=device, dtype=dtype)
        out.append(T)
    return out


class ClusterEstimator:
    """Base class: keyword-only parameters stored as given; work happens in `fit`."""

    method = ""

    def get_params(self) -> dict:
        sig = inspect.signature(type(self).__init__)
        return {name: getattr(self, name) for name in sig.parameters if name != "self"}

    def __repr__(self):
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    # --- inputs ------------------------------------------------------------
    def _device(self) -> torch.device:
        return resolve_device(self.device)

    def _check_fit_input(self, Zs) -> list:
        return as_spaces(Zs, "features")

    def _check_predict_input(self, Zs) -> list:
        self._check_fitted()
        Zs = as_spaces(Zs, "features")
        if len(Zs) != len(self.feature_dims_):
            raise SealFastError(f"model was fitted on {len(self.feature_dims_)} space(s), got {len(Zs)}")
        check_same_dims(Zs, self.feature_dims_, "features")
        return Zs

    def _check_fitted(self):
        if not hasattr(self, "feature_dims_"):
            raise SealFastError(f"this {type(self).__name__} is not fitted yet; call fit first")

    def fit_predict(self, Zs, **kwargs) -> np.ndarray:
        return self.fit(Zs, **kwargs).labels_

    # --- persistence -------------------------------------------------------
    def _state(self) -> dict:
        """Learned state as tensors / plain values (subclasses extend)."""
        return {"feature_dims_": list(self.feature_dims_)}

    def _set_state(self, state: dict) -> None:
        self.feature_dims_ = list(state["feature_dims_"])

    def save(self, path) -> None:
        """Write the fitted model to `path` (atomically)."""
        self._check_fitted()
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


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    return obj


def load_model(path, device=None) -> ClusterEstimator:
    """Load any estimator written by `save` (the method is read from the file)."""
    path = Path(path)
    if not path.is_file():
        raise SealFastError(f"model file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors of a damaged or foreign file
        raise SealFastError(f"{path}: not a readable seal_fast model ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise SealFastError(f"{path}: not a seal_fast model file")
    if payload.get("version") != MODEL_VERSION:
        raise SealFastError(f"{path}: model format version {payload.get('version')} is not supported")
    method = payload["method"]
    if method not in _REGISTRY:
        raise SealFastError(f"{path}: unknown method {method!r}")
    cls = _REGISTRY[method]
    params = dict(payload["params"])
    if device is not None:
        params["device"] = device
    model = cls(**params)
    model._set_state(payload["state"])
    model.meta_ = payload.get("meta", {})
    return model
