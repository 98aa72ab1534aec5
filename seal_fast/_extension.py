"""Loads the compiled ops (`seal_fast._C`) and says what they were built with.

Importing `_C` registers the kernels under `torch.ops.seal_fast`. When the
extension is missing (a source checkout that was not built) or cannot load
(built against another torch), every op falls back to its pure-PyTorch
reference and `build_info()` says why.
"""
from __future__ import annotations

import warnings

import torch

try:
    from . import _C  # noqa: F401  (registers torch.ops.seal_fast.*)

    _LOAD_ERROR: str | None = None
except ImportError as exc:  # not built, or an ABI mismatch with the running torch
    _C = None
    _LOAD_ERROR = str(exc)
    if "undefined symbol" in _LOAD_ERROR:
        warnings.warn(
            "seal_fast's compiled ops were built against a different torch and cannot load "
            f"({_LOAD_ERROR}); using the pure-PyTorch reference ops. Rebuild with "
            "`pip install --no-build-isolation .`",
            RuntimeWarning,
            stacklevel=2,
        )


def compiled_available() -> bool:
    """True when the C++ ops are loaded (CPU kernels at least)."""
    return _C is not None


def cuda_compiled() -> bool:
    """True when the loaded extension includes CUDA kernels."""
    return _C is not None and bool(_C.build_info()["cuda"])


def use_compiled(*tensors: torch.Tensor) -> bool:
    """Whether the compiled kernel can run on these tensors' device."""
    if _C is None:
        return False
    device = tensors[0].device
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        return cuda_compiled()
    return False


def load_error() -> str | None:
    return _LOAD_ERROR
