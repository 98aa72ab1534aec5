"""Choice between a compiled kernel and the pure-PyTorch reference."""
from __future__ import annotations

import torch

from .._extension import compiled_available, use_compiled

BACKENDS = ("auto", "compiled", "reference")


def pick(backend: str, *tensors: torch.Tensor) -> bool:
    """Return True to run the compiled kernel, False to run the reference."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "reference":
        return False
    ok = use_compiled(*tensors)
    if backend == "compiled" and not ok:
        where = tensors[0].device
        reason = "the extension is not loaded" if not compiled_available() else f"no kernel for {where}"
        raise RuntimeError(f"backend='compiled' requested but {reason}; see seal_fast.build_info()")
    return ok
