"""Model files: what `save` writes and how `load_model` reads it back, checked."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import SealFastError
from ..readers import load_torch
from ..store import atomic_path
from ..validation import resolve_device
from .registry import _REGISTRY

MODEL_FORMAT = "seal_fast.model"
MODEL_VERSION = 1

# parameters of older versions, with the only value they could have had for the
# fitted state to mean what it means now
RETIRED_PARAMS = {"gat": "frozen"}


def save_model(model, path) -> None:
    """Write a fitted estimator to `path` (atomically): its parameters, its learned
    state as tensors and plain values, and its run metadata."""
    if Path(path).is_dir():
        raise SealFastError(f"{path} is a directory; give a file name for the model")
    payload = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "method": model.method,
               "params": _plain(model.get_params()), "state": model._state(),
               "meta": _plain(getattr(model, "meta_", {}))}
    with atomic_path(path, ".pt") as tmp:
        torch.save(payload, tmp)


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


def _current_params(cls, params: dict, path) -> dict:
    """The saved parameters under today's names: renamed ones take their new name,
    retired ones are dropped where their value is the one today's code implies."""
    for old, new in cls.renamed.items():
        if old in params and new not in params:
            params[new] = params.pop(old)
    names = cls.param_names()
    for name in [p for p in params if p not in names]:
        if name not in RETIRED_PARAMS or params[name] != RETIRED_PARAMS[name]:
            raise SealFastError(f"{path}: {cls.__name__} no longer has the parameter {name}={params[name]!r}; "
                                "refit the model with this version")
        del params[name]
    return params


def load_model(path, device=None):
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
