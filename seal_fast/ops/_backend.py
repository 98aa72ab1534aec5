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


def check_one_device(op: str, **tensors: torch.Tensor) -> None:
    """Every tensor on the first one's device; checked before any kernel sees a pointer."""
    items = list(tensors.items())
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.device != first.device:
            raise ValueError(f"{op}: {name} is on {t.device} but {first_name} is on {first.device}; "
                             "move them to one device")


def check_finite_rows(op: str, name: str, X: torch.Tensor) -> None:
    """Raise naming the first row of X that holds NaN or inf."""
    bad = ~torch.isfinite(X).reshape(X.shape[0], -1).all(dim=1)
    if bool(bad.any()):
        raise ValueError(f"{op}: {name} row {int(bad.nonzero()[0, 0])} contains NaN or inf")
