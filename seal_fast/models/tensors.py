"""Arrays in, tensors out, and module states back to the CPU."""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ..rows import ROW_BLOCK


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


def cpu_state(module: torch.nn.Module) -> dict:
    """A module's state dict on the CPU, as `save` stores it."""
    return {k: v.cpu() for k, v in module.state_dict().items()}
