"""What was compiled, what runs, and which devices are visible."""
from __future__ import annotations

import platform

import numpy as np
import torch

from . import _extension
from ._version import __version__


def build_info() -> dict:
    """Versions, compiled backends and visible devices, as a JSON-able dict."""
    compiled = _extension._C.build_info() if _extension._C is not None else None
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    backends = {"reference": True, "cpu": compiled is not None, "cuda": bool(compiled and compiled["cuda"])}
    info = {
        "seal_fast": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "numpy": np.__version__,
        "compiled_ops": backends,
        "built_with_torch": compiled["torch_version"] if compiled else None,
        "built_cuda_version": compiled["cuda_version"] if compiled else None,
        "built_cuda_arch_list": compiled["cuda_arch_list"] if compiled else None,
        "openmp": compiled["openmp"] if compiled else None,
        "torch_threads": torch.get_num_threads(),
        "devices": devices,
    }
    if compiled is None:
        info["load_error"] = _extension.load_error()
    return info
